//! Crash recovery with persistence on (`autosave_on_changes true`, `autosave_interval 1`):
//! the broker is killed with SIGKILL at moments chosen by a PRNG seeded per iteration, during
//! QoS 1 and QoS 2 traffic and during saves, and restarted on the same port.
//!
//! Guarantees checked: every message acknowledged to a publisher (PUBACK, PUBCOMP) reaches the
//! persistent subscriber, at least once for QoS 1 and exactly once for QoS 2, across the
//! restarts; the persistence file always loads (no `.corrupt-` file ever appears) and never
//! loses a retained message or queued message that was acknowledged before the kill. Offline
//! sessions keep the expiry they had left across a kill -9, and one that expired meanwhile
//! stays gone. Every loop is bounded; each test prints a summary.

mod common;

use common::*;
use rmqtt::protocol::Packet;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// xorshift64*: deterministic per seed, so a failing iteration can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn conf(dir: &Path) -> String {
    format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n\
         autosave_on_changes true\nautosave_interval 1\n",
        dir.display()
    )
}

fn corrupt_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect()
}

/// Restarts on `port`; the previous run left its socket in TIME_WAIT at most, which the
/// broker's listener tolerates, so a failure here is a real one.
fn restart(port: u16, config: &str) -> Broker {
    let b = Broker::with_config_on(port, config);
    assert_eq!(b.port, port);
    b
}

fn connect_persistent(port: u16, id: &str) -> (Client, bool) {
    let (c, ack) = Client::try_connect(port, &ConnectOpts::new(id).clean(false)).unwrap();
    assert_eq!(ack.code, 0, "CONNACK for {id}");
    (c, ack.session_present)
}

/// Publisher side of QoS 1/2, with the client's own session state kept across connections:
/// after a reconnect it re-sends unacknowledged PUBLISHes with DUP and PUBREL for those past
/// PUBREC, as [MQTT-4.4.0-1] asks of a client.
#[derive(Default)]
struct Publisher {
    next_seq: u64,
    next_pid: u16,
    /// pid → (sequence number, QoS, PUBREC received).
    outstanding: BTreeMap<u16, (u64, u8, bool)>,
    acked: [BTreeSet<u64>; 3],
}

const WINDOW: usize = 10;

impl Publisher {
    fn alloc_pid(&mut self) -> u16 {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1).max(1);
            if !self.outstanding.contains_key(&self.next_pid) {
                return self.next_pid;
            }
        }
    }

    /// Runs until the connection fails, or, once `stop` is set, until nothing is outstanding.
    fn run(&mut self, c: &mut Client, stop: &AtomicBool) -> Result<(), String> {
        let resend: Vec<(u16, (u64, u8, bool))> =
            self.outstanding.iter().map(|(k, v)| (*k, *v)).collect();
        for (pid, (seq, qos, rec)) in resend {
            if rec {
                c.try_send(&pubrel(pid))?;
            } else {
                let topic = format!("c/{qos}");
                c.try_send(&publish(
                    &topic,
                    seq.to_string().as_bytes(),
                    qos,
                    false,
                    true,
                    pid,
                ))?;
            }
        }
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if stopping && self.outstanding.is_empty() {
                return Ok(());
            }
            while !stopping && self.outstanding.len() < WINDOW {
                let seq = self.next_seq;
                self.next_seq += 1;
                let qos = 1 + (seq % 2) as u8;
                let pid = self.alloc_pid();
                self.outstanding.insert(pid, (seq, qos, false));
                let topic = format!("c/{qos}");
                c.try_send(&publish(
                    &topic,
                    seq.to_string().as_bytes(),
                    qos,
                    false,
                    false,
                    pid,
                ))?;
            }
            match c.try_packet(Duration::from_millis(20))? {
                None => {}
                Some(Packet::PubAck(a)) => {
                    if let Some((seq, 1, _)) = self.outstanding.get(&a.pid).copied() {
                        self.outstanding.remove(&a.pid);
                        self.acked[1].insert(seq);
                    }
                }
                Some(Packet::PubRec(a)) => {
                    if let Some(e) = self.outstanding.get_mut(&a.pid) {
                        e.2 = true;
                    }
                    c.try_send(&pubrel(a.pid))?;
                }
                Some(Packet::PubComp(a)) => {
                    if let Some((seq, 2, true)) = self.outstanding.get(&a.pid).copied() {
                        self.outstanding.remove(&a.pid);
                        self.acked[2].insert(seq);
                    }
                }
                Some(p) => return Err(format!("publisher got {p:?}")),
            }
        }
    }
}

/// Subscriber side: QoS 2 delivered on first PUBLISH of a packet id and not again until its
/// PUBREL (the receiver's half of exactly once), QoS 1 acknowledged at once.
#[derive(Default)]
struct Subscriber {
    awaiting_rel: HashSet<u16>,
    got: [HashMap<u64, u32>; 3],
}

impl Subscriber {
    fn handle(&mut self, c: &mut Client, p: Packet) -> Result<(), String> {
        match p {
            Packet::Publish(p) => {
                let seq: u64 = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad payload {:?}", p.payload))?;
                let q = p.qos.as_u8();
                match q {
                    1 => {
                        *self.got[1].entry(seq).or_default() += 1;
                        c.try_send(&puback(p.pid))?;
                    }
                    2 => {
                        if self.awaiting_rel.insert(p.pid) {
                            *self.got[2].entry(seq).or_default() += 1;
                        }
                        c.try_send(&pubrec(p.pid))?;
                    }
                    _ => return Err(format!("QoS 0 delivery {p:?}")),
                }
            }
            Packet::PubRel(a) => {
                self.awaiting_rel.remove(&a.pid);
                c.try_send(&pubcomp(a.pid))?;
            }
            Packet::PingResp | Packet::SubAck(_) => {}
            p => return Err(format!("subscriber got {p:?}")),
        }
        Ok(())
    }

    /// Reads until the connection fails or `done` says so (bounded by `deadline`).
    fn run(
        &mut self,
        c: &mut Client,
        deadline: Instant,
        done: impl Fn(&Subscriber) -> bool,
    ) -> Result<(), String> {
        while Instant::now() < deadline {
            if done(self) {
                return Ok(());
            }
            if let Some(p) = c.try_packet(Duration::from_millis(20))? {
                self.handle(c, p)?;
            }
        }
        Err("deadline".into())
    }

    fn has_all(&self, acked: &[BTreeSet<u64>; 3]) -> bool {
        (1..3).all(|q| acked[q].iter().all(|s| self.got[q].contains_key(s)))
    }

    /// PINGREQ round trip while handling whatever comes first, so late duplicates are seen.
    fn settle(&mut self, c: &mut Client) {
        c.try_send(&PINGREQ).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no PINGRESP");
            match c.try_packet(Duration::from_millis(50)).unwrap() {
                Some(Packet::PingResp) => break,
                Some(p) => self.handle(c, p).unwrap(),
                None => {}
            }
        }
        while let Some(p) = c.try_packet(Duration::from_millis(300)).unwrap() {
            self.handle(c, p).unwrap();
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    iterations: u64,
    kills: u64,
    acked_before_kill: u64,
    acked: [u64; 3],
    delivered: [u64; 3],
    lost: [u64; 3],
    duplicated: [u64; 3],
}

const ITERATIONS: u64 = 15;
const KILLS_PER_ITERATION: u64 = 2;

#[test]
fn acknowledged_qos1_and_qos2_messages_survive_kill9_during_traffic() {
    traffic_survives_kill9("autosave_on_changes", conf);
}

/// `persistence true` and nothing else: the journal, synced before every acknowledgement.
#[test]
fn journal_alone_keeps_acknowledged_messages_across_kill9() {
    traffic_survives_kill9("journal", |dir| {
        format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/\n",
            dir.display()
        )
    });
}

/// The OpenWrt placement: the journal in its own directory (RAM there), the snapshot
/// elsewhere, written only by the autosave policy.
#[test]
fn journal_in_its_own_directory_keeps_acknowledged_messages_across_kill9() {
    traffic_survives_kill9("journal apart", |dir| {
        std::fs::create_dir_all(dir.join("flash")).unwrap();
        format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/flash/\n\
             journal_location {}/ram/\n",
            dir.display(),
            dir.display()
        )
    });
}

fn traffic_survives_kill9(label: &str, conf: impl Fn(&Path) -> String) {
    let mut t = Tally::default();
    let mut failures = Vec::new();
    for iter in 0..ITERATIONS {
        let mut rng = Rng::new(0xC0FFEE + iter);
        let dir = TempDir::new("crash-traffic");
        let config = conf(&dir.path);
        let mut broker = Broker::with_config(&config);
        let port = broker.port;

        let (mut sub_c, _) = connect_persistent(port, "crash-sub");
        sub_c.try_send(&subscribe(1, &[("c/#", 2)])).unwrap();
        match sub_c.try_packet(WAIT).unwrap() {
            Some(Packet::SubAck(a)) => assert_eq!(a.codes, vec![2]),
            p => panic!("expected SUBACK, got {p:?}"),
        }
        let mut publisher = Publisher::default();
        let mut subscriber = Subscriber::default();
        let mut sub_conn = Some(sub_c);

        for _ in 0..KILLS_PER_ITERATION {
            let mut sub_c = match sub_conn.take() {
                Some(c) => c,
                None => {
                    let (c, present) = connect_persistent(port, "crash-sub");
                    assert!(present, "iteration {iter}: subscriber session lost");
                    c
                }
            };
            let (mut pub_c, _) = connect_persistent(port, "crash-pub");
            let stop = Arc::new(AtomicBool::new(false));
            let mut p = std::mem::take(&mut publisher);
            let pt = {
                let stop = stop.clone();
                thread::spawn(move || {
                    let r = p.run(&mut pub_c, &stop);
                    (p, r)
                })
            };
            let mut s = std::mem::take(&mut subscriber);
            let st = thread::spawn(move || {
                let r = s.run(&mut sub_c, Instant::now() + Duration::from_secs(30), |_| {
                    false
                });
                (s, r)
            });
            thread::sleep(Duration::from_millis(rng.range(20, 400)));
            broker.kill9();
            t.kills += 1;
            let (p, pr) = pt.join().unwrap();
            let (s, sr) = st.join().unwrap();
            assert!(pr.is_err() && sr.is_err(), "the clients saw the kill");
            publisher = p;
            subscriber = s;
            broker = restart(port, &config);
            broker.wait_log(" running");
            assert!(
                !broker.logs().iter().any(|l| damaged_mid_file(l)),
                "iteration {iter}: {:?}",
                broker.logs()
            );
        }

        t.acked_before_kill += (publisher.acked[1].len() + publisher.acked[2].len()) as u64;

        // Final round: the publisher completes what it has outstanding, the subscriber
        // collects everything that was acknowledged.
        let (mut pub_c, present) = connect_persistent(port, "crash-pub");
        assert!(present, "iteration {iter}: publisher session lost");
        let (mut sub_c, present) = connect_persistent(port, "crash-sub");
        assert!(present, "iteration {iter}: subscriber session lost");
        let stop = Arc::new(AtomicBool::new(true));
        let pt = thread::spawn(move || {
            let r = publisher.run(&mut pub_c, &stop);
            (publisher, r)
        });
        // Deliveries may only be complete once the publisher is; collect meanwhile.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pt.is_finished() && Instant::now() < deadline {
            if let Some(p) = sub_c.try_packet(Duration::from_millis(20)).unwrap() {
                subscriber.handle(&mut sub_c, p).unwrap();
            }
        }
        let (publisher, pr) = pt.join().unwrap();
        pr.unwrap();
        let acked = publisher.acked.clone();
        let _ = subscriber.run(&mut sub_c, Instant::now() + Duration::from_secs(20), |s| {
            s.has_all(&acked)
        });
        subscriber.settle(&mut sub_c);
        assert!(corrupt_files(&dir.path).is_empty());

        t.iterations += 1;
        for q in [1usize, 2] {
            let lost: Vec<u64> = acked[q]
                .iter()
                .filter(|s| !subscriber.got[q].contains_key(s))
                .copied()
                .collect();
            let dups = subscriber.got[q].values().filter(|n| **n > 1).count() as u64;
            let invented: Vec<u64> = subscriber.got[q]
                .keys()
                .filter(|s| **s >= publisher.next_seq)
                .copied()
                .collect();
            if !invented.is_empty() {
                failures.push(format!(
                    "iteration {iter}: QoS {q} never sent: {invented:?}"
                ));
            }
            t.acked[q] += acked[q].len() as u64;
            t.delivered[q] += subscriber.got[q].len() as u64;
            t.lost[q] += lost.len() as u64;
            t.duplicated[q] += dups;
            if !lost.is_empty() {
                failures.push(format!(
                    "iteration {iter}: QoS {q} acknowledged but not delivered: {lost:?}"
                ));
            }
            if q == 2 && dups > 0 {
                let d: Vec<_> = subscriber.got[2].iter().filter(|(_, n)| **n > 1).collect();
                failures.push(format!("iteration {iter}: QoS 2 delivered twice: {d:?}"));
            }
        }
    }
    println!(
        "crash during traffic ({label}): {} iterations, {} kills ({} messages acknowledged before the last kill \
         of each iteration), acked QoS1 {} QoS2 {}, delivered QoS1 {} QoS2 {}, lost QoS1 {} QoS2 {}, duplicated QoS1 {} (allowed) QoS2 {}",
        t.iterations,
        t.kills,
        t.acked_before_kill,
        t.acked[1],
        t.acked[2],
        t.delivered[1],
        t.delivered[2],
        t.lost[1],
        t.lost[2],
        t.duplicated[1],
        t.duplicated[2]
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(t.acked[1] > 0 && t.acked[2] > 0, "traffic flowed");
}

const SAVE_ITERATIONS: u64 = 40;
const TOPICS: u64 = 8;

/// Retained payloads are `seq:` followed by padding, so saves are big enough (tens of KB)
/// that kills land inside them.
fn retained_payload(seq: u64, pad: usize) -> Vec<u8> {
    let mut v = format!("{seq}:").into_bytes();
    v.resize(v.len() + pad, b'x');
    v
}

/// Whether a start-up log line reports a journal damaged other than at its end. `kill -9`
/// can cut the last write short: a write(2) of more than a page to a file stops at the
/// pending fatal signal between pages, so the record being appended when the kill came may
/// be torn. It was not synced, so nothing in it was acknowledged; recovery reports it and
/// keeps the file aside, as for any bad record. A torn record anywhere but last, or a
/// checksum mismatch, would be a real fault and fails the test; what was acknowledged is
/// checked against the restored state in every iteration either way.
fn damaged_mid_file(line: &str) -> bool {
    line.contains("is damaged") && !line.contains(" torn; ")
}

fn seq_of(payload: &[u8]) -> u64 {
    let s = std::str::from_utf8(payload).unwrap();
    s.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn kills_during_saves_never_damage_the_file_or_lose_saved_messages() {
    let dir = TempDir::new("crash-saves");
    let config = conf(&dir.path);
    let mut broker = Broker::with_config(&config);
    let port = broker.port;
    let (mut q, _) = connect_persistent(port, "saves-queue");
    q.subscribe(1, &[("s/#", 1)]);
    q.disconnect();

    // topic → highest acknowledged sequence number; sequence numbers of acknowledged QoS 1
    // messages the offline session has not received yet.
    let mut retained_acked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut queued_acked: BTreeSet<u64> = BTreeSet::new();
    let mut next_seq = 0u64;
    let mut mid_save = 0u64;
    let mut restored = 0u64;
    let mut acked_total = 0u64;
    // One pass more than there are kills: the last one only checks.
    for iter in 0..=SAVE_ITERATIONS {
        let mut rng = Rng::new(0x5A7E + iter);
        if iter > 0 {
            broker = restart(port, &config);
            broker.wait_log(" running");
            let logs = broker.logs();
            assert!(
                !logs.iter().any(|l| damaged_mid_file(l)),
                "iteration {iter}: {logs:?}"
            );
            assert!(
                logs.iter().any(|l| l.contains("Restored ")),
                "iteration {iter}: {logs:?}"
            );
            restored += 1;
        }
        assert_eq!(corrupt_files(&dir.path), Vec::<String>::new());

        // Every acknowledged retained message is there, or a later one on its topic.
        let mut r = broker.client("saves-reader");
        r.send(&subscribe(1, &[("r/#", 0)]));
        r.send(&PINGREQ);
        let mut have: BTreeMap<u64, u64> = BTreeMap::new();
        loop {
            match r.expect_packet() {
                Packet::SubAck(_) => {}
                Packet::Publish(p) => {
                    let k: u64 = p.topic.trim_start_matches("r/").parse().unwrap();
                    have.insert(k, seq_of(&p.payload));
                }
                Packet::PingResp => break,
                p => panic!("unexpected {p:?}"),
            }
        }
        r.disconnect();
        for (k, s) in &retained_acked {
            let got = have.get(k).copied();
            assert!(
                got.is_some_and(|g| g >= *s && g < next_seq),
                "iteration {iter}: r/{k} acknowledged up to {s}, after restart {got:?}"
            );
        }

        // Every acknowledged queued message reaches the offline session.
        let (mut q, present) = connect_persistent(port, "saves-queue");
        assert!(present, "iteration {iter}: queue session lost");
        let deadline = Instant::now() + WAIT;
        let mut got = BTreeSet::new();
        while !queued_acked.is_subset(&got) {
            assert!(
                Instant::now() < deadline,
                "iteration {iter}: queued messages lost: {:?}",
                queued_acked.difference(&got).collect::<Vec<_>>()
            );
            if let Some(Packet::Publish(p)) = q.try_packet(Duration::from_millis(50)).unwrap() {
                got.insert(seq_of(&p.payload));
                q.send(&puback(p.pid));
            }
        }
        // Saved but not acknowledged before the kill: may be there too; drain them.
        q.send(&PINGREQ);
        loop {
            match q.expect_packet() {
                Packet::Publish(p) => q.send(&puback(p.pid)),
                Packet::PingResp => break,
                p => panic!("unexpected {p:?}"),
            }
        }
        while let Some(p) = q.try_packet(Duration::from_millis(100)).unwrap() {
            if let Packet::Publish(p) = p {
                q.send(&puback(p.pid));
            }
        }
        q.disconnect();
        queued_acked.clear();
        if iter == SAVE_ITERATIONS {
            break;
        }

        // Traffic until the kill: retained QoS 1 on r/k and queued QoS 1 on s/x.
        let (mut c, _) = Client::try_connect(port, &ConnectOpts::new("saves-pub")).unwrap();
        let start_seq = next_seq;
        let pad = rng.range(2_000, 16_000) as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut acked = Vec::new();
                let mut seq = start_seq;
                while !stop.load(Ordering::SeqCst) {
                    let pid = (seq % 60_000 + 1) as u16;
                    let msg = if seq % 3 == 0 {
                        publish("s/x", &retained_payload(seq, 10), 1, false, false, pid)
                    } else {
                        let topic = format!("r/{}", seq % TOPICS);
                        publish(&topic, &retained_payload(seq, pad), 1, true, false, pid)
                    };
                    if c.try_send(&msg).is_err() {
                        break;
                    }
                    seq += 1;
                    match c.try_packet(WAIT) {
                        Ok(Some(Packet::PubAck(a))) if a.pid == pid => acked.push(seq - 1),
                        _ => break,
                    }
                }
                (acked, seq)
            })
        };
        thread::sleep(Duration::from_millis(rng.range(5, 150)));
        broker.kill9();
        stop.store(true, Ordering::SeqCst);
        let (acked, seq) = worker.join().unwrap();
        next_seq = seq;
        acked_total += acked.len() as u64;
        let half_written = std::fs::read_dir(&dir.path).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp")))
        });
        if half_written {
            mid_save += 1;
        }
        for s in acked {
            if s % 3 == 0 {
                queued_acked.insert(s);
            } else {
                let e = retained_acked.entry(s % TOPICS).or_default();
                *e = (*e).max(s);
            }
        }
    }
    println!(
        "kills during saves: {SAVE_ITERATIONS} iterations, {restored} restores, {acked_total} \
         messages acknowledged, {mid_save} kills left a half-written temporary file, \
         0 damaged files, 0 lost"
    );
}

/// What the state client had acknowledged, and the one operation it had sent and not yet
/// seen acknowledged when the broker was killed (it may or may not have taken effect).
#[derive(Default, Clone)]
struct StateOps {
    /// Filters `s/N` subscribed (SUBACK seen) and not unsubscribed (UNSUBACK seen).
    subs: BTreeSet<u64>,
    /// Topic `r/K` → the acknowledged retained payload (`None`: cleared).
    retained: BTreeMap<u64, Option<u64>>,
    pending: Option<StateOp>,
}

#[derive(Clone, Copy, Debug)]
enum StateOp {
    Sub(u64),
    Unsub(u64),
    Retain(u64, Option<u64>),
}

const STATE_OPS: u64 = 400;
const RETAINED_TOPICS: u64 = 4;

/// Subscribes, unsubscribes and sets or clears retained messages one at a time, each waiting
/// for its acknowledgement, until the connection fails or `STATE_OPS` are done.
fn run_state_ops(c: &mut Client, st: &mut StateOps) -> Result<(), String> {
    for n in 1..=STATE_OPS {
        let pid = (n % 60_000 + 1) as u16;
        let op = match n % 5 {
            0 if st.subs.len() > 2 => {
                let f = st.subs.iter().next().copied().unwrap_or(0);
                StateOp::Unsub(f)
            }
            1 | 3 => StateOp::Retain(n % RETAINED_TOPICS, (n % 7 != 0).then_some(n)),
            _ => StateOp::Sub(n),
        };
        st.pending = Some(op);
        match op {
            StateOp::Sub(f) => c.try_send(&subscribe(pid, &[(&format!("s/{f}"), 1)]))?,
            StateOp::Unsub(f) => c.try_send(&unsubscribe(pid, &[&format!("s/{f}")]))?,
            StateOp::Retain(t, v) => {
                let payload = v.map(|v| v.to_string()).unwrap_or_default();
                c.try_send(&publish(
                    &format!("r/{t}"),
                    payload.as_bytes(),
                    1,
                    true,
                    false,
                    pid,
                ))?
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if Instant::now() > deadline {
                return Err("no acknowledgement".into());
            }
            match c.try_packet(Duration::from_millis(50))? {
                Some(Packet::SubAck(a)) if a.pid == pid => break,
                Some(Packet::UnsubAck(a)) if a.pid == pid => break,
                Some(Packet::PubAck(a)) if a.pid == pid => break,
                Some(Packet::Publish(p)) if p.pid != 0 => c.try_send(&puback(p.pid))?,
                _ => {}
            }
        }
        st.pending = None;
        match op {
            StateOp::Sub(f) => {
                st.subs.insert(f);
            }
            StateOp::Unsub(f) => {
                st.subs.remove(&f);
            }
            StateOp::Retain(t, v) => {
                st.retained.insert(t, v);
            }
        }
    }
    Ok(())
}

/// Subscriptions and retained messages after `kill -9` at a random moment are as
/// acknowledged: each acknowledged subscribe, unsubscribe, retained set and clear is there,
/// and nothing else, except that the one operation in flight at the kill may or may not be.
#[test]
fn subscriptions_and_retained_are_as_acknowledged_after_kill9() {
    let mut failures = Vec::new();
    let mut done = 0u64;
    for iter in 0..8u64 {
        let mut rng = Rng::new(0x5EED + iter);
        let dir = TempDir::new("crash-state");
        let config = format!(
            "allow_anonymous true\npersistence true\npersistence_location {}/\n",
            dir.path.display()
        );
        let mut broker = Broker::with_config(&config);
        let port = broker.port;
        let (mut c, _) = connect_persistent(port, "state");
        let worker = thread::spawn(move || {
            let mut st = StateOps::default();
            let r = run_state_ops(&mut c, &mut st);
            (st, r)
        });
        thread::sleep(Duration::from_millis(rng.range(20, 300)));
        broker.kill9();
        let (st, _) = worker.join().unwrap();
        done += st.subs.len() as u64 + st.retained.len() as u64;
        let broker = restart(port, &config);
        broker.wait_log(" running");

        // Retained: what was acknowledged last per topic, or the operation in flight.
        let mut check = Client::try_connect(port, &ConnectOpts::new("check"))
            .unwrap()
            .0;
        check.subscribe(1, &[("r/#", 0)]);
        let mut got: BTreeMap<u64, Option<u64>> = BTreeMap::new();
        // The retained messages follow the SUBACK; a PINGRESP comes after them.
        check.send(&PINGREQ);
        loop {
            match check.expect_packet() {
                Packet::Publish(p) => {
                    let t: u64 = p.topic.trim_start_matches("r/").parse().unwrap();
                    let v: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap();
                    got.insert(t, Some(v));
                }
                Packet::PingResp => break,
                p => panic!("iteration {iter}: unexpected {p:?}"),
            }
        }
        for t in 0..RETAINED_TOPICS {
            let have = got.get(&t).copied().flatten();
            let acked = st.retained.get(&t).copied().flatten();
            let in_flight = match st.pending {
                Some(StateOp::Retain(pt, v)) if pt == t => Some(v),
                _ => None,
            };
            if have != acked && in_flight != Some(have) {
                failures.push(format!(
                    "iteration {iter}: r/{t} is {have:?}, acknowledged {acked:?}, in flight {in_flight:?}"
                ));
            }
        }

        // Subscriptions: a message to every filter ever used reaches exactly the live ones.
        let (mut c, present) = connect_persistent(port, "state");
        assert!(
            present || st.subs.is_empty(),
            "iteration {iter}: session lost"
        );
        c.subscribe(60_001u32 as u16, &[("end", 1)]);
        let top = st.subs.iter().max().copied().unwrap_or(0) + 6;
        for f in 1..=top {
            check.publish_q1((f % 60_000 + 1) as u16, &format!("s/{f}"), b"x");
        }
        check.publish_q1(60_002u32 as u16, "end", b"end");
        let mut reached = BTreeSet::new();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "iteration {iter}: no end marker");
            if let Some(Packet::Publish(p)) = c.try_packet(Duration::from_millis(50)).unwrap() {
                if p.pid != 0 {
                    c.send(&puback(p.pid));
                }
                if &*p.topic == "end" {
                    break;
                }
                if let Ok(f) = p.topic.trim_start_matches("s/").parse::<u64>() {
                    reached.insert(f);
                }
            }
        }
        let mut want = st.subs.clone();
        match st.pending {
            Some(StateOp::Sub(f)) => {
                reached.remove(&f);
                want.remove(&f);
            }
            Some(StateOp::Unsub(f)) => {
                reached.remove(&f);
                want.remove(&f);
            }
            _ => {}
        }
        if reached != want {
            failures.push(format!(
                "iteration {iter}: subscriptions {reached:?}, acknowledged {want:?}"
            ));
        }
    }
    println!("state across kill -9: 8 iterations, {done} acknowledged subscriptions and retained topics checked");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Leaves an MQTT 5 persistent session `id` with a session expiry of `secs`, made by the real
/// `mosquitto_sub` (clean start off, subscribe, disconnect).
fn offline_v5_session(port: u16, id: &str, secs: u32) {
    let out = std::process::Command::new("mosquitto_sub")
        .args([
            "-V",
            "5",
            "-c",
            "-q",
            "1",
            "-E",
            "-W",
            "10",
            "-h",
            "127.0.0.1",
        ])
        .args(["-p", &port.to_string(), "-i", id, "-t", "e/#"])
        .args(["-x", &secs.to_string()])
        .output()
        .expect("mosquitto_sub runs");
    assert!(out.status.success(), "mosquitto_sub {id}: {out:?}");
}

/// A `$SYS` watcher: the broker's count of offline sessions (retained, republished when it
/// changes, every `sys_interval`).
fn watch_offline(port: u16) -> Client {
    let (mut c, ack) = Client::try_connect(port, &ConnectOpts::new("watch")).unwrap();
    assert_eq!(ack.code, 0);
    c.subscribe(1, &[("$SYS/broker/clients/disconnected", 0)]);
    c
}

/// The next value the watcher sees, within `within`.
fn next_offline(c: &mut Client, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(Packet::Publish(p))) = c.try_packet(Duration::from_millis(100)) {
            if &*p.topic == "$SYS/broker/clients/disconnected" {
                return std::str::from_utf8(&p.payload).ok()?.parse().ok();
            }
        }
    }
    None
}

/// Three offline sessions across a kill -9 (journal on, the default): "gone" (expiry 1 s)
/// expired before the crash, "down" (2 s) expires while the broker is down for 3 s, and
/// "left" (8 s), offline about 1 s before the crash, comes back with what it had left: it is
/// there right after the restart and gone by 8 s after it went offline (plus 1.5 s of
/// slack), well before the 8 s a restart from the whole interval would give it.
#[test]
fn offline_sessions_keep_the_expiry_they_had_left_across_kill9() {
    let dir = TempDir::new("crash-expiry");
    let config = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\nsys_interval 1\n",
        dir.path.display()
    );
    let mut broker = Broker::with_config(&config);
    let port = broker.port;
    let mut watch = watch_offline(port);
    offline_v5_session(port, "gone", 1);
    // Bounded wait for "gone" to expire: the count goes 1 → 0.
    let mut seen = Vec::new();
    while seen.last() != Some(&0) || !seen.contains(&1) {
        let v = next_offline(&mut watch, Duration::from_secs(5)).expect("$SYS offline count");
        seen.push(v);
        assert!(seen.len() < 10, "\"gone\" expires: {seen:?}");
    }
    offline_v5_session(port, "left", 8);
    let left_at = Instant::now();
    offline_v5_session(port, "down", 2);
    thread::sleep(Duration::from_secs(1));
    broker.kill9();
    thread::sleep(Duration::from_secs(3));

    let broker = restart(port, &config);
    let line = broker.wait_log("Session of down expired while the broker was down");
    assert!(line.contains("not restored"), "{line}");
    let mut watch = watch_offline(port);
    let first = next_offline(&mut watch, Duration::from_secs(5));
    assert_eq!(
        first,
        Some(1),
        "only \"left\" is back, right after the restart"
    );
    let restarted = Instant::now();
    let deadline = left_at + Duration::from_millis(9500);
    let mut gone = false;
    while Instant::now() < deadline {
        if next_offline(
            &mut watch,
            deadline.saturating_duration_since(Instant::now()),
        ) == Some(0)
        {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "\"left\" expired with what it had left ({:?} after the restart)",
        restarted.elapsed()
    );
    for id in ["gone", "down", "left"] {
        let (c, present) = connect_persistent(port, id);
        assert!(!present, "{id} has no session after its expiry");
        c.disconnect();
    }
    println!(
        "expiry across kill -9: \"left\" gone {:?} after the restart, {:?} after it went offline",
        restarted.elapsed(),
        left_at.elapsed()
    );
}
