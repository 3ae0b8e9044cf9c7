//! Migration from Mosquitto 2.0: the real Mosquitto broker (Debian's 2.0.11) writes
//! `mosquitto.db` on SIGTERM with retained messages, a persistent MQTT 3.1.1 session
//! subscribed at QoS 1 and 2 holding queued messages and messages in flight in each state
//! (sent and not acknowledged; PUBREC received, PUBCOMP not), an MQTT 5 session with an
//! expiry interval, and an incoming QoS 2 message whose PUBREL never came. rmqtt then starts
//! on that directory, converts the file, and serves all of it: the subscriber gets every
//! message, the QoS 2 ones exactly once; a new subscriber gets the retained messages; the
//! publisher's PUBREL is completed and its PUBLISH sent again is not delivered twice.
//!
//! Two ways in: rmqtt's `persistence_file mosquitto.db` (the file is converted in place and
//! the original kept as `mosquitto.db.mosquitto`), and rmqtt's default `rmqtt.db` beside
//! Mosquitto's default file (converted, left untouched).
//!
//! Skipped, with a message, when Mosquitto or its clients are missing (fails instead when
//! `RMQTT_REQUIRE_INTEROP` is set).

mod common;
mod common_interop;

use common::{publish, pubrec, pubrel, subscribe, Client, ConnectOpts, PINGREQ};
use common_interop::{run, start_mosquitto, start_rmqtt, tools_or_skip, TempDir};
use rmqtt::protocol::Packet;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn connect(port: u16, id: &str) -> (Client, bool) {
    let mut c = Client::open(port);
    c.send(&ConnectOpts::new(id).clean(false).encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0, "CONNACK for {id}");
    (c, ack.session_present)
}

/// Waits for the PINGRESP: everything the broker sent before it has been read.
fn sync(c: &mut Client) -> Vec<Packet> {
    c.send(&PINGREQ);
    let mut before = Vec::new();
    for _ in 0..100 {
        match c.expect_packet() {
            Packet::PingResp => return before,
            p => before.push(p),
        }
    }
    panic!("no PINGRESP after 100 packets: {before:?}");
}

/// What Mosquitto holds when it stops; returns the bytes of its `mosquitto.db`.
fn mosquitto_writes(mosquitto: &Path, dir: &Path) -> Vec<u8> {
    let body = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n",
        dir.display()
    );
    let mut m = start_mosquitto(mosquitto, &body);
    let port = m.port;
    let (mut publisher, _) = connect(port, "publisher");
    publisher.publish_retained(1, "r/1", b"one");
    publisher.send(&publish("r/2", b"two", 0, true, false, 0));
    sync(&mut publisher);

    let (mut sub, _) = connect(port, "sub");
    sub.send(&subscribe(1, &[("q1/#", 1), ("q2/#", 2)]));
    assert!(matches!(sub.expect_packet(), Packet::SubAck(_)));
    // The MQTT 5 session, with an expiry interval, through mosquitto_sub.
    let p = port.to_string();
    let out = run(
        Command::new("mosquitto_sub").args([
            "-p", &p, "-V", "5", "-c", "-x", "600", "-i", "sub5", "-q", "2", "-t", "q2/#", "-E",
        ]),
        None,
        Duration::from_secs(30),
    );
    out.assert_success("mosquitto_sub -E");

    // In flight when the subscriber goes: a QoS 1 message never acknowledged, a QoS 2 one
    // never PUBRECed, and a QoS 2 one PUBRECed whose PUBREL is never completed.
    publisher.publish_q1(2, "q1/inflight", b"f1");
    let a = sub.expect_message("q1/inflight", b"f1", 1);
    assert_ne!(a.pid, 0);
    publisher.publish_q2(3, "q2/inflight", b"f2");
    sub.expect_message("q2/inflight", b"f2", 2);
    publisher.publish_q2(4, "q2/rel", b"f3");
    let r = sub.expect_message("q2/rel", b"f3", 2);
    sub.send(&pubrec(r.pid));
    match sub.expect_packet() {
        Packet::PubRel(a) => assert_eq!(a.pid, r.pid),
        p => panic!("expected PUBREL, got {p:?}"),
    }
    sub.disconnect();

    // Queued while it is offline.
    publisher.publish_q1(5, "q1/a", b"m1");
    publisher.publish_q2(6, "q2/b", b"m2");
    publisher.publish_q2(7, "q2/c", b"m3");

    // Incoming QoS 2: PUBREC received, PUBREL never sent.
    let (mut held, _) = connect(port, "held");
    held.send(&publish("q2/in", b"m4", 2, false, false, 77));
    held.expect_ack("PUBREC", 77);
    held.disconnect();
    publisher.disconnect();

    m.terminate();
    assert!(
        m.log().contains("Saving in-memory database"),
        "Mosquitto did not save:\n{}",
        m.log()
    );
    std::fs::read(dir.join("mosquitto.db")).expect("mosquitto.db written")
}

/// Everything the MQTT 3.1.1 subscriber gets on reconnecting, completing each flow: topic to
/// payloads in the order of arrival (a QoS 2 message twice would show twice), and the number
/// of PUBRELs the broker sent.
fn receive_all(c: &mut Client, want: usize) -> (BTreeMap<String, Vec<Vec<u8>>>, usize) {
    let mut got: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut rels = 0;
    let mut handle = |c: &mut Client, p: Packet, got: &mut BTreeMap<String, Vec<Vec<u8>>>| match p {
        Packet::Publish(p) => {
            match p.qos.as_u8() {
                1 => c.send(&common::puback(p.pid)),
                2 => c.send(&pubrec(p.pid)),
                _ => {}
            }
            got.entry(p.topic.to_string())
                .or_default()
                .push(p.payload.to_vec());
        }
        Packet::PubRel(a) => {
            c.send(&common::pubcomp(a.pid));
            rels += 1;
        }
        p => panic!("unexpected {p:?}"),
    };
    for _ in 0..100 {
        if got.values().map(Vec::len).sum::<usize>() >= want {
            break;
        }
        let p = c.expect_packet();
        handle(c, p, &mut got);
    }
    // Until the broker has answered everything sent so far (the last PUBRELs).
    for _ in 0..10 {
        let before = sync(c);
        if before.is_empty() {
            break;
        }
        for p in before {
            handle(c, p, &mut got);
        }
    }
    (got, rels)
}

fn rmqtt_serves(dir: &Path, extra: &str) -> String {
    let mut r = start_rmqtt(&format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n{extra}",
        dir.display()
    ));
    r.wait_log("Converted Mosquitto persistence file");
    let port = r.port;

    let (mut sub, present) = connect(port, "sub");
    assert!(present, "the session came over");
    let (mut got, rels) = receive_all(&mut sub, 6);
    let want: BTreeMap<String, Vec<Vec<u8>>> = [
        ("q1/inflight", "f1"),
        ("q2/inflight", "f2"),
        ("q1/a", "m1"),
        ("q2/b", "m2"),
        ("q2/c", "m3"),
        ("q2/in", "m4"),
        // q2/rel was delivered before the stop; only its PUBREL comes again.
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), vec![p.as_bytes().to_vec()]))
    .collect();
    // The QoS 1 message in flight may come twice (at least once); nothing else may.
    if let Some(v) = got.get_mut("q1/inflight") {
        v.dedup();
    }
    assert_eq!(got, want, "log:\n{}", r.log());
    // One for each QoS 2 message above, and the one q2/rel was waiting for.
    assert_eq!(rels, 5);
    sub.disconnect();

    // The publisher's QoS 2 message: sent again, it is not delivered twice; PUBREL completes.
    let (mut held, present) = connect(port, "held");
    assert!(present);
    held.send(&publish("q2/in", b"m4", 2, false, true, 77));
    held.expect_ack("PUBREC", 77);
    held.send(&pubrel(77));
    held.expect_ack("PUBCOMP", 77);
    held.disconnect();
    let (mut sub, _) = connect(port, "sub");
    assert!(sync(&mut sub).is_empty(), "q2/in was delivered once");
    sub.disconnect();

    // The MQTT 5 session: its queue, through mosquitto_sub.
    let p = port.to_string();
    let out = run(
        Command::new("mosquitto_sub").args([
            "-p", &p, "-V", "5", "-c", "-x", "600", "-i", "sub5", "-q", "2", "-t", "q2/#", "-C",
            "5", "-v",
        ]),
        None,
        Duration::from_secs(30),
    );
    out.assert_success("mosquitto_sub for sub5");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "q2/b m2",
            "q2/c m3",
            "q2/in m4",
            "q2/inflight f2",
            "q2/rel f3"
        ]
    );

    // Retained messages for a new subscriber.
    let out = run(
        Command::new("mosquitto_sub").args(["-p", &p, "-t", "r/#", "-v", "-C", "2"]),
        None,
        Duration::from_secs(30),
    );
    out.assert_success("mosquitto_sub r/#");
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["r/1 one", "r/2 two"]);
    r.terminate();
    let log = r.log();

    // The next start reads rmqtt's own snapshot: nothing is converted again.
    let again = start_rmqtt(&format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n{extra}",
        dir.display()
    ));
    let out = run(
        Command::new("mosquitto_sub").args([
            "-p",
            &again.port.to_string(),
            "-t",
            "r/#",
            "-v",
            "-C",
            "2",
        ]),
        None,
        Duration::from_secs(30),
    );
    out.assert_success("mosquitto_sub r/# after a restart");
    assert!(!again.log().contains("Converted"), "{}", again.log());
    log
}

#[test]
fn mosquitto_db_is_converted_in_place() {
    let Some(_) = tools_or_skip(
        "mosquitto_db_is_converted_in_place",
        &["mosquitto", "mosquitto_sub"],
    ) else {
        return;
    };
    let mosquitto = common_interop::find_tool("mosquitto").unwrap();
    let dir = TempDir::new("migrate-in-place");
    let original = mosquitto_writes(&mosquitto, dir.path());
    // --test-config says what the start will convert.
    let conf = dir.path().join("rmqtt.conf");
    std::fs::write(
        &conf,
        format!(
            "persistence true\npersistence_location {}/\npersistence_file mosquitto.db\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_rmqtt"))
            .args(["--test-config", "-c"])
            .arg(&conf),
        None,
        Duration::from_secs(30),
    );
    out.assert_success("rmqtt --test-config");
    let want = format!(
        "mosquitto_migration: {}/mosquitto.db: 2 retained messages, 4 sessions with 3 subscriptions, 7 queued and 3 in-flight messages, 1 incoming QoS 2 messages; converted at start, the original kept as {}/mosquitto.db.mosquitto\n",
        dir.path().display(),
        dir.path().display()
    );
    assert!(out.stdout.ends_with(&want), "{}", out.stdout);
    let log = rmqtt_serves(dir.path(), "persistence_file mosquitto.db\n");
    assert!(
        log.contains(&format!(
            "The original is kept as {}/mosquitto.db.mosquitto.",
            dir.path().display()
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("mosquitto.db.mosquitto")).unwrap(),
        original,
        "the original, byte for byte"
    );
    let now = std::fs::read(dir.path().join("mosquitto.db")).unwrap();
    assert!(now.starts_with(b"RMQTTDB"), "rmqtt's snapshot replaced it");
}

#[test]
fn mosquitto_db_beside_rmqtt_db_is_converted_and_left_alone() {
    let Some(_) = tools_or_skip(
        "mosquitto_db_beside_rmqtt_db_is_converted_and_left_alone",
        &["mosquitto", "mosquitto_sub"],
    ) else {
        return;
    };
    let mosquitto = common_interop::find_tool("mosquitto").unwrap();
    let dir = TempDir::new("migrate-beside");
    let original = mosquitto_writes(&mosquitto, dir.path());
    // Without the journal this time (the in-place test has it, the default).
    let log = rmqtt_serves(dir.path(), "persistence_journal false\n");
    assert!(log.contains("It is left in place; rmqtt saves to"), "{log}");
    assert_eq!(
        std::fs::read(dir.path().join("mosquitto.db")).unwrap(),
        original
    );
    assert!(!dir.path().join("mosquitto.db.mosquitto").exists());
    assert!(std::fs::read(dir.path().join("rmqtt.db"))
        .unwrap()
        .starts_with(b"RMQTTDB"));
}
