//! rmqtt_rr against mosquitto_rr 2.0: the same request/response exchanges through a Mosquitto
//! broker, with a responder made of mosquitto_sub (which prints the request's Response Topic
//! and Correlation Data) and mosquitto_pub (which answers); both tools' stdout (`-d` lines
//! included), stderr and exit code, and what the responder saw, must be the same. Also `-W`
//! running out with no responder, MQTT 3.1.1 (no properties), and missing arguments.
//!
//! Intended difference, not exercised here: on SIGINT / SIGTERM rmqtt_rr disconnects and
//! exits 0; mosquitto_rr has no handler for them.
//!
//! Skipped, with a message, when Mosquitto or its clients are missing (fails instead when
//! `RMQTT_REQUIRE_INTEROP` is set).

mod common_interop;

use common_interop::{run, start_mosquitto, tools_or_skip, Broker, Running, TempDir, STEP};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn rr(bin: &Path, rmqtt: bool) -> PathBuf {
    if rmqtt {
        bin.join("rmqtt_rr")
    } else {
        PathBuf::from("mosquitto_rr")
    }
}

fn wait_log(broker: &Broker, needle: &str) {
    let deadline = Instant::now() + STEP;
    while !broker.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "never logged {needle:?}:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One exchange; returns (rr stdout, rr stderr, rr exit code, the request as the responder
/// printed it).
fn exchange(
    broker: &Broker,
    bin: &Path,
    rmqtt: bool,
    args: &[&str],
) -> (String, String, Option<i32>, String) {
    let port = broker.port.to_string();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    // Unique, so that waiting for its SUBACK never matches an earlier exchange's line.
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = if rmqtt { "r" } else { "m" };
    let responder_id = format!("responder-{tag}{n}");
    let mut responder = Running::spawn(Command::new("mosquitto_sub").args([
        "-p",
        &port,
        "-t",
        "rr/req",
        "-C",
        "1",
        "-V",
        "5",
        "-F",
        "%t %p rt=%R cd=%D",
        "-i",
        &responder_id,
    ]));
    wait_log(broker, &format!("Sending SUBACK to {responder_id}"));
    let answer_port = port.clone();
    let answer = std::thread::spawn(move || {
        // Answers once the request has arrived: the responder exits after one message.
        let status = responder.wait_exit("responder");
        assert!(status.success());
        let seen = responder.lines.join("\n");
        let st = Command::new("mosquitto_pub")
            .args(["-p", &answer_port, "-t", "rr/resp", "-m", "pong", "-q", "1"])
            .status()
            .unwrap();
        assert!(st.success());
        seen
    });
    let mut full = vec![
        "-p",
        &port,
        "-t",
        "rr/req",
        "-e",
        "rr/resp",
        "-i",
        "rr-client",
    ];
    full.extend_from_slice(args);
    let out = run(Command::new(rr(bin, rmqtt)).args(&full), None, STEP);
    let seen = answer.join().unwrap();
    let code = out.code();
    (out.stdout, out.stderr, code, seen)
}

#[test]
fn rr_matches_mosquitto_rr() {
    let Some(tools) = tools_or_skip(
        "rr",
        &[
            "mosquitto",
            "mosquitto_sub",
            "mosquitto_pub",
            "mosquitto_rr",
        ],
    ) else {
        return;
    };
    let dir = TempDir::new("rr");
    let bin = rr_applet(&dir);
    let broker = start_mosquitto(
        tools.first().unwrap(),
        "allow_anonymous true\nlog_type all\n",
    );
    for args in [
        vec!["-m", "ping", "-d", "-q", "1", "-v"],
        vec![
            "-m",
            "ping",
            "-D",
            "publish",
            "correlation-data",
            "req-42",
            "-F",
            "%t %p %q",
        ],
        vec!["-n", "-q", "2", "-d"],
    ] {
        let m = exchange(&broker, &bin, false, &args);
        let r = exchange(&broker, &bin, true, &args);
        assert_eq!(m.2, Some(0), "{args:?}: {m:?}");
        assert!(m.3.contains("rt=rr/resp"), "{m:?}");
        assert_eq!(m, r, "mosquitto_rr vs rmqtt_rr {args:?}");
    }

    // No responder: -W runs out.
    let port = broker.port.to_string();
    let base = [
        "-p",
        port.as_str(),
        "-t",
        "rr/none",
        "-e",
        "rr/never",
        "-m",
        "x",
        "-i",
        "rr-wait",
    ];
    for extra in [vec!["-W", "1", "-d"], vec!["-W", "1", "-V", "311", "-d"]] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(&extra);
        let m = run(Command::new(rr(&bin, false)).args(&args), None, STEP);
        let r = run(Command::new(rr(&bin, true)).args(&args), None, STEP);
        assert_eq!(m.code(), Some(27), "{m:?}");
        assert_eq!(
            (&m.stdout, &m.stderr, m.code()),
            (&r.stdout, &r.stderr, r.code()),
            "timeout {extra:?}"
        );
    }

    // Missing pieces.
    for args in [
        vec!["-t", "x", "-m", "y"],
        vec!["-e", "x", "-m", "y"],
        vec!["-t", "x", "-e", "y"],
    ] {
        let m = run(Command::new(rr(&bin, false)).args(&args), None, STEP);
        let r = run(Command::new(rr(&bin, true)).args(&args), None, STEP);
        assert_eq!(
            (
                m.code(),
                &m.stdout,
                m.stderr.replace("mosquitto_rr", "X_rr")
            ),
            (r.code(), &r.stdout, r.stderr.replace("rmqtt_rr", "X_rr")),
            "{args:?}"
        );
    }
}

/// A QoS 2 response: both tools complete its flow (PUBREC, PUBREL, PUBCOMP) before printing
/// it and exiting, with the same `-d` lines. The response is a retained QoS 2 message, so it
/// arrives as soon as the subscription is made.
#[test]
fn rr_completes_a_qos2_response() {
    let Some(tools) = tools_or_skip(
        "rr_completes_a_qos2_response",
        &["mosquitto", "mosquitto_pub", "mosquitto_rr"],
    ) else {
        return;
    };
    let dir = TempDir::new("rr-qos2");
    let bin = rr_applet(&dir);
    let broker = start_mosquitto(
        tools.first().unwrap(),
        "allow_anonymous true\nlog_type all\n",
    );
    let port = broker.port.to_string();
    let st = Command::new("mosquitto_pub")
        .args(["-p", &port, "-t", "rr/resp2", "-m", "pong", "-r", "-q", "2"])
        .status()
        .unwrap();
    assert!(st.success());
    let mut outputs = Vec::new();
    for rmqtt in [false, true] {
        let id = if rmqtt { "rr-q2-r" } else { "rr-q2-m" };
        let args = [
            "-p", &port, "-t", "rr/req2", "-e", "rr/resp2", "-m", "x", "-q", "2", "-d", "-i", id,
        ];
        let out = run(Command::new(rr(&bin, rmqtt)).args(args), None, STEP);
        assert_eq!(out.code(), Some(0), "{out:?}");
        assert!(
            out.stdout.contains(&format!("Client {id} sending PUBCOMP")),
            "{out:?}"
        );
        let stdout = out.stdout.replace(id, "ID");
        let (request, response) = qos2_flows(&stdout);
        assert_eq!(response.last(), Some(&"pong"), "{out:?}");
        wait_log(&broker, &format!("Received PUBCOMP from {id}"));
        outputs.push((request.join("\n"), response.join("\n"), out.stderr));
    }
    assert_eq!(outputs[0], outputs[1], "mosquitto_rr vs rmqtt_rr");
}

/// The `-d` lines of the request's own QoS 2 flow (packet id 2) and the rest (the
/// response's flow, id 1, and the printed response), each in its order. Where the request's
/// PUBCOMP falls among the response's lines depends on the broker's timing, in
/// mosquitto_rr as in rmqtt_rr, so the two flows are compared apart. Whether that PUBCOMP
/// is read at all is a race too: both tools exit as soon as the response is printed
/// (mosquitto_rr's message callback sets its disconnect state), so its "received" line is
/// left out.
fn qos2_flows(stdout: &str) -> (Vec<&str>, Vec<&str>) {
    let (request, response): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .partition(|l| l.contains(" m2,") || l.contains("(m2)") || l.contains("(Mid: 2"));
    let request = request
        .into_iter()
        .filter(|l| !l.contains("received PUBCOMP"))
        .collect();
    (request, response)
}

/// A `bin` directory in `dir` holding `rmqtt_rr`, a link to the multicall binary.
fn rr_applet(dir: &TempDir) -> std::path::PathBuf {
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), bin.join("rmqtt_rr")).unwrap();
    bin
}
