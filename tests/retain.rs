//! Retained messages through the real broker: set, replace, clear with an empty payload,
//! delivery on subscribe with the retain flag set, and live forwarding with it cleared.

mod common;

use common::*;

#[test]
fn retained_message_is_delivered_on_subscribe_with_retain_flag() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "r/t", b"one");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/t", 1)]);
    let p = sub.expect_message("r/t", b"one", 1);
    assert!(p.retain, "retained copy must carry retain=1");
    sub.send(&puback(p.pid));
    sub.sync();
}

#[test]
fn retained_message_is_replaced() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "r/t", b"one");
    publisher.publish_retained(2, "r/t", b"two");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/t", 0)]);
    let p = sub.expect_message("r/t", b"two", 0);
    assert!(p.retain);
    // Only the latest value, once.
    sub.sync();
}

#[test]
fn empty_retained_payload_clears() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "r/t", b"one");
    publisher.publish_retained(2, "r/t", b"");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/t", 1), ("r/#", 1)]);
    sub.sync();
}

#[test]
fn retained_delivered_for_wildcard_subscription_at_min_qos() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "home/kitchen/temp", b"21");
    publisher.publish_retained(2, "home/hall/temp", b"19");
    publisher.publish_retained(3, "home/hall/hum", b"40");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("home/+/temp", 0)]);
    let mut got = vec![];
    for _ in 0..2 {
        let p = sub.expect_publish();
        assert!(p.retain);
        assert_eq!(p.qos.as_u8(), 0);
        got.push((p.topic.to_string(), p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("home/hall/temp".to_string(), b"19".to_vec()),
            ("home/kitchen/temp".to_string(), b"21".to_vec()),
        ]
    );
    sub.sync();
}

#[test]
fn live_forwarding_clears_the_retain_flag() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/live", 1)]);
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "r/live", b"now");
    let p = sub.expect_message("r/live", b"now", 1);
    assert!(!p.retain, "live copy must carry retain=0 (3.1.1)");
    sub.send(&puback(p.pid));

    // It was stored all the same: a new subscriber gets it with retain=1.
    let mut late = b.client("late");
    late.subscribe(1, &[("r/live", 1)]);
    let p = late.expect_message("r/live", b"now", 1);
    assert!(p.retain);
    late.send(&puback(p.pid));
    late.sync();
}

#[test]
fn qos0_retained_is_stored() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.send(&publish("r/q0", b"zero", 0, true, false, 0));
    publisher.sync();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/q0", 2)]);
    let p = sub.expect_message("r/q0", b"zero", 0);
    assert!(p.retain);
    sub.sync();
}

#[test]
fn non_retained_publish_does_not_replace_retained() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "r/t", b"kept");
    publisher.publish_q1(2, "r/t", b"passing");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/t", 0)]);
    sub.expect_message("r/t", b"kept", 0);
    sub.sync();
}

#[test]
fn resubscribing_sends_retained_again() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "r/again", b"v");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("r/again", 0)]);
    sub.expect_message("r/again", b"v", 0);
    sub.subscribe(2, &[("r/again", 0)]);
    let p = sub.expect_message("r/again", b"v", 0);
    assert!(p.retain);
    sub.sync();
}

#[test]
fn retained_dollar_topic_not_sent_to_leading_wildcard() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    publisher.publish_retained(1, "$x/state", b"s");
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("#", 0), ("+/state", 0)]);
    sub.sync();
    sub.subscribe(2, &[("$x/#", 0)]);
    let p = sub.expect_message("$x/state", b"s", 0);
    assert!(p.retain);
    sub.sync();
}
