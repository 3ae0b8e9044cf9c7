//! rmqtt-bench: runs the same MQTT load against rmqtt and its peers (Mosquitto with and without
//! `set_tcp_nodelay`, rumqttd when installed) and the raw relay baseline, alternating them over
//! several rounds, and writes results/bench.md, results/bench.jsonl and results/bench.png.
//! Every scenario is bounded in messages and time, so a broken broker makes a row say so
//! instead of hanging the run; a run whose slowest message took longer than rmqtt's
//! `stall_timeout` (or one second) is flagged in the table and in the exit message.

mod broker;
mod mqtt;
mod net;
mod png;
mod report;
mod scenarios;

use broker::{Spec, Style};
use report::{Context, Peer, Record, Side};
use scenarios::{Kind, Outcome, Params};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
Usage: rmqtt-bench [options]

Runs every scenario against A (rmqtt) and its peers (B = mosquitto, mosquitto-nodelay,
rumqttd), and the raw relay where it applies, in that order in each round; writes
OUT/bench.md, OUT/bench.jsonl, OUT/bench.png.

Options:
  --quick             smaller message counts and 2000 connections (about a minute)
  --rounds N          rounds of alternation (default 5)
  --only LIST         comma-separated scenarios: fanin-q0,fanin-q1,fanout-q0,fanout-burst,
                      fanin-burst,pairs-q1,latency-q0,latency-q1,latency-q2,connections,
                      retained,large-q1
  --conns N           idle clients in the connections scenario (default 10000)
  --a-cmd CMD         command for A; {conf} and {port} are substituted
                      (default: rmqtt next to this binary, '-c {conf}')
  --a-name NAME       label for A (default rmqtt)
  --b-cmd CMD         command for Mosquitto, both peers (default '/usr/sbin/mosquitto -c {conf}')
  --b-name NAME       label for B, the first peer (default mosquitto)
  --rumqttd-cmd CMD   command for rumqttd (default: target/bench-peers/rumqttd/bin/rumqttd
                      '-c {conf}', skipped with a note when it is not there)
  --peers LIST        comma-separated peers to run, of mosquitto,mosquitto-nodelay,rumqttd
                      (default all; B's name stands for mosquitto; 'none' runs A alone)
  --parity            every broker gets the same in-flight window (65535) and no queue limit
  --relay-cmd CMD     raw relay command (default: rmqtt-relay next to this binary, '{port}')
  --no-relay          skip the raw relay baseline
  --conf LINE         extra config line for the mosquitto.conf brokers (repeatable)
  --timeout SECS      hard limit per scenario run (default 60, quick 20)
  --stall SECS        abandon a run after this long without a packet (default 5)
  --out DIR           output directory (default results)
  -h, --help          this text
";

struct Options {
    quick: bool,
    rounds: usize,
    only: Option<Vec<Kind>>,
    conns: Option<usize>,
    a: Spec,
    peers: Vec<Spec>,
    relay: Option<Spec>,
    parity: bool,
    conf: Vec<String>,
    timeout: Option<u64>,
    stall: u64,
    out: PathBuf,
}

fn split_cmd(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut o = Options {
        quick: false,
        rounds: 5,
        only: None,
        conns: None,
        a: Spec {
            name: "rmqtt".into(),
            cmd: vec![
                exe_dir.join("rmqtt").to_string_lossy().into_owned(),
                "-c".into(),
                "{conf}".into(),
            ],
            relay: false,
            style: Style::Mosquitto,
            conf: Vec::new(),
        },
        peers: vec![
            Spec {
                name: "mosquitto".into(),
                cmd: split_cmd(MOSQUITTO),
                relay: false,
                style: Style::Mosquitto,
                conf: Vec::new(),
            },
            Spec {
                name: "mosquitto-nodelay".into(),
                cmd: split_cmd(MOSQUITTO),
                relay: false,
                style: Style::Mosquitto,
                conf: vec!["set_tcp_nodelay true".into()],
            },
            Spec {
                name: "rumqttd".into(),
                cmd: vec![
                    exe_dir
                        .join("../bench-peers/rumqttd/bin/rumqttd")
                        .to_string_lossy()
                        .into_owned(),
                    "-c".into(),
                    "{conf}".into(),
                ],
                relay: false,
                style: Style::Rumqttd,
                conf: Vec::new(),
            },
        ],
        relay: Some(Spec {
            name: "relay".into(),
            cmd: vec![
                exe_dir.join("rmqtt-relay").to_string_lossy().into_owned(),
                "{port}".into(),
            ],
            relay: true,
            style: Style::Mosquitto,
            conf: Vec::new(),
        }),
        parity: false,
        conf: Vec::new(),
        timeout: None,
        stall: 5,
        out: PathBuf::from("results"),
    };
    let mut peers: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = number(value(arg)?, arg)?.max(1) as usize,
            "--conns" => o.conns = Some(number(value(arg)?, arg)? as usize),
            "--only" => {
                let list = value(arg)?;
                let kinds = list
                    .split(',')
                    .map(|n| Kind::from_name(n.trim()).ok_or(format!("unknown scenario '{n}'")))
                    .collect::<Result<Vec<_>, _>>()?;
                o.only = Some(kinds);
            }
            "--a-cmd" => o.a.cmd = split_cmd(&value(arg)?),
            "--b-cmd" => {
                let cmd = split_cmd(&value(arg)?);
                for p in o
                    .peers
                    .iter_mut()
                    .filter(|p| p.name.starts_with("mosquitto"))
                {
                    p.cmd.clone_from(&cmd);
                }
            }
            "--a-name" => o.a.name = value(arg)?,
            "--b-name" => {
                let name = value(arg)?;
                if let Some(b) = o.peers.first_mut() {
                    b.name = name;
                }
            }
            "--rumqttd-cmd" => {
                let cmd = split_cmd(&value(arg)?);
                for p in o.peers.iter_mut().filter(|p| p.style == Style::Rumqttd) {
                    p.cmd.clone_from(&cmd);
                }
            }
            "--peers" => {
                peers = Some(
                    value(arg)?
                        .split(',')
                        .map(|n| n.trim().to_string())
                        .filter(|n| !n.is_empty() && n != "none")
                        .collect(),
                )
            }
            "--parity" => o.parity = true,
            "--relay-cmd" => {
                o.relay = Some(Spec {
                    name: "relay".into(),
                    cmd: split_cmd(&value(arg)?),
                    relay: true,
                    style: Style::Mosquitto,
                    conf: Vec::new(),
                })
            }
            "--no-relay" => o.relay = None,
            "--conf" => o.conf.push(value(arg)?),
            "--timeout" => o.timeout = Some(number(value(arg)?, arg)?),
            "--stall" => o.stall = number(value(arg)?, arg)?.max(1),
            "--out" => o.out = PathBuf::from(value(arg)?),
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    if let Some(want) = peers {
        // The first peer answers to "mosquitto" whatever --b-name calls it.
        let keep = |k: usize, p: &Spec| {
            want.iter()
                .any(|w| *w == p.name || (k == 0 && w == "mosquitto"))
        };
        for w in &want {
            let known = o
                .peers
                .iter()
                .enumerate()
                .any(|(k, p)| *w == p.name || (k == 0 && w == "mosquitto"));
            if !known {
                return Err(format!("unknown peer '{w}'"));
            }
        }
        let all = std::mem::take(&mut o.peers);
        o.peers = all
            .into_iter()
            .enumerate()
            .filter(|(k, p)| keep(*k, p))
            .map(|(_, p)| p)
            .collect();
    }
    for p in o.peers.iter_mut() {
        if p.name == o.a.name {
            p.name.push_str("-b");
        }
    }
    Ok(o)
}

const MOSQUITTO: &str = "/usr/sbin/mosquitto -c {conf}";

/// rmqtt's `stall_timeout`: a message later than this waited for the stall timer (issue 14).
const STALL_TIMEOUT_MS: f64 = 2000.0;

/// Peers whose program is not installed are left out with a note, not failed.
fn installed(spec: &Spec) -> bool {
    let Some(prog) = spec.cmd.first() else {
        return false;
    };
    let path = std::path::Path::new(prog);
    if path.components().count() > 1 {
        return path.exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).exists()))
        .unwrap_or(false)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GB RAM", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, {mem}, Linux {}", kernel.trim())
}

/// UTC time as ISO 8601, from the Unix clock (days-to-civil, Howard Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

struct PidProbe(u32);

impl scenarios::Probe for PidProbe {
    fn rss_kb(&self) -> u64 {
        broker::proc_stats(self.0).map(|s| s.rss_kb).unwrap_or(0)
    }
}

fn one_run(
    spec: &Spec,
    kind: Kind,
    params: &Params,
    workdir: &std::path::Path,
    conf: &[String],
    parity: bool,
) -> (Outcome, f64, f64, u64, Option<String>) {
    let mut running = match broker::start(spec, workdir, conf, parity) {
        Ok(r) => r,
        Err(e) => {
            let out = Outcome {
                error: Some(e.to_string()),
                ..Outcome::default()
            };
            return (out, 0.0, 0.0, 0, None);
        }
    };
    let probe = PidProbe(running.pid);
    let t0 = Instant::now();
    let mut outcome = scenarios::run(kind, running.addr, spec.relay, params, &probe);
    let cpu = running.cpu_seconds();
    let wall = t0.elapsed().as_secs_f64();
    // On two cores the load generator competes with the broker, so throughput per broker CPU
    // second is the steadier measure of the broker's own efficiency.
    if kind.per_cpu_metric() && cpu > 0.0 {
        let delivered = outcome.expected.saturating_sub(outcome.lost) as f64;
        outcome.metrics.push(scenarios::Metric {
            key: "msgs/CPU-s",
            value: delivered / cpu,
            higher_better: true,
            headline: false,
        });
    }
    let hwm = running.stats().hwm_kb;
    let crashed = running
        .exit_status()
        .map(|s| format!("{s} (log: {})", running.log.display()));
    running.stop();
    (outcome, cpu, wall, hwm, crashed)
}

fn describe(outcome: &Outcome) -> String {
    let mut s: Vec<String> = outcome
        .metrics
        .iter()
        .map(|m| format!("{} {:.1}", m.key, m.value))
        .collect();
    s.push(format!(
        "lost {} dup {} reordered {}",
        outcome.lost, outcome.dup, outcome.reordered
    ));
    if let Some(e) = &outcome.error {
        s.push(format!("ERROR: {e}"));
    }
    if outcome.timed_out {
        s.push("TIMED OUT".into());
    }
    s.join(", ")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return;
    }
    let mut opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rmqtt-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    opts.peers.retain(|p| {
        let ok = installed(p);
        if !ok {
            eprintln!(
                "rmqtt-bench: {} not found ({}); skipped",
                p.name,
                p.cmd.first().map(String::as_str).unwrap_or("")
            );
        }
        ok
    });
    if opts.parity {
        opts.conf.extend(broker::parity_lines());
    }
    let limit = broker::raise_nofile();
    let mut conns = opts
        .conns
        .unwrap_or(if opts.quick { 2_000 } else { 10_000 });
    let usable = (limit as usize).saturating_sub(200);
    if conns > usable {
        eprintln!("rmqtt-bench: open files limited to {limit}; connections scenario uses {usable} clients");
        conns = usable;
    }
    let params = Params {
        quick: opts.quick,
        conns,
        timeout: Duration::from_secs(opts.timeout.unwrap_or(if opts.quick { 20 } else { 60 })),
        stall: Duration::from_secs(opts.stall),
    };
    let kinds: Vec<Kind> = opts.only.clone().unwrap_or_else(|| scenarios::ALL.to_vec());
    let workdir = std::env::temp_dir().join(format!("rmqtt-bench-{}", std::process::id()));
    if let Err(e) =
        std::fs::create_dir_all(&workdir).and_then(|_| std::fs::create_dir_all(&opts.out))
    {
        eprintln!("rmqtt-bench: cannot create directories: {e}");
        std::process::exit(1);
    }
    eprintln!(
        "rmqtt-bench: broker configs and logs in {}",
        workdir.display()
    );
    let started = utc_now();
    let t0 = Instant::now();
    let mut records: Vec<Record> = Vec::new();
    for round in 0..opts.rounds {
        for &kind in &kinds {
            let mut sides = vec![(Side::A, &opts.a)];
            sides.extend(
                opts.peers
                    .iter()
                    .enumerate()
                    .map(|(k, p)| (Side::Peer(k), p)),
            );
            if let Some(r) = opts.relay.as_ref().filter(|_| kind.relay_capable()) {
                sides.push((Side::Relay, r));
            }
            for (side, spec) in sides {
                let (outcome, cpu_s, wall_s, peak_rss_kb, crashed) =
                    one_run(spec, kind, &params, &workdir, &opts.conf, opts.parity);
                eprintln!(
                    "[round {}/{}] {:<12} {:<10} {}, cpu {cpu_s:.2} s, peak {peak_rss_kb} KB{}",
                    round + 1,
                    opts.rounds,
                    kind.name(),
                    spec.name,
                    describe(&outcome),
                    crashed
                        .as_deref()
                        .map(|c| format!(", EXITED {c}"))
                        .unwrap_or_default()
                );
                records.push(Record {
                    round,
                    kind,
                    side,
                    name: spec.name.clone(),
                    outcome,
                    cpu_s,
                    wall_s,
                    peak_rss_kb,
                    crashed,
                });
            }
        }
    }
    let ctx = Context {
        a_name: opts.a.name.clone(),
        a_cmd: opts.a.cmd.join(" "),
        peers: opts
            .peers
            .iter()
            .map(|p| Peer {
                name: p.name.clone(),
                cmd: p.cmd.join(" "),
                conf: match p.style {
                    Style::Mosquitto => p.conf.clone(),
                    Style::Rumqttd => broker::rumqttd_config(0, opts.parity)
                        .lines()
                        .filter(|l| l.contains("max_inflight") || l.contains("max_segment"))
                        .map(|l| format!("{} (own TOML config)", l.trim()))
                        .collect(),
                },
            })
            .collect(),
        relay_cmd: opts.relay.as_ref().map(|r| r.cmd.join(" ")),
        config: broker::config_text(0, &opts.conf)
            .lines()
            .map(|l| l.replace(" 0 ", " PORT "))
            .collect(),
        parity: opts.parity,
        stall_ms: STALL_TIMEOUT_MS,
        rounds: opts.rounds,
        params,
        kinds,
        machine: machine(),
        started,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    let md = report::markdown(&ctx, &records);
    let jsonl = report::jsonl(&ctx, &records);
    let png = report::chart(&ctx, &records);
    let writes = [
        (opts.out.join("bench.md"), md.as_bytes()),
        (opts.out.join("bench.jsonl"), jsonl.as_bytes()),
        (opts.out.join("bench.png"), png.as_slice()),
    ];
    let mut failed = false;
    for (path, data) in writes {
        if let Err(e) = std::fs::write(&path, data) {
            eprintln!("rmqtt-bench: cannot write {}: {e}", path.display());
            failed = true;
        }
    }
    print!("{md}");
    let problems = records
        .iter()
        .filter(|r| r.problem().is_some() || r.outcome.dup > 0)
        .count();
    if problems > 0 {
        eprintln!("rmqtt-bench: {problems} runs reported problems; see the table above");
    }
    let slow: Vec<String> = records
        .iter()
        .filter_map(|r| {
            let ms = r.max_latency_ms()?;
            (ms > 1000.0).then(|| {
                format!(
                    "{} {} round {}: {ms:.0} ms{}",
                    r.kind.name(),
                    r.name,
                    r.round + 1,
                    if ms > STALL_TIMEOUT_MS {
                        " (over rmqtt's 2 s stall_timeout)"
                    } else {
                        ""
                    }
                )
            })
        })
        .collect();
    if !slow.is_empty() {
        eprintln!(
            "rmqtt-bench: {} runs with a message later than 1 s: {}",
            slow.len(),
            slow.join("; ")
        );
    }
    if failed {
        std::process::exit(1);
    }
}
