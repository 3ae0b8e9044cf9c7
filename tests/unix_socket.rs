//! Unix domain sockets from the client side: `rmqtt_pub --unix` / `rmqtt_sub --unix` against
//! `mosquitto_pub --unix` / `mosquitto_sub --unix`, both talking to a Mosquitto 2.0 broker
//! with a `listener 0 /path/to.sock`; stdout (`-d` lines included), stderr and exit codes must
//! be the same, also for a socket that does not exist and a missing argument.
//!
//! Then rmqtt's own Unix listener, served to both clients.
//!
//! Skipped, with a message, when Mosquitto or its clients are missing (fails instead when
//! `RMQTT_REQUIRE_INTEROP` is set).

mod common_interop;

use common_interop::{run, start_mosquitto, tools_or_skip, Running, TempDir, STEP};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["rmqtt_pub", "rmqtt_sub"] {
        let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), bin.join(name));
    }
    bin
}

fn prog(bin: &Path, rmqtt: bool, applet: &str) -> PathBuf {
    if rmqtt {
        bin.join(format!("rmqtt_{applet}"))
    } else {
        PathBuf::from(format!("mosquitto_{applet}"))
    }
}

fn masked(s: &str) -> String {
    s.replace("mosquitto_", "X_").replace("rmqtt_", "X_")
}

#[test]
fn pub_and_sub_over_a_unix_socket_match_mosquitto() {
    let Some(tools) = tools_or_skip(
        "unix_socket_clients",
        &["mosquitto", "mosquitto_sub", "mosquitto_pub"],
    ) else {
        return;
    };
    let dir = TempDir::new("unix-clients");
    let bin = bin_dir(dir.path());
    let sock = dir.path().join("mqtt.sock");
    let sock_s = sock.to_str().unwrap().to_owned();
    let broker = start_mosquitto(
        tools.first().unwrap(),
        &format!("allow_anonymous true\nlog_type all\nlistener 0 {sock_s}\n"),
    );
    let deadline = Instant::now() + STEP;
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no socket:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut results = Vec::new();
    for rmqtt in [false, true] {
        let tag = if rmqtt { "r" } else { "m" };
        let sub_id = format!("usub-{tag}");
        let mut sub = Running::spawn(Command::new(prog(&bin, rmqtt, "sub")).args([
            "--unix", &sock_s, "-t", "u/t", "-q", "1", "-C", "1", "-v", "-d", "-i", &sub_id,
        ]));
        let deadline = Instant::now() + STEP;
        while !broker
            .log()
            .contains(&format!("Sending SUBACK to {sub_id}"))
        {
            assert!(Instant::now() < deadline, "no SUBACK:\n{}", broker.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let publ = run(
            Command::new(prog(&bin, rmqtt, "pub")).args([
                "--unix",
                &sock_s,
                "-t",
                "u/t",
                "-q",
                "1",
                "-m",
                "over unix",
                "-d",
                "-i",
                &format!("upub-{tag}"),
            ]),
            None,
            STEP,
        );
        let status = sub.wait_exit("subscriber");
        let pub_code = publ.code();
        let sub_out = sub.lines.join("\n").replace(&sub_id, "usub");
        results.push((
            sub_out,
            sub.stderr_text(),
            status.code(),
            publ.stdout.replace(&format!("upub-{tag}"), "upub"),
            publ.stderr,
            pub_code,
        ));
    }
    assert!(results[0].0.contains("u/t over unix"), "{:?}", results[0]);
    assert_eq!(results[0], results[1], "mosquitto vs rmqtt over --unix");

    let missing = dir.path().join("missing.sock");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["--unix", missing, "-t", "t"],
        vec!["--unix"],
        vec!["-t", "t", "--unix"],
    ] {
        for applet in ["sub", "pub"] {
            let mut full = args.clone();
            if applet == "pub" {
                full.extend(["-m", "x"]);
            }
            let m = run(
                Command::new(prog(&bin, false, applet)).args(&full),
                None,
                STEP,
            );
            let r = run(
                Command::new(prog(&bin, true, applet)).args(&full),
                None,
                STEP,
            );
            assert_eq!(
                (masked(&m.stdout), masked(&m.stderr), m.code()),
                (masked(&r.stdout), masked(&r.stderr), r.code()),
                "{applet} {full:?}"
            );
        }
    }
}

/// rmqtt's own `listener 0 /path/to.sock`: mosquitto_sub --unix and rmqtt_sub --unix receive
/// what mosquitto_pub --unix publishes; the peer counts as local for `allow_anonymous local`;
/// a stale socket file from an earlier run is replaced.
#[test]
fn broker_unix_listener_serves_both_clients() {
    let Some(_tools) = tools_or_skip("unix_listener", &["mosquitto_sub", "mosquitto_pub"]) else {
        return;
    };
    let dir = TempDir::new("unix-listener");
    let bin = bin_dir(dir.path());
    let sock = dir.path().join("rmqtt.sock");
    let sock_s = sock.to_str().unwrap().to_owned();
    // A stale socket left behind by a killed broker.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let broker = common_interop::start_rmqtt(&format!(
        "allow_anonymous local\nlog_type all\nlistener 0 {sock_s}\n"
    ));
    assert!(
        broker
            .log()
            .contains(&format!("Opening unix listen socket on path {sock_s}.")),
        "{}",
        broker.log()
    );
    for rmqtt in [false, true] {
        let id = format!("ux-{rmqtt}");
        let mut sub = Running::spawn(Command::new(prog(&bin, rmqtt, "sub")).args([
            "--unix", &sock_s, "-t", "ux/#", "-C", "1", "-v", "-i", &id, "-q", "1",
        ]));
        let deadline = Instant::now() + STEP;
        while !broker.log().contains(&format!("Sending SUBACK to {id}")) {
            assert!(Instant::now() < deadline, "no SUBACK:\n{}", broker.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let publ = run(
            Command::new("mosquitto_pub").args(["--unix", &sock_s, "-t", "ux/1", "-m", "local"]),
            None,
            STEP,
        );
        assert_eq!(publ.code(), Some(0), "{publ:?}");
        let status = sub.wait_exit("subscriber");
        assert_eq!(status.code(), Some(0));
        assert_eq!(sub.lines, vec!["ux/1 local".to_owned()], "rmqtt={rmqtt}");
    }
    // A Unix-socket peer is shown (and judged, for `allow_anonymous local`) as 127.0.0.1.
    assert!(
        broker
            .log()
            .contains("New connection from 127.0.0.1:0 on port 0."),
        "{}",
        broker.log()
    );
}

/// The same listener from UCI (`option port '0'` and a path as `bind_address`), the way the
/// OpenWrt package's /etc/config/rmqtt would say it.
#[test]
fn uci_unix_listener() {
    let dir = TempDir::new("unix-uci");
    let bin = bin_dir(dir.path());
    let sock = dir.path().join("uci.sock");
    let sock_s = sock.to_str().unwrap().to_owned();
    let uci = dir.path().join("rmqtt");
    std::fs::write(
        &uci,
        format!(
            "config mosquitto\n\toption allow_anonymous '1'\n\n\
             config listener\n\toption port '0'\n\toption bind_address '{sock_s}'\n"
        ),
    )
    .unwrap();
    let mut broker = Command::new(env!("CARGO_BIN_EXE_rmqtt"))
        .arg("-u")
        .arg(&uci)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + STEP;
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no socket from the UCI listener");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = run(
        Command::new(prog(&bin, true, "sub")).args(["--unix", &sock_s, "-t", "t", "-E"]),
        None,
        STEP,
    );
    let _ = broker.kill();
    let _ = broker.wait();
    assert_eq!(out.code(), Some(0), "{out:?}");
}
