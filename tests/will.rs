//! Last-will messages through the real broker: published when a connection ends abnormally
//! (dropped socket, keepalive timeout, protocol error), never after a clean DISCONNECT, and
//! stored when the will asks to be retained.

mod common;

use common::*;
use std::net::Shutdown;
use std::time::Duration;

/// A subscriber on `will/#` and `marker` at QoS 2.
fn watcher(b: &Broker) -> Client {
    let mut s = b.client("watcher");
    s.subscribe(1, &[("will/#", 2), ("marker", 0)]);
    s
}

fn willing(b: &Broker, id: &str, qos: u8, retain: bool) -> Client {
    b.client_with(&ConnectOpts::new(id).will(&format!("will/{id}"), b"gone", qos, retain))
}

#[test]
fn will_sent_when_socket_dropped() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let w = willing(&b, "w1", 1, false);
    w.stream.shutdown(Shutdown::Both).unwrap();
    drop(w);
    let p = s.expect_message("will/w1", b"gone", 1);
    assert!(!p.retain);
    s.send(&puback(p.pid));
    s.sync();
}

#[test]
fn will_sent_on_keepalive_timeout() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let _w = b.client_with(
        &ConnectOpts::new("w2")
            .keepalive(1)
            .will("will/w2", b"timeout", 0, false),
    );
    let p = s.expect_publish_within(Duration::from_secs(6));
    assert_eq!(&*p.topic, "will/w2");
    assert_eq!(&p.payload[..], b"timeout");
    assert_eq!(p.qos.as_u8(), 0);
    b.wait_log("Client w2 has exceeded timeout, disconnecting.");
}

#[test]
fn will_sent_on_protocol_error() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let mut w = willing(&b, "w3", 2, false);
    // PINGREQ must have no body. [MQTT-3.12]
    w.send(&[0xc0, 0x01, 0x00]);
    w.expect_closed();
    let p = s.expect_message("will/w3", b"gone", 2);
    s.send(&pubrec(p.pid));
    s.expect_ack("PUBREL", p.pid);
    s.send(&pubcomp(p.pid));
    s.sync();
}

#[test]
fn no_will_after_disconnect() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let w = willing(&b, "w4", 1, false);
    w.disconnect();
    // The broker dropped the socket, and with it any will, before this marker is read.
    let mut other = b.client("other");
    other.publish_q0("marker", b"m");
    s.expect_message("marker", b"m", 0);
    s.sync();
}

#[test]
fn no_will_after_disconnect_even_if_socket_then_reset() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let mut w = willing(&b, "w5", 1, false);
    w.send(&DISCONNECT);
    w.stream.shutdown(Shutdown::Both).unwrap();
    drop(w);
    b.wait_log("Client w5 disconnected.");
    let mut other = b.client("other");
    other.sync();
    other.publish_q0("marker", b"m");
    s.expect_message("marker", b"m", 0);
    s.sync();
}

#[test]
fn retained_will_is_stored() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let w = willing(&b, "w6", 1, true);
    drop(w);
    let p = s.expect_message("will/w6", b"gone", 1);
    assert!(
        !p.retain,
        "live delivery of a retained will carries retain=0"
    );
    s.send(&puback(p.pid));

    let mut late = b.client("late");
    late.subscribe(1, &[("will/w6", 1)]);
    let p = late.expect_message("will/w6", b"gone", 1);
    assert!(p.retain, "stored will must come with retain=1");
    late.send(&puback(p.pid));
    late.sync();
}

#[test]
fn will_qos_downgraded_to_subscription() {
    let b = Broker::start();
    let mut s = b.client("low");
    s.subscribe(1, &[("will/#", 0)]);
    let w = willing(&b, "w7", 2, false);
    drop(w);
    s.expect_message("will/w7", b"gone", 0);
    s.sync();
}

#[test]
fn will_from_mqtt31_client() {
    let b = Broker::start();
    let mut s = watcher(&b);
    let w = b.client_with(&ConnectOpts::v31("w8").will("will/w8", b"old", 0, false));
    drop(w);
    s.expect_message("will/w8", b"old", 0);
    s.sync();
}
