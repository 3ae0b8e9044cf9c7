//! Turning the per-run records into medians, ratios, the Markdown table, JSON lines and the
//! chart. Pure functions of the records plus a few facts about the machine.

use crate::png::{self, Bar};
use crate::scenarios::{Kind, Metric, Outcome, Params};
use std::fmt::Write as _;

/// Which side of the comparison a run measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
    Relay,
}

impl Side {
    pub fn tag(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
            Side::Relay => "relay",
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

pub struct Context {
    pub a_name: String,
    pub b_name: String,
    pub a_cmd: String,
    pub b_cmd: String,
    pub relay_cmd: Option<String>,
    /// The config both brokers get, one line per setting.
    pub config: Vec<String>,
    pub rounds: usize,
    pub params: Params,
    pub kinds: Vec<Kind>,
    pub machine: String,
    pub started: String,
    pub wall_s: f64,
}

/// One bar per headline metric.
pub fn bars(ctx: &Context, records: &[Record]) -> Vec<Bar> {
    let mut out = Vec::new();
    for &kind in &ctx.kinds {
        for (key, higher_better, headline) in metric_keys(records, kind) {
            if !headline {
                continue;
            }
            let a = summary(&values(records, kind, Side::A, key));
            let b = summary(&values(records, kind, Side::B, key));
            out.push(Bar {
                label: format!("{} {}", kind.name(), key),
                ratio: ratio(a, b),
                higher_better,
            });
        }
    }
    out
}

pub fn chart(ctx: &Context, records: &[Record]) -> Vec<u8> {
    let title = format!(
        "{} / {} (log scale, green = {} better)",
        ctx.a_name, ctx.b_name, ctx.a_name
    );
    png::ratio_chart(&title, &bars(ctx, records)).encode()
}

pub fn markdown(ctx: &Context, records: &[Record]) -> String {
    let (a, b) = (&ctx.a_name, &ctx.b_name);
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark: {a} vs {b}\n");
    let _ = writeln!(s, "- Taken: {} on {}", ctx.started, ctx.machine);
    let _ = writeln!(s, "- A = {a}: `{}`", ctx.a_cmd);
    let _ = writeln!(s, "- B = {b}: `{}`", ctx.b_cmd);
    let _ = writeln!(s, "- Both brokers' config: `{}`", ctx.config.join("`, `"));
    if let Some(r) = &ctx.relay_cmd {
        let _ = writeln!(
            s,
            "- Raw relay (single-threaded mio byte forwarder, no MQTT parsing): `{r}`"
        );
    }
    let _ = writeln!(
        s,
        "- {} rounds, run order A B{} in every round, a fresh broker process per run; {} mode; wall time {:.0} s",
        ctx.rounds,
        if ctx.relay_cmd.is_some() { " relay" } else { "" },
        if ctx.params.quick { "quick" } else { "default" },
        ctx.wall_s
    );
    let _ = writeln!(
        s,
        "- Cells: median (min–max) over the rounds. Ratio = {a} / {b} of the medians; ↑ more is better, ↓ less is better.\n"
    );
    let _ = writeln!(
        s,
        "| scenario | metric | {a} | {b} | {a}/{b} | relay | {a}/relay |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for &kind in &ctx.kinds {
        for (key, higher_better, _) in metric_keys(records, kind) {
            let sa = summary(&values(records, kind, Side::A, key));
            let sb = summary(&values(records, kind, Side::B, key));
            let sr = summary(&values(records, kind, Side::Relay, key));
            let arrow = if higher_better { "↑" } else { "↓" };
            let (relay, vs_relay) = if sr.is_some() {
                (fmt_summary(sr), fmt_ratio(ratio(sa, sr)))
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                s,
                "| {} | {key} {arrow} | {} | {} | **{}** | {relay} | {vs_relay} |",
                kind.name(),
                fmt_summary(sa),
                fmt_summary(sb),
                fmt_ratio(ratio(sa, sb))
            );
        }
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
    let _ = writeln!(s, "| scenario | program | msgs expected | lost | dup | reordered | CPU s | busy % | peak RSS KB | problems |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for &kind in &ctx.kinds {
        for side in [Side::A, Side::B, Side::Relay] {
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
            let problems: Vec<String> = runs
                .iter()
                .filter_map(|r| r.problem().map(|p| format!("round {}: {p}", r.round + 1)))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {expected} | {lost} | {dup} | {reordered} | {} | {} | {} | {} |",
                kind.name(),
                first.name,
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
         Chart: results/bench.png, bars = {a}/{b} per headline metric on a log scale, green where {a} is better."
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
             \"metrics\":{{{}}},\"expected\":{},\"received\":{},\"lost\":{},\"dup\":{},\"reordered\":{},\"cpu_s\":{},\"wall_s\":{},\
             \"peak_rss_kb\":{},\"problem\":{}}}",
            json_str(&ctx.started),
            r.round + 1,
            json_str(r.kind.name()),
            json_str(r.side.tag()),
            json_str(&r.name),
            metrics.join(","),
            r.outcome.expected,
            r.outcome.received,
            r.outcome.lost,
            r.outcome.dup,
            r.outcome.reordered,
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
            let rb = summary(&values(records, kind, Side::B, key));
            let _ = writeln!(
                s,
                "{{\"type\":\"summary\",\"started\":{},\"scenario\":{},\"metric\":{},\"higher_better\":{},\
                 \"a\":{},\"b\":{},\"relay\":{},\"ratio\":{}}}",
                json_str(&ctx.started),
                json_str(kind.name()),
                json_str(key),
                higher_better,
                part(Side::A),
                part(Side::B),
                part(Side::Relay),
                json_num(ratio(ra, rb)),
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

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(fmt_num(123456.0), "123k");
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(12.345), "12.35");
        assert_eq!(fmt_ratio(f64::NAN), "n/a");
    }
}
