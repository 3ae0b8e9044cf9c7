//! Authentication and authorisation, black-box: password files written by Debian's
//! `mosquitto_passwd`, CONNACK codes for wrong and unknown credentials (3.1.1 and 5.0), what
//! `mosquitto_sub` prints when refused (compared with a real Mosquitto), and the ACL file: each
//! access kind, `pattern` with `%c`/`%u`, retained messages filtered by read access, and wills
//! refused at CONNECT.
//!
//! The ACL tests talk raw MQTT to whatever `start_under_test` starts, so
//! `RMQTT_INTEROP_BROKER=mosquitto cargo test --test auth` checks their expectations against
//! Mosquitto 2.0. The one deliberate difference is marked: rmqtt answers 0x80 to a SUBSCRIBE whose
//! filter no readable rule can ever match, where Mosquitto 2.0 grants every SUBSCRIBE and only
//! filters the deliveries. Without `mosquitto_passwd` the password tests are skipped unless
//! `RMQTT_REQUIRE_INTEROP` is set.

mod common;
mod common_interop;

use common::{frame, put_str, Broker, Client, ConnectOpts};
use common_interop::{run, start_mosquitto, start_under_test, tools_or_skip, TempDir, STEP};
use rmqtt::protocol::{decode, Packet, Version};
use std::path::{Path, PathBuf};
use std::process::Command;

/// True unless the ACL tests were pointed at Mosquitto, for the assertions where rmqtt is
/// deliberately stricter.
fn rmqtt_under_test() -> bool {
    std::env::var("RMQTT_INTEROP_BROKER").as_deref() != Ok("mosquitto")
}

/// A password file made by `mosquitto_passwd -b` with `users`; `None` when the tool is missing
/// and the test should be skipped.
fn password_file(test: &str, dir: &Path, users: &[(&str, &str)]) -> Option<PathBuf> {
    let tools = tools_or_skip(test, &["mosquitto_passwd"])?;
    let file = dir.join("passwd");
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut args = vec!["-b", "passwd", user, pass];
        if i == 0 {
            args.insert(0, "-c");
        }
        run(
            Command::new(&tools[0]).args(&args).current_dir(dir),
            None,
            STEP,
        )
        .assert_success(&format!("mosquitto_passwd {args:?}"));
    }
    Some(file)
}

/// Sends `opts` and returns the CONNACK code; a refusal must also close the connection.
fn connack_v311(broker: &Broker, opts: &ConnectOpts) -> u8 {
    let mut c = broker.raw();
    c.send(&opts.encode());
    let code = c.expect_connack().code;
    if code != 0 {
        c.expect_closed();
    }
    code
}

/// A 5.0 CONNECT without properties.
fn connect_v5(client_id: &str, username: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut flags = 0x02u8;
    let mut payload = Vec::new();
    put_str(&mut payload, client_id.as_bytes());
    if let Some(u) = username {
        flags |= 0x80;
        put_str(&mut payload, u.as_bytes());
    }
    if let Some(p) = password {
        flags |= 0x40;
        put_str(&mut payload, p.as_bytes());
    }
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.extend_from_slice(&[5, flags, 0, 60, 0]);
    body.extend_from_slice(&payload);
    frame(0x10, &body)
}

/// The reason code of the 5.0 CONNACK the broker answers `connect` with. A refused client is
/// closed right after the CONNACK, so everything up to the close is decoded.
fn connack_v5(port: u16, connect: &[u8], refused: bool) -> u8 {
    let mut c = Client::open(port);
    c.send(connect);
    let bytes = if refused {
        c.expect_closed()
    } else {
        let mut got = Vec::new();
        let mut one = [0u8; 1];
        use std::io::Read;
        while decode(&got, Version::V5, usize::MAX)
            .ok()
            .flatten()
            .is_none()
        {
            let n = c.stream.read(&mut one).expect("read CONNACK");
            assert_ne!(n, 0, "closed before a CONNACK");
            got.extend_from_slice(&one);
        }
        got
    };
    match decode(&bytes, Version::V5, usize::MAX) {
        Ok(Some((Packet::ConnAck(a), _))) => a.code,
        other => panic!("expected a 5.0 CONNACK, got {other:?} from {bytes:02x?}"),
    }
}

#[test]
fn password_file_from_mosquitto_passwd() {
    let dir = TempDir::new("auth-pw");
    let Some(pw) = password_file(
        "password_file_from_mosquitto_passwd",
        dir.path(),
        &[("alice", "s3cret"), ("bob", "hunter2")],
    ) else {
        return;
    };
    let broker = Broker::with_config(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let ok = |id: &str, u: &str, p: &str| ConnectOpts::new(id).username(u).password(p);
    assert_eq!(connack_v311(&broker, &ok("a", "alice", "s3cret")), 0);
    assert_eq!(connack_v311(&broker, &ok("b", "bob", "hunter2")), 0);
    assert_eq!(connack_v311(&broker, &ok("c", "alice", "wrong")), 5);
    assert_eq!(connack_v311(&broker, &ok("d", "alice", "hunter2")), 5);
    assert_eq!(connack_v311(&broker, &ok("e", "mallory", "s3cret")), 5);
    assert_eq!(
        connack_v311(&broker, &ConnectOpts::new("f").username("alice")),
        5,
        "user name without a password"
    );
    assert_eq!(
        connack_v311(&broker, &ConnectOpts::new("g")),
        5,
        "allow_anonymous false and no user name"
    );
    assert_eq!(
        connack_v311(
            &broker,
            &ConnectOpts::v31("h").username("bob").password("hunter2")
        ),
        0,
        "MQTT 3.1 with the right password"
    );
    assert_eq!(
        connack_v311(
            &broker,
            &ConnectOpts::v31("i").username("bob").password("x")
        ),
        5,
        "MQTT 3.1 with a wrong password"
    );
    broker.wait_log("disconnected, not authorised");

    let port = broker.port;
    assert_eq!(
        connack_v5(
            port,
            &connect_v5("v1", Some("alice"), Some("s3cret")),
            false
        ),
        0
    );
    assert_eq!(
        connack_v5(port, &connect_v5("v2", Some("alice"), Some("wrong")), true),
        0x87
    );
    assert_eq!(
        connack_v5(
            port,
            &connect_v5("v3", Some("mallory"), Some("s3cret")),
            true
        ),
        0x87
    );
    assert_eq!(connack_v5(port, &connect_v5("v4", None, None), true), 0x87);
    let mut sub = broker.client_with(&ok("s", "alice", "s3cret"));
    sub.subscribe(1, &[("t/#", 1)]);
    let mut publisher = broker.client_with(&ok("p", "bob", "hunter2"));
    publisher.publish_q1(1, "t/x", b"authenticated");
    sub.expect_message("t/x", b"authenticated", 1);
}

/// Allows anonymous clients too: a password file does not turn anonymous access off, but a
/// client that gives a user name must still prove it.
#[test]
fn password_file_with_anonymous_access() {
    let dir = TempDir::new("auth-anon");
    let Some(pw) = password_file(
        "password_file_with_anonymous_access",
        dir.path(),
        &[("alice", "s3cret")],
    ) else {
        return;
    };
    let broker = Broker::with_config(&format!(
        "allow_anonymous true\npassword_file {}\n",
        pw.display()
    ));
    assert_eq!(connack_v311(&broker, &ConnectOpts::new("anon")), 0);
    let bad = ConnectOpts::new("x").username("alice").password("nope");
    assert_eq!(connack_v311(&broker, &bad), 5);
    let unknown = ConnectOpts::new("y").username("nobody").password("nope");
    assert_eq!(connack_v311(&broker, &unknown), 5);
}

/// `mosquitto_sub` refused by rmqtt prints what it prints when refused by Mosquitto, and exits
/// with the same code.
#[test]
fn mosquitto_sub_not_authorised_like_mosquitto() {
    let test = "mosquitto_sub_not_authorised_like_mosquitto";
    let Some(tools) = tools_or_skip(test, &["mosquitto_sub", "mosquitto"]) else {
        return;
    };
    let dir = TempDir::new("auth-sub");
    let Some(pw) = password_file(test, dir.path(), &[("alice", "s3cret")]) else {
        return;
    };
    let body = format!("allow_anonymous false\npassword_file {}\n", pw.display());
    let rmqtt = common_interop::start_rmqtt(&body);
    let mosquitto = start_mosquitto(&tools[1], &body);
    for (user, pass) in [("alice", "wrong"), ("mallory", "s3cret")] {
        let sub = |port: u16| {
            run(
                Command::new(&tools[0]).args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-u",
                    user,
                    "-P",
                    pass,
                    "-t",
                    "t",
                    "-C",
                    "1",
                    "-W",
                    "10",
                ]),
                None,
                STEP,
            )
        };
        let ours = sub(rmqtt.port);
        let theirs = sub(mosquitto.port);
        assert!(
            theirs
                .stderr
                .contains("Connection error: Connection Refused: not authorised."),
            "reference run against mosquitto: {theirs:?}\n{}",
            mosquitto.log()
        );
        assert!(
            ours.stderr
                .contains("Connection error: Connection Refused: not authorised."),
            "{user}/{pass}: {ours:?}\nbroker log:\n{}",
            rmqtt.log()
        );
        assert!(ours.code().is_some_and(|c| c != 0), "{ours:?}");
        assert_eq!(
            ours.code(),
            theirs.code(),
            "exit code against rmqtt vs mosquitto"
        );
    }
    let good = run(
        Command::new(&tools[0]).args([
            "-h",
            "127.0.0.1",
            "-p",
            &rmqtt.port.to_string(),
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-t",
            "t",
            "-C",
            "1",
            "-W",
            "1",
        ]),
        None,
        STEP,
    );
    assert!(
        !good.stderr.contains("not authorised"),
        "the right password must be accepted: {good:?}"
    );
}

const ACL: &str = "\
# Lines before any `user` line: anonymous clients only.
topic read public/#
topic write inbox/anon

user admin
topic readwrite #

user reader
topic read data/#

user writer
topic write data/#

user both
topic readwrite shared/#
topic deny shared/secret

pattern readwrite clients/%c/#
pattern read users/%u/#
";

/// A broker under test with [`ACL`]; user names are not checked (no password file).
fn acl_broker(dir: &TempDir) -> common_interop::Broker {
    let acl = dir.path().join("acl");
    std::fs::write(&acl, ACL).unwrap();
    start_under_test(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ))
}

fn login(port: u16, id: &str, user: Option<&str>) -> Client {
    let mut opts = ConnectOpts::new(id);
    opts.username = user.map(str::to_owned);
    let mut c = Client::open(port);
    c.send(&opts.encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0, "CONNACK for {id}/{user:?}");
    c
}

/// SUBSCRIBE one filter at QoS 1; returns the SUBACK code.
fn sub_code(c: &mut Client, pid: u16, filter: &str) -> u8 {
    c.send(&common::subscribe(pid, &[(filter, 1)]));
    match c.expect_packet() {
        Packet::SubAck(a) => {
            assert_eq!(a.pid, pid);
            assert_eq!(a.codes.len(), 1);
            a.codes[0]
        }
        p => panic!("expected SUBACK, got {p:?}"),
    }
}

/// Subscribes where the ACL can deliver something: must be granted.
fn sub_ok(c: &mut Client, pid: u16, filter: &str) {
    assert_eq!(sub_code(c, pid, filter), 1, "SUBACK for {filter}");
}

/// Subscribes where no readable rule can ever match: rmqtt refuses with 0x80 (Mosquitto 2.0
/// grants it and then delivers nothing, which the callers check as well).
fn sub_refused(c: &mut Client, pid: u16, filter: &str) {
    let code = sub_code(c, pid, filter);
    if rmqtt_under_test() {
        assert_eq!(code, 0x80, "SUBACK for {filter}");
    }
}

/// Receives one QoS 1 message and acknowledges it.
fn recv(c: &mut Client, topic: &str, payload: &[u8]) {
    let p = c.expect_message(topic, payload, 1);
    c.send(&common::puback(p.pid));
}

#[test]
fn acl_read_and_write() {
    let dir = TempDir::new("acl-rw");
    let b = acl_broker(&dir);
    let mut obs = login(b.port, "obs", Some("reader"));
    sub_ok(&mut obs, 1, "data/#");
    let mut writer = login(b.port, "w", Some("writer"));
    let mut reader = login(b.port, "r", Some("reader"));

    writer.publish_q1(1, "data/w", b"w1");
    recv(&mut obs, "data/w", b"w1");

    // A reader may not write: 3.1.1 has no way to say so, so the PUBLISH is acknowledged and
    // dropped. The next writer message must be the next thing the observer sees.
    reader.publish_q1(2, "data/r", b"r1");
    writer.publish_q1(3, "data/w", b"w2");
    recv(&mut obs, "data/w", b"w2");
    obs.sync();

    // A writer may not read.
    sub_refused(&mut writer, 4, "data/#");
    writer.publish_q1(5, "data/w", b"w3");
    recv(&mut obs, "data/w", b"w3");
    writer.sync();

    // QoS 0 and QoS 2 are filtered the same way.
    reader.publish_q0("data/r", b"r-q0");
    reader.publish_q2(6, "data/r", b"r-q2");
    writer.publish_q1(7, "data/w", b"w4");
    recv(&mut obs, "data/w", b"w4");
    obs.sync();
}

#[test]
fn acl_readwrite_and_deny() {
    let dir = TempDir::new("acl-deny");
    let b = acl_broker(&dir);
    let mut both = login(b.port, "both", Some("both"));
    sub_ok(&mut both, 1, "shared/#");
    let copy = both.publish_q1_to_self(2, "shared/a", b"mine");
    assert_eq!(&*copy.topic, "shared/a");

    // `deny` wins over the readwrite grant that also matches, for writing...
    both.publish_q1(3, "shared/secret", b"leak");
    both.sync();
    let mut admin = login(b.port, "admin", Some("admin"));
    sub_ok(&mut admin, 1, "shared/#");
    both.publish_q1(4, "shared/secret", b"leak2");
    both.publish_q1_to_self(5, "shared/b", b"fine");
    recv(&mut admin, "shared/b", b"fine");
    admin.sync();

    // ...and for reading.
    admin.publish_q1_to_self(2, "shared/secret", b"classified");
    admin.publish_q1_to_self(3, "shared/c", b"open");
    recv(&mut both, "shared/c", b"open");
    both.sync();
    sub_refused(&mut both, 6, "shared/secret");
    both.sync();
}

#[test]
fn acl_retained_messages_filtered_by_read_access() {
    let dir = TempDir::new("acl-retain");
    let b = acl_broker(&dir);
    let mut admin = login(b.port, "admin", Some("admin"));
    admin.publish_retained(1, "shared/open", b"o");
    admin.publish_retained(2, "shared/secret", b"s");
    admin.publish_retained(3, "data/keep", b"d");
    admin.publish_retained(4, "public/news", b"n");

    // `both` may read shared/# except shared/secret.
    let mut both = login(b.port, "both", Some("both"));
    sub_ok(&mut both, 1, "shared/#");
    let p = both.expect_message("shared/open", b"o", 1);
    assert!(p.retain, "retained copy: {p:?}");
    both.send(&common::puback(p.pid));
    both.sync();

    // `reader` subscribing to everything gets only what it may read.
    let mut reader = login(b.port, "reader", Some("reader"));
    sub_ok(&mut reader, 1, "#");
    let p = reader.expect_message("data/keep", b"d", 1);
    assert!(p.retain);
    reader.send(&common::puback(p.pid));
    reader.sync();

    // An anonymous client reads public/#, and nothing of the users' topics.
    let mut anon = login(b.port, "anon", None);
    sub_ok(&mut anon, 1, "#");
    let p = anon.expect_message("public/news", b"n", 1);
    assert!(p.retain);
    anon.send(&common::puback(p.pid));
    anon.sync();

    // A subscription that can never deliver anything gets no retained message either.
    let mut writer = login(b.port, "writer", Some("writer"));
    sub_refused(&mut writer, 1, "data/#");
    writer.sync();
}

#[test]
fn acl_topic_lines_before_user_apply_to_anonymous_only() {
    let dir = TempDir::new("acl-anon");
    let b = acl_broker(&dir);
    let mut admin = login(b.port, "admin", Some("admin"));
    sub_ok(&mut admin, 1, "#");

    let mut anon = login(b.port, "anon", None);
    sub_ok(&mut anon, 1, "public/#");
    admin.publish_q1_to_self(2, "public/x", b"hello");
    recv(&mut anon, "public/x", b"hello");

    anon.publish_q1(2, "inbox/anon", b"to-admin");
    recv(&mut admin, "inbox/anon", b"to-admin");
    // Read-only for anonymous clients.
    anon.publish_q1(3, "public/y", b"no");
    admin.sync();

    // A user with a block of its own does not get the anonymous lines.
    let mut reader = login(b.port, "reader", Some("reader"));
    sub_refused(&mut reader, 1, "public/#");
    admin.publish_q1_to_self(3, "public/z", b"again");
    recv(&mut anon, "public/z", b"again");
    reader.sync();
    reader.publish_q1(2, "inbox/anon", b"no");
    admin.sync();
    anon.sync();
}

#[test]
fn acl_patterns_substitute_client_id_and_username() {
    let dir = TempDir::new("acl-pattern");
    let b = acl_broker(&dir);
    let mut admin = login(b.port, "admin", Some("admin"));
    sub_ok(&mut admin, 1, "clients/#");

    // %c: readwrite on its own subtree, for users and anonymous clients alike.
    for (id, user) in [("dev1", Some("reader")), ("dev2", None)] {
        let mut dev = login(b.port, id, user);
        sub_ok(&mut dev, 1, &format!("clients/{id}/#"));
        dev.publish_q1_to_self(2, &format!("clients/{id}/state"), b"on");
        recv(&mut admin, &format!("clients/{id}/state"), b"on");
        // Another client's subtree: neither writable nor readable.
        dev.publish_q1(3, "clients/other/state", b"spoof");
        admin.sync();
        sub_refused(&mut dev, 4, "clients/other/#");
        admin.publish_q1_to_self(2, "clients/other/state", b"x");
        dev.sync();
    }

    // %u: read-only on users/<name>/#.
    let mut admin2 = login(b.port, "admin2", Some("admin"));
    sub_ok(&mut admin2, 1, "users/#");
    let mut reader = login(b.port, "r1", Some("reader"));
    sub_ok(&mut reader, 1, "users/reader/#");
    admin2.publish_q1_to_self(2, "users/reader/inbox", b"for-reader");
    recv(&mut reader, "users/reader/inbox", b"for-reader");
    reader.publish_q1(2, "users/reader/inbox", b"no-write");
    admin2.sync();
    let mut writer = login(b.port, "w1", Some("writer"));
    sub_refused(&mut writer, 1, "users/reader/#");
    admin2.publish_q1_to_self(3, "users/reader/inbox", b"again");
    recv(&mut reader, "users/reader/inbox", b"again");
    writer.sync();
}

#[test]
fn acl_will_to_forbidden_topic_refused_at_connect() {
    let dir = TempDir::new("acl-will");
    let b = acl_broker(&dir);
    let will = |id: &str, user: &str, topic: &str| {
        let mut c = Client::open(b.port);
        c.send(
            &ConnectOpts::new(id)
                .username(user)
                .will(topic, b"gone", 1, false)
                .encode(),
        );
        let code = c.expect_connack().code;
        if code != 0 {
            c.expect_closed();
        }
        code
    };
    // Mosquitto 2.0.11 accepts such a will and drops it when it would be published; rmqtt
    // tells the client at once.
    let refused = if rmqtt_under_test() { 5 } else { 0 };
    assert_eq!(will("w1", "writer", "data/will"), 0);
    assert_eq!(
        will("r1", "reader", "data/will"),
        refused,
        "read-only topic"
    );
    assert_eq!(will("b1", "both", "shared/secret"), refused, "denied topic");
    assert_eq!(will("b2", "both", "shared/will"), 0);
    assert_eq!(will("p1", "reader", "clients/p1/will"), 0, "%c pattern");
    assert_eq!(will("p2", "reader", "clients/p1/will"), refused);

    // A refused will is never published, and an accepted one still is.
    let mut admin = login(b.port, "admin", Some("admin"));
    sub_ok(&mut admin, 1, "#");
    let mut c = Client::open(b.port);
    c.send(
        &ConnectOpts::new("r2")
            .username("reader")
            .will("data/will", b"forbidden", 0, false)
            .encode(),
    );
    assert_eq!(c.expect_connack().code, refused);
    if refused != 0 {
        c.expect_closed();
    }
    // Closed without DISCONNECT: a will that had been accepted would be published now.
    drop(c);
    let mut ok = Client::open(b.port);
    ok.send(
        &ConnectOpts::new("w2")
            .username("writer")
            .will("data/will", b"allowed", 0, false)
            .encode(),
    );
    assert_eq!(ok.expect_connack().code, 0);
    drop(ok);
    // The wills accepted above (w1, b2, p1) go out when the broker sees those sockets
    // close, which may come after this subscription: they may arrive first, the refused
    // one never.
    for _ in 0..4 {
        let p = admin.expect_publish();
        assert_ne!(&p.payload[..], b"forbidden", "a refused will was published");
        if &*p.topic == "data/will" && &p.payload[..] == b"allowed" {
            return;
        }
    }
    panic!("the accepted will was not published");
}

#[test]
fn acl_will_refused_v5() {
    if !rmqtt_under_test() {
        return;
    }
    let dir = TempDir::new("acl-will5");
    let b = acl_broker(&dir);
    let flags = 0x02u8 | 0x04 | 0x80;
    let mut payload = Vec::new();
    put_str(&mut payload, b"r5");
    payload.push(0);
    put_str(&mut payload, b"data/will");
    put_str(&mut payload, b"x");
    put_str(&mut payload, b"reader");
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.extend_from_slice(&[5, flags, 0, 60, 0]);
    body.extend_from_slice(&payload);
    assert_eq!(connack_v5(b.port, &frame(0x10, &body), true), 0x87);
}
