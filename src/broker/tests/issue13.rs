//! Issue 13: one sans-IO test per reported defect (packets and timestamps in, packets out).
//! Each failed before the session epochs, the takeover rules and the checks they name.

use super::*;
use crate::auth::acl::Acl;
use crate::config::{Bridge, BridgeTopic, Direction};

/// A CONNECT with every field the tests vary.
struct Conn<'a> {
    id: &'a str,
    version: Version,
    clean: bool,
    keep_alive: u16,
    user: Option<&'a str>,
    will: Option<Will>,
    props: Properties,
}

impl<'a> Conn<'a> {
    fn new(id: &'a str, version: Version) -> Conn<'a> {
        Conn {
            id,
            version,
            clean: true,
            keep_alive: 60,
            user: None,
            will: None,
            props: Properties::default(),
        }
    }

    fn packet(self) -> Packet {
        Packet::Connect(Box::new(Connect {
            version: self.version,
            bridge: false,
            clean_start: self.clean,
            keep_alive: self.keep_alive,
            client_id: self.id.to_owned(),
            will: self.will,
            username: self.user.map(str::to_owned),
            password: None,
            properties: self.props,
        }))
    }
}

fn will(topic: &str, delay: Option<u32>, retain: bool) -> Will {
    Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"will"),
        qos: QoS::AtMostOnce,
        retain,
        properties: Properties {
            will_delay_interval: delay,
            ..Properties::default()
        },
    }
}

fn expiry(secs: u32) -> Properties {
    Properties {
        session_expiry_interval: Some(secs),
        ..Properties::default()
    }
}

impl Harness {
    /// Connects; returns the connection and its CONNACK (if one came).
    fn connect(&mut self, c: Conn<'_>) -> (usize, Option<ConnAck>) {
        let (id, ack, _) = self.connect_rest(c);
        (id, ack)
    }

    /// Connects; returns the connection, its CONNACK and what followed it.
    fn connect_rest(&mut self, c: Conn<'_>) -> (usize, Option<ConnAck>, Vec<Packet>) {
        let id = self.open();
        self.send(id, &c.packet());
        let mut got = self.recv(id);
        let ack = match got.first() {
            Some(Packet::ConnAck(a)) => Some(a.clone()),
            _ => None,
        };
        if ack.is_some() {
            got.remove(0);
        }
        (id, ack, got)
    }

    fn at(&mut self, start: Instant, secs: f64) {
        self.now = start + Duration::from_secs_f64(secs);
        self.b.poll(self.now);
        self.sweep();
    }

    fn with_acl(text: &str) -> Harness {
        let mut h = Harness::new();
        h.b.auth.acl = Some(Acl::parse(text, "acl").unwrap());
        h
    }
}

fn present(a: &Option<ConnAck>) -> bool {
    let a = a.as_ref().expect("CONNACK");
    assert_eq!(a.code, 0, "{a:?}");
    a.session_present
}

/// MQTT 5, session expiry 4 s: a disconnect at 0, a return at 3, a disconnect at 3.5. The
/// timer of the first disconnect is stale: the session lives until 7.5.
#[test]
fn stale_expiry_timer_does_not_end_a_resumed_session() {
    let mut h = Harness::new();
    let t0 = h.now;
    let persistent = |clean| Conn {
        clean,
        props: expiry(4),
        ..Conn::new("c", Version::V5)
    };
    let (c, _) = h.connect(persistent(true));
    h.drop_conn(c);
    h.at(t0, 3.0);
    let (c, a) = h.connect(persistent(false));
    assert!(present(&a));
    h.at(t0, 3.5);
    h.drop_conn(c);
    h.at(t0, 5.0);
    let (c, a) = h.connect(persistent(false));
    assert!(present(&a), "the timer from t=0 ended the session at t=4");
    h.drop_conn(c);
    h.at(t0, 9.1);
    assert_eq!(
        h.b.session_count(),
        0,
        "expired 4 s after the last disconnect"
    );
}

/// The same hole sent a delayed will early: the first detachment's will timer fired the
/// second detachment's will.
#[test]
fn stale_will_delay_timer_does_not_send_a_later_will_early() {
    let mut h = Harness::new();
    let t0 = h.now;
    let w = h.client("watch", true);
    h.sub(w, &[("will", QoS::AtMostOnce)]);
    let delayed = || Conn {
        clean: false,
        props: expiry(100),
        will: Some(will("will", Some(10), false)),
        ..Conn::new("d", Version::V5)
    };
    let (c, _) = h.connect(delayed());
    h.drop_conn(c);
    h.at(t0, 3.0);
    let (c, _) = h.connect(delayed());
    h.at(t0, 5.0);
    h.drop_conn(c);
    h.at(t0, 10.5);
    assert!(h.recv(w).is_empty(), "due at 15, not 10");
    h.at(t0, 15.0);
    assert_eq!(publishes(&h.recv(w)).len(), 1);
}

/// Every disconnect queues an expiry timer; the stale ones are compacted away.
#[test]
fn connect_disconnect_cycling_does_not_grow_the_timer_heap() {
    let mut h = Harness::new();
    for _ in 0..2000 {
        let (c, _) = h.connect(Conn {
            clean: false,
            props: expiry(3600),
            ..Conn::new("cycle", Version::V5)
        });
        h.drop_conn(c);
    }
    assert!(h.b.timers.len() <= 130, "{} timers", h.b.timers.len());
}

/// [MQTT-3.1.2-6] a clean session ends with its connection; a takeover does not resume it.
#[test]
fn clean_session_takeover_is_not_resumed() {
    let mut h = Harness::new();
    let (a, _) = h.connect(Conn::new("x", Version::V311));
    h.sub(a, &[("t", QoS::AtLeastOnce)]);
    let (_, ack) = h.connect(Conn {
        clean: false,
        ..Conn::new("x", Version::V311)
    });
    assert!(!present(&ack));
    assert_eq!(h.b.subscription_count(), 0, "A's subscriptions went with A");
    // The 5.0 equivalent: session expiry 0.
    let (a, _) = h.connect(Conn::new("y", Version::V5));
    h.sub(a, &[("t", QoS::AtLeastOnce)]);
    let (_, ack) = h.connect(Conn {
        clean: false,
        props: expiry(60),
        ..Conn::new("y", Version::V5)
    });
    assert!(!present(&ack));
}

/// MQTT 3.1 has no session present flag: the byte is reserved and must be 0.
#[test]
fn mqtt31_connack_byte_is_zero() {
    let mut h = Harness::new();
    let p = || Conn {
        clean: false,
        ..Conn::new("old", Version::V31)
    };
    let (c, _) = h.connect(p());
    h.sub(c, &[("t", QoS::AtLeastOnce)]);
    h.drop_conn(c);
    let (_, ack) = h.connect(p());
    assert!(!present(&ack));
    assert_eq!(h.b.subscription_count(), 1, "the session is still resumed");
}

/// [MQTT-3.1.3-9] a takeover is a new connection to the session within the will delay: the
/// delayed will is not sent, neither at once nor later.
#[test]
fn will_delay_survives_takeover() {
    let mut h = Harness::new();
    let t0 = h.now;
    let w = h.client("watch", true);
    h.sub(w, &[("will", QoS::AtMostOnce)]);
    let c = || Conn {
        clean: false,
        props: expiry(100),
        will: Some(will("will", Some(10), false)),
        ..Conn::new("d", Version::V5)
    };
    let (old, _) = h.connect(c());
    let (_, ack) = h.connect(c());
    assert!(present(&ack));
    assert!(h.closing(old));
    h.sweep();
    assert!(h.recv(w).is_empty(), "sent at once on takeover");
    h.at(t0, 20.0);
    assert!(h.recv(w).is_empty(), "sent after the delay");
    // A takeover with clean start ends the session: the will goes then.
    h.connect(Conn {
        props: expiry(100),
        ..Conn::new("d", Version::V5)
    });
    h.sweep();
    assert_eq!(publishes(&h.recv(w)).len(), 1);
}

fn bridge(topics: &[&str]) -> Bridge {
    let mut b = Bridge::new("br");
    b.addresses = vec![("127.0.0.1".into(), 1)];
    b.notifications = false;
    b.topics = topics
        .iter()
        .map(|t| BridgeTopic {
            pattern: (*t).into(),
            direction: Direction::Out,
            qos: 1,
            local_prefix: String::new(),
            remote_prefix: String::new(),
        })
        .collect();
    b
}

/// A topic removed from the bridge configuration between runs stops being forwarded, even
/// though the restored session still had it in the tree.
#[test]
fn bridge_subscriptions_follow_the_configuration_after_restore() {
    let mut h = Harness::new();
    h.b.add_bridges(&[bridge(&["a/#", "b/#"])], h.now);
    assert_eq!(h.b.subscription_count(), 2);
    let data = super::super::persist::encode(&h.b, h.now, 0);
    let mut h2 = Harness::new();
    let (img, _) = super::super::persist::decode(&data, h2.now);
    h2.b.restore(img, h2.now);
    h2.b.add_bridges(&[bridge(&["a/#"])], h2.now);
    assert_eq!(h2.b.subscription_count(), 1, "b/# left behind in the tree");
}

/// A PUBREC with a failure code ends the QoS 2 flow: the id is free for the next message.
#[test]
fn refused_qos2_id_is_not_kept() {
    let mut h = Harness::with_acl("topic readwrite ok/#\n");
    let s = h.client("sub", true);
    h.sub(s, &[("ok/#", QoS::ExactlyOnce)]);
    let p = v5_client(&mut h, "pub", Properties::default());
    h.send(p, &publish("secret", "no", QoS::ExactlyOnce, 5, false));
    match h.recv(p).as_slice() {
        [Packet::PubRec(a)] => assert_eq!(a.reason, reason::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
    h.send(p, &publish("ok/1", "yes", QoS::ExactlyOnce, 5, false));
    assert_eq!(publishes(&h.recv(s)).len(), 1, "dropped as a duplicate");
}

/// An outbound alias is learnt by the client only from a PUBLISH that was sent.
#[test]
fn topic_alias_recorded_only_when_the_publish_goes_out() {
    let mut h = Harness::new();
    let s = v5_client(
        &mut h,
        "sub",
        Properties {
            topic_alias_maximum: Some(5),
            maximum_packet_size: Some(64),
            ..Properties::default()
        },
    );
    h.sub(s, &[("t", QoS::AtMostOnce)]);
    let p = h.client("pub", true);
    h.send(
        p,
        &publish("t", &"x".repeat(100), QoS::AtMostOnce, 0, false),
    );
    assert!(h.recv(s).is_empty(), "too large for the subscriber");
    h.send(p, &publish("t", "small", QoS::AtMostOnce, 0, false));
    match h.recv(s).as_slice() {
        [Packet::Publish(x)] => {
            assert_eq!(&*x.topic, "t", "an alias the client never learnt");
            assert_eq!(x.properties.topic_alias, Some(1));
        }
        other => panic!("{other:?}"),
    }
}

/// A shared-subscription member that may not read a message is not picked for it.
#[test]
fn shared_member_is_picked_after_the_acl_check() {
    let mut h = Harness::with_acl(
        "topic write t/#\n\nuser a\ntopic read t/#\n\nuser b\ntopic read t/#\ntopic deny t/secret\n",
    );
    let (a, _) = h.connect(Conn {
        user: Some("a"),
        ..Conn::new("a", Version::V5)
    });
    let (b, _) = h.connect(Conn {
        user: Some("b"),
        ..Conn::new("b", Version::V5)
    });
    h.sub(a, &[("$share/g/t/#", QoS::AtMostOnce)]);
    h.sub(b, &[("$share/g/t/#", QoS::AtMostOnce)]);
    let p = h.client("pub", true);
    for _ in 0..4 {
        h.send(p, &publish("t/secret", "s", QoS::AtMostOnce, 0, false));
    }
    assert_eq!(publishes(&h.recv(a)).len(), 4, "b swallowed some");
    assert!(h.recv(b).is_empty());
}

/// A publisher the broker stopped reading is not timed out for the silence it caused.
#[test]
fn paused_publisher_keeps_its_keep_alive() {
    let mut h = Harness::with(Limits {
        max_inflight: 2,
        max_queued: 10,
        stall_timeout: Duration::from_secs(60),
        ..Limits::default()
    });
    let t0 = h.now;
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let (p, _) = h.connect(Conn {
        keep_alive: 2,
        ..Conn::new("pub", Version::V311)
    });
    let mut buf = BytesMut::new();
    for i in 1..=40 {
        publish("t", "m", QoS::AtLeastOnce, i, false).encode(Version::V311, &mut buf);
    }
    let used = h.b.input(p, &buf, h.now);
    assert!(used < buf.len(), "publisher paused");
    h.at(t0, 10.0);
    assert!(!h.closing(p), "timed out while the broker held it back");
    // Unpaused, its keep alive counts again, from the end of the pause.
    for _ in 0..50 {
        for pkt in h.recv(s) {
            if let Packet::Publish(x) = pkt {
                h.send(s, &Packet::PubAck(Ack::new(x.pid)));
            }
        }
    }
    assert!(!h.b.conns.get(p).unwrap().paused);
    h.at(t0, 12.9);
    assert!(!h.closing(p));
    h.at(t0, 13.1);
    assert!(h.closing(p));
}

/// A will is a PUBLISH on the client's behalf: not into `$SYS`; and a retained will where
/// retain is not available is refused with 0x9A, not stripped of its flag.
#[test]
fn will_checks_at_connect() {
    let mut h = Harness::new();
    let (c, ack) = h.connect(Conn {
        will: Some(will("$SYS/broker/uptime", None, false)),
        ..Conn::new("w", Version::V5)
    });
    assert_eq!(ack.map(|a| a.code), Some(reason::NOT_AUTHORIZED));
    assert!(h.closing(c));

    let mut h = Harness::with(Limits {
        retain_available: false,
        ..Limits::default()
    });
    let (c, ack) = h.connect(Conn {
        will: Some(will("w", None, true)),
        ..Conn::new("w", Version::V5)
    });
    assert_eq!(ack.map(|a| a.code), Some(reason::RETAIN_NOT_SUPPORTED));
    assert!(h.closing(c));
    let (c, ack) = h.connect(Conn {
        will: Some(will("w", None, true)),
        ..Conn::new("w3", Version::V311)
    });
    assert!(ack.is_none(), "3.1.1 has no code for it: closed");
    assert!(h.closing(c));
}

/// A persistent session resumed under another user name gets only what that user may read.
#[test]
fn resumed_session_is_filtered_by_the_new_users_acl() {
    let mut h = Harness::with_acl(
        "topic write t/#\n\nuser a\ntopic read t/#\n\nuser b\ntopic read t/public\n",
    );
    let c = |user| Conn {
        clean: false,
        user: Some(user),
        ..Conn::new("shared-device", Version::V311)
    };
    let (s, _) = h.connect(c("a"));
    h.sub(s, &[("t/#", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    h.send(
        p,
        &publish("t/private", "inflight", QoS::AtLeastOnce, 1, false),
    );
    assert_eq!(publishes(&h.recv(s)).len(), 1);
    h.drop_conn(s);
    h.send(
        p,
        &publish("t/private", "queued", QoS::AtLeastOnce, 2, false),
    );
    h.send(
        p,
        &publish("t/public", "public", QoS::AtLeastOnce, 3, false),
    );
    let (_, _, after) = h.connect_rest(c("b"));
    let got = publishes(&after);
    assert_eq!(
        got,
        vec![("public".into(), QoS::AtLeastOnce, false, false)],
        "b got a's messages"
    );
}

/// [MQTT-3.1.2-24] a CONNACK larger than the client accepts is not sent: the connection
/// closes.
#[test]
fn connack_above_the_clients_maximum_packet_size_closes() {
    let mut h = Harness::new();
    let (c, ack) = h.connect(Conn {
        props: Properties {
            maximum_packet_size: Some(5),
            ..Properties::default()
        },
        ..Conn::new("tiny", Version::V5)
    });
    assert!(ack.is_none());
    assert!(h.closing(c));
    assert_eq!(h.b.session_count(), 0);
}

/// Raw bytes of a 5.0 PUBLISH to `t` (QoS 0) with the given property block.
fn raw_publish_v5(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1, b't', props.len() as u8];
    body.extend_from_slice(props);
    body.extend_from_slice(b"hi");
    let mut p = vec![0x30, body.len() as u8];
    p.extend(body);
    p
}

fn disconnect_reason(h: &mut Harness, c: usize) -> Option<u8> {
    h.recv(c).into_iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

/// MQTT 5 §2.2.2.2: a property not allowed in the packet makes it malformed (0x81).
#[test]
fn disallowed_property_is_malformed() {
    let mut h = Harness::new();
    let c = v5_client(&mut h, "p", Properties::default());
    // Session Expiry Interval (0x11) belongs to CONNECT, CONNACK and DISCONNECT.
    h.b.input(c, &raw_publish_v5(&[0x11, 0, 0, 0, 1]), h.now);
    assert_eq!(disconnect_reason(&mut h, c), Some(reason::MALFORMED_PACKET));
    assert!(h.closing(c));
}

/// [MQTT-3.3.4-6] a client may not send a Subscription Identifier in PUBLISH.
#[test]
fn subscription_identifier_from_a_client_is_a_protocol_error() {
    let mut h = Harness::new();
    let c = v5_client(&mut h, "p", Properties::default());
    h.b.input(c, &raw_publish_v5(&[0x0B, 7]), h.now);
    assert_eq!(disconnect_reason(&mut h, c), Some(reason::PROTOCOL_ERROR));
    assert!(h.closing(c));
}

/// An acknowledgement of the wrong type for a message in flight closes the connection, as
/// Mosquitto does.
#[test]
fn wrong_acknowledgement_type_closes() {
    type MakeAck = fn(u16) -> Packet;
    let cases: [(QoS, MakeAck); 3] = [
        (QoS::AtLeastOnce, |pid| Packet::PubRec(Ack::new(pid))),
        (QoS::ExactlyOnce, |pid| Packet::PubAck(Ack::new(pid))),
        (QoS::ExactlyOnce, |pid| Packet::PubComp(Ack::new(pid))),
    ];
    for (qos, ack) in cases {
        let mut h = Harness::new();
        let s = h.client("sub", true);
        h.sub(s, &[("t", qos)]);
        let p = h.client("pub", true);
        h.send(p, &publish("t", "m", qos, 1, false));
        let pid = match h.recv(s).as_slice() {
            [Packet::Publish(x)] => x.pid,
            other => panic!("{other:?}"),
        };
        h.send(s, &ack(pid));
        assert!(h.closing(s), "{qos:?} answered with {:?}", ack(pid));
    }
}

/// max_keepalive holds for 3.1.1 too: such a client cannot be told a shorter keep alive, so
/// one asking for more is refused (identifier rejected, as Mosquitto 2.0.12 and later do).
/// Keep alive 0 stays allowed.
#[test]
fn max_keepalive_refuses_longer_3_1_1_keep_alives() {
    let mut h = Harness::with(Limits {
        max_keepalive: 30,
        ..Limits::default()
    });
    let (c, ack) = h.connect(Conn {
        keep_alive: 60,
        ..Conn::new("long", Version::V311)
    });
    assert_eq!(ack.map(|a| a.code), Some(reason::V3_IDENTIFIER_REJECTED));
    assert!(h.closing(c));
    for ka in [30, 0] {
        let (_, ack) = h.connect(Conn {
            keep_alive: ka,
            ..Conn::new("ok", Version::V311)
        });
        assert_eq!(ack.map(|a| a.code), Some(0), "keep alive {ka}");
    }
}

/// An expired retained message is removed, not just skipped on delivery.
#[test]
fn expired_retained_messages_are_purged() {
    let mut h = Harness::new();
    let t0 = h.now;
    let p = v5_client(&mut h, "p", Properties::default());
    let mut m = v5_publish(
        "r",
        "short-lived",
        QoS::AtMostOnce,
        0,
        Properties {
            message_expiry_interval: Some(5),
            ..Properties::default()
        },
    );
    if let Packet::Publish(x) = &mut m {
        x.retain = true;
    }
    h.send(p, &m);
    assert_eq!(h.b.retained_count(), 1);
    assert!(h
        .b
        .next_deadline()
        .is_some_and(|d| d <= t0 + Duration::from_secs(5)));
    h.at(t0, 5.0);
    assert_eq!(h.b.retained_count(), 0);
}

/// One PINGREQ per keep alive on a bridge, however often it reconnected: a ping chain of an
/// earlier connection (whose slab id the new one reuses) stops.
#[test]
fn bridge_pings_do_not_multiply_across_reconnects() {
    let mut h = Harness::new();
    let t0 = h.now;
    let mut b = bridge(&["a/#"]);
    b.keepalive = 10;
    b.restart_timeout = (1, 1);
    h.b.add_bridges(&[b], h.now);
    h.b.take_effects(&mut Vec::new());
    let remote: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut conn = 0;
    for round in 0..3 {
        conn = h.b.bridge_open(0, remote, h.now).unwrap();
        h.recv(conn);
        let mut ack = BytesMut::new();
        Packet::ConnAck(ConnAck {
            session_present: false,
            code: 0,
            properties: Properties::default(),
        })
        .encode(Version::V311, &mut ack);
        h.b.input(conn, &ack, h.now);
        h.recv(conn);
        if round < 2 {
            h.at(t0, f64::from(round) * 3.0 + 1.0);
            h.drop_conn(conn);
            h.at(t0, f64::from(round) * 3.0 + 2.5);
            h.b.take_effects(&mut Vec::new());
        }
    }
    let mut pings = 0;
    for s in 1..=40 {
        h.at(t0, 7.0 + f64::from(s));
        pings += h
            .recv(conn)
            .iter()
            .filter(|p| **p == Packet::PingReq)
            .count();
        // The remote answers, so the bridge's keep alive holds.
        let mut resp = BytesMut::new();
        Packet::PingResp.encode(Version::V311, &mut resp);
        h.b.input(conn, &resp, h.now);
    }
    assert_eq!(pings, 4, "one chain: a PINGREQ every 10 s");
}

/// Like Mosquitto, a 5.0 acknowledgement with reason 0x00 and no properties is four bytes.
#[test]
fn v5_success_acknowledgements_omit_the_reason() {
    let mut h = Harness::new();
    let p = v5_client(&mut h, "p", Properties::default());
    let s = h.client("sub", true);
    h.sub(s, &[("t", QoS::ExactlyOnce)]);
    h.send(p, &publish("t", "m", QoS::AtLeastOnce, 1, false));
    h.send(p, &publish("t", "m", QoS::ExactlyOnce, 2, false));
    h.send(p, &Packet::PubRel(Ack::new(2)));
    let out = h.b.conns.get(p).unwrap().out().to_vec();
    assert_eq!(out, [0x40, 2, 0, 1, 0x50, 2, 0, 2, 0x70, 2, 0, 2]);
}

/// Found by the differential test: of overlapping subscriptions, a no-local one does not
/// match the session's own message, so it neither blocks the delivery through another nor
/// lends it its QoS or retain-as-published (Mosquitto agrees). [MQTT-3.8.3-3]
#[test]
fn no_local_subscription_takes_no_part_in_own_messages() {
    let mut h = Harness::new();
    let c = v5_client(&mut h, "self", Properties::default());
    let opts = |qos, no_local, rap| SubOptions {
        qos,
        no_local,
        retain_as_published: rap,
        retain_handling: 0,
    };
    h.send(
        c,
        &Packet::Subscribe(Subscribe {
            pid: 1,
            filters: vec![
                ("a".into(), opts(QoS::ExactlyOnce, true, true)),
                ("a/#".into(), opts(QoS::AtMostOnce, false, false)),
            ],
            properties: Properties::default(),
        }),
    );
    h.recv(c);
    h.send(c, &publish("a", "mine", QoS::AtLeastOnce, 1, true));
    let got = publishes(&h.recv(c));
    assert_eq!(got, vec![("mine".into(), QoS::AtMostOnce, false, false)]);
}

/// Found by the differential test: "no matching subscribers" (0x10) means no subscription
/// matched, as Mosquitto reports it; a matching no-local subscription of the publisher's own
/// is a match that does not take the message.
#[test]
fn no_local_match_is_not_no_matching_subscribers() {
    let mut h = Harness::new();
    let c = v5_client(&mut h, "self", Properties::default());
    let mut sp = subscribe(1, &[("t", QoS::AtLeastOnce)]);
    if let Packet::Subscribe(x) = &mut sp {
        if let Some(f) = x.filters.first_mut() {
            f.1.no_local = true;
        }
    }
    h.send(c, &sp);
    h.recv(c);
    h.send(c, &publish("t", "mine", QoS::AtLeastOnce, 1, false));
    h.send(c, &publish("nobody", "x", QoS::AtLeastOnce, 2, false));
    let acks: Vec<u8> = h
        .recv(c)
        .into_iter()
        .filter_map(|p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![reason::SUCCESS, reason::NO_MATCHING_SUBSCRIBERS]);
}

/// Found by the differential test: a persistent session subscribed to its own will topic
/// keeps the will for its return; it went to the connection being finished and was lost.
#[test]
fn own_will_waits_in_the_persistent_session() {
    let mut h = Harness::new();
    let c = || Conn {
        clean: false,
        props: expiry(100),
        will: Some(Will {
            qos: QoS::ExactlyOnce,
            ..will("b", None, false)
        }),
        ..Conn::new("self", Version::V5)
    };
    let (s, _) = h.connect(c());
    h.sub(s, &[("b", QoS::ExactlyOnce)]);
    h.drop_conn(s);
    let (_, ack, after) = h.connect_rest(Conn { will: None, ..c() });
    assert!(present(&ack));
    assert_eq!(
        publishes(&after),
        vec![("will".into(), QoS::ExactlyOnce, false, false)]
    );
}

/// Memory per idle connection must not grow with the session table and epochs: an epoch
/// replaced the serial, and a connection holds no timer state.
#[test]
fn connection_and_session_sizes_hold() {
    let sizes = (
        std::mem::size_of::<super::super::core::Conn>(),
        std::mem::size_of::<super::super::session::Session>(),
    );
    // What they were before issue 13 (commit 49a2329), on 64-bit targets.
    assert!(sizes.0 <= 112 && sizes.1 <= 96, "Conn, Session: {sizes:?}");
    // Since issue 14: the session index, the last packet's time and no listener port.
    assert!(sizes.0 <= 96, "Conn: {sizes:?}");
}
