//! Persistence through the real broker: retained messages, a persistent session's
//! subscriptions, queued and in-flight QoS 1/2 messages and inbound QoS 2 state survive a clean
//! restart (SIGTERM) and `kill -9` after the save point; damaged files (a flipped byte, a
//! truncation, an unknown version, a file that is not rmqtt's) are reported, kept aside with
//! their bytes intact, and what could be recovered is served; an idle broker writes nothing.

mod common;

use common::*;
use rmqtt::protocol::Packet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

fn conf(dir: &Path, extra: &str) -> String {
    format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n{extra}",
        dir.display()
    )
}

fn db(dir: &Path) -> PathBuf {
    dir.join("rmqtt.db")
}

fn persistent(b: &Broker, id: &str) -> (Client, bool) {
    let mut c = b.raw();
    c.send(&ConnectOpts::new(id).clean(false).encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0, "CONNACK for {id}");
    (c, ack.session_present)
}

/// Every retained message under `filter`, topic to payload, each checked for the retain flag.
fn retained(b: &Broker, filter: &str) -> BTreeMap<String, Vec<u8>> {
    let mut c = b.client("retained-reader");
    c.send(&subscribe(1, &[(filter, 0)]));
    let mut got = BTreeMap::new();
    c.send(&PINGREQ);
    loop {
        match c.expect_packet() {
            Packet::SubAck(_) => {}
            Packet::Publish(p) => {
                assert!(p.retain, "retained copy without the retain flag: {p:?}");
                got.insert(p.topic.to_string(), p.payload.to_vec());
            }
            Packet::PingResp => break,
            p => panic!("unexpected {p:?}"),
        }
    }
    c.disconnect();
    got
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(t, p)| (t.to_string(), p.as_bytes().to_vec()))
        .collect()
}

/// Waits (bounded) until a retained `$SYS` topic carries `want`.
fn wait_sys(b: &Broker, topic: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = b.client("sys-reader");
    c.subscribe(1, &[(topic, 0)]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{topic} never satisfied the wait");
        match c.try_packet(left).unwrap() {
            Some(Packet::Publish(p)) if &*p.topic == topic => {
                let v = String::from_utf8_lossy(&p.payload).into_owned();
                if want(&v) {
                    c.disconnect();
                    return v;
                }
            }
            Some(p) => panic!("unexpected {p:?}"),
            None => {}
        }
    }
}

/// Receives `n` messages, acknowledging each in whatever order the broker interleaves them
/// (its window lets several go out at once), until every QoS 2 exchange is complete; returns
/// topic, payload, QoS and DUP of each in arrival order.
fn receive_all(c: &mut Client, n: usize) -> Vec<(String, Vec<u8>, u8, bool)> {
    let mut got = Vec::new();
    let mut open = 0;
    while got.len() < n || open > 0 {
        match c.expect_packet() {
            Packet::Publish(p) => {
                match p.qos.as_u8() {
                    1 => c.send(&puback(p.pid)),
                    2 => {
                        c.send(&pubrec(p.pid));
                        open += 1;
                    }
                    _ => {}
                }
                got.push((
                    p.topic.to_string(),
                    p.payload.to_vec(),
                    p.qos.as_u8(),
                    p.dup,
                ));
            }
            Packet::PubRel(a) => {
                c.send(&pubcomp(a.pid));
                open -= 1;
            }
            p => panic!("unexpected {p:?}"),
        }
    }
    c.sync();
    got
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// SIGTERM: the broker saves on the way out.
    Term,
    /// autosave_on_changes: every acknowledgement follows a save, then SIGKILL.
    KillAfterAutosave,
    /// Default autosave interval, SIGUSR1 forces a save, then SIGKILL.
    KillAfterUsr1,
}

fn state_survives(stop: Stop) {
    let dir = TempDir::new("persist-survive");
    let extra = match stop {
        Stop::KillAfterAutosave => "autosave_on_changes true\nautosave_interval 1\n",
        _ => "sys_interval 1\n",
    };
    let config = conf(&dir.path, extra);
    let mut b = Broker::with_config(&config);

    let (mut keeper, present) = persistent(&b, "keeper");
    assert!(!present);
    keeper.subscribe(1, &[("q/#", 2), ("other/+", 1)]);
    keeper.disconnect();

    let (mut inflight, _) = persistent(&b, "inflight");
    inflight.subscribe(1, &[("f/#", 1)]);

    let mut publisher = b.client("publisher");
    publisher.publish_retained(1, "r/a", b"A");
    publisher.publish_retained(2, "r/b", b"B");
    publisher.publish_q1(3, "q/1", b"one");
    publisher.publish_q2(4, "q/2", b"two");
    publisher.publish_q1(5, "other/x", b"x");
    publisher.publish_q1(6, "f/1", b"unacked");
    let held = inflight.expect_message("f/1", b"unacked", 1);
    assert!(!held.dup);

    // Inbound QoS 2 half done: PUBREC received, PUBREL not sent yet.
    let (mut q2pub, _) = persistent(&b, "q2pub");
    q2pub.send(&publish("q/in", b"in", 2, false, false, 7));
    q2pub.expect_ack("PUBREC", 7);

    match stop {
        Stop::Term => {
            b.signal("TERM");
            b.wait_exit(Duration::from_secs(10));
            assert!(
                b.logs()
                    .iter()
                    .any(|l| l.contains("Saving in-memory database")),
                "{:?}",
                b.logs()
            );
        }
        Stop::KillAfterAutosave => b.kill9(),
        Stop::KillAfterUsr1 => {
            assert!(
                !db(&dir.path).exists(),
                "with the default autosave_interval nothing is written before it is due"
            );
            b.signal("USR1");
            b.wait_log("Saving in-memory database");
            wait_sys(&b, "$SYS/broker/persistence/writes", |v| v == "1");
            b.kill9();
        }
    }
    drop((inflight, q2pub, publisher));
    // With the journal (the default) an acknowledgement follows the journal's sync; the
    // snapshot of a compaction started by the policy may still be in progress.
    let journal = dir.path.join("rmqtt.db.journal");
    assert!(
        db(&dir.path).exists() || journal.exists(),
        "no persistence file after {stop:?}"
    );

    let b = Broker::with_config(&config);
    b.wait_log("Restored 2 retained messages and 3 sessions");
    assert_eq!(
        retained(&b, "r/#"),
        expected(&[("r/a", "A"), ("r/b", "B")]),
        "retained messages after {stop:?}"
    );

    let (mut keeper, present) = persistent(&b, "keeper");
    assert!(present, "session present after {stop:?}");
    assert_eq!(
        receive_all(&mut keeper, 4),
        vec![
            ("q/1".to_string(), b"one".to_vec(), 1, false),
            ("q/2".to_string(), b"two".to_vec(), 2, false),
            ("other/x".to_string(), b"x".to_vec(), 1, false),
            ("q/in".to_string(), b"in".to_vec(), 2, false),
        ],
        "queued messages after {stop:?}"
    );
    keeper.sync();

    // The publisher finishes its QoS 2 exchange: the re-sent PUBLISH is not routed again.
    let (mut q2pub, present) = persistent(&b, "q2pub");
    assert!(present);
    q2pub.send(&publish("q/in", b"in", 2, false, true, 7));
    q2pub.expect_ack("PUBREC", 7);
    q2pub.send(&pubrel(7));
    q2pub.expect_ack("PUBCOMP", 7);
    keeper.sync();

    let (mut inflight, present) = persistent(&b, "inflight");
    assert!(present);
    let again = inflight.expect_message("f/1", b"unacked", 1);
    assert!(again.dup, "an in-flight message is re-sent with DUP set");
    inflight.send(&puback(again.pid));
    inflight.sync();

    // The subscriptions themselves came back, not just the queue.
    let mut publisher = b.client("publisher2");
    publisher.publish_q1(1, "q/3", b"three");
    publisher.publish_q1(2, "other/y", b"y");
    let m = keeper.expect_message("q/3", b"three", 1);
    keeper.send(&puback(m.pid));
    let m = keeper.expect_message("other/y", b"y", 1);
    keeper.send(&puback(m.pid));
    publisher.publish_q1(3, "f/2", b"two");
    let m = inflight.expect_message("f/2", b"two", 1);
    inflight.send(&puback(m.pid));
    keeper.sync();
    inflight.sync();
}

#[test]
fn state_survives_a_clean_restart() {
    state_survives(Stop::Term);
}

#[test]
fn state_survives_kill9_after_autosave_on_changes() {
    state_survives(Stop::KillAfterAutosave);
}

#[test]
fn state_survives_kill9_after_sigusr1() {
    state_survives(Stop::KillAfterUsr1);
}

/// A good snapshot with five retained messages and one persistent session, made by the broker.
fn good_file() -> Vec<u8> {
    let dir = TempDir::new("persist-good");
    let mut b = Broker::with_config(&conf(&dir.path, ""));
    let (mut s, _) = persistent(&b, "fx-session");
    s.subscribe(1, &[("fx/#", 1)]);
    s.disconnect();
    let mut p = b.client("fx-pub");
    for i in 1..=5u16 {
        p.publish_retained(i, &format!("fx/{i}"), format!("v{i}").as_bytes());
    }
    p.disconnect();
    b.signal("TERM");
    b.wait_exit(Duration::from_secs(10));
    let data = std::fs::read(db(&dir.path)).unwrap();
    assert!(data.starts_with(b"RMQTTDB\x03"), "magic of {data:02x?}");
    data
}

fn all_fx() -> BTreeMap<String, Vec<u8>> {
    (1..=5)
        .map(|i| (format!("fx/{i}"), format!("v{i}").into_bytes()))
        .collect()
}

/// Starts a broker on `bad`; checks the log line, the file kept aside byte for byte, and the
/// recovered retained messages. Returns the broker and its directory for further checks.
fn start_on_damaged(
    bad: &[u8],
    why: &str,
    recovered: &BTreeMap<String, Vec<u8>>,
) -> (Broker, TempDir) {
    let dir = TempDir::new("persist-damaged");
    std::fs::write(db(&dir.path), bad).unwrap();
    let mut b = Broker::with_config(&conf(&dir.path, ""));
    let line = b.wait_log("is damaged");
    assert!(line.contains("Error: persistence file"), "{line}");
    assert!(line.contains(why), "reason {why:?} missing from {line:?}");
    let aside: Vec<PathBuf> = std::fs::read_dir(&dir.path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("rmqtt.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one file kept aside: {aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        bad,
        "the damaged file is kept with its original bytes"
    );
    assert!(
        line.contains(&aside[0].display().to_string()),
        "the log names where it went: {line}"
    );
    b.assert_healthy();
    assert_eq!(
        &retained(&b, "fx/#"),
        recovered,
        "recovered data after {why}"
    );
    (b, dir)
}

#[test]
fn flipped_byte_is_reported_kept_aside_and_the_rest_recovered() {
    let good = good_file();
    let mut bad = good.clone();
    // The END record is the last 13 bytes; this lands in the session record's checksum.
    let at = good.len() - 13 - 2;
    bad[at] ^= 0x40;
    start_on_damaged(&bad, "checksum mismatch", &all_fx());
}

#[test]
fn truncated_file_is_reported_kept_aside_and_the_rest_recovered() {
    let good = good_file();
    start_on_damaged(&good[..good.len() - 13], "truncated", &all_fx());
    // Inside the first message record (after the 8-byte magic and the 17-byte generation).
    start_on_damaged(&good[..30], "truncated", &BTreeMap::new());
}

#[test]
fn unknown_version_is_reported_and_kept_aside() {
    let mut bad = good_file();
    bad[7] = 4;
    start_on_damaged(&bad, "unknown format version", &BTreeMap::new());
}

#[test]
fn foreign_file_is_reported_and_kept_aside() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bad: Vec<u8> = (0..2048)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    start_on_damaged(&bad, "not an rmqtt persistence file", &BTreeMap::new());
    start_on_damaged(
        b"persistence true\n",
        "not an rmqtt persistence file",
        &BTreeMap::new(),
    );
}

/// What was recovered from a damaged file must not vanish at the next restart just because
/// nothing changed in between (the damaged file has been moved away).
#[test]
fn recovered_data_survives_the_next_restart() {
    let good = good_file();
    let (mut b, dir) = start_on_damaged(&good[..good.len() - 13], "truncated", &all_fx());
    b.signal("TERM");
    b.wait_exit(Duration::from_secs(10));
    let b = Broker::with_config(&conf(&dir.path, ""));
    assert_eq!(
        retained(&b, "fx/#"),
        all_fx(),
        "recovered retained messages after a second restart; log: {:?}",
        b.logs()
    );
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// With persistent sessions (one connected and pinging, one away with queued messages) and a
/// retained message, an idle broker makes no write for 5 s: `$SYS/broker/persistence/writes`
/// is not republished and the file's mtime and contents stay the same.
fn idle_broker_writes_nothing(extra: &str) {
    let dir = TempDir::new("persist-idle");
    let b = Broker::with_config(&conf(&dir.path, &format!("sys_interval 1\n{extra}")));
    let (mut away, _) = persistent(&b, "idle-away");
    away.subscribe(1, &[("idle/#", 1)]);
    away.disconnect();
    let (mut here, _) = persistent(&b, "idle-here");
    here.subscribe(1, &[("idle/#", 2)]);
    let mut p = b.client("idle-pub");
    p.publish_retained(1, "idle/r", b"kept");
    p.publish_q1(2, "idle/q", b"queued");
    for _ in 0..2 {
        let m = here.expect_publish();
        here.send(&puback(m.pid));
    }
    here.sync();
    p.disconnect();
    b.signal("USR1");
    b.wait_log("Saving in-memory database");
    let writes = wait_sys(&b, "$SYS/broker/persistence/writes", |v| v != "0");
    let path = db(&dir.path);
    let before = (mtime(&path), std::fs::read(&path).unwrap());

    let mut sys = b.client("idle-sys");
    sys.subscribe(1, &[("$SYS/broker/persistence/#", 0)]);
    // The current retained values first; then, over 5 s of idleness, nothing.
    let mut seen = BTreeMap::new();
    sys.send(&PINGREQ);
    loop {
        match sys.expect_packet() {
            Packet::Publish(m) => {
                seen.insert(m.topic.to_string(), m.payload.to_vec());
            }
            Packet::PingResp => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen.get("$SYS/broker/persistence/writes"),
        Some(&writes.clone().into_bytes())
    );
    let n: u64 = writes.parse().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        here.sync();
        match sys.try_packet(Duration::from_millis(500)).unwrap() {
            None => {}
            Some(Packet::Publish(m)) => panic!(
                "idle broker changed {}: {:?} (writes were {n})",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            ),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        (mtime(&path), std::fs::read(&path).unwrap()),
        before,
        "the persistence file was rewritten while idle"
    );
    println!("idle for 5 s after {n} writes: 0 writes");
}

#[test]
fn idle_broker_writes_nothing_with_default_autosave() {
    idle_broker_writes_nothing("");
}

#[test]
fn idle_broker_writes_nothing_with_autosave_on_changes() {
    idle_broker_writes_nothing("autosave_on_changes true\nautosave_interval 1\n");
}
