//! Issue 15, after login: one sans-IO test per cap of the resource budget (`Limits::budget`),
//! each checking the protocol answer at the cap and that the broker goes on serving.

use super::*;
use crate::config::{Config, ResourceBudget};

fn budget(f: impl FnOnce(&mut ResourceBudget)) -> Limits {
    let mut l = Limits::default();
    f(&mut l.budget);
    l
}

fn suback_codes(ps: &[Packet]) -> Vec<u8> {
    ps.iter()
        .find_map(|p| match p {
            Packet::SubAck(s) => Some(s.codes.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn connack_code(ps: &[Packet]) -> Option<u8> {
    ps.iter().find_map(|p| match p {
        Packet::ConnAck(a) => Some(a.code),
        _ => None,
    })
}

#[test]
fn subscriptions_per_session_capped_with_suback_failure() {
    let mut h = Harness::with(budget(|b| b.max_subscriptions = 3));
    let c = h.client("many", true);
    let filters = [
        ("a", QoS::AtLeastOnce),
        ("b", QoS::AtMostOnce),
        ("c", QoS::AtMostOnce),
        ("d", QoS::AtMostOnce),
        ("a", QoS::AtMostOnce),
    ];
    h.send(c, &subscribe(1, &filters));
    // 3.1.1: 0x80 for the fourth; an update of one it holds is still allowed.
    assert_eq!(suback_codes(&h.recv(c)), vec![1, 0, 0, 0x80, 0]);
    assert_eq!(h.b.subscription_count(), 3);
    let v5 = v5_client(&mut h, "many5", Properties::default());
    h.send(v5, &subscribe(1, &filters));
    assert_eq!(
        suback_codes(&h.recv(v5)),
        vec![1, 0, 0, reason::QUOTA_EXCEEDED, 0]
    );
    // Room again after an unsubscribe.
    h.send(
        c,
        &Packet::Unsubscribe(Unsubscribe {
            pid: 2,
            filters: vec!["b".into()],
            properties: Properties::default(),
        }),
    );
    h.recv(c);
    h.send(c, &subscribe(3, &[("d", QoS::AtMostOnce)]));
    assert_eq!(suback_codes(&h.recv(c)), vec![0]);
}

#[test]
fn shared_groups_capped_and_found_through_the_tree() {
    let mut h = Harness::with(budget(|b| b.max_shared_groups = 2));
    let a = v5_client(&mut h, "a", Properties::default());
    let b = v5_client(&mut h, "b", Properties::default());
    h.send(
        a,
        &subscribe(
            1,
            &[
                ("$share/g1/x/+", QoS::AtMostOnce),
                ("$share/g2/x/#", QoS::AtMostOnce),
                ("$share/g3/x/y", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(suback_codes(&h.recv(a)), vec![0, 0, reason::QUOTA_EXCEEDED]);
    // Joining an existing group opens none: allowed at the cap.
    h.send(b, &subscribe(1, &[("$share/g1/x/+", QoS::AtMostOnce)]));
    assert_eq!(suback_codes(&h.recv(b)), vec![0]);
    let p = h.client("pub", true);
    for i in 0..4 {
        h.send(
            p,
            &publish("x/y", &i.to_string(), QoS::AtMostOnce, 0, false),
        );
    }
    // g2 has only a: 4; g1 alternates a and b: 2 each.
    let (na, nb) = (publishes(&h.recv(a)).len(), publishes(&h.recv(b)).len());
    assert_eq!((na, nb), (6, 2));
    h.send(p, &publish("z", "no group", QoS::AtMostOnce, 0, false));
    assert!(publishes(&h.recv(a)).is_empty());
    // The groups leave the tree with their last member.
    h.drop_conn(a);
    h.drop_conn(b);
    assert!(!h.b.table.has_shared());
    let c = v5_client(&mut h, "c", Properties::default());
    h.send(c, &subscribe(1, &[("$share/g3/x/y", QoS::AtMostOnce)]));
    assert_eq!(suback_codes(&h.recv(c)), vec![0]);
    h.send(p, &publish("x/y", "again", QoS::AtMostOnce, 0, false));
    assert_eq!(publishes(&h.recv(c)).len(), 1);
}

#[test]
fn retained_store_capped_by_count_and_bytes() {
    let mut h = Harness::with(budget(|b| {
        b.max_retained_messages = 2;
        b.max_retained_bytes = 100;
    }));
    let s = h.client("sub", true);
    h.sub(s, &[("r/#", QoS::AtMostOnce)]);
    let p = h.client("pub", true);
    h.send(p, &publish("r/1", "a", QoS::AtMostOnce, 0, true));
    h.send(p, &publish("r/2", "b", QoS::AtMostOnce, 0, true));
    // 3.1.1 QoS 1: acknowledged and delivered, not retained.
    h.send(p, &publish("r/3", "c", QoS::AtLeastOnce, 1, true));
    assert!(matches!(h.recv(p).as_slice(), [Packet::PubAck(_)]));
    assert_eq!(publishes(&h.recv(s)).len(), 3, "live delivery goes on");
    assert_eq!(h.b.retained_count(), 2);
    // Replacing and clearing a topic work at the cap.
    h.send(p, &publish("r/1", "A", QoS::AtMostOnce, 0, true));
    h.send(p, &publish("r/2", "", QoS::AtMostOnce, 0, true));
    assert_eq!(h.b.retained_count(), 1);
    // 5.0 QoS 1 over the byte cap: PUBACK 0x97, not delivered.
    let v5 = v5_client(&mut h, "pub5", Properties::default());
    let big = "x".repeat(120);
    let mut m = v5_publish("r/big", &big, QoS::AtLeastOnce, 7, Properties::default());
    if let Packet::Publish(x) = &mut m {
        x.retain = true;
    }
    h.recv(s);
    h.send(v5, &m);
    match h.recv(v5).as_slice() {
        [Packet::PubAck(a)] => assert_eq!(a.reason, reason::QUOTA_EXCEEDED),
        other => panic!("{other:?}"),
    }
    assert!(publishes(&h.recv(s)).is_empty());
    assert_eq!(h.b.retained_count(), 1);
}

#[test]
fn sessions_capped_offline_ones_make_room_connected_ones_refuse() {
    let mut h = Harness::with(budget(|b| b.max_sessions = 2));
    assert_eq!(Limits::default().budget.max_offline_sessions, 1000);
    let a = h.client("a", false);
    h.drop_conn(a);
    let b = h.client("b", false);
    // At the cap: "c" takes the place of "a", the offline one.
    let c = h.client("c", true);
    assert!(h.b.session_id("a").is_none());
    assert_eq!(h.b.session_count(), 2);
    // Both connected now: "d" is refused (3.1.1: 3, server unavailable; 5.0: 0x97).
    let d = h.open();
    h.send(d, &connect_packet("d", true, 60, Version::V311));
    assert_eq!(
        connack_code(&h.recv(d)),
        Some(reason::V3_SERVER_UNAVAILABLE)
    );
    assert!(h.closing(d));
    let d5 = h.open();
    h.send(d5, &connect_packet("d5", true, 60, Version::V5));
    assert_eq!(connack_code(&h.recv(d5)), Some(reason::QUOTA_EXCEEDED));
    // A client id that has a session still gets back in.
    h.drop_conn(b);
    let (_, present, _) = h.client_v("b", false, Version::V311);
    assert!(present);
    assert!(!h.closing(c));
}

#[test]
fn output_per_connection_capped_qos0_dropped_qos1_queued() {
    let mut c = Config::default();
    c.budget.max_output_bytes = 64;
    c.max_inflight_messages = 2;
    c.max_queued_messages = 5;
    let mut h = Harness::with(Limits::from_config(&c));
    assert_eq!((h.b.limits.out_limit, h.b.limits.out_high_water), (64, 32));
    let s = h.client("stuck", true);
    h.sub(s, &[("t", QoS::AtLeastOnce)]);
    let p = h.client("pub", true);
    // Nothing is read from `s`: past the high-water mark it holds the publisher back, after
    // the stall timeout no longer; its output grows to the cap, then QoS 0 is dropped.
    for _ in 0..5 {
        h.send(p, &publish("t", "0123456789", QoS::AtMostOnce, 0, false));
    }
    h.now += Duration::from_secs(3);
    h.b.poll(h.now);
    h.resumed();
    for _ in 0..20 {
        h.send(p, &publish("t", "0123456789", QoS::AtMostOnce, 0, false));
    }
    let out = h.b.conns.get(s).map_or(0, |c| c.out().len());
    assert!(out < 64 + 20, "output stopped near the cap: {out}");
    assert!(h.b.stats.publish_dropped > 0);
    let dropped = h.b.stats.publish_dropped;
    // QoS 1 fills the in-flight window and waits in the session's queue, not dropped.
    for i in 1..=4 {
        h.send(p, &publish("t", "q1", QoS::AtLeastOnce, i, false));
    }
    assert_eq!(h.b.stats.publish_dropped, dropped);
    let sid = h.b.session_id("stuck").unwrap();
    let f = h.b.table.get(sid).unwrap().flow();
    assert_eq!((f.inflight.len(), f.queue.len()), (2, 2));
}

#[test]
fn outgoing_topic_aliases_capped_below_what_the_client_offers() {
    let mut h = Harness::with(budget(|b| b.max_outgoing_topic_alias = 2));
    let s = v5_client(
        &mut h,
        "sub",
        Properties {
            topic_alias_maximum: Some(65535),
            ..Properties::default()
        },
    );
    h.sub(s, &[("a/+", QoS::AtMostOnce)]);
    let p = h.client("pub", true);
    for t in ["a/1", "a/2", "a/3", "a/1", "a/3"] {
        h.send(p, &publish(t, "m", QoS::AtMostOnce, 0, false));
    }
    let aliases: Vec<Option<u16>> = h
        .recv(s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(x) => Some(x.properties.topic_alias),
            _ => None,
        })
        .collect();
    assert_eq!(aliases, vec![Some(1), Some(2), None, Some(1), None]);
    assert_eq!(h.b.conns.get(s).map(|c| c.alias_out_max()), Some(2));
}

#[test]
fn offline_sessions_capped_oldest_discarded() {
    let mut h = Harness::with(budget(|b| b.max_offline_sessions = 2));
    for id in ["a", "b", "c"] {
        let c = h.client(id, false);
        h.sub(c, &[("t", QoS::AtLeastOnce)]);
        h.drop_conn(c);
    }
    // "a" left first: it went when "c" made three.
    assert!(h.b.session_id("a").is_none());
    assert!(h.b.session_id("b").is_some() && h.b.session_id("c").is_some());
    assert_eq!((h.b.session_count(), h.b.table.offline()), (2, 2));
    // Connected sessions do not count: "b" back, "d" offline, nothing discarded.
    let (b, present, _) = h.client_v("b", false, Version::V311);
    assert!(present);
    let d = h.client("d", false);
    h.drop_conn(d);
    assert_eq!((h.b.session_count(), h.b.table.offline()), (3, 2));
    // A clean session is not kept, so it discards nothing.
    let e = h.client("e", true);
    h.drop_conn(e);
    assert_eq!(h.b.session_count(), 3);
    h.drop_conn(b);
    assert!(h.b.session_id("c").is_none(), "c was the oldest offline");
    assert_eq!(h.b.table.offline(), 2);
}

#[test]
fn clientid_prefixes_refuse_other_ids_as_not_authorised() {
    let mut h = Harness::with(Limits {
        clientid_prefixes: Some("sec-".into()),
        ..Limits::default()
    });
    h.client("sec-sensor", true);
    for (id, v, want) in [
        ("sensor", Version::V311, reason::V3_NOT_AUTHORIZED),
        ("se", Version::V5, reason::NOT_AUTHORIZED),
        // An assigned id carries auto_id_prefix ("auto-"), so it is refused too, as in
        // Mosquitto.
        ("", Version::V5, reason::NOT_AUTHORIZED),
    ] {
        let c = h.open();
        h.send(c, &connect_packet(id, true, 60, v));
        assert_eq!(connack_code(&h.recv(c)), Some(want), "{id:?}");
        assert!(h.closing(c));
    }
    assert_eq!(h.b.session_count(), 1);
}
