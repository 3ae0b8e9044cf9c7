//! Issue 16: options from Mosquitto, sans-IO (packets and timestamps in, packets out).

use super::*;
use crate::config::{Bridge, BridgeTopic, Direction, StartType};

fn lazy_bridge(threshold: u32, idle_timeout: u32) -> Bridge {
    let mut b = Bridge::new("lazy");
    b.addresses = vec![("127.0.0.1".into(), 1)];
    b.start_type = StartType::Lazy;
    b.threshold = threshold;
    b.idle_timeout = idle_timeout;
    b.keepalive = 10;
    b.restart_timeout = (1, 1);
    b.notifications = false;
    b.topics = vec![BridgeTopic {
        pattern: "a/#".into(),
        direction: Direction::Out,
        qos: 1,
        local_prefix: String::new(),
        remote_prefix: String::new(),
    }];
    b
}

impl Harness {
    fn at16(&mut self, start: Instant, secs: f64) {
        self.now = start + Duration::from_secs_f64(secs);
        self.b.poll(self.now);
        self.sweep();
    }

    /// Whether the broker asked the event loop to dial a bridge since the last call.
    fn dialed(&mut self) -> bool {
        let mut e = Vec::new();
        self.b.take_effects(&mut e);
        e.iter().any(|e| matches!(e, Effect::Dial(_)))
    }

    /// The remote side of bridge 0 accepts: returns the bridge's connection.
    fn bridge_up(&mut self) -> usize {
        let remote: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let conn = self.b.bridge_open(0, remote, self.now).unwrap();
        assert!(matches!(self.recv(conn).first(), Some(Packet::Connect(_))));
        self.remote_sends(
            conn,
            &Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0,
                properties: Properties::default(),
            }),
        );
        conn
    }

    fn remote_sends(&mut self, conn: usize, p: &Packet) {
        let mut buf = BytesMut::new();
        p.encode(Version::V311, &mut buf);
        self.b.input(conn, &buf, self.now);
    }

    /// What the remote receives; it acknowledges PUBLISHes and answers PINGREQs.
    fn remote_gets(&mut self, conn: usize) -> usize {
        let got = self.recv(conn);
        for p in &got {
            match p {
                Packet::Publish(p) => self.remote_sends(conn, &Packet::PubAck(Ack::new(p.pid))),
                Packet::PingReq => self.remote_sends(conn, &Packet::PingResp),
                _ => {}
            }
        }
        got.iter()
            .filter(|p| matches!(p, Packet::Publish(_)))
            .count()
    }
}

/// `start_type lazy`: the bridge connects once `threshold` messages are queued, disconnects
/// after `idle_timeout` seconds without a message (its keep-alive pings do not count), and
/// connects again only when `threshold` messages are queued again, not on its restart timer.
#[test]
fn lazy_bridge_idles_out_and_comes_back_at_the_threshold() {
    let mut h = Harness::new();
    let t0 = h.now;
    h.b.add_bridges(&[lazy_bridge(2, 30)], h.now);
    assert!(!h.dialed(), "lazy: no connection at start");
    let p = h.client("pub", true);
    h.send(p, &publish("a/1", "m1", QoS::AtLeastOnce, 1, false));
    assert!(!h.dialed(), "one message queued, threshold 2");
    h.send(p, &publish("a/1", "m2", QoS::AtLeastOnce, 2, false));
    assert!(h.dialed(), "threshold reached");
    let conn = h.bridge_up();
    assert_eq!(h.remote_gets(conn), 2, "the queue drains on connect");

    // A message at 20 s moves the idle deadline to 50 s; pings every 10 s do not.
    for s in 1..=20 {
        h.at16(t0, f64::from(s));
        h.remote_gets(conn);
    }
    h.send(p, &publish("a/1", "m3", QoS::AtLeastOnce, 3, false));
    let mut sent = 0;
    for s in 21..=49 {
        h.at16(t0, f64::from(s));
        sent += h.remote_gets(conn);
        assert!(!h.closing(conn), "closed at {s} s, before 30 s of idleness");
    }
    assert_eq!(sent, 1);
    h.at16(t0, 50.0);
    assert!(h.closing(conn), "idle for idle_timeout: disconnected");

    // Disconnected and below the threshold: the restart timer does not bring it back.
    for s in 51..=120 {
        h.at16(t0, f64::from(s));
        h.send(p, &Packet::PingReq);
        assert!(!h.dialed(), "reconnected at {s} s with nothing queued");
    }
    h.send(p, &publish("a/1", "m4", QoS::AtLeastOnce, 4, false));
    assert!(!h.dialed());
    h.send(p, &publish("a/1", "m5", QoS::AtLeastOnce, 5, false));
    assert!(h.dialed(), "threshold reached again");
    let conn = h.bridge_up();
    assert_eq!(h.remote_gets(conn), 2);
}

/// A lazy bridge whose connection fails with enough queued waits for its restart timer
/// (back off) instead of dialing again for every message.
#[test]
fn lazy_bridge_backs_off_after_a_failure() {
    let mut h = Harness::new();
    let t0 = h.now;
    h.b.add_bridges(&[lazy_bridge(1, 30)], h.now);
    let p = h.client("pub", true);
    h.send(p, &publish("a/1", "m1", QoS::AtLeastOnce, 1, false));
    assert!(h.dialed());
    h.b.bridge_failed(0, "refused", h.now);
    h.send(p, &publish("a/1", "m2", QoS::AtLeastOnce, 2, false));
    assert!(!h.dialed(), "dialed again before the restart timeout");
    h.at16(t0, 1.0);
    assert!(h.dialed(), "dialed when the restart timer ran out");
}
