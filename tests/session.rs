//! Sessions through the real broker: persistent (clean=0) sessions keep subscriptions, queue
//! messages while away and re-send unacknowledged ones with DUP=1; clean sessions discard all;
//! a second connection with the same client id takes over from the first.

mod common;

use common::*;
use std::net::Shutdown;

fn persistent(b: &Broker, id: &str) -> (Client, bool) {
    let mut c = b.raw();
    c.send(&ConnectOpts::new(id).clean(false).encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0);
    (c, ack.session_present)
}

fn abort(c: Client) {
    c.stream.shutdown(Shutdown::Both).unwrap();
}

#[test]
fn messages_published_while_away_are_delivered_on_return() {
    let b = Broker::start();
    let (mut c, present) = persistent(&b, "p1");
    assert!(!present, "a brand new session is not present");
    c.subscribe(1, &[("away/1", 1), ("away/2", 2), ("away/0", 0)]);
    c.disconnect();

    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "away/1", b"q1");
    publisher.publish_q2(2, "away/2", b"q2");

    let (mut c, present) = persistent(&b, "p1");
    assert!(present, "session present must be 1 on return");
    let p1 = c.expect_message("away/1", b"q1", 1);
    let p2 = c.expect_message("away/2", b"q2", 2);
    c.send(&puback(p1.pid));
    c.send(&pubrec(p2.pid));
    c.expect_ack("PUBREL", p2.pid);
    c.send(&pubcomp(p2.pid));
    c.sync();

    // The subscriptions survived too.
    publisher.publish_q1(3, "away/1", b"live");
    let p = c.expect_message("away/1", b"live", 1);
    c.send(&puback(p.pid));
    c.sync();
}

#[test]
fn unacknowledged_qos1_is_resent_with_dup_after_reconnect() {
    let b = Broker::start();
    let (mut c, _) = persistent(&b, "p2");
    c.subscribe(1, &[("inflight/t", 1)]);
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "inflight/t", b"again");
    let first = c.expect_message("inflight/t", b"again", 1);
    assert!(!first.dup);
    abort(c);

    let (mut c, present) = persistent(&b, "p2");
    assert!(present);
    let again = c.expect_message("inflight/t", b"again", 1);
    assert!(again.dup, "re-sent PUBLISH must have DUP=1");
    assert_eq!(again.pid, first.pid, "re-sent PUBLISH keeps its packet id");
    c.send(&puback(again.pid));
    c.sync();

    // Acknowledged now: a third connection gets nothing.
    c.disconnect();
    let (mut c, present) = persistent(&b, "p2");
    assert!(present);
    c.sync();
}

#[test]
fn unacknowledged_qos2_is_resent_with_dup_after_reconnect() {
    let b = Broker::start();
    let (mut c, _) = persistent(&b, "p3");
    c.subscribe(1, &[("inflight/2", 2)]);
    let mut publisher = b.client("pub");
    publisher.publish_q2(1, "inflight/2", b"two");
    let first = c.expect_message("inflight/2", b"two", 2);
    assert!(!first.dup);
    abort(c);

    let (mut c, present) = persistent(&b, "p3");
    assert!(present);
    let again = c.expect_message("inflight/2", b"two", 2);
    assert!(again.dup);
    assert_eq!(again.pid, first.pid);
    c.send(&pubrec(again.pid));
    c.expect_ack("PUBREL", again.pid);
    c.send(&pubcomp(again.pid));
    c.sync();
}

#[test]
fn pubrel_is_resent_after_reconnect_when_pubrec_was_sent() {
    let b = Broker::start();
    let (mut c, _) = persistent(&b, "p4");
    c.subscribe(1, &[("inflight/rel", 2)]);
    let mut publisher = b.client("pub");
    publisher.publish_q2(1, "inflight/rel", b"rel");
    let p = c.expect_message("inflight/rel", b"rel", 2);
    c.send(&pubrec(p.pid));
    c.expect_ack("PUBREL", p.pid);
    abort(c);

    let (mut c, present) = persistent(&b, "p4");
    assert!(present);
    // [MQTT-4.4.0-1] the PUBREL, not the PUBLISH, is what is still owed.
    c.expect_ack("PUBREL", p.pid);
    c.send(&pubcomp(p.pid));
    c.sync();
}

#[test]
fn inbound_qos2_state_survives_reconnect() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("in2/t", 0), ("marker", 0)]);
    let (mut c, _) = persistent(&b, "p5");
    c.send(&publish("in2/t", b"x", 2, false, false, 11));
    c.expect_ack("PUBREC", 11);
    abort(c);

    let (mut c, present) = persistent(&b, "p5");
    assert!(present);
    // The client re-sends the PUBLISH with DUP=1 (it never saw the PUBREC arrive, say).
    c.send(&publish("in2/t", b"x", 2, false, true, 11));
    c.expect_ack("PUBREC", 11);
    c.send(&pubrel(11));
    c.expect_ack("PUBCOMP", 11);
    c.publish_q0("marker", b"m");
    c.sync();

    sub.expect_message("in2/t", b"x", 0);
    sub.expect_message("marker", b"m", 0);
    sub.sync();
}

#[test]
fn clean_session_discards_previous_state() {
    let b = Broker::start();
    let (mut c, _) = persistent(&b, "p6");
    c.subscribe(1, &[("clean/t", 1)]);
    c.disconnect();
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "clean/t", b"queued");

    let mut c = b.raw();
    c.send(&ConnectOpts::new("p6").clean(true).encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0);
    assert!(!ack.session_present, "clean session must report no session");
    // Nothing queued is delivered, and the old subscription is gone.
    c.sync();
    publisher.publish_q1(2, "clean/t", b"after");
    c.sync();
    c.disconnect();

    let (mut c, present) = persistent(&b, "p6");
    assert!(!present, "the clean session was not kept");
    c.sync();
}

#[test]
fn clean_session_is_not_kept_after_disconnect() {
    let b = Broker::start();
    let mut c = b.client("p7");
    c.subscribe(1, &[("gone/t", 1)]);
    c.disconnect();
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "gone/t", b"x");
    let (mut c, present) = persistent(&b, "p7");
    assert!(!present);
    c.sync();
}

#[test]
fn qos0_published_while_away_is_queued_for_qos0_subscription() {
    // Mosquitto queues QoS 0 for offline persistent sessions only with queue_qos0_messages;
    // either way a QoS 1 message behind it must arrive.
    let b = Broker::start();
    let (mut c, _) = persistent(&b, "p8");
    c.subscribe(1, &[("q0away/t", 1)]);
    c.disconnect();
    let mut publisher = b.client("pub");
    publisher.publish_q0("q0away/t", b"zero");
    publisher.publish_q1(1, "q0away/t", b"one");
    let (mut c, present) = persistent(&b, "p8");
    assert!(present);
    let mut p = c.expect_publish();
    if &p.payload[..] == b"zero" {
        assert_eq!(p.qos.as_u8(), 0);
        p = c.expect_publish();
    }
    assert_eq!(&p.payload[..], b"one");
    assert_eq!(p.qos.as_u8(), 1);
    c.send(&puback(p.pid));
    c.sync();
}

#[test]
fn takeover_closes_the_old_connection() {
    let b = Broker::start();
    let mut first = b.client("same");
    first.subscribe(1, &[("take/t", 1)]);
    let mut second = b.client("same");
    second.sync();
    first.expect_closed();
    b.wait_log("Client same already connected, closing old connection.");
    second.subscribe(1, &[("take/t", 1)]);
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "take/t", b"mine");
    let p = second.expect_message("take/t", b"mine", 1);
    second.send(&puback(p.pid));
    second.sync();
}

#[test]
fn takeover_of_persistent_session_keeps_subscriptions() {
    let b = Broker::start();
    let (mut first, _) = persistent(&b, "pt");
    first.subscribe(1, &[("takep/t", 1)]);
    let (mut second, present) = persistent(&b, "pt");
    assert!(
        present,
        "taking over a live persistent session reports it present"
    );
    first.expect_closed();
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "takep/t", b"moved");
    let p = second.expect_message("takep/t", b"moved", 1);
    second.send(&puback(p.pid));
    second.sync();
}
