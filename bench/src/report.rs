//! Turning the per-run records into medians, ratios, the Markdown table, JSON lines and the
//! chart. Pure functions of the records plus a few facts about the machine.

use crate::png::{self, Bar};
use crate::scenarios::{Kind, Metric, Outcome, Params};
use std::fmt::Write as _;

/// Which side of the comparison a run measured: A (rmqtt), one of its peers (in the order of
/// [`Context::peers`]; the first is B) or the raw relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    Peer(usize),
    Relay,
}

impl Side {
    pub fn tag(self) -> String {
        match self {
            Side::A => "a".into(),
            Side::Peer(0) => "b".into(),
            Side::Peer(k) => format!("peer{}", k + 1),
            Side::Relay => "relay".into(),
        }
    }
}

pub struct Record {
    pub round: usize,
    pub kind: Kind,
    pub side: Side,
    pub name: String,
    pub outcome: Outcome,
    pub cpu_s: f64,
    /// Wall time of the scenario itself (setup included, broker start excluded).
    pub wall_s: f64,
    pub peak_rss_kb: u64,
    /// Set when the broker process had exited by the end of the run.
    pub crashed: Option<String>,
}

impl Record {
    pub fn problem(&self) -> Option<String> {
        let mut p = Vec::new();
        if let Some(c) = &self.crashed {
            p.push(format!("broker exited: {c}"));
        }
        if let Some(e) = &self.outcome.error {
            p.push(e.clone());
        }
        if self.outcome.timed_out {
            p.push("timed out".to_string());
        }
        (!p.is_empty()).then(|| p.join("; "))
    }

    /// The slowest message of the run, in milliseconds, where the scenario times messages.
    pub fn max_latency_ms(&self) -> Option<f64> {
        self.outcome.max_latency_us.map(|us| us / 1000.0)
    }
}

/// A max latency with its flag: `‼` over the stall timeout, `⚠` over one second.
fn fmt_latency(ms: f64, stall_ms: f64) -> String {
    let flag = if ms > stall_ms {
        " ‼"
    } else if ms > 1000.0 {
        " ⚠"
    } else {
        ""
    };
    format!("{}{flag}", fmt_num(ms))
}

/// Median, min and max of the values; `None` for no values.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if a >= 1000.0 {
        format!("{:.0}", x)
    } else if a >= 100.0 {
        format!("{:.1}", x)
    } else if a >= 10.0 {
        format!("{:.2}", x)
    } else {
        format!("{:.3}", x)
    }
}

fn fmt_summary(s: Option<(f64, f64, f64)>) -> String {
    match s {
        Some((m, lo, hi)) => format!("{} ({}–{})", fmt_num(m), fmt_num(lo), fmt_num(hi)),
        None => "n/a".to_string(),
    }
}

/// Metric keys of a scenario, in the order the runs reported them.
fn metric_keys(records: &[Record], kind: Kind) -> Vec<(&'static str, bool, bool)> {
    let mut keys: Vec<(&'static str, bool, bool)> = Vec::new();
    for r in records.iter().filter(|r| r.kind == kind) {
        for m in &r.outcome.metrics {
            if !keys.iter().any(|k| k.0 == m.key) {
                keys.push((m.key, m.higher_better, m.headline));
            }
        }
    }
    keys
}

fn values(records: &[Record], kind: Kind, side: Side, key: &str) -> Vec<f64> {
    records
        .iter()
        .filter(|r| r.kind == kind && r.side == side && r.problem().is_none())
        .flat_map(|r| {
            r.outcome
                .metrics
                .iter()
                .filter(|m| m.key == key)
                .map(|m: &Metric| m.value)
        })
        .collect()
}

fn ratio(a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>) -> f64 {
    match (a, b) {
        (Some((x, _, _)), Some((y, _, _))) if y != 0.0 => x / y,
        _ => f64::NAN,
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "n/a".to_string()
    }
}

/// A program A is compared with.
pub struct Peer {
    pub name: String,
    pub cmd: String,
    /// Config lines of its own, on top of the shared ones.
    pub conf: Vec<String>,
}

pub struct Context {
    pub a_name: String,
    pub a_cmd: String,
    /// B first, then the other peers, in run order.
    pub peers: Vec<Peer>,
    pub relay_cmd: Option<String>,
    /// The config every mosquitto.conf broker gets, one line per setting.
    pub config: Vec<String>,
    /// Every broker got the same in-flight window and queue limits.
    pub parity: bool,
    /// rmqtt's stall timeout: runs with a later message are flagged.
    pub stall_ms: f64,
    pub rounds: usize,
    pub params: Params,
    pub kinds: Vec<Kind>,
    pub machine: String,
    pub started: String,
    pub wall_s: f64,
}

/// One bar per headline metric and peer (B first).
pub fn bars(ctx: &Context, records: &[Record]) -> Vec<Bar> {
    let mut out = Vec::new();
    for &kind in &ctx.kinds {
        for (key, higher_better, headline) in metric_keys(records, kind) {
            if !headline {
                continue;
            }
            let a = summary(&values(records, kind, Side::A, key));
            for (k, peer) in ctx.peers.iter().enumerate() {
                let b = summary(&values(records, kind, Side::Peer(k), key));
                let label = if k == 0 {
                    format!("{} {}", kind.name(), key)
                } else {
                    format!("  vs {}", peer.name)
                };
                out.push(Bar {
                    label,
                    ratio: ratio(a, b),
                    higher_better,
                });
            }
        }
    }
    out
}

fn peer_names(ctx: &Context) -> String {
    ctx.peers
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn chart(ctx: &Context, records: &[Record]) -> Vec<u8> {
    let title = format!(
        "{} / {} (log scale, green = {} better)",
        ctx.a_name,
        peer_names(ctx),
        ctx.a_name
    );
    png::ratio_chart(&title, &bars(ctx, records)).encode()
}

pub fn markdown(ctx: &Context, records: &[Record]) -> String {
    let a = &ctx.a_name;
    let b = ctx.peers.first().map_or("", |p| p.name.as_str());
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark: {a} vs {}\n", peer_names(ctx));
    let _ = writeln!(s, "- Taken: {} on {}", ctx.started, ctx.machine);
    let _ = writeln!(s, "- A = {a}: `{}`", ctx.a_cmd);
    for (k, p) in ctx.peers.iter().enumerate() {
        let own = if p.conf.is_empty() {
            String::new()
        } else {
            format!(", plus `{}`", p.conf.join("`, `"))
        };
        let label = if k == 0 { "B = " } else { "" };
        let _ = writeln!(s, "- {label}{}: `{}`{own}", p.name, p.cmd);
    }
    let _ = writeln!(
        s,
        "- Config of the mosquitto.conf brokers: `{}`{}",
        ctx.config.join("`, `"),
        if ctx.parity {
            " (parity mode: the same in-flight window and no queue limit for every broker)"
        } else {
            ""
        }
    );
    if let Some(r) = &ctx.relay_cmd {
        let _ = writeln!(
            s,
            "- Raw relay (single-threaded mio byte forwarder, no MQTT parsing): `{r}`"
        );
    }
    let _ = writeln!(
        s,
        "- {} rounds, run order {a}{}{} in every round, a fresh broker process per run; {} message counts{}; wall time {:.0} s",
        ctx.rounds,
        match peer_names(ctx) {
            p if p.is_empty() => String::new(),
            p => format!(", {p}"),
        },
        if ctx.relay_cmd.is_some() { ", relay" } else { "" },
        if ctx.params.quick { "quick" } else { "default" },
        if ctx.parity { ", parity mode" } else { "" },
        ctx.wall_s
    );
    let _ = writeln!(
        s,
        "- Cells: median (min–max) over the rounds. Ratio = {a} / peer of the medians; ↑ more is better, ↓ less is better. \
         Max latency (ms, longest time from a message being queued by the load generator to its arrival, worst run): \
         ⚠ over 1 s, ‼ over rmqtt's stall_timeout ({:.0} s).\n",
        ctx.stall_ms / 1000.0
    );
    let mut head = format!("| scenario | metric | {a} |");
    let mut rule = String::from("|---|---|---:|");
    for p in &ctx.peers {
        let _ = write!(head, " {} | {a}/{} |", p.name, p.name);
        rule.push_str("---:|---:|");
    }
    head.push_str(&format!(" relay | {a}/relay |"));
    rule.push_str("---:|---:|");
    let _ = writeln!(s, "{head}\n{rule}");
    for &kind in &ctx.kinds {
        for (key, higher_better, _) in metric_keys(records, kind) {
            let sa = summary(&values(records, kind, Side::A, key));
            let sr = summary(&values(records, kind, Side::Relay, key));
            let arrow = if higher_better { "↑" } else { "↓" };
            let mut row = format!("| {} | {key} {arrow} | {} |", kind.name(), fmt_summary(sa));
            for k in 0..ctx.peers.len() {
                let sp = summary(&values(records, kind, Side::Peer(k), key));
                let _ = write!(
                    row,
                    " {} | **{}** |",
                    fmt_summary(sp),
                    fmt_ratio(ratio(sa, sp))
                );
            }
            if sr.is_some() {
                let _ = write!(row, " {} | {} |", fmt_summary(sr), fmt_ratio(ratio(sa, sr)));
            } else {
                row.push_str("  |  |");
            }
            let _ = writeln!(s, "{row}");
        }
        // The worst message of each program in this scenario.
        let worst = |side| {
            records
                .iter()
                .filter(|r| r.kind == kind && r.side == side)
                .filter_map(Record::max_latency_ms)
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        let Some(la) = worst(Side::A) else { continue };
        let mut row = format!(
            "| {} | max latency ms ↓ | {} |",
            kind.name(),
            fmt_latency(la, ctx.stall_ms)
        );
        for k in 0..ctx.peers.len() {
            match worst(Side::Peer(k)) {
                Some(lp) => {
                    let _ = write!(
                        row,
                        " {} | {} |",
                        fmt_latency(lp, ctx.stall_ms),
                        fmt_ratio(la / lp)
                    );
                }
                None => row.push_str("  |  |"),
            }
        }
        match worst(Side::Relay) {
            Some(lr) => {
                let _ = write!(
                    row,
                    " {} | {} |",
                    fmt_latency(lr, ctx.stall_ms),
                    fmt_ratio(la / lr)
                );
            }
            None => row.push_str("  |  |"),
        }
        let _ = writeln!(s, "{row}");
    }
    let flagged: Vec<String> = records
        .iter()
        .filter_map(|r| {
            let ms = r.max_latency_ms().filter(|&ms| ms > 1000.0)?;
            Some(format!(
                "{} {} round {} ({})",
                r.kind.name(),
                r.name,
                r.round + 1,
                fmt_latency(ms, ctx.stall_ms)
            ))
        })
        .collect();
    if flagged.is_empty() {
        let _ = writeln!(s, "\nNo run had a message later than 1 s.");
    } else {
        let _ = writeln!(
            s,
            "\nRuns with a message later than 1 s: {}.",
            flagged.join(", ")
        );
    }
    let _ = writeln!(s, "\n## Correctness and cost per run\n");
    let _ = writeln!(
        s,
        "Lost, duplicated and reordered messages are summed over all rounds (lost and dup must be 0 \
         at QoS ≥ 1). CPU s (broker CPU time during the scenario), busy % (CPU s / scenario wall \
         time, setup included) and peak RSS (VmHWM) are medians over the rounds. A busy % well \
         below 100 means the single-threaded load generator, which shares the two cores, set the \
         pace: the throughput is then a lower bound for that program, and msgs/CPU-s compares \
         the brokers' efficiency more fairly.\n"
    );
    let _ = writeln!(s, "| scenario | program | msgs expected | lost | dup | reordered | max latency ms | CPU s | busy % | peak RSS KB | problems |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let sides: Vec<Side> = std::iter::once(Side::A)
        .chain((0..ctx.peers.len()).map(Side::Peer))
        .chain(std::iter::once(Side::Relay))
        .collect();
    for &kind in &ctx.kinds {
        for &side in &sides {
            let runs: Vec<&Record> = records
                .iter()
                .filter(|r| r.kind == kind && r.side == side)
                .collect();
            let Some(first) = runs.first() else { continue };
            let lost: u64 = runs.iter().map(|r| r.outcome.lost).sum();
            let dup: u64 = runs.iter().map(|r| r.outcome.dup).sum();
            let reordered: u64 = runs.iter().map(|r| r.outcome.reordered).sum();
            let expected: u64 = runs.iter().map(|r| r.outcome.expected).sum();
            let cpu = summary(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>()).map(|x| x.0);
            let busy = summary(
                &runs
                    .iter()
                    .filter(|r| r.wall_s > 0.0)
                    .map(|r| r.cpu_s / r.wall_s)
                    .collect::<Vec<_>>(),
            )
            .map(|x| x.0);
            let rss = summary(
                &runs
                    .iter()
                    .map(|r| r.peak_rss_kb as f64)
                    .collect::<Vec<_>>(),
            )
            .map(|x| x.0);
            let mut problems: Vec<String> = runs
                .iter()
                .filter_map(|r| r.problem().map(|p| format!("round {}: {p}", r.round + 1)))
                .collect();
            problems.extend(runs.iter().filter_map(|r| {
                let ms = r.max_latency_ms().filter(|&ms| ms > 1000.0)?;
                Some(format!(
                    "round {}: a message {ms:.0} ms late{}",
                    r.round + 1,
                    if ms > ctx.stall_ms {
                        ", over the stall timeout"
                    } else {
                        ""
                    }
                ))
            }));
            let worst = runs
                .iter()
                .filter_map(|r| r.max_latency_ms())
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let _ = writeln!(
                s,
                "| {} | {} | {expected} | {lost} | {dup} | {reordered} | {} | {} | {} | {} | {} |",
                kind.name(),
                first.name,
                worst
                    .map(|ms| fmt_latency(ms, ctx.stall_ms))
                    .unwrap_or_default(),
                cpu.map(|c| format!("{c:.3}")).unwrap_or_default(),
                busy.map(|b| format!("{:.0}", b * 100.0))
                    .unwrap_or_default(),
                rss.map(|r| format!("{r:.0}")).unwrap_or_default(),
                problems.join("<br>").replace('|', "/")
            );
        }
    }
    let _ = writeln!(s, "\n## Scenarios\n");
    for &kind in &ctx.kinds {
        let _ = writeln!(s, "- `{}`: {}", kind.name(), kind.describe(&ctx.params));
    }
    let _ = writeln!(
        s,
        "\nThe relay runs fan-in as 8 one-to-one streams (a byte forwarder cannot merge MQTT \
         streams without parsing them), so it is the ceiling of one hop on one thread.\n\n\
         Chart: results/bench.png, bars = {a}/peer per headline metric on a log scale (first bar of each metric: {a}/{b}), green where {a} is better."
    );
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_string()
    }
}

/// One line per run, then one summary line per scenario and metric.
pub fn jsonl(ctx: &Context, records: &[Record]) -> String {
    let mut s = String::new();
    for r in records {
        let metrics: Vec<String> = r
            .outcome
            .metrics
            .iter()
            .map(|m| format!("{}:{}", json_str(m.key), json_num(m.value)))
            .collect();
        let _ = writeln!(
            s,
            "{{\"type\":\"run\",\"started\":{},\"round\":{},\"scenario\":{},\"side\":{},\"program\":{},\
             \"metrics\":{{{}}},\"expected\":{},\"received\":{},\"lost\":{},\"dup\":{},\"reordered\":{},\"max_latency_ms\":{},\"cpu_s\":{},\"wall_s\":{},\
             \"peak_rss_kb\":{},\"problem\":{}}}",
            json_str(&ctx.started),
            r.round + 1,
            json_str(r.kind.name()),
            json_str(&r.side.tag()),
            json_str(&r.name),
            metrics.join(","),
            r.outcome.expected,
            r.outcome.received,
            r.outcome.lost,
            r.outcome.dup,
            r.outcome.reordered,
            r.max_latency_ms()
                .map(json_num)
                .unwrap_or_else(|| "null".into()),
            json_num(r.cpu_s),
            json_num(r.wall_s),
            r.peak_rss_kb,
            r.problem().map(|p| json_str(&p)).unwrap_or_else(|| "null".into()),
        );
    }
    for &kind in &ctx.kinds {
        for (key, higher_better, _) in metric_keys(records, kind) {
            let part = |side| {
                summary(&values(records, kind, side, key))
                    .map(|(m, lo, hi)| {
                        format!(
                            "{{\"median\":{},\"min\":{},\"max\":{}}}",
                            json_num(m),
                            json_num(lo),
                            json_num(hi)
                        )
                    })
                    .unwrap_or_else(|| "null".to_string())
            };
            let ra = summary(&values(records, kind, Side::A, key));
            let rb = summary(&values(records, kind, Side::Peer(0), key));
            let peers: Vec<String> = ctx
                .peers
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    let rp = summary(&values(records, kind, Side::Peer(k), key));
                    format!(
                        "{}:{{\"summary\":{},\"ratio\":{}}}",
                        json_str(&p.name),
                        part(Side::Peer(k)),
                        json_num(ratio(ra, rp))
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "{{\"type\":\"summary\",\"started\":{},\"scenario\":{},\"metric\":{},\"higher_better\":{},\
                 \"a\":{},\"b\":{},\"relay\":{},\"ratio\":{},\"peers\":{{{}}}}}",
                json_str(&ctx.started),
                json_str(kind.name()),
                json_str(key),
                higher_better,
                part(Side::A),
                part(Side::Peer(0)),
                part(Side::Relay),
                json_num(ratio(ra, rb)),
                peers.join(","),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&[f64::NAN]), None);
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    fn record(kind: Kind, side: Side, name: &str, round: usize, max_ms: f64) -> Record {
        Record {
            round,
            kind,
            side,
            name: name.into(),
            outcome: Outcome {
                metrics: vec![Metric {
                    key: "msgs/s",
                    value: 100.0 * (round + 1) as f64,
                    higher_better: true,
                    headline: true,
                }],
                expected: 10,
                received: 10,
                max_latency_us: Some(max_ms * 1000.0),
                ..Outcome::default()
            },
            cpu_s: 1.0,
            wall_s: 1.0,
            peak_rss_kb: 1000,
            crashed: None,
        }
    }

    fn context() -> Context {
        let peer = |name: &str| Peer {
            name: name.into(),
            cmd: format!("/bin/{name}"),
            conf: Vec::new(),
        };
        Context {
            a_name: "rmqtt".into(),
            a_cmd: "rmqtt -c {conf}".into(),
            peers: vec![peer("mosquitto"), peer("rumqttd")],
            relay_cmd: None,
            config: vec!["listener PORT".into()],
            parity: true,
            stall_ms: 2000.0,
            rounds: 2,
            params: Params {
                quick: true,
                conns: 1,
                timeout: std::time::Duration::from_secs(1),
                stall: std::time::Duration::from_secs(1),
            },
            kinds: vec![Kind::FanOutBurst],
            machine: "test".into(),
            started: "now".into(),
            wall_s: 1.0,
        }
    }

    #[test]
    fn max_latency_is_a_row_and_a_column_and_late_runs_are_flagged() {
        let k = Kind::FanOutBurst;
        let records = vec![
            record(k, Side::A, "rmqtt", 0, 3.0),
            record(k, Side::A, "rmqtt", 1, 2012.0),
            record(k, Side::Peer(0), "mosquitto", 0, 40.0),
            record(k, Side::Peer(0), "mosquitto", 1, 1500.0),
            record(k, Side::Peer(1), "rumqttd", 0, 5.0),
            record(k, Side::Peer(1), "rumqttd", 1, 6.0),
        ];
        let md = markdown(&context(), &records);
        assert!(
            md.contains("| rmqtt | mosquitto | rmqtt/mosquitto | rumqttd | rmqtt/rumqttd |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| fanout-burst | max latency ms ↓ | 2012 ‼ | 1500 ⚠ | 1.34 | 6.000 | 335.33 |"
            ),
            "{md}"
        );
        assert!(md.contains("fanout-burst rmqtt round 2 (2012 ‼)"), "{md}");
        assert!(
            md.contains("fanout-burst mosquitto round 2 (1500 ⚠)"),
            "{md}"
        );
        assert!(!md.contains("rumqttd round"), "{md}");
        assert!(
            md.contains("| fanout-burst | rmqtt | 20 | 0 | 0 | 0 | 2012 ‼ |"),
            "{md}"
        );
        assert!(
            md.contains("round 2: a message 2012 ms late, over the stall timeout"),
            "{md}"
        );
        assert!(md.contains("parity mode"), "{md}");
        let jsonl = jsonl(&context(), &records);
        assert!(jsonl.contains("\"max_latency_ms\":2012"), "{jsonl}");
        assert!(jsonl.contains("\"rumqttd\":{\"summary\""), "{jsonl}");
        assert_eq!(bars(&context(), &records).len(), 2, "one bar per peer");
    }

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(fmt_num(123456.0), "123k");
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(12.345), "12.35");
        assert_eq!(fmt_ratio(f64::NAN), "n/a");
    }
}
