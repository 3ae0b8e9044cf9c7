//! MQTT 5.0 broker semantics, black box: raw 5.0 packets (built with `rmqtt::protocol`) against
//! the real `rmqtt` binary, plus paho-mqtt 2.x (`tests/paho_v5.py`), `mosquitto_pub -V 5 -D`,
//! `mosquitto_sub -V 5` and `rmqtt_sub -V 5` as real clients, and 3.1.1 <-> 5.0 interop.
//!
//! Every wait is bounded. Third-party tools missing means those tests skip unless
//! `RMQTT_REQUIRE_INTEROP` is set (the `common_interop` rule).

mod common;
mod common_interop;

use bytes::{Bytes, BytesMut};
use common::{Broker, ConnectOpts, WAIT};
use rmqtt::protocol::{
    decode, Ack, Connect, Disconnect, Packet, Properties, Publish, QoS, SubOptions, Subscribe,
    Version, Will,
};
use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A raw MQTT 5.0 connection.
struct V5 {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Size on the wire of every packet received, in order.
    sizes: Vec<usize>,
}

/// What a bounded read found.
#[allow(clippy::large_enum_variant)] // one value at a time, in tests
enum Got {
    Packet(Packet),
    Quiet,
    Closed,
}

impl V5 {
    fn open(port: u16) -> V5 {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to broker");
        stream.set_nodelay(true).unwrap();
        V5 {
            stream,
            buf: Vec::new(),
            sizes: Vec::new(),
        }
    }

    /// Connects with `c` and returns the connection with its CONNACK, whatever its code.
    fn connect_raw(port: u16, c: Connect) -> (V5, rmqtt::protocol::ConnAck) {
        let mut v = V5::open(port);
        v.send(&Packet::Connect(Box::new(c)));
        match v.recv() {
            Packet::ConnAck(a) => (v, a),
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    /// Connects and insists on CONNACK 0.
    fn connect(port: u16, c: Connect) -> (V5, rmqtt::protocol::ConnAck) {
        let id = c.client_id.clone();
        let (v, a) = V5::connect_raw(port, c);
        assert_eq!(a.code, 0, "CONNACK for {id:?}: {a:?}");
        (v, a)
    }

    /// A clean-start client with no properties.
    fn client(port: u16, id: &str) -> V5 {
        V5::connect(port, connect(id)).0
    }

    fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(Version::V5, &mut out);
        self.stream.write_all(&out).expect("write to broker");
    }

    fn poll(&mut self, within: Duration) -> Got {
        let deadline = Instant::now() + within;
        loop {
            match decode(&self.buf, Version::V5, usize::MAX) {
                Ok(Some((p, n))) => {
                    self.buf.drain(..n);
                    self.sizes.push(n);
                    return Got::Packet(p);
                }
                Ok(None) => {}
                Err(e) => panic!("broker sent undecodable bytes {:02x?}: {e}", self.buf),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Quiet;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Got::Closed,
            }
        }
    }

    fn recv_within(&mut self, within: Duration) -> Packet {
        match self.poll(within) {
            Got::Packet(p) => p,
            Got::Quiet => panic!("no packet from broker within {within:?}"),
            Got::Closed => panic!("broker closed the connection while a packet was expected"),
        }
    }

    fn recv(&mut self) -> Packet {
        self.recv_within(WAIT)
    }

    fn expect_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(p) => p,
            p => panic!("expected PUBLISH, got {p:?}"),
        }
    }

    /// PINGREQ round trip; returns every packet that arrived before the PINGRESP.
    fn drain(&mut self) -> Vec<Packet> {
        self.send(&Packet::PingReq);
        let mut got = Vec::new();
        loop {
            match self.recv() {
                Packet::PingResp => return got,
                p => got.push(p),
            }
        }
    }

    /// Asserts nothing was queued for this connection before a PINGREQ.
    fn sync(&mut self) {
        let got = self.drain();
        assert!(
            got.is_empty(),
            "expected nothing before PINGRESP, got {got:?}"
        );
    }

    fn subscribe_with(&mut self, pid: u16, filter: &str, opts: SubOptions, id: Option<u32>) -> u8 {
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(id);
        self.send(&Packet::Subscribe(Subscribe {
            pid,
            filters: vec![(filter.to_string(), opts)],
            properties,
        }));
        match self.recv() {
            Packet::SubAck(a) => {
                assert_eq!(a.pid, pid);
                assert_eq!(a.codes.len(), 1);
                a.codes[0]
            }
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    fn subscribe(&mut self, pid: u16, filter: &str, q: u8) {
        let code = self.subscribe_with(pid, filter, sub_opts(q), None);
        assert_eq!(code, q, "SUBACK code for {filter}");
    }

    /// Publishes; for QoS 1 waits for and returns the PUBACK reason code.
    fn publish(&mut self, p: Publish) -> Option<u8> {
        let (qos, pid) = (p.qos, p.pid);
        self.send(&Packet::Publish(p));
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => match self.recv() {
                Packet::PubAck(a) => {
                    assert_eq!(a.pid, pid);
                    Some(a.reason)
                }
                p => panic!("expected PUBACK {pid}, got {p:?}"),
            },
            QoS::ExactlyOnce => match self.recv() {
                Packet::PubRec(a) => {
                    assert_eq!(a.pid, pid);
                    self.send(&Packet::PubRel(Ack::new(pid)));
                    match self.recv() {
                        Packet::PubComp(c) => assert_eq!(c.pid, pid),
                        p => panic!("expected PUBCOMP {pid}, got {p:?}"),
                    }
                    Some(a.reason)
                }
                p => panic!("expected PUBREC {pid}, got {p:?}"),
            },
        }
    }

    fn puback(&mut self, pid: u16) {
        self.send(&Packet::PubAck(Ack::new(pid)));
    }

    /// A normal DISCONNECT with these properties; waits for the broker to close.
    fn disconnect_with(mut self, properties: Properties) {
        self.send(&Packet::Disconnect(Disconnect {
            reason: 0,
            properties,
        }));
        let _ = self.stream.shutdown(Shutdown::Write);
        self.expect_closed();
    }

    fn disconnect(self) {
        self.disconnect_with(Properties::default());
    }

    /// Closes the socket without DISCONNECT (a network failure, as far as the broker knows).
    fn drop_link(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads until the broker closes; returns the packets it sent first.
    fn expect_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "broker did not close; got {got:?}");
            match self.poll(left) {
                Got::Packet(p) => got.push(p),
                Got::Quiet => {}
                Got::Closed => return got,
            }
        }
    }

    /// Expects the broker to send DISCONNECT with `reason` and close.
    fn expect_disconnect(&mut self, reason: u8) {
        let got = self.expect_closed();
        let d: Vec<u8> = got
            .iter()
            .filter_map(|p| match p {
                Packet::Disconnect(d) => Some(d.reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            d,
            vec![reason],
            "DISCONNECT reasons before close; got {got:?}"
        );
    }
}

fn connect(id: &str) -> Connect {
    Connect {
        version: Version::V5,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id: id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

fn connect_props(id: &str, clean: bool, f: impl FnOnce(&mut Properties)) -> Connect {
    let mut c = connect(id);
    c.clean_start = clean;
    f(&mut c.properties);
    c
}

fn sub_opts(q: u8) -> SubOptions {
    SubOptions {
        qos: QoS::from_u8(q).unwrap(),
        ..SubOptions::default()
    }
}

fn msg(topic: &str, payload: &[u8], q: u8, pid: u16) -> Publish {
    Publish {
        dup: false,
        qos: QoS::from_u8(q).unwrap(),
        retain: false,
        topic: Arc::from(topic),
        pid: if q == 0 { 0 } else { pid },
        payload: Bytes::copy_from_slice(payload),
        properties: Properties::default(),
    }
}

fn msg_props(
    topic: &str,
    payload: &[u8],
    q: u8,
    pid: u16,
    f: impl FnOnce(&mut Properties),
) -> Publish {
    let mut m = msg(topic, payload, q, pid);
    f(&mut m.properties);
    m
}

// ---------------------------------------------------------------------------------------------
// CONNECT / CONNACK

#[test]
fn connack_advertises_topic_alias_maximum_and_receive_maximum() {
    let b = Broker::start();
    let (c, ack) = V5::connect(b.port, connect("adv"));
    assert!(!ack.session_present);
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    assert_eq!(ack.properties.receive_maximum, Some(20));
    assert_eq!(ack.properties.assigned_client_identifier, None);
    c.disconnect();
}

#[test]
fn empty_client_id_gets_a_server_assigned_identifier() {
    let b = Broker::start();
    let (mut c, ack) = V5::connect(b.port, connect_props("", true, |_| {}));
    let id = ack
        .properties
        .assigned_client_identifier
        .clone()
        .expect("Assigned Client Identifier in CONNACK");
    assert!(id.starts_with("auto-"), "assigned id {id:?}");
    assert!(id.len() > "auto-".len());
    // The assigned id is the session's identity: a second such client gets another one.
    let (c2, ack2) = V5::connect(b.port, connect_props("", true, |_| {}));
    let id2 = ack2.properties.assigned_client_identifier.unwrap();
    assert_ne!(id, id2);
    c.sync();
    c.disconnect();
    c2.disconnect();
}

#[test]
fn server_keep_alive_caps_long_or_zero_keepalives() {
    let b = Broker::with_config("allow_anonymous true\nmax_keepalive 30\n");
    for (asked, told) in [(0u16, Some(30u16)), (100, Some(30)), (30, None), (10, None)] {
        let mut c = connect(&format!("ka{asked}"));
        c.keep_alive = asked;
        let (conn, ack) = V5::connect(b.port, c);
        assert_eq!(
            ack.properties.server_keep_alive, told,
            "Server Keep Alive for keepalive {asked}"
        );
        conn.disconnect();
    }
}

#[test]
fn enhanced_authentication_is_refused_with_bad_authentication_method() {
    let b = Broker::start();
    let c = connect_props("auth", true, |p| {
        p.authentication_method = Some("SCRAM-SHA-1".into());
        p.authentication_data = Some(Bytes::from_static(b"client-first"));
    });
    let (mut conn, ack) = V5::connect_raw(b.port, c);
    assert_eq!(ack.code, 0x8C, "CONNACK {ack:?}");
    conn.expect_closed();
}

// ---------------------------------------------------------------------------------------------
// Server DISCONNECT reasons

#[test]
fn session_takeover_sends_disconnect_0x8e_to_the_old_connection() {
    let b = Broker::start();
    let mut old = V5::client(b.port, "twice");
    let new = V5::client(b.port, "twice");
    old.expect_disconnect(0x8E);
    new.disconnect();
}

#[test]
fn keepalive_timeout_sends_disconnect_0x8d() {
    let b = Broker::start();
    let mut c = connect("sleepy");
    c.keep_alive = 1;
    let (mut conn, _) = V5::connect(b.port, c);
    // 1.5 x keepalive of silence; bounded by expect_closed's wait.
    conn.expect_disconnect(0x8D);
}

#[test]
fn shutdown_sends_disconnect_0x8b() {
    let b = Broker::start();
    let mut conn = V5::client(b.port, "bystander");
    conn.sync();
    b.signal("TERM");
    conn.expect_disconnect(0x8B);
}

// ---------------------------------------------------------------------------------------------
// PUBACK reason codes

#[test]
fn puback_says_no_matching_subscribers_then_success() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "lonely");
    assert_eq!(p.publish(msg("nobody/here", b"x", 1, 1)), Some(0x10));
    let mut s = V5::client(b.port, "listener");
    s.subscribe(1, "nobody/#", 1);
    assert_eq!(p.publish(msg("nobody/here", b"y", 1, 2)), Some(0x00));
    let got = s.expect_publish();
    assert_eq!(&got.payload[..], b"y");
}

#[test]
fn acl_denied_publish_gets_puback_0x87_and_goes_nowhere() {
    let dir = common::TempDir::new("v5acl");
    let acl = dir.path.join("acl");
    std::fs::write(&acl, "topic readwrite open/#\n").unwrap();
    let b = Broker::with_config(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let mut s = V5::client(b.port, "acl-sub");
    s.subscribe(1, "open/#", 1);
    let mut p = V5::client(b.port, "acl-pub");
    assert_eq!(p.publish(msg("closed/x", b"no", 1, 1)), Some(0x87));
    assert_eq!(p.publish(msg("open/x", b"yes", 1, 2)), Some(0x00));
    let got = s.expect_publish();
    assert_eq!(&got.payload[..], b"yes");
    s.puback(got.pid);
    s.sync();
}

// ---------------------------------------------------------------------------------------------
// Session expiry

#[test]
fn session_expiry_interval_keeps_the_session_and_queues_messages() {
    let b = Broker::start();
    let mut s = V5::connect(
        b.port,
        connect_props("keeper", true, |p| p.session_expiry_interval = Some(300)),
    )
    .0;
    s.subscribe(1, "keep/#", 1);
    s.disconnect();
    let mut p = V5::client(b.port, "keep-pub");
    assert_eq!(p.publish(msg("keep/a", b"while away", 1, 1)), Some(0));
    let (mut s, ack) = V5::connect(
        b.port,
        connect_props("keeper", false, |p| p.session_expiry_interval = Some(300)),
    );
    assert!(ack.session_present, "session kept for 300 s");
    let got = s.expect_publish();
    assert_eq!(&got.payload[..], b"while away");
    s.puback(got.pid);
    s.sync();
}

#[test]
fn session_expiry_zero_ends_the_session_at_disconnect() {
    let b = Broker::start();
    let mut s = V5::client(b.port, "forgetful");
    s.subscribe(1, "gone/#", 1);
    s.disconnect();
    let mut p = V5::client(b.port, "gone-pub");
    assert_eq!(p.publish(msg("gone/a", b"x", 1, 1)), Some(0x10));
    let (mut s, ack) = V5::connect(b.port, connect_props("forgetful", false, |_| {}));
    assert!(!ack.session_present);
    s.sync();
}

#[test]
fn disconnect_can_shorten_the_session_expiry_to_zero() {
    let b = Broker::start();
    let mut s = V5::connect(
        b.port,
        connect_props("changer", true, |p| p.session_expiry_interval = Some(300)),
    )
    .0;
    s.subscribe(1, "chg/#", 1);
    s.disconnect_with(Properties {
        session_expiry_interval: Some(0),
        ..Properties::default()
    });
    let (s, ack) = V5::connect(
        b.port,
        connect_props("changer", false, |p| p.session_expiry_interval = Some(300)),
    );
    assert!(!ack.session_present, "DISCONNECT set the expiry to 0");
    s.disconnect();
}

#[test]
fn disconnect_can_extend_the_session_expiry() {
    let b = Broker::start();
    let s = V5::connect(
        b.port,
        connect_props("extender", true, |p| p.session_expiry_interval = Some(1)),
    )
    .0;
    s.disconnect_with(Properties {
        session_expiry_interval: Some(300),
        ..Properties::default()
    });
    // Well past the original 1 s.
    std::thread::sleep(Duration::from_millis(2500));
    let (s, ack) = V5::connect(b.port, connect_props("extender", false, |_| {}));
    assert!(
        ack.session_present,
        "DISCONNECT extended the expiry to 300 s"
    );
    s.disconnect();
}

#[test]
fn session_expires_after_its_interval() {
    let b = Broker::start();
    let mut s = V5::connect(
        b.port,
        connect_props("brief", true, |p| p.session_expiry_interval = Some(1)),
    )
    .0;
    s.subscribe(1, "brief/#", 1);
    s.disconnect();
    std::thread::sleep(Duration::from_millis(2500));
    let (s, ack) = V5::connect(b.port, connect_props("brief", false, |_| {}));
    assert!(
        !ack.session_present,
        "1 s session still present after 2.5 s"
    );
    s.disconnect();
}

// ---------------------------------------------------------------------------------------------
// Message expiry

#[test]
fn message_expiry_forwards_the_remaining_interval() {
    let b = Broker::start();
    let mut s = V5::client(b.port, "exp-sub");
    s.subscribe(1, "exp/#", 1);
    let mut p = V5::client(b.port, "exp-pub");
    p.publish(msg_props("exp/a", b"x", 1, 1, |p| {
        p.message_expiry_interval = Some(60)
    }));
    let got = s.expect_publish();
    let left = got
        .properties
        .message_expiry_interval
        .expect("expiry forwarded");
    assert!((30..=60).contains(&left), "remaining expiry {left}");
    s.puback(got.pid);
    p.publish(msg("exp/b", b"y", 1, 2));
    let got = s.expect_publish();
    assert_eq!(got.properties.message_expiry_interval, None);
    s.puback(got.pid);
}

#[test]
fn expired_queued_messages_are_never_delivered() {
    let b = Broker::start();
    let mut s = V5::connect(
        b.port,
        connect_props("exp-away", true, |p| p.session_expiry_interval = Some(300)),
    )
    .0;
    s.subscribe(1, "expq/#", 1);
    s.disconnect();
    let mut p = V5::client(b.port, "expq-pub");
    p.publish(msg_props("expq/short", b"short", 1, 1, |p| {
        p.message_expiry_interval = Some(1)
    }));
    p.publish(msg_props("expq/long", b"long", 1, 2, |p| {
        p.message_expiry_interval = Some(100)
    }));
    p.publish(msg("expq/none", b"none", 1, 3));
    std::thread::sleep(Duration::from_millis(2500));
    let (mut s, ack) = V5::connect(
        b.port,
        connect_props("exp-away", false, |p| p.session_expiry_interval = Some(300)),
    );
    assert!(ack.session_present);
    let mut got = Vec::new();
    for p in s.drain() {
        match p {
            Packet::Publish(m) => {
                s.puback(m.pid);
                got.push(m);
            }
            p => panic!("unexpected {p:?}"),
        }
    }
    let payloads: Vec<&[u8]> = got.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(
        payloads,
        vec![&b"long"[..], b"none"],
        "expired message delivered?"
    );
    let left = got[0].properties.message_expiry_interval.unwrap();
    assert!(
        (60..=98).contains(&left),
        "remaining expiry {left} after 2.5 s of 100"
    );
    assert_eq!(got[1].properties.message_expiry_interval, None);
}

#[test]
fn expired_retained_message_is_not_sent_to_new_subscribers() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "ret-exp");
    let mut m = msg_props("rexp/a", b"old", 1, 1, |p| {
        p.message_expiry_interval = Some(1)
    });
    m.retain = true;
    p.publish(m);
    let mut m = msg_props("rexp/b", b"fresh", 1, 2, |p| {
        p.message_expiry_interval = Some(100)
    });
    m.retain = true;
    p.publish(m);
    std::thread::sleep(Duration::from_millis(2500));
    let mut s = V5::client(b.port, "ret-exp-sub");
    s.subscribe(1, "rexp/#", 0);
    let got = s.drain();
    assert_eq!(got.len(), 1, "only the unexpired retained message: {got:?}");
    match &got[0] {
        Packet::Publish(m) => {
            assert_eq!(&m.payload[..], b"fresh");
            assert!(m.retain);
            let left = m.properties.message_expiry_interval.unwrap();
            assert!((60..=98).contains(&left), "remaining expiry {left}");
        }
        p => panic!("unexpected {p:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Topic aliases

#[test]
fn inbound_topic_alias_is_set_up_and_reused() {
    let b = Broker::start();
    let mut s = V5::client(b.port, "alias-sub");
    s.subscribe(1, "alias/#", 0);
    let mut p = V5::client(b.port, "alias-pub");
    p.publish(msg_props("alias/long/topic", b"one", 0, 0, |p| {
        p.topic_alias = Some(3)
    }));
    p.publish(msg_props("", b"two", 0, 0, |p| p.topic_alias = Some(3)));
    // Re-pointing an alias.
    p.publish(msg_props("alias/other", b"three", 0, 0, |p| {
        p.topic_alias = Some(3)
    }));
    p.publish(msg_props("", b"four", 0, 0, |p| p.topic_alias = Some(3)));
    p.sync();
    let got: Vec<(String, Vec<u8>, Option<u16>)> = s
        .drain()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(m) => (
                m.topic.to_string(),
                m.payload.to_vec(),
                m.properties.topic_alias,
            ),
            p => panic!("unexpected {p:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("alias/long/topic".into(), b"one".to_vec(), None),
            ("alias/long/topic".into(), b"two".to_vec(), None),
            ("alias/other".into(), b"three".to_vec(), None),
            ("alias/other".into(), b"four".to_vec(), None),
        ],
        "a subscriber that allows no aliases gets full topics and no alias property"
    );
}

#[test]
fn inbound_topic_alias_above_maximum_is_disconnected_0x94() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "alias-big");
    p.send(&Packet::Publish(msg_props("a/b", b"x", 0, 0, |p| {
        p.topic_alias = Some(11)
    })));
    p.expect_disconnect(0x94);
    // The largest granted alias is fine.
    let mut p = V5::client(b.port, "alias-max");
    p.send(&Packet::Publish(msg_props("a/b", b"x", 0, 0, |p| {
        p.topic_alias = Some(10)
    })));
    p.sync();
}

#[test]
fn inbound_unknown_topic_alias_is_a_protocol_error() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "alias-unknown");
    p.send(&Packet::Publish(msg_props("", b"x", 0, 0, |p| {
        p.topic_alias = Some(2)
    })));
    p.expect_disconnect(0x82);
}

#[test]
fn outbound_topic_aliases_up_to_the_clients_maximum() {
    let b = Broker::start();
    let (mut s, _) = V5::connect(
        b.port,
        connect_props("alias-out", true, |p| p.topic_alias_maximum = Some(2)),
    );
    s.subscribe(1, "out/#", 0);
    let mut p = V5::client(b.port, "alias-out-pub");
    for t in ["out/a", "out/b", "out/a", "out/c", "out/b", "out/c"] {
        p.publish(msg(t, t.as_bytes(), 0, 0));
    }
    p.sync();
    let mut table: HashMap<u16, String> = HashMap::new();
    let mut seen = Vec::new();
    for pk in s.drain() {
        let Packet::Publish(m) = pk else {
            panic!("unexpected {pk:?}")
        };
        let topic = match m.properties.topic_alias {
            Some(a) => {
                assert!(
                    (1..=2).contains(&a),
                    "alias {a} above the client's maximum 2"
                );
                if m.topic.is_empty() {
                    table
                        .get(&a)
                        .cloned()
                        .expect("alias used before being set up")
                } else {
                    table.insert(a, m.topic.to_string());
                    m.topic.to_string()
                }
            }
            None => {
                assert!(!m.topic.is_empty(), "no topic and no alias");
                m.topic.to_string()
            }
        };
        // The payload is the original topic: the alias must resolve to it.
        assert_eq!(topic.as_bytes(), &m.payload[..]);
        seen.push((m.topic.is_empty(), m.properties.topic_alias));
    }
    assert_eq!(seen.len(), 6);
    assert!(
        seen.iter().any(|(empty, _)| *empty),
        "the broker never used an outbound alias: {seen:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Receive maximum / flow control

#[test]
fn clients_receive_maximum_bounds_unacknowledged_deliveries() {
    let b = Broker::start();
    let (mut s, _) = V5::connect(
        b.port,
        connect_props("rm-sub", true, |p| p.receive_maximum = Some(2)),
    );
    s.subscribe(1, "rm/#", 1);
    let mut p = V5::client(b.port, "rm-pub");
    for i in 0..5u16 {
        p.publish(msg("rm/t", format!("m{i}").as_bytes(), 1, i + 1));
    }
    let first = s.drain();
    assert_eq!(first.len(), 2, "only 2 in flight: {first:?}");
    let mut pids = Vec::new();
    for pk in &first {
        let Packet::Publish(m) = pk else {
            panic!("{pk:?}")
        };
        pids.push(m.pid);
    }
    s.puback(pids[0]);
    let m = s.expect_publish();
    assert_eq!(&m.payload[..], b"m2");
    s.sync();
    s.puback(pids[1]);
    s.puback(m.pid);
    let rest = s.drain();
    let payloads: Vec<Vec<u8>> = rest
        .iter()
        .map(|p| match p {
            Packet::Publish(m) => m.payload.to_vec(),
            p => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(payloads, vec![b"m3".to_vec(), b"m4".to_vec()]);
}

#[test]
fn exceeding_the_brokers_receive_maximum_disconnects_0x93() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "rm-flood");
    for i in 1..=20u16 {
        p.send(&Packet::Publish(msg("flood/t", b"x", 2, i)));
        match p.recv() {
            Packet::PubRec(a) => assert_eq!(a.pid, i),
            pk => panic!("expected PUBREC {i}, got {pk:?}"),
        }
    }
    p.send(&Packet::Publish(msg("flood/t", b"x", 2, 21)));
    p.expect_disconnect(0x93);
}

#[test]
fn releasing_qos2_keeps_the_client_under_the_receive_maximum() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "rm-polite");
    for i in 1..=60u16 {
        // PUBREC never says "no matching subscribers" (0x10), as with Mosquitto.
        assert_eq!(p.publish(msg("polite/t", b"x", 2, i)), Some(0x00));
    }
    p.sync();
}

// ---------------------------------------------------------------------------------------------
// Maximum packet size

#[test]
fn packets_above_the_clients_maximum_packet_size_are_dropped_for_it() {
    let b = Broker::start();
    let (mut small, _) = V5::connect(
        b.port,
        connect_props("mps-small", true, |p| p.maximum_packet_size = Some(100)),
    );
    small.subscribe(1, "mps/#", 1);
    let mut big = V5::client(b.port, "mps-big");
    big.subscribe(1, "mps/#", 1);
    let mut p = V5::client(b.port, "mps-pub");
    p.publish(msg("mps/t", &[b'a'; 20], 1, 1));
    p.publish(msg("mps/t", &[b'b'; 200], 1, 2));
    p.publish(msg_props("mps/t", &[b'c'; 60], 1, 3, |p| {
        // Properties count towards the size too.
        p.user_properties.push(("k".into(), "v".repeat(40)));
    }));
    p.publish(msg("mps/t", &[b'd'; 20], 1, 4));
    let got: Vec<u8> = small
        .drain()
        .into_iter()
        .map(|pk| match pk {
            Packet::Publish(m) => {
                small.puback(m.pid);
                m.payload[0]
            }
            pk => panic!("{pk:?}"),
        })
        .collect();
    assert_eq!(got, b"ad".to_vec(), "oversized messages must be skipped");
    assert!(
        small.sizes.iter().all(|&n| n <= 100),
        "sizes {:?}",
        small.sizes
    );
    let got: Vec<u8> = big
        .drain()
        .into_iter()
        .map(|pk| match pk {
            Packet::Publish(m) => {
                big.puback(m.pid);
                m.payload[0]
            }
            pk => panic!("{pk:?}"),
        })
        .collect();
    assert_eq!(got, b"abcd".to_vec());
    small.sync();
}

// ---------------------------------------------------------------------------------------------
// Will delay

fn will(topic: &str, payload: &[u8], delay: u32) -> Will {
    Will {
        topic: Arc::from(topic),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            user_properties: vec![("why".into(), "gone".into())],
            ..Properties::default()
        },
    }
}

#[test]
fn delayed_will_is_published_after_the_delay() {
    let b = Broker::start();
    let mut watch = V5::client(b.port, "will-watch");
    watch.subscribe(1, "wills/#", 1);
    let mut c = connect_props("will-delay", true, |p| {
        p.session_expiry_interval = Some(300)
    });
    c.will = Some(will("wills/a", b"bye", 2));
    let (conn, _) = V5::connect(b.port, c);
    let dropped = Instant::now();
    conn.drop_link();
    let m = watch.expect_publish();
    assert!(
        dropped.elapsed() >= Duration::from_secs(2),
        "will sent before its delay"
    );
    assert_eq!(&m.payload[..], b"bye");
    assert_eq!(
        m.properties.user_properties,
        vec![("why".to_string(), "gone".to_string())]
    );
    assert_eq!(m.properties.will_delay_interval, None);
}

#[test]
fn reconnecting_within_the_will_delay_cancels_the_will() {
    let b = Broker::start();
    let mut watch = V5::client(b.port, "will-watch2");
    watch.subscribe(1, "wills/#", 1);
    let mut c = connect_props("will-back", true, |p| p.session_expiry_interval = Some(300));
    c.will = Some(will("wills/b", b"bye", 2));
    let (conn, _) = V5::connect(b.port, c);
    conn.drop_link();
    let (back, ack) = V5::connect(
        b.port,
        connect_props("will-back", false, |p| {
            p.session_expiry_interval = Some(300)
        }),
    );
    assert!(ack.session_present);
    // Past the 2 s delay: nothing may come.
    match watch.poll(Duration::from_millis(3500)) {
        Got::Quiet => {}
        Got::Packet(p) => panic!("cancelled will delivered: {p:?}"),
        Got::Closed => panic!("watcher closed"),
    }
    back.disconnect();
}

#[test]
fn session_ending_before_the_will_delay_publishes_the_will() {
    let b = Broker::start();
    let mut watch = V5::client(b.port, "will-watch3");
    watch.subscribe(1, "wills/#", 1);
    // Session expiry 1 s is shorter than the 60 s will delay: the will goes when the session
    // ends. [MQTT-3.1.3-9]
    let mut c = connect_props("will-short", true, |p| p.session_expiry_interval = Some(1));
    c.will = Some(will("wills/c", b"session over", 60));
    let (conn, _) = V5::connect(b.port, c);
    conn.drop_link();
    let m = watch.expect_publish();
    assert_eq!(&m.payload[..], b"session over");
    watch.puback(m.pid);
}

// ---------------------------------------------------------------------------------------------
// Subscription options

#[test]
fn no_local_keeps_a_clients_own_messages_from_it() {
    let b = Broker::start();
    let mut c = V5::client(b.port, "nolocal");
    let mut o = sub_opts(1);
    o.no_local = true;
    assert_eq!(c.subscribe_with(1, "nl/#", o, None), 1);
    let mut other = V5::client(b.port, "nolocal-other");
    other.subscribe(1, "nl/#", 1);
    assert_eq!(c.publish(msg("nl/a", b"own", 1, 1)), Some(0));
    c.sync();
    let m = other.expect_publish();
    assert_eq!(&m.payload[..], b"own");
    other.puback(m.pid);
    // Someone else's message does reach it.
    other.publish(msg("nl/a", b"theirs", 0, 0));
    let m = c.expect_publish();
    assert_eq!(&m.payload[..], b"theirs");
}

#[test]
fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    let b = Broker::start();
    let mut rap = V5::client(b.port, "rap");
    let mut o = sub_opts(0);
    o.retain_as_published = true;
    rap.subscribe_with(1, "rap/#", o, None);
    let mut plain = V5::client(b.port, "norap");
    plain.subscribe(1, "rap/#", 0);
    let mut p = V5::client(b.port, "rap-pub");
    let mut m = msg("rap/t", b"r", 1, 1);
    m.retain = true;
    p.publish(m);
    assert!(rap.expect_publish().retain, "retain as published");
    assert!(
        !plain.expect_publish().retain,
        "live message without RAP clears retain"
    );
}

#[test]
fn retain_handling_0_1_2() {
    let b = Broker::start();
    let mut p = V5::client(b.port, "rh-pub");
    let mut m = msg("rh/t", b"kept", 1, 1);
    m.retain = true;
    p.publish(m);
    let count = |c: &mut V5| {
        c.drain()
            .into_iter()
            .filter(|p| matches!(p, Packet::Publish(m) if &m.payload[..] == b"kept" && m.retain))
            .count()
    };
    let mut s = V5::client(b.port, "rh-sub");
    // A different filter per case, so each first SUBSCRIBE is a new subscription.
    for (handling, filter, first, again) in [
        (0u8, "rh/t", 1usize, 1usize),
        (1, "rh/+", 1, 0),
        (2, "rh/#", 0, 0),
    ] {
        let mut o = sub_opts(0);
        o.retain_handling = handling;
        s.subscribe_with(1, filter, o, None);
        assert_eq!(
            count(&mut s),
            first,
            "retain handling {handling}, new subscription {filter}"
        );
        s.subscribe_with(2, filter, o, None);
        assert_eq!(
            count(&mut s),
            again,
            "retain handling {handling}, existing subscription"
        );
        s.send(&Packet::Unsubscribe(rmqtt::protocol::Unsubscribe {
            pid: 3,
            filters: vec![filter.to_string()],
            properties: Properties::default(),
        }));
        assert!(matches!(s.recv(), Packet::UnsubAck(_)));
    }
}

// ---------------------------------------------------------------------------------------------
// Subscription identifiers

#[test]
fn subscription_identifiers_are_returned_with_matching_messages() {
    let b = Broker::start();
    let mut s = V5::client(b.port, "subid");
    s.subscribe_with(1, "sid/#", sub_opts(0), Some(7));
    s.subscribe_with(2, "sid/+/x", sub_opts(0), Some(300));
    s.subscribe_with(3, "other/#", sub_opts(0), None);
    let mut p = V5::client(b.port, "subid-pub");
    p.publish(msg("sid/a/x", b"both", 0, 0));
    p.publish(msg("sid/b", b"one", 0, 0));
    p.publish(msg("other/c", b"none", 0, 0));
    p.sync();
    let mut ids = Vec::new();
    for pk in s.drain() {
        let Packet::Publish(m) = pk else {
            panic!("{pk:?}")
        };
        let mut v = m.properties.subscription_identifiers.clone();
        v.sort_unstable();
        ids.push((m.payload.to_vec(), v));
    }
    assert_eq!(
        ids,
        vec![
            (b"both".to_vec(), vec![7, 300]),
            (b"one".to_vec(), vec![7]),
            (b"none".to_vec(), vec![]),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Properties passed through, and 3.1.1 <-> 5.0

fn rich(topic: &str, q: u8, pid: u16) -> Publish {
    msg_props(topic, b"{\"t\":21}", q, pid, |p| {
        p.user_properties = vec![
            ("k".into(), "v".into()),
            ("k".into(), "v2".into()),
            ("unit".into(), "C".into()),
        ];
        p.response_topic = Some("reply/here".into());
        p.correlation_data = Some(Bytes::from_static(&[0, 1, 2, 0xff]));
        p.payload_format_indicator = Some(1);
        p.content_type = Some("application/json".into());
    })
}

#[test]
fn message_properties_are_passed_through_unchanged() {
    let b = Broker::start();
    let mut s = V5::client(b.port, "props-sub");
    s.subscribe(1, "props/#", 1);
    let mut p = V5::client(b.port, "props-pub");
    let sent = rich("props/a", 1, 1);
    p.publish(sent.clone());
    let got = s.expect_publish();
    assert_eq!(got.payload, sent.payload);
    assert_eq!(got.properties, sent.properties);
}

#[test]
fn v5_publish_with_properties_reaches_a_v311_subscriber_without_them() {
    let b = Broker::start();
    let mut old = b.client("v311-sub");
    old.subscribe(1, &[("mix/#", 1)]);
    let mut new = V5::client(b.port, "v5-sub");
    new.subscribe(1, "mix/#", 1);
    let mut p = V5::client(b.port, "v5-pub");
    let sent = rich("mix/a", 1, 1);
    p.publish(sent.clone());
    // The 3.1.1 decoder sees no property block: any leak would show up in the payload.
    let m = old.expect_message("mix/a", &sent.payload, 1);
    old.send(&common::puback(m.pid));
    let m = new.expect_publish();
    assert_eq!(m.properties, sent.properties);
    new.puback(m.pid);

    let mut p311 = b.client("v311-pub");
    p311.publish_q1(1, "mix/b", b"plain");
    let m = new.expect_publish();
    assert_eq!(&*m.topic, "mix/b");
    assert_eq!(&m.payload[..], b"plain");
    assert_eq!(m.properties, Properties::default());
    let m = old.expect_message("mix/b", b"plain", 1);
    old.send(&common::puback(m.pid));
    old.sync();
}

#[test]
fn v311_session_interop_with_v5_takeover() {
    // A 3.1.1 connection taken over by a 5.0 one gets no DISCONNECT (3.1.1 has none), just a close.
    let b = Broker::start();
    let mut old = b.client_with(&ConnectOpts::new("mixed-id"));
    let new = V5::client(b.port, "mixed-id");
    let bytes = old.expect_closed();
    assert!(bytes.is_empty(), "3.1.1 connection got {bytes:02x?}");
    new.disconnect();
}

// ---------------------------------------------------------------------------------------------
// Shared subscriptions

#[test]
fn shared_subscription_round_robin_among_members() {
    let b = Broker::start();
    let mut members: Vec<V5> = (0..3)
        .map(|i| {
            let mut m = V5::client(b.port, &format!("rr-{i}"));
            m.subscribe(1, "$share/g/rr/#", 0);
            m
        })
        .collect();
    let mut plain = V5::client(b.port, "rr-plain");
    plain.subscribe(1, "rr/#", 0);
    let mut p = V5::client(b.port, "rr-pub");
    for i in 0..30u8 {
        p.publish(msg("rr/t", &[i], 0, 0));
    }
    p.sync();
    let mut all = Vec::new();
    for m in &mut members {
        let got: Vec<u8> = m
            .drain()
            .into_iter()
            .map(|pk| match pk {
                Packet::Publish(m) => m.payload[0],
                pk => panic!("{pk:?}"),
            })
            .collect();
        assert_eq!(
            got.len(),
            10,
            "round robin gives each of 3 members 10 of 30: {got:?}"
        );
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..30).collect::<Vec<u8>>());
    assert_eq!(
        plain.drain().len(),
        30,
        "a non-shared subscriber still gets everything"
    );
}

#[test]
fn shared_subscription_prefers_connected_members() {
    let b = Broker::start();
    let mut away = V5::connect(
        b.port,
        connect_props("pref-away", true, |p| p.session_expiry_interval = Some(300)),
    )
    .0;
    away.subscribe(1, "$share/g/pref/#", 1);
    away.disconnect();
    let mut here = V5::client(b.port, "pref-here");
    here.subscribe(1, "$share/g/pref/#", 1);
    let mut p = V5::client(b.port, "pref-pub");
    for i in 1..=6u16 {
        assert_eq!(p.publish(msg("pref/t", &[i as u8], 1, i)), Some(0));
    }
    let mut n = 0;
    for pk in here.drain() {
        let Packet::Publish(m) = pk else {
            panic!("{pk:?}")
        };
        here.puback(m.pid);
        n += 1;
    }
    assert_eq!(n, 6, "all go to the connected member");
    let (mut away, ack) = V5::connect(
        b.port,
        connect_props("pref-away", false, |p| {
            p.session_expiry_interval = Some(300)
        }),
    );
    assert!(ack.session_present);
    away.sync();
}

#[test]
fn shared_subscription_qos2_unacknowledged_message_moves_to_another_member() {
    let b = Broker::start();
    let mut a = V5::client(b.port, "q2-a");
    a.subscribe(1, "$share/q2/q2s/#", 2);
    let mut c = V5::client(b.port, "q2-b");
    c.subscribe(1, "$share/q2/q2s/#", 2);
    let mut p = V5::client(b.port, "q2-pub");
    p.publish(msg("q2s/t", b"first", 2, 1));
    p.publish(msg("q2s/t", b"second", 2, 2));
    // Round robin: one each. Whoever got "first" drops without PUBREC.
    let got_a = a.expect_publish();
    let got_c = c.expect_publish();
    let (holder, mut other, kept) = if &got_a.payload[..] == b"first" {
        (a, c, got_c)
    } else {
        (c, a, got_a)
    };
    assert_eq!(&kept.payload[..], b"second");
    holder.drop_link();
    let moved = other.expect_publish();
    assert_eq!(&moved.payload[..], b"first");
    assert_eq!(moved.qos, QoS::ExactlyOnce);
    for m in [kept, moved] {
        other.send(&Packet::PubRec(Ack::new(m.pid)));
        match other.recv() {
            Packet::PubRel(r) => assert_eq!(r.pid, m.pid),
            pk => panic!("expected PUBREL {}, got {pk:?}", m.pid),
        }
        other.send(&Packet::PubComp(Ack::new(m.pid)));
    }
    other.sync();
}

/// One member's view: every delivery reported to the test as (member, payload index, acked).
fn run_member(
    mut c: V5,
    who: usize,
    ack_first: Option<usize>,
    tx: mpsc::Sender<(usize, u32, bool)>,
    stop: Arc<AtomicBool>,
) {
    let mut seen = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "member {who} ran too long");
        if stop.load(Ordering::SeqCst) {
            // Anything still queued for us arrives before the PINGRESP.
            for pk in c.drain() {
                if let Packet::Publish(m) = pk {
                    c.puback(m.pid);
                    tx.send((who, index(&m), true)).unwrap();
                }
            }
            return;
        }
        match c.poll(Duration::from_millis(50)) {
            Got::Packet(Packet::Publish(m)) => {
                seen += 1;
                let ack = ack_first.is_none_or(|n| seen <= n);
                if ack {
                    c.puback(m.pid);
                }
                tx.send((who, index(&m), ack)).unwrap();
                if let Some(n) = ack_first {
                    // Drop mid-stream with a full window of unacknowledged messages.
                    if seen >= n + 20 {
                        c.drop_link();
                        return;
                    }
                }
            }
            Got::Packet(p) => panic!("member {who} got {p:?}"),
            Got::Quiet => {}
            Got::Closed => panic!("member {who} was disconnected"),
        }
    }
}

fn index(m: &Publish) -> u32 {
    u32::from_be_bytes(m.payload[..4].try_into().unwrap())
}

#[test]
fn shared_subscription_3_members_3000_qos1_exactly_once_with_redelivery_on_drop() {
    const N: u32 = 3000;
    let b = Broker::start();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for who in 0..3usize {
        let mut c = V5::client(b.port, &format!("acc-{who}"));
        c.subscribe(1, "$share/acc/load/#", 1);
        // Member 2 acknowledges its first 30, then stops and is dropped.
        let ack_first = (who == 2).then_some(30);
        let (tx, stop) = (tx.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            run_member(c, who, ack_first, tx, stop)
        }));
    }
    drop(tx);
    let mut p = V5::client(b.port, "acc-pub");
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        for &i in chunk {
            let pid = (i % 60000 + 1) as u16;
            p.send(&Packet::Publish(msg("load/t", &i.to_be_bytes(), 1, pid)));
        }
        for _ in chunk {
            match p.recv_within(Duration::from_secs(30)) {
                Packet::PubAck(a) => assert_eq!(a.reason, 0, "PUBACK {a:?}"),
                pk => panic!("publisher got {pk:?}"),
            }
        }
    }
    // Collect until every message has been processed by someone (bounded).
    let mut deliveries: Vec<(usize, u32, bool)> = Vec::new();
    let mut covered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while covered.len() < N as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(d) => {
                if d.0 != 2 || d.2 {
                    covered.insert(d.1);
                }
                deliveries.push(d);
            }
            Err(e) => panic!(
                "only {} of {N} messages processed ({e:?}); missing e.g. {:?}",
                covered.len(),
                (0..N)
                    .filter(|i| !covered.contains(i))
                    .take(10)
                    .collect::<Vec<_>>()
            ),
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    deliveries.extend(rx.try_iter());

    let mut survivors: HashMap<u32, usize> = HashMap::new();
    let mut dropped_acked = BTreeSet::new();
    let mut dropped_unacked = BTreeSet::new();
    let mut per_member = [0usize; 3];
    for &(who, i, acked) in &deliveries {
        per_member[who] += 1;
        if who == 2 {
            if acked {
                assert!(
                    dropped_acked.insert(i),
                    "message {i} twice to the dropped member"
                );
            } else {
                dropped_unacked.insert(i);
            }
        } else {
            *survivors.entry(i).or_default() += 1;
        }
    }
    assert!(
        per_member[0] > 0 && per_member[1] > 0,
        "per member {per_member:?}"
    );
    assert_eq!(dropped_acked.len(), 30);
    assert_eq!(
        dropped_unacked.len(),
        20,
        "window of unacked messages at the drop"
    );
    let dups: Vec<u32> = survivors
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&i, _)| i)
        .collect();
    assert!(
        dups.is_empty(),
        "delivered more than once to surviving members: {dups:?}"
    );
    for i in 0..N {
        let to_survivor = survivors.contains_key(&i);
        if dropped_acked.contains(&i) {
            assert!(
                !to_survivor,
                "message {i} acked by the dropped member, redelivered anyway"
            );
        } else {
            assert!(
                to_survivor,
                "message {i} never processed (unacked by dropped: {})",
                dropped_unacked.contains(&i)
            );
        }
    }
    assert_eq!(survivors.len() + dropped_acked.len(), N as usize);
}

// ---------------------------------------------------------------------------------------------
// Real clients: paho-mqtt 2.x, mosquitto_pub/sub -V 5, rmqtt_sub -V 5

#[test]
fn paho_mqtt_v5_properties_request_response_session_and_shared() {
    let test = "paho_mqtt_v5_properties_request_response_session_and_shared";
    let Some(tools) = common_interop::tools_or_skip(test, &["python3"]) else {
        return;
    };
    let b = Broker::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_v5.py");
    let out = common_interop::run(
        Command::new(&tools[0]).args([script, "--port", &b.port.to_string()]),
        None,
        Duration::from_secs(300),
    );
    if out.code() == Some(2) && !common_interop::require_interop() {
        common_interop::skip_or_fail(test, &format!("paho-mqtt 2.x unavailable: {}", out.stdout));
        return;
    }
    assert!(
        out.status.is_some_and(|s| s.success()) && out.stdout.contains("\"ok\": true"),
        "paho_v5.py failed ({:?})\nstdout:\n{}\nstderr:\n{}\nbroker log:\n{:?}",
        out.status,
        out.stdout,
        out.stderr,
        b.logs()
    );
}

/// Runs a subscriber (ready once the broker logs its subscription: a piped stdout is block
/// buffered, so the client's own output cannot say so), then `pub_args` with mosquitto_pub, and
/// returns the subscriber's output lines.
fn sub_output(
    sub: &std::path::Path,
    b: &Broker,
    sub_args: &[&str],
    publish: &std::path::Path,
    pub_args: &[&str],
) -> Vec<String> {
    static SERIAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!("v5sub-{}", SERIAL.fetch_add(1, Ordering::SeqCst));
    let port = b.port.to_string();
    let mut s = common_interop::Running::spawn(
        Command::new(sub)
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "5", "-i", &id])
            .args(["-C", "1", "-W", "20"])
            .args(sub_args),
    );
    b.wait_log(&format!("{id} 0 "));
    common_interop::run(
        Command::new(publish)
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "5"])
            .args(pub_args),
        None,
        Duration::from_secs(20),
    )
    .assert_success("mosquitto_pub");
    let status = s.wait_exit("subscriber");
    let stderr = s.stderr_text();
    assert!(
        status.success(),
        "subscriber status {status:?}; stdout {:?}; stderr {stderr}; broker log {:?}",
        s.lines,
        b.logs()
    );
    s.lines.clone()
}

#[test]
fn mosquitto_v5_clients_see_published_properties() {
    let test = "mosquitto_v5_clients_see_published_properties";
    let Some(tools) = common_interop::tools_or_skip(test, &["mosquitto_pub", "mosquitto_sub"])
    else {
        return;
    };
    let b = Broker::start();
    let lines = sub_output(
        &tools[1],
        &b,
        &["-t", "mq5/#", "-F", "%t %p|%P|%E"],
        &tools[0],
        &[
            "-t",
            "mq5/a",
            "-m",
            "hello",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "user-property",
            "unit",
            "C",
            "-D",
            "publish",
            "message-expiry-interval",
            "60",
        ],
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    let parts: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(parts[0], "mq5/a hello");
    assert_eq!(parts[1], "k:v unit:C");
    let left: u32 = parts[2]
        .parse()
        .unwrap_or_else(|_| panic!("expiry {:?}", parts[2]));
    assert!((30..=60).contains(&left), "remaining expiry {left}");
}

#[test]
fn rmqtt_sub_prints_v5_format_specifiers_like_mosquitto_sub() {
    let test = "rmqtt_sub_prints_v5_format_specifiers_like_mosquitto_sub";
    let Some(tools) = common_interop::tools_or_skip(test, &["mosquitto_pub", "mosquitto_sub"])
    else {
        return;
    };
    let dir = common::TempDir::new("v5sub");
    let rmqtt_sub = dir.path.join("rmqtt_sub");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), &rmqtt_sub).unwrap();
    let b = Broker::start();
    let format = "A=%A C=%C D=%D E=%E F=%F R=%R S=%S P=%P t=%t p=%p";
    let sub_args = [
        "-t",
        "fmt/#",
        "-F",
        format,
        "-D",
        "subscribe",
        "subscription-identifier",
        "42",
    ];
    let pub_args = [
        "-t",
        "fmt/x",
        "-m",
        "body",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "correlation-data",
        "c0rr",
        "-D",
        "publish",
        "payload-format-indicator",
        "1",
        "-D",
        "publish",
        "response-topic",
        "re/ply",
        "-D",
        "publish",
        "user-property",
        "a",
        "1",
        "-D",
        "publish",
        "user-property",
        "b",
        "2",
    ];
    let theirs = sub_output(&tools[1], &b, &sub_args, &tools[0], &pub_args);
    let ours = sub_output(&rmqtt_sub, &b, &sub_args, &tools[0], &pub_args);
    assert_eq!(theirs.len(), 1, "mosquitto_sub printed {theirs:?}");
    assert!(
        theirs[0].contains("S=42"),
        "mosquitto_sub printed {theirs:?}"
    );
    assert!(
        theirs[0].contains("C=text/plain"),
        "mosquitto_sub printed {theirs:?}"
    );
    assert_eq!(ours, theirs, "rmqtt_sub vs mosquitto_sub for {format:?}");

    // And with expiry and a topic alias the publisher sets up.
    let format = "E=%E A=%A P=%P";
    let pub_args = [
        "-t",
        "fmt/y",
        "-m",
        "b2",
        "-D",
        "publish",
        "message-expiry-interval",
        "3600",
        "-D",
        "publish",
        "topic-alias",
        "1",
    ];
    let theirs = sub_output(
        &tools[1],
        &b,
        &["-t", "fmt/#", "-F", format],
        &tools[0],
        &pub_args,
    );
    let ours = sub_output(
        &rmqtt_sub,
        &b,
        &["-t", "fmt/#", "-F", format],
        &tools[0],
        &pub_args,
    );
    assert_eq!(ours, theirs, "rmqtt_sub vs mosquitto_sub for {format:?}");
}

#[test]
fn mosquitto_sub_v5_no_local_and_retain_as_published_options() {
    let test = "mosquitto_sub_v5_no_local_and_retain_as_published_options";
    let Some(tools) = common_interop::tools_or_skip(test, &["mosquitto_pub", "mosquitto_sub"])
    else {
        return;
    };
    let b = Broker::start();
    let lines = sub_output(
        &tools[1],
        &b,
        &["-t", "rapm/#", "--retain-as-published", "-F", "%r %t %p"],
        &tools[0],
        &["-t", "rapm/x", "-m", "live", "-r"],
    );
    assert_eq!(lines, vec!["1 rapm/x live".to_string()]);
}

#[test]
fn v5_subscribers_keep_a_session_with_dash_x() {
    let test = "v5_subscribers_keep_a_session_with_dash_x";
    let Some(tools) = common_interop::tools_or_skip(test, &["mosquitto_pub", "mosquitto_sub"])
    else {
        return;
    };
    let dir = common::TempDir::new("v5x");
    let rmqtt_sub = dir.path.join("rmqtt_sub");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), &rmqtt_sub).unwrap();
    let b = Broker::start();
    let port = b.port.to_string();
    for (n, sub) in [&tools[1], &rmqtt_sub].into_iter().enumerate() {
        let id = format!("dash-x-{n}");
        let topic = format!("dx{n}/t");
        let base = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "5",
            "-i",
            &id,
            "-q",
            "1",
        ];
        // Subscribe and leave at once, asking for the session to outlive the connection.
        common_interop::run(
            Command::new(sub)
                .args(base)
                .args(["-c", "-x", "300", "-E", "-t", &topic]),
            None,
            Duration::from_secs(20),
        )
        .assert_success("subscribe with -c -x 300 -E");
        common_interop::run(
            Command::new(&tools[0]).args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "5",
                "-q",
                "1",
                "-t",
                &topic,
                "-m",
                "while away",
            ]),
            None,
            Duration::from_secs(20),
        )
        .assert_success("mosquitto_pub");
        let out = common_interop::run(
            Command::new(sub)
                .args(base)
                .args(["-c", "-x", "300", "-C", "1", "-W", "20", "-t", &topic]),
            None,
            Duration::from_secs(30),
        );
        out.assert_success("resume with -c -x 300");
        assert_eq!(out.stdout, "while away\n", "{sub:?} got the queued message");
    }
}
