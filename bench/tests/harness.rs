//! End to end: the benchmark against Mosquitto on both sides (skipped when Mosquitto is not
//! installed) writes the three result files, with no QoS 1 message lost or duplicated in the
//! scenarios where Mosquitto keeps every message.

use std::process::Command;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

#[test]
fn quick_run_writes_table_jsonl_and_png() {
    if !std::path::Path::new(MOSQUITTO).exists() {
        eprintln!("skipped: {MOSQUITTO} not installed");
        return;
    }
    let out = std::env::temp_dir().join(format!("rmqtt-bench-test-{}", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_rmqtt-bench"))
        .args([
            "--quick",
            "--rounds",
            "1",
            "--only",
            "pairs-q1,retained,latency-q0",
        ])
        .args([
            "--a-cmd",
            &format!("{MOSQUITTO} -c {{conf}}"),
            "--a-name",
            "mosq-a",
        ])
        .args(["--peers", "mosquitto"])
        .args([
            "--relay-cmd",
            &format!("{} {{port}}", env!("CARGO_BIN_EXE_rmqtt-relay")),
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let md = std::fs::read_to_string(out.join("bench.md")).unwrap();
    assert!(md.contains("| pairs-q1 | msgs/s ↑ |"), "{md}");
    assert!(md.contains("| pairs-q1 | max latency ms ↓ |"), "{md}");
    assert!(md.contains("| max latency ms |"), "{md}");
    assert!(
        md.contains("| pairs-q1 | relay | 20000 | 0 | 0 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| retained | mosq-a | 2000 | 0 | 0 | 0 |"),
        "{md}"
    );
    let jsonl = std::fs::read_to_string(out.join("bench.jsonl")).unwrap();
    let runs = jsonl
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"run\""))
        .count();
    assert_eq!(runs, 7, "{jsonl}");
    assert!(jsonl
        .lines()
        .all(|l| l.starts_with('{') && l.ends_with('}')));
    let png = std::fs::read(out.join("bench.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let _ = std::fs::remove_dir_all(&out);
}
