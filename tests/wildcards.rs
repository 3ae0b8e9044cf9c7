//! Topic matching through the real broker: `+` and `#` in every position, `$`-prefixed topics
//! hidden from leading wildcards, and overlapping subscriptions delivered once at the highest
//! granted QoS.

mod common;

use common::*;

/// (filter, topic, delivered?)
const CASES: &[(&str, &str, bool)] = &[
    ("a/b/c", "a/b/c", true),
    ("a/b/c", "a/b", false),
    ("a/b", "a/b/c", false),
    ("a/+/c", "a/b/c", true),
    ("a/+/c", "a//c", true),
    ("a/+/c", "a/b/d", false),
    ("a/+/c", "a/b/c/d", false),
    ("a/+", "a/b", true),
    ("a/+", "a", false),
    ("a/+", "a/", true),
    ("+", "a", true),
    ("+", "a/b", false),
    ("+", "/a", false),
    ("+/+", "/a", true),
    ("+/+", "/", true),
    ("/+", "/a", true),
    ("a/#", "a", true),
    ("a/#", "a/b", true),
    ("a/#", "a/b/c", true),
    ("a/#", "b/a", false),
    ("a/#", "ab", false),
    ("#", "a", true),
    ("#", "a/b/c", true),
    ("#", "/a", true),
    ("+/#", "a", true),
    ("+/#", "a/b/c", true),
    ("a/+/#", "a/b", true),
    ("a/+/#", "a", false),
    ("A/b", "a/b", false),
    // [MQTT-4.7.2-1] `$` topics are not matched by a leading wildcard...
    ("#", "$x/a", false),
    ("+/a", "$x/a", false),
    ("+/#", "$x/a", false),
    ("+", "$x", false),
    // ...but are by a filter that names the first level.
    ("$x/#", "$x/a", true),
    ("$x/#", "$x", true),
    ("$x/+", "$x/a", true),
    ("$x/a", "$x/a", true),
    ("$x/#", "$y/a", false),
    ("x/#", "x/$a", true),
    ("x/+", "x/$a", true),
];

#[test]
fn wildcard_matching_table() {
    let b = Broker::start();
    let mut publisher = b.client("pub");
    let mut failures = vec![];
    for (i, (filter, topic, want)) in CASES.iter().enumerate() {
        let mut sub = b.client(&format!("sub{i}"));
        sub.subscribe(1, &[(filter, 0), ("sync/marker", 0)]);
        publisher.publish_q0(topic, b"payload");
        publisher.publish_q0("sync/marker", b"m");
        let first = sub.expect_publish();
        let delivered = &*first.topic == *topic;
        if delivered {
            assert_eq!(&first.payload[..], b"payload");
            sub.expect_message("sync/marker", b"m", 0);
        } else {
            assert_eq!(&*first.topic, "sync/marker", "case {filter} / {topic}");
        }
        if delivered != *want {
            failures.push(format!(
                "filter {filter:?} topic {topic:?}: delivered {delivered}, expected {want}"
            ));
        }
        sub.sync();
        sub.disconnect();
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("a/#", 0)]);
    sub.subscribe(2, &[("a/b", 2)]);
    let mut publisher = b.client("pub");
    publisher.publish_q2(1, "a/b", b"x");
    publisher.publish_q0("a/c", b"marker");
    let p = sub.expect_message("a/b", b"x", 2);
    sub.expect_message("a/c", b"marker", 0);
    sub.send(&pubrec(p.pid));
    sub.expect_ack("PUBREL", p.pid);
    sub.send(&pubcomp(p.pid));
    sub.sync();
}

#[test]
fn overlapping_in_one_subscribe_and_with_plus() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("s/+/t", 1), ("s/#", 0), ("s/x/t", 0), ("#", 0)]);
    let mut publisher = b.client("pub");
    publisher.publish_q1(1, "s/x/t", b"once");
    publisher.publish_q0("zz", b"marker");
    let p = sub.expect_message("s/x/t", b"once", 1);
    sub.expect_message("zz", b"marker", 0);
    sub.send(&puback(p.pid));
    sub.sync();
}

#[test]
fn resubscribe_replaces_qos() {
    let b = Broker::start();
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("re/t", 2)]);
    sub.subscribe(2, &[("re/t", 0)]);
    let mut publisher = b.client("pub");
    publisher.publish_q2(1, "re/t", b"x");
    publisher.publish_q0("re/t", b"marker");
    sub.expect_message("re/t", b"x", 0);
    sub.expect_message("re/t", b"marker", 0);
    sub.sync();
}

#[test]
fn each_subscriber_gets_its_own_copy() {
    let b = Broker::start();
    let mut subs: Vec<Client> = (0..5)
        .map(|i| {
            let mut s = b.client(&format!("fan{i}"));
            s.subscribe(1, &[("fan/#", 0)]);
            s
        })
        .collect();
    let mut publisher = b.client("pub");
    publisher.publish_q0("fan/out", b"all");
    for s in &mut subs {
        s.expect_message("fan/out", b"all", 0);
    }
    publisher.sync();
    for s in &mut subs {
        s.sync();
    }
}
