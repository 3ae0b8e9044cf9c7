//! Router tests: packets and timestamps in, packets out; no sockets, no sleeping.

use super::core::{Broker, Effect, Limits};
use crate::protocol::*;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Harness {
    b: Broker,
    now: Instant,
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn connect_packet(id: &str, clean: bool, keep_alive: u16, version: Version) -> Packet {
    Packet::Connect(Box::new(Connect {
        version,
        bridge: false,
        clean_start: clean,
        keep_alive,
        client_id: id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }))
}

fn publish(topic: &str, payload: &str, qos: QoS, pid: u16, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pid,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        properties: Properties::default(),
    })
}

fn subscribe(pid: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        pid,
        filters: filters
            .iter()
            .map(|(f, q)| {
                (
                    f.to_string(),
                    SubOptions {
                        qos: *q,
                        ..SubOptions::default()
                    },
                )
            })
            .collect(),
        properties: Properties::default(),
    })
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Limits::default())
    }

    fn with(limits: Limits) -> Harness {
        Harness {
            b: Broker::new(limits, 7),
            now: Instant::now(),
        }
    }

    fn open(&mut self) -> usize {
        self.b.accept(peer(), 1883, true, self.now)
    }

    fn send(&mut self, c: usize, p: &Packet) -> usize {
        let mut buf = BytesMut::new();
        let v = self.b.conns.get(c).map_or(Version::V311, |c| c.version);
        p.encode(v, &mut buf);
        self.b.input(c, &buf, self.now)
    }

    fn recv(&mut self, c: usize) -> Vec<Packet> {
        let Some(conn) = self.b.conns.get_mut(c) else {
            return Vec::new();
        };
        let out = conn.out().to_vec();
        conn.out_clear();
        let v = conn.version;
        let mut rest: &[u8] = &out;
        let mut got = Vec::new();
        while let Some((p, n)) = decode(rest, v, usize::MAX).unwrap() {
            got.push(p);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
        got
    }

    /// Connects a client and checks the CONNACK; returns the connection id.
    fn client(&mut self, id: &str, clean: bool) -> usize {
        self.client_v(id, clean, Version::V311).0
    }

    /// Connects; returns the connection id, session present, and what followed the CONNACK.
    fn client_v(&mut self, id: &str, clean: bool, v: Version) -> (usize, bool, Vec<Packet>) {
        let c = self.open();
        self.send(c, &connect_packet(id, clean, 60, v));
        let mut got = self.recv(c);
        assert!(!got.is_empty(), "no CONNACK");
        match got.remove(0) {
            Packet::ConnAck(a) => {
                assert_eq!(a.code, 0);
                (c, a.session_present, got)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The event loop's close sweep: the socket is gone.
    fn drop_conn(&mut self, c: usize) {
        self.b.peer_closed(c, false);
        self.sweep();
    }

    /// The event loop's close sweep (output is read by [`Harness::recv`] instead).
    fn sweep(&mut self) {
        let mut out = Vec::new();
        self.b.take_output(&mut out);
        for e in out {
            if let Effect::Close(id) = e {
                self.b.finish(id as usize, self.now);
            }
        }
    }

    /// Takes the queued effects and returns the connections to resume.
    fn resumed(&mut self) -> Vec<usize> {
        let mut effects = Vec::new();
        self.b.take_effects(&mut effects);
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Resume(id) => Some(id as usize),
                _ => None,
            })
            .collect()
    }

    fn sub(&mut self, c: usize, filters: &[(&str, QoS)]) {
        self.send(c, &subscribe(1, filters));
        match self.recv(c).first() {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn closing(&self, c: usize) -> bool {
        self.b.conns.get(c).is_none_or(|c| c.close.is_some())
    }
}

fn publishes(ps: &[Packet]) -> Vec<(String, QoS, bool, bool)> {
    ps.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.qos,
                p.retain,
                p.dup,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn qos1_forwarded_and_acknowledged() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t", "m", QoS::AtLeastOnce, 9, false));
    assert_eq!(h.recv(p), vec![Packet::PubAck(Ack::new(9))]);
    let got = h.recv(s);
    assert_eq!(
        publishes(&got),
        vec![("m".into(), QoS::AtLeastOnce, false, false)]
    );
}

#[test]
fn qos2_duplicate_before_pubrel_delivered_once() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::ExactlyOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t", "once", QoS::ExactlyOnce, 5, false));
    let mut dup = publish("t", "once", QoS::ExactlyOnce, 5, false);
    if let Packet::Publish(x) = &mut dup {
        x.dup = true;
    }
    h.send(p, &dup);
    assert_eq!(
        h.recv(p),
        vec![Packet::PubRec(Ack::new(5)), Packet::PubRec(Ack::new(5))]
    );
    h.send(p, &Packet::PubRel(Ack::new(5)));
    assert_eq!(h.recv(p), vec![Packet::PubComp(Ack::new(5))]);
    assert_eq!(publishes(&h.recv(s)).len(), 1);
    // After PUBREL the id is free again: the same id is a new message.
    h.send(p, &publish("t", "again", QoS::ExactlyOnce, 5, false));
    assert_eq!(publishes(&h.recv(s)).len(), 1);
}

#[test]
fn qos2_outbound_flow() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::ExactlyOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t", "x", QoS::ExactlyOnce, 1, false));
    let pid = match h.recv(s).as_slice() {
        [Packet::Publish(x)] => x.pid,
        other => panic!("{other:?}"),
    };
    h.send(s, &Packet::PubRec(Ack::new(pid)));
    assert_eq!(h.recv(s), vec![Packet::PubRel(Ack::new(pid))]);
    h.send(s, &Packet::PubComp(Ack::new(pid)));
    assert!(h.recv(s).is_empty());
    assert!(!h.closing(s));
}

#[test]
fn overlapping_subscriptions_once_at_highest_qos() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(
        s,
        &[
            ("a/#", QoS::AtMostOnce),
            ("a/b", QoS::ExactlyOnce),
            ("+/b", QoS::AtLeastOnce),
        ],
    );
    let p = h.client("pub", true);
    h.send(p, &publish("a/b", "x", QoS::ExactlyOnce, 1, false));
    assert_eq!(
        publishes(&h.recv(s)),
        vec![("x".into(), QoS::ExactlyOnce, false, false)]
    );
}

#[test]
fn qos_downgrade() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t", "2", QoS::ExactlyOnce, 1, false));
    h.send(p, &publish("t", "0", QoS::AtMostOnce, 0, false));
    let got = publishes(&h.recv(s));
    assert_eq!(got[0].1, QoS::AtLeastOnce);
    assert_eq!(got[1].1, QoS::AtMostOnce);
}

#[test]
fn retained_on_subscribe_with_flag_live_without() {
    let mut h = Harness::new();
    let p = h.client("pub", true);
    h.send(p, &publish("r/1", "old", QoS::AtMostOnce, 0, true));
    h.send(p, &publish("r/1", "new", QoS::AtLeastOnce, 2, true));
    h.send(p, &publish("r/2", "two", QoS::AtMostOnce, 0, true));
    h.send(p, &publish("r/2", "", QoS::AtMostOnce, 0, true));
    let s = h.client("sub", true);
    h.send(s, &subscribe(1, &[("r/#", QoS::AtLeastOnce)]));
    let got = h.recv(s);
    assert!(
        matches!(got.first(), Some(Packet::SubAck(_))),
        "SUBACK first"
    );
    assert_eq!(
        publishes(&got),
        vec![("new".into(), QoS::AtLeastOnce, true, false)]
    );
    h.send(p, &publish("r/1", "live", QoS::AtMostOnce, 0, true));
    assert_eq!(
        publishes(&h.recv(s)),
        vec![("live".into(), QoS::AtMostOnce, false, false)]
    );
}

#[test]
fn persistent_session_queues_and_resends_with_dup() {
    let mut h = Harness::new();
    let s = h.client("keep", false);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t", "inflight", QoS::AtLeastOnce, 1, false));
    assert_eq!(publishes(&h.recv(s)).len(), 1);
    h.drop_conn(s);
    h.send(p, &publish("t", "queued1", QoS::AtLeastOnce, 2, false));
    h.send(p, &publish("t", "queued2", QoS::ExactlyOnce, 3, false));
    h.send(p, &publish("t", "qos0-dropped", QoS::AtMostOnce, 0, false));
    let (_, present, after) = h.client_v("keep", false, Version::V311);
    assert!(present, "session present");
    let got = publishes(&after);
    assert_eq!(
        got,
        vec![
            ("inflight".into(), QoS::AtLeastOnce, false, true),
            ("queued1".into(), QoS::AtLeastOnce, false, false),
            ("queued2".into(), QoS::AtLeastOnce, false, false),
        ]
    );
}

#[test]
fn clean_session_discards() {
    let mut h = Harness::new();
    let s = h.client("c", false);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    h.drop_conn(s);
    let (_, present, _) = h.client_v("c", true, Version::V311);
    assert!(!present);
    assert_eq!(h.b.subscription_count(), 0);
}

#[test]
fn takeover_closes_old_connection_and_sends_will() {
    let mut h = Harness::new();
    let w = h.client("watch", true);
    h.sub(w, &[("will", QoS::AtMostOnce)]);
    let old = h.open();
    let mut c = connect_packet("dup", true, 60, Version::V311);
    if let Packet::Connect(c) = &mut c {
        c.will = Some(Will {
            topic: "will".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        });
    }
    h.send(old, &c);
    h.recv(old);
    let new = h.client("dup", true);
    assert!(h.closing(old));
    assert!(!h.closing(new));
    h.sweep();
    assert_eq!(publishes(&h.recv(w)).len(), 1);
}

fn with_will(id: &str, keep_alive: u16) -> Packet {
    let mut c = connect_packet(id, true, keep_alive, Version::V311);
    if let Packet::Connect(c) = &mut c {
        c.will = Some(Will {
            topic: "will".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        });
    }
    c
}

#[test]
fn will_on_keepalive_timeout_not_on_disconnect() {
    let mut h = Harness::new();
    let w = h.client("watch", true);
    h.sub(w, &[("will", QoS::AtLeastOnce)]);

    let polite = h.open();
    h.send(polite, &with_will("polite", 10));
    h.send(polite, &Packet::Disconnect(Disconnect::default()));
    h.sweep();
    assert!(h.recv(w).is_empty(), "no will after DISCONNECT");

    let silent = h.open();
    h.send(silent, &with_will("silent", 2));
    h.recv(silent);
    // 1.5 x 2 s: still alive at 2.9 s, gone at 3 s.
    let start = h.now;
    h.now = start + Duration::from_millis(2900);
    h.b.poll(h.now);
    assert!(!h.closing(silent));
    h.now = start + Duration::from_secs(3);
    h.b.poll(h.now);
    assert!(h.closing(silent));
    h.sweep();
    assert_eq!(
        publishes(&h.recv(w)),
        vec![("bye".into(), QoS::AtLeastOnce, false, false)]
    );
}

#[test]
fn pings_keep_a_connection_alive() {
    let mut h = Harness::new();
    let c = h.open();
    h.send(c, &connect_packet("p", true, 2, Version::V311));
    h.recv(c);
    let start = h.now;
    for i in 1..=5 {
        h.now = start + Duration::from_secs(2 * i);
        h.send(c, &Packet::PingReq);
        assert_eq!(h.recv(c), vec![Packet::PingResp]);
        h.b.poll(h.now);
        assert!(!h.closing(c));
    }
    assert!(h.b.next_deadline().is_some(), "keepalive timer armed");
}

/// One pass over the connections checks every keep alive: each connection still goes at its
/// own deadline, and one that talks stays.
#[test]
fn keepalives_of_many_connections_expire_each_on_time() {
    let mut h = Harness::new();
    let start = h.now;
    let mut conns = Vec::new();
    for ka in [4u16, 2, 6] {
        let c = h.open();
        h.send(
            c,
            &connect_packet(&format!("ka{ka}"), true, ka, Version::V311),
        );
        h.recv(c);
        conns.push((c, u64::from(ka) * 1500));
    }
    let talker = h.open();
    h.send(talker, &connect_packet("talker", true, 2, Version::V311));
    h.recv(talker);
    for ms in (500..=9500).step_by(500) {
        h.now = start + Duration::from_millis(ms);
        h.send(talker, &Packet::PingReq);
        h.recv(talker);
        h.b.poll(h.now);
        for &(c, deadline) in &conns {
            assert_eq!(h.closing(c), ms >= deadline, "connection {c} at {ms} ms");
        }
        assert!(!h.closing(talker), "the talking client stays");
    }
}

#[test]
fn connect_timeout_closes_silent_sockets() {
    let mut h = Harness::new();
    let c = h.open();
    h.now += Duration::from_secs(21);
    h.b.poll(h.now);
    assert!(h.closing(c));
}

#[test]
fn first_packet_must_be_connect_and_only_once() {
    let mut h = Harness::new();
    let c = h.open();
    h.send(c, &Packet::PingReq);
    assert!(h.closing(c));
    let c2 = h.client("x", true);
    h.send(c2, &connect_packet("x", true, 60, Version::V311));
    assert!(h.closing(c2));
}

#[test]
fn offline_queue_is_bounded_and_counts_drops() {
    let mut h = Harness::with(Limits {
        max_queued: 5,
        ..Limits::default()
    });
    let s = h.client("slow", false);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    h.drop_conn(s);
    let p = h.client("pub", true);
    for i in 1..=10 {
        h.send(p, &publish("t", "m", QoS::AtLeastOnce, i, false));
    }
    assert_eq!(h.b.stats.publish_dropped, 5);
    let (_, _, after) = h.client_v("slow", false, Version::V311);
    assert_eq!(publishes(&after).len(), 5);
}

#[test]
fn backpressure_pauses_publisher_instead_of_dropping() {
    let mut h = Harness::with(Limits {
        max_inflight: 2,
        max_queued: 10,
        ..Limits::default()
    });
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    // 40 QoS 1 messages in one read: the broker must stop taking them when the subscriber's
    // queue reaches its high-water mark (5), not drop any.
    let mut buf = BytesMut::new();
    for i in 1..=40 {
        publish("t", "m", QoS::AtLeastOnce, i, false).encode(Version::V311, &mut buf);
    }
    let used = h.b.input(p, &buf, h.now);
    assert!(used < buf.len(), "publisher paused");
    assert_eq!(h.b.stats.publish_dropped, 0);
    // The subscriber acknowledges everything it gets; the pause lifts and all 40 arrive.
    let mut rest = buf.split_off(used);
    let mut delivered = 0;
    for _ in 0..100 {
        for pkt in h.recv(s) {
            if let Packet::Publish(x) = pkt {
                delivered += 1;
                h.send(s, &Packet::PubAck(Ack::new(x.pid)));
            }
        }
        if !h.resumed().is_empty() || !h.b.conns.get(p).unwrap().paused {
            let n = h.b.input(p, &rest, h.now);
            let _ = rest.split_to(n);
        }
        if delivered == 40 {
            break;
        }
    }
    assert_eq!(delivered, 40);
    assert_eq!(h.b.stats.publish_dropped, 0);
}

#[test]
fn v5_session_expiry() {
    let mut h = Harness::new();
    let c = h.open();
    let mut cp = connect_packet("v5", false, 60, Version::V5);
    if let Packet::Connect(x) = &mut cp {
        x.properties.session_expiry_interval = Some(30);
    }
    h.send(c, &cp);
    h.recv(c);
    h.sub(c, &[("t", QoS::AtLeastOnce)]);
    h.drop_conn(c);
    assert_eq!(h.b.session_count(), 1);
    h.now += Duration::from_secs(31);
    h.b.poll(h.now);
    assert_eq!(h.b.session_count(), 0);
    assert_eq!(h.b.subscription_count(), 0);
}

#[test]
fn no_deadline_when_idle() {
    let mut h = Harness::new();
    let c = h.open();
    let mut cp = connect_packet("idle", true, 0, Version::V311);
    if let Packet::Connect(x) = &mut cp {
        x.keep_alive = 0;
    }
    h.send(c, &cp);
    h.recv(c);
    h.b.take_effects(&mut Vec::new());
    h.now += Duration::from_secs(25);
    h.b.poll(h.now);
    assert_eq!(
        h.b.next_deadline(),
        None,
        "an idle broker sleeps until an event"
    );
}

/// A 5.0 client with the given CONNECT properties; returns its connection id.
fn v5_client(h: &mut Harness, id: &str, props: Properties) -> usize {
    let c = h.open();
    let mut cp = connect_packet(id, true, 60, Version::V5);
    if let Packet::Connect(x) = &mut cp {
        x.properties = props;
    }
    h.send(c, &cp);
    match h.recv(c).first() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

fn v5_publish(topic: &str, payload: &str, qos: QoS, pid: u16, props: Properties) -> Packet {
    let mut p = publish(topic, payload, qos, pid, false);
    if let Packet::Publish(x) = &mut p {
        x.properties = props;
    }
    p
}

#[test]
fn v5_inbound_topic_alias() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("long/topic/name", QoS::AtMostOnce)]);
    let p = v5_client(&mut h, "pub", Properties::default());
    let alias = |a| Properties {
        topic_alias: Some(a),
        ..Properties::default()
    };
    h.send(
        p,
        &v5_publish("long/topic/name", "1", QoS::AtMostOnce, 0, alias(3)),
    );
    h.send(p, &v5_publish("", "2", QoS::AtMostOnce, 0, alias(3)));
    let got = publishes(&h.recv(s));
    assert_eq!(got.len(), 2, "{got:?}");
    // An alias that was never set up is a protocol error; one above the maximum too.
    h.send(p, &v5_publish("", "3", QoS::AtMostOnce, 0, alias(4)));
    assert!(h.closing(p));
    let p2 = v5_client(&mut h, "pub2", Properties::default());
    h.send(p2, &v5_publish("t", "x", QoS::AtMostOnce, 0, alias(11)));
    assert_eq!(
        h.recv(p2),
        vec![Packet::Disconnect(Disconnect {
            reason: reason::TOPIC_ALIAS_INVALID,
            properties: Properties::default()
        })]
    );
}

#[test]
fn v5_outbound_topic_alias_and_subscription_identifier() {
    let mut h = Harness::new();
    let s = v5_client(
        &mut h,
        "sub",
        Properties {
            topic_alias_maximum: Some(5),
            ..Properties::default()
        },
    );
    let mut sp = subscribe(1, &[("a/+", QoS::AtMostOnce)]);
    if let Packet::Subscribe(x) = &mut sp {
        x.properties.subscription_identifiers = vec![42];
    }
    h.send(s, &sp);
    h.recv(s);
    let p = h.client("pub", true);
    h.send(p, &publish("a/b", "1", QoS::AtMostOnce, 0, false));
    h.send(p, &publish("a/b", "2", QoS::AtMostOnce, 0, false));
    let got: Vec<Publish> = h
        .recv(s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(&*got[0].topic, "a/b");
    assert_eq!(got[0].properties.topic_alias, Some(1));
    assert_eq!(&*got[1].topic, "", "second time only the alias");
    assert_eq!(got[1].properties.topic_alias, Some(1));
    assert_eq!(got[0].properties.subscription_identifiers, vec![42]);
}

#[test]
fn v5_receive_maximum_limits_in_flight() {
    let mut h = Harness::new();
    let s = v5_client(
        &mut h,
        "sub",
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    );
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    for i in 1..=5 {
        h.send(p, &publish("t", "m", QoS::AtLeastOnce, i, false));
    }
    let first = h.recv(s);
    assert_eq!(publishes(&first).len(), 2, "window of 2");
    if let Some(Packet::Publish(x)) = first.first() {
        h.send(s, &Packet::PubAck(Ack::new(x.pid)));
    }
    assert_eq!(publishes(&h.recv(s)).len(), 1, "one ack, one more");
}

#[test]
fn v5_will_delay_cancelled_by_return_and_sent_after_delay() {
    let mut h = Harness::new();
    let w = h.client("watch", true);
    h.sub(w, &[("will", QoS::AtMostOnce)]);
    let connect_with_delayed_will = |h: &mut Harness| {
        let c = h.open();
        let mut cp = connect_packet("delayed", false, 60, Version::V5);
        if let Packet::Connect(x) = &mut cp {
            x.properties.session_expiry_interval = Some(300);
            x.will = Some(Will {
                topic: "will".into(),
                payload: Bytes::from_static(b"late"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties {
                    will_delay_interval: Some(10),
                    ..Properties::default()
                },
            });
        }
        h.send(c, &cp);
        h.recv(c);
        c
    };
    let c = connect_with_delayed_will(&mut h);
    h.drop_conn(c);
    assert!(h.recv(w).is_empty(), "held back");
    h.now += Duration::from_secs(5);
    let c = connect_with_delayed_will(&mut h);
    h.now += Duration::from_secs(10);
    h.b.poll(h.now);
    assert!(h.recv(w).is_empty(), "cancelled by the return");
    h.drop_conn(c);
    h.now += Duration::from_secs(10);
    h.b.poll(h.now);
    assert_eq!(publishes(&h.recv(w)).len(), 1, "sent after the delay");
}

#[test]
fn v5_message_expiry_forwarded_and_enforced() {
    let mut h = Harness::new();
    let s = h.client("keep", false);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    h.drop_conn(s);
    let p = v5_client(&mut h, "pub", Properties::default());
    let exp = |secs| Properties {
        message_expiry_interval: Some(secs),
        ..Properties::default()
    };
    h.send(p, &v5_publish("t", "short", QoS::AtLeastOnce, 1, exp(5)));
    h.send(p, &v5_publish("t", "long", QoS::AtLeastOnce, 2, exp(100)));
    h.now += Duration::from_secs(10);
    let (_, _, after) = h.client_v("keep", false, Version::V311);
    assert_eq!(
        publishes(&after),
        vec![("long".into(), QoS::AtLeastOnce, false, false)],
        "expired message never delivered"
    );
    let s5 = v5_client(&mut h, "v5sub", Properties::default());
    h.sub(s5, &[("t", QoS::AtMostOnce)]);
    h.send(p, &v5_publish("t", "x", QoS::AtMostOnce, 0, exp(60)));
    h.now += Duration::from_secs(1);
    match h.recv(s5).first() {
        Some(Packet::Publish(x)) => assert_eq!(x.properties.message_expiry_interval, Some(60)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn v5_shared_subscription_round_robin_and_redelivery() {
    let mut h = Harness::new();
    let m: Vec<usize> = (0..3)
        .map(|i| {
            let c = v5_client(&mut h, &format!("m{i}"), Properties::default());
            h.sub(c, &[("$share/g/jobs/#", QoS::AtLeastOnce)]);
            c
        })
        .collect();
    let p = h.client("pub", true);
    for i in 1..=30 {
        h.send(p, &publish("jobs/x", "j", QoS::AtLeastOnce, i, false));
    }
    let counts: Vec<usize> = m.iter().map(|&c| publishes(&h.recv(c)).len()).collect();
    assert_eq!(counts, vec![10, 10, 10], "round robin, each message once");
    // m0 leaves without acknowledging its 10: they go to the others.
    h.drop_conn(m[0]);
    let again: usize = m[1..].iter().map(|&c| publishes(&h.recv(c)).len()).sum();
    assert_eq!(again, 10);
}

#[test]
fn v5_enhanced_auth_refused_and_no_subscribers_reason() {
    let mut h = Harness::new();
    let c = h.open();
    let mut cp = connect_packet("auth", true, 60, Version::V5);
    if let Packet::Connect(x) = &mut cp {
        x.properties.authentication_method = Some("SCRAM-SHA-1".into());
    }
    h.send(c, &cp);
    match h.recv(c).first() {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, reason::BAD_AUTHENTICATION_METHOD),
        other => panic!("{other:?}"),
    }
    let p = v5_client(&mut h, "pub", Properties::default());
    h.send(
        p,
        &v5_publish("nobody", "x", QoS::AtLeastOnce, 1, Properties::default()),
    );
    match h.recv(p).first() {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, reason::NO_MATCHING_SUBSCRIBERS),
        other => panic!("{other:?}"),
    }
}

#[test]
fn snapshot_round_trip_restores_sessions_and_retained() {
    let mut h = Harness::new();
    let s = h.client("keep", false);
    h.sub(s, &[("t/#", QoS::ExactlyOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t/a", "inflight", QoS::AtLeastOnce, 1, false));
    h.recv(s);
    h.drop_conn(s);
    h.send(p, &publish("t/b", "queued", QoS::ExactlyOnce, 2, false));
    h.send(p, &publish("r", "kept", QoS::AtMostOnce, 0, true));
    let data = super::persist::encode(&h.b, h.now, 0);

    let mut h2 = Harness::new();
    let (img, damage) = super::persist::decode(&data, h2.now);
    assert!(damage.is_none());
    h2.b.restore(img, h2.now);
    assert_eq!(h2.b.retained_count(), 1);
    assert_eq!(h2.b.subscription_count(), 1);
    let (k, present, after) = h2.client_v("keep", false, Version::V311);
    assert!(present);
    assert_eq!(
        publishes(&after),
        vec![
            ("inflight".into(), QoS::AtLeastOnce, false, true),
            ("queued".into(), QoS::ExactlyOnce, false, false),
        ]
    );
    let p2 = h2.client("pub2", true);
    h2.send(p2, &publish("t/c", "live", QoS::AtMostOnce, 0, false));
    assert_eq!(
        publishes(&h2.recv(k)),
        vec![("live".into(), QoS::AtMostOnce, false, false)],
        "the restored subscription routes live messages"
    );
}

#[test]
fn changes_are_counted_only_for_what_is_saved() {
    let mut h = Harness::new();
    let c = h.client("clean", true);
    h.sub(c, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("t", "x", QoS::AtLeastOnce, 1, false));
    assert_eq!(h.b.changes, 0, "clean sessions are not persisted");
    h.send(p, &publish("r", "x", QoS::AtMostOnce, 0, true));
    assert_eq!(h.b.changes, 1, "a retained message is");
}

#[test]
fn stalled_subscriber_stops_holding_publishers_back() {
    let mut h = Harness::with(Limits {
        max_inflight: 2,
        max_queued: 10,
        ..Limits::default()
    });
    let s = h.client("stuck", true);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    let mut buf = BytesMut::new();
    for i in 1..=40 {
        publish("t", "m", QoS::AtLeastOnce, i, false).encode(Version::V311, &mut buf);
    }
    let used = h.b.input(p, &buf, h.now);
    assert!(used < buf.len(), "publisher paused");
    // The subscriber never acknowledges: after the stall timeout the publisher goes on, and
    // the subscriber's queue overflows (counted) instead of pausing the publisher again.
    h.now += Duration::from_secs(11);
    h.b.poll(h.now);
    assert_eq!(h.resumed(), vec![p], "publisher resumed");
    let rest = buf.split_off(used);
    assert_eq!(h.b.input(p, &rest, h.now), rest.len(), "not paused again");
    assert!(h.b.stats.publish_dropped > 0);
}

#[test]
fn sys_is_read_only_except_bridge_state() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("$SYS/#", QoS::AtMostOnce)]);
    let p = h.client("pub", true);
    h.send(
        p,
        &publish("$SYS/broker/version", "fake", QoS::AtMostOnce, 0, false),
    );
    h.send(
        p,
        &publish(
            "$SYS/broker/connection/b1/state",
            "1",
            QoS::AtMostOnce,
            0,
            true,
        ),
    );
    assert_eq!(
        publishes(&h.recv(s)),
        vec![("1".into(), QoS::AtMostOnce, false, false)]
    );
}

/// No timer fires before its deadline, whether queued before or after earlier ones.
#[test]
fn timers_never_fire_early() {
    use super::core::{Timer, Timers};
    let t0 = Instant::now();
    let mut t = Timers::default();
    let at = |us: u64| t0 + Duration::from_micros(us);
    t.push(
        at(30_000_500),
        Timer::BridgePing {
            bridge: 1,
            epoch: 1,
        },
        |_| true,
    );
    t.push(
        at(5_000_700),
        Timer::BridgePing {
            bridge: 2,
            epoch: 1,
        },
        |_| true,
    );
    t.push(
        at(40_000_001),
        Timer::BridgePing {
            bridge: 3,
            epoch: 1,
        },
        |_| true,
    );
    for (us, conn) in [(5_000_700, 2), (30_000_500, 1), (40_000_001, 3)] {
        let next = t.next().unwrap();
        assert!(next >= at(us), "timer {conn} due early");
        assert!(next <= at(us + 1000), "timer {conn} more than 1 ms late");
        assert_eq!(
            t.pop_due(at(us).checked_sub(Duration::from_micros(1)).unwrap()),
            None
        );
        assert_eq!(
            t.pop_due(next),
            Some(Timer::BridgePing {
                bridge: conn,
                epoch: 1
            })
        );
    }
    assert_eq!(t.next(), None);
}

/// Issue 14 (a): a publisher paused by backpressure and resumed while the loop writes the
/// subscriber's output (`flushed`) has its bytes in the kernel already; with edge-triggered
/// readiness no event will say so. The broker must not let the loop sleep: its next deadline
/// is now, not the stall timer two seconds out.
#[test]
fn resumed_publisher_is_not_left_for_the_stall_timer() {
    let mut h = Harness::new();
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::AtMostOnce)]);
    let p = h.client("pub", true);
    let payload = "x".repeat(8 * 1024);
    let mut buf = BytesMut::new();
    for _ in 0..100 {
        publish("t", &payload, QoS::AtMostOnce, 0, false).encode(Version::V311, &mut buf);
    }
    let used = h.b.input(p, &buf, h.now);
    assert!(
        used < buf.len(),
        "the subscriber's output reached its high-water mark"
    );
    assert!(h.b.conns.get(p).unwrap().paused);
    // The loop writes everything the subscriber has; the socket takes it all.
    let conn = h.b.conns.get_mut(s).unwrap();
    let n = conn.out().len();
    conn.out_consumed(n);
    h.b.flushed(s, h.now);
    assert!(!h.b.conns.get(p).unwrap().paused, "publisher resumed");
    let due = h.b.next_deadline().expect("a deadline");
    assert!(
        due <= h.now,
        "the loop would sleep {:?} with a resumed publisher",
        due - h.now
    );
}

/// A stand-in for the event loop of `server.rs` over simulated sockets, to check the loop
/// contract without a network: each pass handles the broker's effects once, a connection
/// reads at most `budget` bytes a pass, and the loop sleeps only when the broker says it may.
/// Peers read `drain` bytes of their socket per poll and acknowledge QoS 1 at once.
struct Sim {
    b: Broker,
    now: Instant,
    socks: std::collections::BTreeMap<usize, SimSock>,
    budget: usize,
    drain: usize,
}

#[derive(Default)]
struct SimSock {
    /// Client bytes in the kernel, not yet read.
    inbox: Vec<u8>,
    /// Read but not taken by the broker (the loop's per-connection buffer).
    pending: Vec<u8>,
    /// In the socket's send buffer, and its size.
    queued: usize,
    cap: usize,
    /// What the peer has read and not yet decoded; PUBLISHes it decoded.
    got: Vec<u8>,
    publishes: Vec<Publish>,
    /// Write interest armed: the socket did not take everything.
    blocked: bool,
    /// New bytes in `inbox` since the last read: an edge-triggered readable event.
    edge: bool,
}

impl Sim {
    fn new(limits: Limits) -> Sim {
        Sim {
            b: Broker::new(limits, 7),
            now: Instant::now(),
            socks: Default::default(),
            budget: 64 * 1024,
            drain: 16 * 1024,
        }
    }

    /// A connected client (CONNECT answered, optionally subscribed to `t`).
    fn client(&mut self, id: &str, sub: Option<QoS>) -> usize {
        let c = self.b.accept(peer(), 1883, true, self.now);
        self.socks.insert(
            c,
            SimSock {
                cap: 64 * 1024,
                ..SimSock::default()
            },
        );
        self.push(c, &connect_packet(id, true, 60, Version::V311));
        if let Some(q) = sub {
            self.push(c, &subscribe(1, &[("t", q)]));
        }
        self.settle();
        c
    }

    /// The client sends `p`: it is in the kernel, with one readable event.
    fn push(&mut self, c: usize, p: &Packet) {
        if let Some(s) = self.socks.get_mut(&c) {
            let mut b = BytesMut::new();
            p.encode(Version::V311, &mut b);
            s.inbox.extend_from_slice(&b);
            s.edge = true;
        }
    }

    /// `server.rs` `read`: the leftover first, then the socket until it is empty, the
    /// connection is paused or closing, or the budget is used.
    fn read(&mut self, id: usize) {
        let Some(s) = self.socks.get_mut(&id) else {
            return;
        };
        s.edge = false;
        if !s.pending.is_empty() {
            let used = self.b.input(id, &s.pending, self.now);
            s.pending.drain(..used);
        }
        let mut budget = self.budget;
        loop {
            match self.b.conns.get(id) {
                Some(c) if c.close.is_none() && !c.paused => {}
                _ => break,
            }
            if budget == 0 {
                self.b.read_again(id);
                break;
            }
            if s.inbox.is_empty() {
                break;
            }
            let n = s.inbox.len().min(64 * 1024).min(budget);
            budget -= n;
            s.pending.extend(s.inbox.drain(..n));
            let used = self.b.input(id, &s.pending, self.now);
            s.pending.drain(..used);
        }
    }

    /// `server.rs` `write`: as much as the socket takes.
    fn write(&mut self, id: usize) {
        let (Some(s), Some(c)) = (self.socks.get_mut(&id), self.b.conns.get_mut(id)) else {
            return;
        };
        let n = c.out().len().min(s.cap - s.queued);
        s.got.extend_from_slice(&c.out()[..n]);
        c.out_consumed(n);
        s.queued += n;
        s.blocked = !c.out().is_empty();
        self.b.flushed(id, self.now);
    }

    /// `server.rs` `pass` and `flush`.
    fn pass(&mut self) {
        let mut effects = Vec::new();
        self.b.take_effects(&mut effects);
        for e in &effects {
            if let Effect::Resume(id) | Effect::Read(id) = *e {
                self.read(id as usize);
            }
        }
        let mut batch = effects;
        while !batch.is_empty() {
            for e in std::mem::take(&mut batch) {
                match e {
                    Effect::Write(id) => self.write(id as usize),
                    Effect::Close(id) => {
                        let id = id as usize;
                        self.write(id);
                        self.socks.remove(&id);
                        self.b.finish(id, self.now);
                    }
                    _ => {}
                }
            }
            self.b.take_output(&mut batch);
        }
    }

    /// What must not be true when the broker lets the loop sleep: work nobody will be woken
    /// for. Returns what is wrong.
    fn stuck(&self) -> Option<String> {
        for (&id, s) in &self.socks {
            let Some(c) = self.b.conns.get(id) else {
                continue;
            };
            if !c.out().is_empty() && !s.blocked {
                return Some(format!("connection {id}: output the socket would take"));
            }
            let complete = decode(&s.pending, Version::V311, usize::MAX)
                .ok()
                .flatten()
                .is_some();
            // Bytes that came since the last read bring an event; older ones do not.
            if c.close.is_none() && !c.paused && ((!s.inbox.is_empty() && !s.edge) || complete) {
                return Some(format!("connection {id}: input left unread"));
            }
            if c.paused {
                // Only a subscriber still draining (socket full) or awaiting acknowledgements
                // may hold a publisher back.
                let progressing = self.b.congested.iter().any(|(sid, _)| {
                    self.b.table.get(*sid).is_some_and(|ss| {
                        ss.conn().is_some_and(|cc| {
                            self.socks
                                .get(&cc)
                                .is_some_and(|k| k.blocked || k.queued > 0)
                                || !ss.flow().inflight.is_empty()
                        })
                    })
                });
                if !progressing {
                    return Some(format!("connection {id}: paused, nothing will resume it"));
                }
            }
        }
        for (sid, s) in self.b.table.iter() {
            let f = s.flow();
            let room = f
                .queue
                .front()
                .is_some_and(|p| p.qos == QoS::AtMostOnce || f.inflight.len() < s.window());
            if s.conn().is_some() && room {
                return Some(format!("session {sid}: queued messages and window space"));
            }
        }
        None
    }

    /// The peers read what their sockets hold (up to `drain` each) and acknowledge QoS 1;
    /// sockets that were full become writable. Returns the events.
    fn peers(&mut self) -> Vec<(usize, bool, bool)> {
        let mut events = Vec::new();
        for (&id, s) in self.socks.iter_mut() {
            let taken = s.queued.min(self.drain);
            s.queued -= taken;
            let mut acks = BytesMut::new();
            while let Some((p, n)) = decode(&s.got, Version::V311, usize::MAX).unwrap() {
                s.got.drain(..n);
                if let Packet::Publish(p) = p {
                    if p.qos == QoS::AtLeastOnce {
                        Packet::PubAck(Ack::new(p.pid)).encode(Version::V311, &mut acks);
                    }
                    s.publishes.push(p);
                }
            }
            if !acks.is_empty() {
                s.inbox.extend_from_slice(&acks);
                s.edge = true;
            }
            let writable = s.blocked && taken > 0;
            if writable || s.edge {
                events.push((id, writable, s.edge));
            }
        }
        events
    }

    /// One pass and one poll. True when the loop goes to sleep with nothing on its way: no
    /// event, no effect, and the peers have read everything, so only a timer (or a new client
    /// packet) could wake it. Time does not move.
    fn step(&mut self) -> bool {
        self.b.poll(self.now);
        self.pass();
        let delay = self.b.poll_delay(self.now);
        if delay != Some(Duration::ZERO) {
            if let Some(why) = self.stuck() {
                panic!("the loop may sleep {delay:?} but {why}");
            }
        }
        let events = self.peers();
        let idle = events.is_empty()
            && delay != Some(Duration::ZERO)
            && self.socks.values().all(|s| s.queued == 0);
        for (id, writable, readable) in events {
            if writable {
                self.write(id);
            }
            if readable {
                self.read(id);
            }
        }
        idle
    }

    /// Steps until `done`; false if the loop went to sleep first (or `max` steps passed).
    fn run_until(&mut self, max: usize, done: impl Fn(&Sim) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            if self.step() {
                return done(self);
            }
        }
        false
    }

    /// Steps until the loop sleeps.
    fn settle(&mut self) {
        assert!(self.run_until(10_000, |_| false) || !self.b.has_work());
    }

    fn received(&self, c: usize) -> usize {
        self.socks.get(&c).map_or(0, |s| s.publishes.len())
    }
}

/// Issue 14, fan-out 1 → 50 QoS 0, 4,000 messages: the publisher is paused and resumed many
/// times; every message arrives and the loop never sleeps on a timer to get there.
#[test]
fn fan_out_through_congestion_never_waits_for_a_timer() {
    let mut sim = Sim::new(Limits::default());
    let subs: Vec<usize> = (0..50)
        .map(|i| sim.client(&format!("s{i}"), Some(QoS::AtMostOnce)))
        .collect();
    let p = sim.client("pub", None);
    let payload = "x".repeat(100);
    for _ in 0..4000 {
        sim.push(p, &publish("t", &payload, QoS::AtMostOnce, 0, false));
    }
    let paused = std::cell::Cell::new(0);
    let done = sim.run_until(100_000, |sim| {
        paused.set(paused.get() + usize::from(sim.b.conns.get(p).is_some_and(|c| c.paused)));
        subs.iter().all(|&s| sim.received(s) == 4000)
    });
    assert!(done, "the loop went to sleep with messages undelivered");
    assert!(
        paused.get() > 0,
        "the subscribers' output was never congested"
    );
    assert_eq!(sim.b.stats.publish_dropped, 0);
}

/// Fan-in 8 → 1 QoS 1: the subscriber's window and queue hold the publishers back; the
/// acknowledgements let them go on. All arrive in order per publisher, none waits for a timer.
#[test]
fn fan_in_qos1_through_backpressure_never_waits_for_a_timer() {
    let mut sim = Sim::new(Limits::default());
    let s = sim.client("sub", Some(QoS::AtLeastOnce));
    let pubs: Vec<usize> = (0..8).map(|i| sim.client(&format!("p{i}"), None)).collect();
    for (i, &p) in pubs.iter().enumerate() {
        for n in 1..=2000u16 {
            let body = format!("{i}:{n}");
            sim.push(p, &publish("t", &body, QoS::AtLeastOnce, n, false));
        }
    }
    let done = sim.run_until(100_000, |sim| sim.received(s) == 16_000);
    assert!(
        done,
        "the loop went to sleep with {} of 16,000 delivered",
        sim.received(s)
    );
    let mut last = [0u16; 8];
    for p in &sim.socks[&s].publishes {
        let body = String::from_utf8_lossy(&p.payload).into_owned();
        let (i, n) = body.split_once(':').unwrap();
        let (i, n): (usize, u16) = (i.parse().unwrap(), n.parse().unwrap());
        assert_eq!(n, last[i] + 1, "publisher {i} in order");
        last[i] = n;
    }
    assert_eq!(sim.b.stats.publish_dropped, 0);
}

/// A connection that used its read budget with input left is read again next pass, though
/// no new event comes; meanwhile another connection's PINGREQ is answered in the first pass.
#[test]
fn read_budget_revisits_without_an_event_and_lets_others_in() {
    let mut sim = Sim::new(Limits::default());
    sim.budget = 4 * 1024;
    let s = sim.client("sub", Some(QoS::AtMostOnce));
    let p = sim.client("pub", None);
    let other = sim.client("other", None);
    for _ in 0..1000 {
        sim.push(p, &publish("t", "0123456789", QoS::AtMostOnce, 0, false));
    }
    sim.push(other, &Packet::PingReq);
    // The events: both are read, the publisher only up to its budget.
    let events = sim.peers();
    for (id, _, _) in events {
        sim.read(id);
    }
    assert!(sim.b.has_work(), "the rest is owed");
    sim.pass();
    let pong = decode(&sim.socks[&other].got, Version::V311, usize::MAX).unwrap();
    assert!(matches!(pong, Some((Packet::PingResp, _))), "{pong:?}");
    let early = sim.socks[&s].got.len() + sim.socks[&s].publishes.len();
    assert!(early < 1000 * 14, "one budget's worth in the first pass");
    assert!(sim.run_until(1000, |sim| sim.received(s) == 1000));
}

/// A connection storm queues an effect or two per client per pass; they stay small.
#[test]
fn effects_are_eight_bytes() {
    assert_eq!(std::mem::size_of::<Effect>(), 8);
}

mod expiry;
mod issue13;
mod issue15;
mod issue16;

#[cfg(test)]
mod journal;
