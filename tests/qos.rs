//! QoS 0/1/2 flows in both directions through the real broker: acknowledgement order,
//! exactly-once delivery of duplicated QoS 2 publishes, and QoS downgrade to the subscription's
//! maximum.

mod common;

use common::*;
use rmqtt::protocol::Packet;

#[test]
fn qos0_end_to_end() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("q/0", 0)]);
    let mut publisher = b.client("pub");
    publisher.publish_q0("q/0", b"zero");
    let p = sub.expect_message("q/0", b"zero", 0);
    assert!(!p.dup && !p.retain);
    // QoS 0 has no acknowledgement: the publisher's next packet answer is its PINGRESP.
    publisher.sync();
    sub.sync();
}

#[test]
fn qos1_end_to_end() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("q/1", 1)]);
    let mut publisher = b.client("pub");
    publisher.send(&publish("q/1", b"one", 1, false, false, 0x1234));
    publisher.expect_ack("PUBACK", 0x1234);
    let p = sub.expect_message("q/1", b"one", 1);
    assert_ne!(p.pid, 0);
    assert!(!p.dup);
    sub.send(&puback(p.pid));
    sub.sync();

    // A second message gets through too: the first one's packet id was released.
    publisher.publish_q1(7, "q/1", b"again");
    let p2 = sub.expect_message("q/1", b"again", 1);
    sub.send(&puback(p2.pid));
    sub.sync();
}

#[test]
fn qos2_inbound_ack_order() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("q/2", 2)]);
    let mut publisher = b.client("pub");
    publisher.send(&publish("q/2", b"two", 2, false, false, 42));
    publisher.expect_ack("PUBREC", 42);
    publisher.sync();
    publisher.send(&pubrel(42));
    publisher.expect_ack("PUBCOMP", 42);
    publisher.sync();

    let p = sub.expect_message("q/2", b"two", 2);
    sub.send(&pubrec(p.pid));
    sub.expect_ack("PUBREL", p.pid);
    sub.send(&pubcomp(p.pid));
    sub.sync();
}

#[test]
fn qos2_outbound_waits_for_pubrec_then_pubcomp() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("q/2", 2)]);
    let mut publisher = b.client("pub");
    publisher.publish_q2(1, "q/2", b"first");
    let p = sub.expect_message("q/2", b"first", 2);
    assert!(!p.dup);
    // No PUBREL before the client's PUBREC.
    sub.sync();
    sub.send(&pubrec(p.pid));
    sub.expect_ack("PUBREL", p.pid);
    sub.send(&pubcomp(p.pid));
    sub.sync();

    publisher.publish_q2(2, "q/2", b"second");
    let p2 = sub.expect_message("q/2", b"second", 2);
    sub.send(&pubrec(p2.pid));
    sub.expect_ack("PUBREL", p2.pid);
    sub.send(&pubcomp(p2.pid));
    sub.sync();
}

#[test]
fn qos2_duplicate_publish_before_pubrel_is_delivered_once() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("dup/t", 2), ("marker", 0)]);
    let mut publisher = b.client("pub");
    publisher.send(&publish("dup/t", b"once", 2, false, false, 9));
    publisher.expect_ack("PUBREC", 9);
    publisher.send(&publish("dup/t", b"once", 2, false, true, 9));
    // [MQTT-4.3.3-2] a duplicate still gets its PUBREC.
    publisher.expect_ack("PUBREC", 9);
    publisher.send(&pubrel(9));
    publisher.expect_ack("PUBCOMP", 9);
    publisher.publish_q0("marker", b"end");
    publisher.sync();

    let p = sub.expect_message("dup/t", b"once", 2);
    // The next thing delivered must be the marker, not a second copy.
    sub.expect_message("marker", b"end", 0);
    sub.send(&pubrec(p.pid));
    sub.expect_ack("PUBREL", p.pid);
    sub.send(&pubcomp(p.pid));
    sub.sync();

    // After PUBCOMP the packet id is free again: the same id is a new message.
    publisher.publish_q2(9, "dup/t", b"new");
    let p = sub.expect_message("dup/t", b"new", 2);
    sub.send(&pubrec(p.pid));
    sub.expect_ack("PUBREL", p.pid);
    sub.send(&pubcomp(p.pid));
    sub.sync();
}

#[test]
fn duplicate_pubrel_still_gets_pubcomp() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_q2(3, "x/y", b"m");
    // [MQTT-4.3.3-11] PUBREL for an id no longer held is answered with PUBCOMP anyway.
    publisher.send(&pubrel(3));
    publisher.expect_ack("PUBCOMP", 3);
}

#[test]
fn qos_is_downgraded_to_the_subscription() {
    let b = Broker::start();
    let mut s0 = b.client("s0");
    s0.subscribe(1, &[("down/t", 0)]);
    let mut s1 = b.client("s1");
    s1.subscribe(1, &[("down/t", 1)]);
    let mut s2 = b.client("s2");
    s2.subscribe(1, &[("down/t", 2)]);
    let mut publisher = b.client("pub");

    publisher.publish_q2(1, "down/t", b"hi");
    s0.expect_message("down/t", b"hi", 0);
    let p = s1.expect_message("down/t", b"hi", 1);
    s1.send(&puback(p.pid));
    let p = s2.expect_message("down/t", b"hi", 2);
    s2.send(&pubrec(p.pid));
    s2.expect_ack("PUBREL", p.pid);
    s2.send(&pubcomp(p.pid));

    publisher.publish_q1(2, "down/t", b"mid");
    s0.expect_message("down/t", b"mid", 0);
    let p = s1.expect_message("down/t", b"mid", 1);
    s1.send(&puback(p.pid));
    let p = s2.expect_message("down/t", b"mid", 1);
    s2.send(&puback(p.pid));

    // Never upgraded: QoS 0 stays QoS 0 on a QoS 2 subscription.
    publisher.publish_q0("down/t", b"low");
    publisher.sync();
    s0.expect_message("down/t", b"low", 0);
    s1.expect_message("down/t", b"low", 0);
    let p = s2.expect_message("down/t", b"low", 0);
    assert_eq!(p.pid, 0);
    for s in [&mut s0, &mut s1, &mut s2] {
        s.sync();
    }
}

#[test]
fn unacknowledged_qos1_is_not_resent_while_connected_and_others_flow() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("u/t", 1)]);
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "u/t", b"a");
    publisher.publish_q1(2, "u/t", b"b");
    let a = sub.expect_message("u/t", b"a", 1);
    let bb = sub.expect_message("u/t", b"b", 1);
    assert_ne!(a.pid, bb.pid, "two in-flight messages share a packet id");
    sub.send(&puback(bb.pid));
    sub.send(&puback(a.pid));
    sub.sync();
}

#[test]
fn suback_grants_requested_qos_per_filter() {
    let b = Broker::start();
    let mut c = b.client("c");
    c.send(&subscribe(5, &[("a", 0), ("b", 1), ("c", 2)]));
    match c.expect_packet() {
        Packet::SubAck(a) => {
            assert_eq!(a.pid, 5);
            assert_eq!(a.codes, vec![0, 1, 2]);
        }
        p => panic!("expected SUBACK, got {p:?}"),
    }
}

#[test]
fn unsubscribe_stops_delivery() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("un/t", 0), ("marker", 0)]);
    sub.send(&unsubscribe(2, &["un/t"]));
    sub.expect_ack("UNSUBACK", 2);
    let mut publisher = b.client("pub");
    publisher.publish_q0("un/t", b"gone");
    publisher.publish_q0("marker", b"m");
    sub.expect_message("marker", b"m", 0);
}

#[test]
fn large_payload_round_trip() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("big/t", 1)]);
    let mut publisher = b.client("pub");
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    publisher.publish_q1(1, "big/t", &payload);
    let p = sub.expect_message("big/t", &payload, 1);
    sub.send(&puback(p.pid));
    sub.sync();
}

#[test]
fn many_qos1_messages_arrive_in_order() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("many/t", 1)]);
    let mut publisher = b.client("pub");
    let n = 500u16;
    let mut batch = Vec::new();
    for i in 1..=n {
        batch.extend(publish(
            "many/t",
            i.to_string().as_bytes(),
            1,
            false,
            false,
            i,
        ));
    }
    publisher.send(&batch);
    for i in 1..=n {
        publisher.expect_ack("PUBACK", i);
    }
    // Acknowledge as they come so the in-flight window keeps moving.
    for i in 1..=n {
        let p = sub.expect_message("many/t", i.to_string().as_bytes(), 1);
        sub.send(&puback(p.pid));
    }
    sub.sync();
}

#[test]
fn many_qos2_messages_arrive_once_in_order() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("many2/t", 2)]);
    let mut publisher = b.client("pub");
    for i in 1..=100u16 {
        publisher.publish_q2(i, "many2/t", i.to_string().as_bytes());
    }
    // Deliveries and PUBRELs interleave as the in-flight window allows.
    let mut next = 1u16;
    let mut completed = 0;
    for _ in 0..200 {
        match sub.expect_packet() {
            Packet::Publish(p) => {
                assert_eq!(&p.payload[..], next.to_string().as_bytes(), "order");
                assert_eq!(p.qos.as_u8(), 2);
                assert!(!p.dup);
                next += 1;
                sub.send(&pubrec(p.pid));
            }
            Packet::PubRel(a) => {
                completed += 1;
                sub.send(&pubcomp(a.pid));
            }
            p => panic!("unexpected {p:?}"),
        }
    }
    assert_eq!((next, completed), (101, 100));
    sub.sync();
}
