//! Signals and process chores, black-box: SIGHUP reloads the password file without dropping
//! connections, SIGTERM exits 0, removes the pid file and sends no wills, and `log_dest file`
//! writes Mosquitto-style lines.
//!
//! The password test needs `mosquitto_passwd`; without it, it is skipped unless
//! `RMQTT_REQUIRE_INTEROP` is set.

mod common;
mod common_interop;

use common::{Broker, ConnectOpts, WAIT};
use common_interop::{run, tools_or_skip, TempDir, STEP};
use rmqtt::protocol::{decode, Packet, Version};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn passwd(tool: &Path, dir: &Path, args: &[&str]) {
    run(Command::new(tool).args(args).current_dir(dir), None, STEP)
        .assert_success(&format!("mosquitto_passwd {args:?}"));
}

#[test]
fn sighup_reloads_password_file_and_keeps_connections() {
    let Some(tools) = tools_or_skip("sighup_reloads_password_file", &["mosquitto_passwd"]) else {
        return;
    };
    let dir = TempDir::new("hup");
    passwd(
        &tools[0],
        dir.path(),
        &["-c", "-b", "pw", "alice", "a-pass"],
    );
    let mut broker = Broker::with_config(&format!(
        "allow_anonymous false\npassword_file {}\n",
        dir.path().join("pw").display()
    ));
    let login = |id: &str, u: &str, p: &str| ConnectOpts::new(id).username(u).password(p);
    let mut alice = broker.client_with(&login("alice", "alice", "a-pass"));
    alice.subscribe(1, &[("hup/#", 1)]);

    let mut c = broker.raw();
    c.send(&login("bob", "bob", "b-pass").encode());
    assert_eq!(c.expect_connack().code, 5, "bob before the reload");
    c.expect_closed();

    passwd(&tools[0], dir.path(), &["-b", "pw", "bob", "b-pass"]);
    passwd(&tools[0], dir.path(), &["-D", "pw", "alice"]);
    broker.signal("HUP");
    // The loop logs this before reloading and serves no connection until it is done, so any
    // CONNECT read after the line is checked against the new file.
    broker.wait_log("Reloading config.");

    let mut bob = broker.client_with(&login("bob", "bob", "b-pass"));
    bob.publish_q1(1, "hup/x", b"after reload");
    let p = alice.expect_message("hup/x", b"after reload", 1);
    alice.send(&common::puback(p.pid));
    alice.sync();

    // alice was removed from the file: her live connection stays, a new login is refused.
    let mut c = broker.raw();
    c.send(&login("alice2", "alice", "a-pass").encode());
    assert_eq!(c.expect_connack().code, 5, "alice after the reload");
    c.expect_closed();
    bob.publish_q1(2, "hup/y", b"still here");
    alice.expect_message("hup/y", b"still here", 1);
    assert!(broker.is_alive());
}

/// Everything a subscriber receives until the broker closes its connection, decoded.
fn packets_until_close(c: &mut common::Client) -> Vec<Packet> {
    let bytes = c.expect_closed();
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while let Ok(Some((p, n))) = decode(rest, Version::V311, usize::MAX) {
        out.push(p);
        rest = &rest[n..];
    }
    assert!(rest.is_empty(), "trailing bytes {rest:02x?}");
    out
}

#[test]
fn sigterm_exits_cleanly_removes_pid_file_and_sends_no_will() {
    let dir = TempDir::new("term");
    let pid_file = dir.path().join("rmqtt.pid");
    let mut broker = Broker::with_config(&format!(
        "allow_anonymous true\npid_file {}\n",
        pid_file.display()
    ));
    broker.wait_ports(1);
    let text = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(text.trim(), broker.pid().to_string());

    // Control: a client that vanishes without DISCONNECT does get its will published.
    let mut watcher = broker.client("watcher");
    watcher.subscribe(1, &[("wills/#", 0)]);
    let mut gone = broker.raw();
    gone.send(
        &ConnectOpts::new("gone")
            .will("wills/gone", b"lost", 0, false)
            .encode(),
    );
    assert_eq!(gone.expect_connack().code, 0);
    drop(gone);
    watcher.expect_message("wills/gone", b"lost", 0);

    // The same kind of client is still connected when the broker is told to stop. Wills go
    // out before connections are closed, so had the shutdown published this one, the watcher
    // would receive it before its own connection closes.
    let mut victim = broker.raw();
    victim.send(
        &ConnectOpts::new("victim")
            .will("wills/victim", b"shutdown", 0, false)
            .encode(),
    );
    assert_eq!(victim.expect_connack().code, 0);
    watcher.sync();
    broker.signal("TERM");
    let seen = packets_until_close(&mut watcher);
    assert!(
        seen.iter().all(|p| !matches!(p, Packet::Publish(_))),
        "a will was published on clean shutdown: {seen:?}"
    );
    victim.expect_closed();
    let status = broker.wait_exit(WAIT);
    assert_eq!(status.code(), Some(0), "log: {:?}", broker.logs());
    assert!(!pid_file.exists(), "pid file left behind");
    broker.wait_log("terminating");
}

#[test]
fn sigint_also_exits_cleanly() {
    let mut broker = Broker::start();
    broker.wait_ports(1);
    let mut c = broker.client("c");
    broker.signal("INT");
    c.expect_closed();
    assert_eq!(broker.wait_exit(WAIT).code(), Some(0));
}

/// `1700000000: message`, Mosquitto's default log line.
fn mosquitto_style(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(t, rest)| {
        t.len() >= 10 && t.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
    })
}

#[test]
fn log_dest_file_writes_mosquitto_style_lines() {
    let dir = TempDir::new("logfile");
    let log = dir.path().join("rmqtt.log");
    let broker = Broker::with_config(&format!(
        "allow_anonymous true\nlog_dest stderr\nlog_dest file {}\nconnection_messages true\nlog_timestamp true\n",
        log.display()
    ));
    let c = broker.client("file-logger");
    c.disconnect();
    broker.wait_log("Client file-logger disconnected");
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Client file-logger disconnected") || Instant::now() >= deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().any(|l| l.ends_with(" running")), "{text}");
    let connected = lines
        .iter()
        .find(|l| l.contains("New client connected from 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no connection line in {text}"));
    assert!(
        connected.ends_with(" as file-logger (p2, c1, k60)."),
        "{connected}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Client file-logger disconnected.")),
        "{text}"
    );
    for l in &lines {
        assert!(mosquitto_style(l), "not `SECONDS: message`: {l:?}");
    }
}
