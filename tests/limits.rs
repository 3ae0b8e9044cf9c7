//! Limits that bound the broker's memory, and backpressure, through the real binary:
//! `max_connections`, `message_size_limit`, `max_queued_messages` for an offline persistent
//! session, a subscriber that never reads while 100 MB of QoS 0 go past (the broker's RSS stays
//! bounded and a reading subscriber still gets everything), and the fan-in case of issue 9
//! (8 publishers × 7,500 QoS 1, 20 unacknowledged each, one `#` subscriber, default settings:
//! nothing lost, nothing duplicated).

mod common;

use common::*;
use rmqtt::protocol::Packet;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Resident memory of a process in bytes, from /proc.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn max_connections_refuses_the_extra_connection() {
    let b = Broker::with_config("allow_anonymous true\nmax_connections 2\n");
    let one = b.client("mc-1");
    let mut two = b.client("mc-2");
    let mut extra = b.raw();
    extra.send_lossy(&ConnectOpts::new("mc-3").encode());
    let got = extra.expect_closed();
    assert!(
        got.is_empty(),
        "no CONNACK for the extra connection: {got:02x?}"
    );
    b.wait_log("denied: max_connections exceeded");
    // The connections that were in are unaffected.
    two.sync();
    one.disconnect();
    let again = b.client("mc-4");
    again.disconnect();
    two.disconnect();
}

#[test]
fn message_size_limit_drops_oversized_publish_and_keeps_the_connection() {
    let b = Broker::with_config("allow_anonymous true\nmessage_size_limit 100\n");
    let mut sub = b.client("msl-sub");
    sub.subscribe(1, &[("big/#", 1)]);
    let mut p = b.client("msl-pub");
    // 3.1.1 cannot refuse a PUBLISH: it is acknowledged and dropped.
    p.publish_q1(1, "big/q1", &[b'x'; 101]);
    p.publish_q0("big/q0", &[b'y'; 5000]);
    p.publish_q1(2, "big/fits", &[b'z'; 100]);
    let m = sub.expect_message("big/fits", &[b'z'; 100], 1);
    sub.send(&puback(m.pid));
    sub.sync();
    p.sync();
    b.wait_log("Dropped too large PUBLISH");
}

#[test]
fn max_queued_messages_bounds_an_offline_persistent_session() {
    let b = Broker::with_config("allow_anonymous true\nmax_queued_messages 5\nsys_interval 1\n");
    let mut c = b.raw();
    c.send(&ConnectOpts::new("mq-sub").clean(false).encode());
    c.expect_connack();
    c.subscribe(1, &[("mq/#", 1)]);
    c.disconnect();
    let mut p = b.client("mq-pub");
    for i in 0..10u16 {
        p.publish_q1(i + 1, "mq/t", format!("m{i}").as_bytes());
    }
    let mut c = b.raw();
    c.send(&ConnectOpts::new("mq-sub").clean(false).encode());
    assert!(c.expect_connack().session_present);
    let mut got = Vec::new();
    for _ in 0..5 {
        let m = c.expect_publish();
        c.send(&puback(m.pid));
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    c.sync();
    assert_eq!(
        got,
        ["m0", "m1", "m2", "m3", "m4"],
        "the oldest five are kept"
    );
    // Every drop is counted.
    let mut s = b.client("mq-sys");
    s.subscribe(1, &[("$SYS/broker/publish/messages/dropped", 0)]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "dropped count never reached 5");
        if let Some(Packet::Publish(m)) = s.try_packet(Duration::from_millis(200)).unwrap() {
            if &m.payload[..] == b"5" {
                break;
            }
        }
    }
}

/// The bound stated for the slow-consumer test: the broker's resident memory never exceeds
/// this while 100 MB pass through it to a subscriber that reads nothing.
const RSS_BOUND: u64 = 64 * 1024 * 1024;
const SLOW_MSG: usize = 16 * 1024;
const SLOW_COUNT: u64 = 6400;
/// How long 100 MB may take to reach the reading subscriber (a debug build on loopback moves
/// it in a few seconds; a publisher held back by the stuck subscriber never gets there).
const SLOW_BOUND: Duration = Duration::from_secs(60);

#[test]
fn slow_consumer_cannot_grow_memory_or_slow_others() {
    let b = Broker::start();
    let pid = b.pid();
    // Keepalive 0: neither subscriber sends anything while the data flows, and this test is
    // about reading, not about keepalive.
    let mut stuck = b.client_with(&ConnectOpts::new("slow-stuck").keepalive(0));
    stuck.subscribe(1, &[("slow/#", 0)]);
    let mut fast = b.client_with(&ConnectOpts::new("slow-fast").keepalive(0));
    fast.subscribe(1, &[("slow/#", 0)]);
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let received = received.clone();
        let done = done.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + SLOW_BOUND;
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                match fast.try_packet(Duration::from_millis(100)) {
                    Ok(Some(Packet::Publish(p))) => {
                        assert_eq!(p.payload.len(), SLOW_MSG);
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Some(p)) => panic!("unexpected {p:?}"),
                    Ok(None) => {}
                    Err(e) => panic!("fast subscriber lost its connection: {e}"),
                }
            }
        })
    };
    let started = Instant::now();
    let writer = {
        let port = b.port;
        let done = done.clone();
        thread::spawn(move || {
            let mut p = Client::open(port);
            p.send(&ConnectOpts::new("slow-pub").encode());
            p.expect_connack();
            let msg = publish("slow/data", &[b'd'; SLOW_MSG], 0, false, false, 0);
            let mut batch = Vec::new();
            for _ in 0..16 {
                batch.extend_from_slice(&msg);
            }
            // Bounded writes: a held-back publisher must not hang the test.
            p.stream
                .set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            'all: for _ in 0..SLOW_COUNT / 16 {
                let mut off = 0;
                while off < batch.len() {
                    if done.load(Ordering::SeqCst) {
                        break 'all;
                    }
                    match p.stream.write(&batch[off..]) {
                        Ok(n) => off += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(e) => panic!("publisher write failed: {e}"),
                    }
                }
            }
            p
        })
    };
    let mut peak = 0u64;
    let deadline = Instant::now() + SLOW_BOUND;
    while received.load(Ordering::SeqCst) < SLOW_COUNT && Instant::now() < deadline {
        peak = peak.max(rss(pid));
        thread::sleep(Duration::from_millis(20));
    }
    let elapsed = started.elapsed();
    peak = peak.max(rss(pid));
    done.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let _publisher = writer.join().unwrap();
    let got = received.load(Ordering::SeqCst);
    let mb = (got * SLOW_MSG as u64) as f64 / 1e6;
    println!(
        "slow consumer: fast subscriber got {got}/{SLOW_COUNT} messages ({mb:.0} MB) in \
         {elapsed:.1?} ({:.0} MB/s); broker peak RSS {:.1} MB (bound {} MB)",
        mb / elapsed.as_secs_f64(),
        peak as f64 / 1e6,
        RSS_BOUND / 1024 / 1024
    );
    assert_eq!(got, SLOW_COUNT, "the reading subscriber gets every message");
    assert!(peak < RSS_BOUND, "broker RSS peaked at {peak} bytes");
    // Held open to the end: the stuck subscriber must be connected for all of it.
    drop(stuck);
}

const FAN_PUBLISHERS: usize = 8;
const FAN_MESSAGES: u64 = 7_500;
const FAN_WINDOW: usize = 20;

/// One publisher keeping at most `FAN_WINDOW` QoS 1 messages unacknowledged.
fn fan_publisher(port: u16, n: usize) -> u64 {
    let (mut c, _) = Client::try_connect(port, &ConnectOpts::new(&format!("fan-pub-{n}"))).unwrap();
    let topic = format!("fan/{n}");
    let mut outstanding: HashSet<u16> = HashSet::new();
    let mut next = 0u64;
    let mut acked = 0u64;
    let mut pid = 0u16;
    let deadline = Instant::now() + Duration::from_secs(240);
    while acked < FAN_MESSAGES {
        assert!(Instant::now() < deadline, "publisher {n} stuck at {acked}");
        let mut batch = Vec::new();
        while next < FAN_MESSAGES && outstanding.len() < FAN_WINDOW {
            loop {
                pid = pid.wrapping_add(1).max(1);
                if !outstanding.contains(&pid) {
                    break;
                }
            }
            outstanding.insert(pid);
            batch.extend(publish(
                &topic,
                format!("{n}:{next}").as_bytes(),
                1,
                false,
                false,
                pid,
            ));
            next += 1;
        }
        if !batch.is_empty() {
            c.try_send(&batch).unwrap();
        }
        match c.try_packet(Duration::from_millis(200)).unwrap() {
            Some(Packet::PubAck(a)) => {
                assert!(outstanding.remove(&a.pid), "PUBACK for unknown {}", a.pid);
                acked += 1;
            }
            Some(p) => panic!("publisher got {p:?}"),
            None => {}
        }
    }
    acked
}

#[test]
fn backpressure_fan_in_loses_and_duplicates_nothing_with_defaults() {
    let b = Broker::start();
    let mut sub = b.client("fan-sub");
    sub.subscribe(1, &[("#", 1)]);
    let total = FAN_PUBLISHERS as u64 * FAN_MESSAGES;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let reader = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut seen: BTreeMap<(u64, u64), u32> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let mut acks = Vec::new();
                let mut next = sub.try_packet(Duration::from_millis(100)).unwrap();
                while let Some(p) = next {
                    match p {
                        Packet::Publish(p) => {
                            let s = std::str::from_utf8(&p.payload).unwrap();
                            let (a, b) = s.split_once(':').unwrap();
                            *seen
                                .entry((a.parse().unwrap(), b.parse().unwrap()))
                                .or_default() += 1;
                            if p.qos.as_u8() == 1 {
                                acks.extend(puback(p.pid));
                            }
                        }
                        p => panic!("subscriber got {p:?}"),
                    }
                    next = sub.try_packet(Duration::ZERO).unwrap();
                }
                if !acks.is_empty() {
                    sub.try_send(&acks).unwrap();
                }
                if seen.len() as u64 == total {
                    // Give late duplicates a moment to show up.
                    let quiet = Instant::now() + Duration::from_millis(500);
                    while Instant::now() < quiet {
                        if let Some(Packet::Publish(p)) =
                            sub.try_packet(Duration::from_millis(100)).unwrap()
                        {
                            let s = std::str::from_utf8(&p.payload).unwrap().to_string();
                            let (a, b) = s.split_once(':').unwrap();
                            *seen
                                .entry((a.parse().unwrap(), b.parse().unwrap()))
                                .or_default() += 1;
                            sub.try_send(&puback(p.pid)).unwrap();
                        }
                    }
                    break;
                }
            }
            seen
        })
    };
    let publishers: Vec<_> = (0..FAN_PUBLISHERS)
        .map(|n| {
            let port = b.port;
            thread::spawn(move || fan_publisher(port, n))
        })
        .collect();
    let acked: u64 = publishers.into_iter().map(|h| h.join().unwrap()).sum();
    let publish_time = started.elapsed();
    let seen = reader.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let delivered = seen.len() as u64;
    let duplicated = seen.values().filter(|n| **n > 1).count();
    let lost = total - delivered;
    println!(
        "fan-in: {FAN_PUBLISHERS} publishers x {FAN_MESSAGES} QoS 1 (window {FAN_WINDOW}): \
         sent {total}, acked {acked}, delivered {delivered}, lost {lost}, duplicated \
         {duplicated}; publishers done in {publish_time:.1?}, all delivered in {elapsed:.1?} \
         ({:.0} msg/s)",
        delivered as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(acked, total);
    assert_eq!(lost, 0, "messages lost");
    assert_eq!(duplicated, 0, "messages duplicated");
    assert!(
        !b.logs().iter().any(|l| l.contains("dropped")),
        "the broker reported drops: {:?}",
        b.logs()
            .iter()
            .filter(|l| l.contains("dropped"))
            .collect::<Vec<_>>()
    );
}

/// `memory_limit` as Mosquitto documents it: once the broker's heap is above the limit, new
/// PUBLISHes are refused (a 5.0 client gets PUBACK 0x97, quota exceeded), each refusal is
/// logged, and what the broker already holds is still served.
#[test]
fn memory_limit_refuses_new_publishes_and_serves_what_is_held() {
    use bytes::{Bytes, BytesMut};
    use rmqtt::protocol::{Connect, Properties, Publish, QoS, Version};
    let b = Broker::with_config("allow_anonymous true\nmemory_limit 4000000\n");
    let encode = |p: Packet| {
        let mut out = BytesMut::new();
        p.encode(Version::V5, &mut out);
        out.to_vec()
    };
    let mut c = b.raw();
    c.send(&encode(Packet::Connect(Box::new(Connect {
        version: Version::V5,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id: "mem-filler".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }))));
    // The v5 CONNACK, read by hand: 0x20, length, flags, reason, properties.
    c.stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = [0u8; 2];
    std::io::Read::read_exact(&mut c.stream, &mut head).unwrap();
    let mut body = vec![0u8; usize::from(head[1])];
    std::io::Read::read_exact(&mut c.stream, &mut body).unwrap();
    assert_eq!((head[0], body[1]), (0x20, 0), "CONNACK {head:?} {body:?}");
    let payload = Bytes::from(vec![b'm'; 256 * 1024]);
    let mut refused_at = None;
    // 4 MB of heap is reached within 16 retained 256 KB messages; bounded at 64.
    for pid in 1..=64u16 {
        c.send(&encode(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: format!("mem/{pid}").into(),
            pid,
            payload: payload.clone(),
            properties: Properties::default(),
        })));
        // Read the v5 PUBACK by hand: 0x40, length, pid, reason.
        let mut ack = [0u8; 5];
        c.stream.set_read_timeout(Some(WAIT)).unwrap();
        std::io::Read::read_exact(&mut c.stream, &mut ack[..4]).unwrap();
        let reason = if ack[1] >= 3 {
            std::io::Read::read_exact(&mut c.stream, &mut ack[4..5]).unwrap();
            ack[4]
        } else {
            0
        };
        assert_eq!(ack[0], 0x40, "{ack:?}");
        if reason == 0x97 {
            refused_at = Some(pid);
            break;
        }
        assert!(reason == 0 || reason == 0x10, "PUBACK reason {reason:#x}");
    }
    let refused_at = refused_at.expect("no PUBLISH refused over memory_limit");
    assert!(refused_at > 1, "refused from the start");
    b.wait_log("memory_limit (4000000 bytes) reached");
    // What is held is still delivered: the retained messages stored before the limit.
    let mut sub = b.client("mem-reader");
    sub.subscribe(1, &[("mem/1", 0)]);
    let p = sub.expect_publish();
    assert_eq!(&p.topic[..], "mem/1");
    assert_eq!(p.payload.len(), 256 * 1024);
}
