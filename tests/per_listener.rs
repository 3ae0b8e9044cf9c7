//! `per_listener_settings true`, black-box, rmqtt and Mosquitto 2.0.11 side by side: two
//! listeners, each with its own `password_file`, `acl_file` and `allow_anonymous`. A user in
//! one listener's password file logs in there and is refused on the other; a user in both files
//! has each listener's ACL where it connected; a SIGHUP re-reads each listener's files. Every
//! step is run against both brokers and must give the same answer. Skipped without
//! `mosquitto`/`mosquitto_passwd` unless `RMQTT_REQUIRE_INTEROP` is set.

mod common;
mod common_interop;

use common::{Client, ConnectOpts};
use common_interop::{
    free_tcp_port, run, start_mosquitto_on, start_rmqtt_on, tools_or_skip, Broker, TempDir, STEP,
};
use std::path::Path;
use std::process::Command;

/// Adds `user:pass` to the password file `file` with `mosquitto_passwd -b` (`-c` creates it).
fn add_user(tool: &Path, file: &Path, user: &str, pass: &str, create: bool) {
    let mut cmd = Command::new(tool);
    if create {
        cmd.arg("-c");
    }
    cmd.arg("-b").arg(file).arg(user).arg(pass);
    run(&mut cmd, None, STEP).assert_success(&format!("mosquitto_passwd {user}"));
}

/// The CONNACK code for `user`/`pass` (anonymous without `user`) on `port`, MQTT 3.1.1.
fn login(port: u16, id: &str, user: Option<(&str, &str)>) -> u8 {
    let mut opts = ConnectOpts::new(id);
    if let Some((u, p)) = user {
        opts = opts.username(u).password(p);
    }
    let mut c = Client::open(port);
    c.send(&opts.encode());
    c.expect_connack().code
}

/// A logged-in 3.1.1 client (the test fails if the login is refused).
fn logged_in(port: u16, id: &str, user: &str, pass: &str) -> Client {
    let mut c = Client::open(port);
    c.send(&ConnectOpts::new(id).username(user).password(pass).encode());
    assert_eq!(c.expect_connack().code, 0, "{user} on port {port}");
    c
}

/// The broker's config after its first `listener A 127.0.0.1` line.
fn body(dir: &Path, port_b: u16) -> String {
    let d = dir.display();
    format!(
        "allow_anonymous true\n\
         password_file {d}/pw_a\n\
         acl_file {d}/acl_a\n\
         listener {port_b} 127.0.0.1\n\
         allow_anonymous false\n\
         password_file {d}/pw_b\n\
         acl_file {d}/acl_b\n"
    )
}

/// One broker's answers to the scenario, in order, for comparison with the other's.
fn scenario(b: &mut Broker, a: u16, bport: u16, dir: &Path, passwd: &Path) -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |what: &str, v: String| seen.push(format!("{what}: {v}"));
    // Logins: alice is only in A's file, bob only in B's, carol in both. A allows anonymous
    // clients, B does not.
    for (port, name) in [(a, "A"), (bport, "B")] {
        for (user, pass) in [
            ("alice", "pa"),
            ("bob", "pb"),
            ("carol", "pc"),
            ("alice", "pb"),
        ] {
            let code = login(port, &format!("{user}-{name}"), Some((user, pass)));
            note(&format!("{user}/{pass} on {name}"), code.to_string());
        }
        note(
            &format!("anonymous on {name}"),
            login(port, &format!("anon-{name}"), None).to_string(),
        );
    }
    // ACLs: on A carol may read and write a/#, on B only write b/#. Her publish to a/x
    // through B is denied by B's ACL; the next message her A subscriber gets is the one she
    // published through A afterwards.
    let mut sub = logged_in(a, "carol-sub", "carol", "pc");
    sub.subscribe(1, &[("a/#", 1)]);
    let mut via_b = logged_in(bport, "carol-b", "carol", "pc");
    via_b.publish_q1(1, "a/x", b"through B");
    let mut via_a = logged_in(a, "carol-a", "carol", "pc");
    via_a.publish_q1(1, "a/y", b"through A");
    let p = sub.expect_publish();
    note(
        "carol's A subscriber got",
        format!("{} {:?}", p.topic, String::from_utf8_lossy(&p.payload)),
    );
    // SIGHUP: dave is added to A's file; he logs in on A only, after the reload.
    add_user(passwd, &dir.join("pw_a"), "dave", "pd", false);
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(b.pid().to_string())
        .status();
    b.wait_log("Reloading config.");
    // The reload is done before the broker reads the next CONNECT: one thread does both.
    note(
        "dave on A after reload",
        login(a, "dave-A", Some(("dave", "pd"))).to_string(),
    );
    note(
        "dave on B after reload",
        login(bport, "dave-B", Some(("dave", "pd"))).to_string(),
    );
    seen
}

#[test]
fn two_listeners_with_their_own_password_files_acls_and_anonymous_rule() {
    let test = "two_listeners_with_their_own_password_files_acls_and_anonymous_rule";
    let Some(tools) = tools_or_skip(test, &["mosquitto", "mosquitto_passwd"]) else {
        return;
    };
    let (mosquitto, passwd) = (&tools[0], &tools[1]);
    let mut answers = Vec::new();
    for kind in ["rmqtt", "mosquitto"] {
        let dir = TempDir::new("per-listener");
        let d = dir.path();
        add_user(passwd, &d.join("pw_a"), "alice", "pa", true);
        add_user(passwd, &d.join("pw_a"), "carol", "pc", false);
        add_user(passwd, &d.join("pw_b"), "bob", "pb", true);
        add_user(passwd, &d.join("pw_b"), "carol", "pc", false);
        std::fs::write(
            d.join("acl_a"),
            "user alice\ntopic readwrite a/#\nuser carol\ntopic readwrite a/#\n",
        )
        .unwrap();
        std::fs::write(
            d.join("acl_b"),
            "user bob\ntopic readwrite b/#\nuser carol\ntopic write b/#\n",
        )
        .unwrap();
        let (a, b) = (free_tcp_port(), free_tcp_port());
        let conf = format!("per_listener_settings true\n{}", body(d, b));
        let started = match kind {
            "rmqtt" => start_rmqtt_on(a, &conf),
            _ => start_mosquitto_on(mosquitto, a, &conf),
        };
        let mut broker = match started {
            Ok(x) => x,
            Err(e) => panic!("{kind} did not start: {e}"),
        };
        let seen = scenario(&mut broker, a, b, d, passwd);
        answers.push((kind, seen, broker.log()));
    }
    let (ours, theirs) = (&answers[0], &answers[1]);
    for line in &ours.1 {
        eprintln!("rmqtt     {line}");
    }
    for line in &theirs.1 {
        eprintln!("mosquitto {line}");
    }
    assert_eq!(
        ours.1, theirs.1,
        "rmqtt log:\n{}\nmosquitto log:\n{}",
        ours.2, theirs.2
    );
    // And the outcome is the intended one, not just the same.
    let expect = [
        "alice/pa on A: 0",
        "bob/pb on A: 5",
        "carol/pc on A: 0",
        "alice/pb on A: 5",
        "anonymous on A: 0",
        "alice/pa on B: 5",
        "bob/pb on B: 0",
        "carol/pc on B: 0",
        "alice/pb on B: 5",
        "anonymous on B: 5",
        "carol's A subscriber got: a/y \"through A\"",
        "dave on A after reload: 0",
        "dave on B after reload: 5",
    ];
    assert_eq!(ours.1, expect);
}
