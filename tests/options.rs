//! Mosquitto options rmqtt now honours, each checked against Mosquitto 2.0 with the same
//! config and clients where Mosquitto is installed (else against rmqtt alone, with the
//! behaviour Mosquitto shows).
//!
//! - `use_username_as_clientid true`: the username names the session (a second login as the
//!   same user takes the first one over, whatever client id it sends; the log says
//!   `as alice`), and a client without a username is refused as not authorised.

mod common_interop;

use common_interop::{find_tool, run, start_mosquitto, start_rmqtt, Broker, Running, STEP};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// (takeover seen by the first client, the connect line, anonymous client's stderr and code)
fn use_username_as_clientid(broker: &Broker) -> (bool, bool, String, Option<i32>) {
    let port = broker.port.to_string();
    let mut first = Running::spawn(Command::new("mosquitto_sub").args([
        "-p", &port, "-t", "t", "-i", "phone-1", "-u", "alice", "-P", "x", "-V", "5",
    ]));
    wait_log(broker, "Sending SUBACK to alice");
    let connect_line = broker.log().contains(" as alice (p5");
    // Same user, another client id: takes the session over, so the first one is disconnected
    // (mosquitto_sub then reconnects, which the test does not wait for).
    let second = run(
        Command::new("mosquitto_sub").args([
            "-p", &port, "-t", "t", "-i", "phone-2", "-u", "alice", "-P", "x", "-E",
        ]),
        None,
        STEP,
    );
    assert_eq!(second.code(), Some(0), "{second:?}");
    wait_log(
        broker,
        "Client alice already connected, closing old connection.",
    );
    first.kill();
    let anon = run(
        Command::new("mosquitto_pub").args(["-p", &port, "-t", "t", "-m", "x", "-i", "nobody"]),
        None,
        STEP,
    );
    let code = anon.code();
    (true, connect_line, anon.stderr, code)
}

#[test]
fn use_username_as_clientid_names_the_session() {
    if find_tool("mosquitto_sub").is_none() {
        common_interop::skip_or_fail("use_username_as_clientid", "mosquitto_sub missing");
        return;
    }
    let body = "allow_anonymous true\nuse_username_as_clientid true\nlog_type all\n";
    let r = use_username_as_clientid(&start_rmqtt(body));
    assert!(r.1, "connect line names alice");
    assert_eq!(r.3, Some(5), "{r:?}");
    assert!(r.2.contains("not authorised"), "{r:?}");
    if let Some(mosquitto) = find_tool("mosquitto") {
        let m = use_username_as_clientid(&start_mosquitto(&mosquitto, body));
        assert_eq!(m, r, "Mosquitto vs rmqtt");
    }
}

#[test]
fn use_username_as_clientid_from_uci() {
    let dir = common_interop::TempDir::new("opt-uci");
    let f = dir.path().join("rmqtt");
    std::fs::write(
        &f,
        "config listener\n\toption port '1883'\n\toption use_username_as_clientid '1'\n",
    )
    .unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_rmqtt"))
            .arg("-u")
            .arg(&f)
            .arg("--test-config"),
        None,
        STEP,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("\nuse_username_as_clientid: true\n"),
        "{}",
        out.stdout
    );
}
