//! rmqtt-bench: runs the same MQTT load against two brokers (rmqtt and Mosquitto by default)
//! and the raw relay baseline, alternating them over several rounds, and writes
//! results/bench.md, results/bench.jsonl and results/bench.png. Every scenario is bounded in
//! messages and time, so a broken broker makes a row say so instead of hanging the run.

mod broker;
mod mqtt;
mod net;
mod png;
mod report;
mod scenarios;

use broker::Spec;
use report::{Context, Record, Side};
use scenarios::{Kind, Outcome, Params};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
Usage: rmqtt-bench [options]

Runs every scenario against A (rmqtt) and B (mosquitto), and the raw relay where it applies,
alternating A B relay in each round; writes OUT/bench.md, OUT/bench.jsonl, OUT/bench.png.

Options:
  --quick             smaller message counts and 2000 connections (about a minute)
  --rounds N          rounds of A B alternation (default 5)
  --only LIST         comma-separated scenarios: fanin-q0,fanin-q1,fanout-q0,pairs-q1,
                      latency-q0,latency-q2,connections,retained,large-q1
  --conns N           idle clients in the connections scenario (default 10000)
  --a-cmd CMD         command for A; {conf} and {port} are substituted
                      (default: rmqtt next to this binary, '-c {conf}')
  --a-name NAME       label for A (default rmqtt)
  --b-cmd CMD         command for B (default '/usr/sbin/mosquitto -c {conf}')
  --b-name NAME       label for B (default mosquitto)
  --relay-cmd CMD     raw relay command (default: rmqtt-relay next to this binary, '{port}')
  --no-relay          skip the raw relay baseline
  --conf LINE         extra config line for both brokers (repeatable)
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
    b: Spec,
    relay: Option<Spec>,
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
        },
        b: Spec {
            name: "mosquitto".into(),
            cmd: split_cmd("/usr/sbin/mosquitto -c {conf}"),
            relay: false,
        },
        relay: Some(Spec {
            name: "relay".into(),
            cmd: vec![
                exe_dir.join("rmqtt-relay").to_string_lossy().into_owned(),
                "{port}".into(),
            ],
            relay: true,
        }),
        conf: Vec::new(),
        timeout: None,
        stall: 5,
        out: PathBuf::from("results"),
    };
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
            "--b-cmd" => o.b.cmd = split_cmd(&value(arg)?),
            "--a-name" => o.a.name = value(arg)?,
            "--b-name" => o.b.name = value(arg)?,
            "--relay-cmd" => {
                o.relay = Some(Spec {
                    name: "relay".into(),
                    cmd: split_cmd(&value(arg)?),
                    relay: true,
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
    if o.a.name == o.b.name {
        o.b.name.push_str("-b");
    }
    Ok(o)
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
) -> (Outcome, f64, f64, u64, Option<String>) {
    let mut running = match broker::start(spec, workdir, conf) {
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
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rmqtt-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
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
            let mut sides = vec![(Side::A, &opts.a), (Side::B, &opts.b)];
            if let Some(r) = opts.relay.as_ref().filter(|_| kind.relay_capable()) {
                sides.push((Side::Relay, r));
            }
            for (side, spec) in sides {
                let (outcome, cpu_s, wall_s, peak_rss_kb, crashed) =
                    one_run(spec, kind, &params, &workdir, &opts.conf);
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
        b_name: opts.b.name.clone(),
        a_cmd: opts.a.cmd.join(" "),
        b_cmd: opts.b.cmd.join(" "),
        relay_cmd: opts.relay.as_ref().map(|r| r.cmd.join(" ")),
        config: broker::config_text(0, &opts.conf)
            .lines()
            .map(|l| l.replace(" 0 ", " PORT "))
            .collect(),
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
    if failed {
        std::process::exit(1);
    }
}
