//! Property tests for the codec and topic matching: every generated packet of every type, in
//! MQTT 3.1.1 and 5.0 (and CONNECT in 3.1), encodes to exactly `encoded_len` bytes and decodes
//! back to itself, also when fed in two pieces; `topic::matches` agrees with a naive reference
//! matcher on generated filters and topics. Case counts are fixed, so the run time is bounded.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use rmqtt::protocol::topic::{matches, valid_topic_filter};
use rmqtt::protocol::{
    decode, Ack, Auth, ConnAck, Connect, Disconnect, Packet, Properties, Publish, QoS, SubAck,
    SubOptions, Subscribe, UnsubAck, Unsubscribe, Version, Will,
};
use std::sync::Arc;

const CASES: u32 = 1500;

/// Short strings over a mixed alphabet (ASCII, multi-byte, separators); never U+0000, which
/// MQTT forbids in strings.
fn text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => Just('/'),
            1 => Just(' '),
            1 => Just('é'),
            1 => Just('😀'),
            1 => proptest::char::range('\u{1}', '\u{7f}'),
        ],
        0..12,
    )
    .prop_map(|c| c.into_iter().collect())
}

/// Topic names: non-empty, no wildcards.
fn topic_name() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just(""),
            Just("$SYS"),
            Just("kö"),
            Just("x y")
        ],
        1..5,
    )
    .prop_map(|l| l.join("/"))
    .prop_filter("non-empty topic", |t| !t.is_empty())
}

/// Valid topic filters, wildcards included.
fn topic_filter() -> impl Strategy<Value = String> {
    (
        vec(prop_oneof![Just("a"), Just("+"), Just(""), Just("b")], 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash || l.is_empty() {
                l.push("#");
            }
            l.join("/")
        })
        .prop_filter("valid filter", |f| valid_topic_filter(f))
}

fn bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn pid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn varint_value() -> impl Strategy<Value = u32> {
    prop_oneof![1..=127u32, 128..=16_383u32, 16_384..=268_435_455u32]
}

fn bit() -> impl Strategy<Value = Option<u8>> {
    option::of(0..=1u8)
}

/// Every property, each present or not; [`restrict`] then keeps what a packet may carry.
fn any_properties() -> BoxedStrategy<Properties> {
    let a = (
        bit(),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(topic_name()),
        option::of(bytes()),
        vec(varint_value(), 0..3),
        option::of(any::<u32>()),
        option::of(text()),
        option::of(any::<u16>()),
        option::of(text()),
        option::of(bytes()),
        bit(),
    );
    let b = (
        option::of(any::<u32>()),
        bit(),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(1..=u16::MAX),
        option::of(any::<u16>()),
        option::of(1..=u16::MAX),
        bit(),
        bit(),
        vec((text(), text()), 0..3),
        option::of(1..=u32::MAX),
    );
    let c = (bit(), bit(), bit());
    (a, b, c)
        .prop_map(|(a, b, c)| Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: a.9,
            authentication_data: a.10,
            request_problem_information: a.11,
            will_delay_interval: b.0,
            request_response_information: b.1,
            response_information: b.2,
            server_reference: b.3,
            reason_string: b.4,
            receive_maximum: b.5,
            topic_alias_maximum: b.6,
            topic_alias: b.7,
            maximum_qos: b.8,
            retain_available: b.9,
            user_properties: b.10,
            maximum_packet_size: b.11,
            wildcard_subscription_available: c.0,
            subscription_identifier_available: c.1,
            shared_subscription_available: c.2,
        })
        .boxed()
}

#[derive(Clone, Copy, PartialEq)]
enum Owner {
    Will,
    Connect,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// Clears every property the 5.0 specification (table 2-4) does not allow in `owner`.
fn restrict(mut p: Properties, owner: Owner) -> Properties {
    use Owner::*;
    let msg = matches!(owner, Will | Publish);
    let keep = |o: &[Owner]| o.contains(&owner);
    if !msg {
        p.payload_format_indicator = None;
        p.message_expiry_interval = None;
        p.content_type = None;
        p.response_topic = None;
        p.correlation_data = None;
    }
    if !keep(&[Publish, Subscribe]) {
        p.subscription_identifiers.clear();
    }
    if owner == Subscribe {
        p.subscription_identifiers.truncate(1);
    }
    if !keep(&[Connect, ConnAck, Disconnect]) {
        p.session_expiry_interval = None;
    }
    if owner != ConnAck {
        p.assigned_client_identifier = None;
        p.server_keep_alive = None;
        p.response_information = None;
        p.maximum_qos = None;
        p.retain_available = None;
        p.wildcard_subscription_available = None;
        p.subscription_identifier_available = None;
        p.shared_subscription_available = None;
    }
    if !keep(&[Connect, ConnAck, Auth]) {
        p.authentication_method = None;
        p.authentication_data = None;
    }
    if owner != Connect {
        p.request_problem_information = None;
        p.request_response_information = None;
    }
    if owner != Will {
        p.will_delay_interval = None;
    }
    if !keep(&[ConnAck, Disconnect]) {
        p.server_reference = None;
    }
    if !keep(&[ConnAck, Ack, Disconnect, Auth]) {
        p.reason_string = None;
    }
    if !keep(&[Connect, ConnAck]) {
        p.receive_maximum = None;
        p.topic_alias_maximum = None;
        p.maximum_packet_size = None;
    }
    if owner != Publish {
        p.topic_alias = None;
    }
    p
}

fn props(v: Version, owner: Owner) -> BoxedStrategy<Properties> {
    any_properties()
        .prop_map(move |p| {
            if v.is_v5() {
                restrict(p, owner)
            } else {
                Properties::default()
            }
        })
        .boxed()
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn connect(v: Version) -> BoxedStrategy<Packet> {
    let will = option::of((
        topic_name(),
        bytes(),
        qos(),
        any::<bool>(),
        props(v, Owner::Will),
    ));
    (
        (any::<bool>(), any::<bool>(), any::<u16>(), text()),
        will,
        option::of(text()),
        option::of(bytes()),
        props(v, Owner::Connect),
    )
        .prop_map(
            move |((bridge, clean_start, keep_alive, client_id), will, username, password, p)| {
                // A password without a user name exists only in 5.0. [MQTT-3.1.2-22]
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    version: v,
                    bridge,
                    clean_start,
                    keep_alive,
                    client_id,
                    will: will.map(|(t, payload, qos, retain, properties)| Will {
                        topic: Arc::from(t.as_str()),
                        payload,
                        qos,
                        retain,
                        properties,
                    }),
                    username,
                    password,
                    properties: p,
                }))
            },
        )
        .boxed()
}

fn publish(v: Version) -> BoxedStrategy<Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pid(),
        bytes(),
        props(v, Owner::Publish),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, pid, payload, properties, alias_only)| {
                let qos0 = qos == QoS::AtMostOnce;
                // In 5.0 a topic alias may stand in for the whole topic. [MQTT-3.3.2-1]
                let topic = if alias_only && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic: Arc::from(topic.as_str()),
                    pid: if qos0 { 0 } else { pid },
                    payload,
                    properties,
                })
            },
        )
        .boxed()
}

fn ack(v: Version) -> BoxedStrategy<Packet> {
    (0..4u8, pid(), any::<u8>(), props(v, Owner::Ack))
        .prop_map(move |(k, pid, reason, p)| {
            let a = Ack {
                pid,
                reason: if v.is_v5() { reason } else { 0 },
                properties: p,
            };
            match k {
                0 => Packet::PubAck(a),
                1 => Packet::PubRec(a),
                2 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            }
        })
        .boxed()
}

fn subscribe(v: Version) -> BoxedStrategy<Packet> {
    let opt = (qos(), any::<bool>(), any::<bool>(), 0..=2u8);
    (
        pid(),
        vec((topic_filter(), any::<bool>(), opt), 1..5),
        props(v, Owner::Subscribe),
    )
        .prop_map(move |(pid, filters, properties)| {
            let filters = filters
                .into_iter()
                .map(|(f, shared, (qos, no_local, rap, rh))| {
                    let f = if shared && v.is_v5() {
                        format!("$share/g/{f}")
                    } else {
                        f
                    };
                    let o = if v.is_v5() {
                        SubOptions {
                            qos,
                            // No local is forbidden on shared subscriptions. [MQTT-3.8.3-4]
                            no_local: no_local && !f.starts_with("$share/"),
                            retain_as_published: rap,
                            retain_handling: rh,
                        }
                    } else {
                        SubOptions {
                            qos,
                            ..SubOptions::default()
                        }
                    };
                    (f, o)
                })
                .collect();
            Packet::Subscribe(Subscribe {
                pid,
                filters,
                properties,
            })
        })
        .boxed()
}

fn other(v: Version) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    prop_oneof![
        (any::<bool>(), any::<u8>(), props(v, Owner::ConnAck)).prop_map(|(sp, code, p)| {
            Packet::ConnAck(ConnAck {
                session_present: sp,
                code,
                properties: p,
            })
        }),
        (pid(), vec(any::<u8>(), 1..6), props(v, Owner::Ack)).prop_map(|(pid, codes, p)| {
            Packet::SubAck(SubAck {
                pid,
                codes,
                properties: p,
            })
        }),
        (
            pid(),
            vec(topic_filter(), 1..4),
            props(v, Owner::Unsubscribe)
        )
            .prop_map(|(pid, filters, p)| Packet::Unsubscribe(Unsubscribe {
                pid,
                filters,
                properties: p,
            })),
        (pid(), vec(any::<u8>(), 1..4), props(v, Owner::Ack)).prop_map(move |(pid, codes, p)| {
            Packet::UnsubAck(UnsubAck {
                pid,
                codes: if v5 { codes } else { Vec::new() },
                properties: p,
            })
        }),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        (any::<u8>(), props(v, Owner::Disconnect)).prop_map(move |(reason, p)| {
            Packet::Disconnect(Disconnect {
                reason: if v5 { reason } else { 0 },
                properties: p,
            })
        }),
    ]
    .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (any::<u8>(), props(Version::V5, Owner::Auth))
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
        .boxed()
}

fn packet(v: Version) -> BoxedStrategy<Packet> {
    let common = prop_oneof![connect(v), publish(v), ack(v), subscribe(v), other(v)];
    if v.is_v5() {
        prop_oneof![4 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

/// Encodes `p` as `v`, checks the announced length, decodes it whole and split at `cut`.
fn check_roundtrip(p: &Packet, v: Version, cut: usize) -> Result<(), TestCaseError> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out);
    prop_assert_eq!(out.len(), p.encoded_len(v), "encoded_len of {:?}", p);
    let whole = decode(&out, v, usize::MAX);
    prop_assert_eq!(
        whole,
        Ok(Some((p.clone(), out.len()))),
        "bytes {:02x?}",
        &out[..]
    );
    // A prefix is never a packet, and never an error: the decoder waits for more.
    let cut = cut % out.len();
    prop_assert_eq!(decode(&out[..cut], v, usize::MAX), Ok(None));
    // Two packets back to back: the first comes out alone, with its exact length.
    let mut two = out.clone();
    two.extend_from_slice(&out);
    prop_assert_eq!(
        decode(&two, v, usize::MAX),
        Ok(Some((p.clone(), out.len())))
    );
    // A limit one byte short of the packet is refused from the fixed header alone.
    let refused = decode(&out, v, out.len() - 1).is_err();
    prop_assert!(
        refused,
        "packet of {} bytes accepted with a smaller limit",
        out.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn roundtrip_v311(p in packet(Version::V311), cut in any::<usize>()) {
        check_roundtrip(&p, Version::V311, cut)?;
    }

    #[test]
    fn roundtrip_v5(p in packet(Version::V5), cut in any::<usize>()) {
        check_roundtrip(&p, Version::V5, cut)?;
    }

    #[test]
    fn roundtrip_connect_v31(p in connect(Version::V31), cut in any::<usize>()) {
        check_roundtrip(&p, Version::V311, cut)?;
    }
}

/// The reference matcher: the definition of section 4.7 written as directly as possible,
/// by counting levels rather than walking both strings together as `matches` does.
fn reference_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    let wildcard_first = f.first().is_some_and(|l| *l == "+" || *l == "#");
    if topic.starts_with('$') && wildcard_first {
        return false; // [MQTT-4.7.2-1]
    }
    let level_ok = |(fl, tl): (&&str, &&str)| *fl == "+" || fl == tl;
    if f.last() == Some(&"#") {
        // `#` matches the parent level too, so `a/#` matches `a`. [MQTT-4.7.1-2]
        let prefix = &f[..f.len() - 1];
        t.len() >= prefix.len() && prefix.iter().zip(t.iter()).all(level_ok)
    } else {
        f.len() == t.len() && f.iter().zip(t.iter()).all(level_ok)
    }
}

fn matching_topic() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just(""),
            Just("$SYS"),
            Just("$x"),
            Just("ab")
        ],
        1..6,
    )
    .prop_map(|l| l.join("/"))
}

fn matching_filter() -> impl Strategy<Value = String> {
    (
        vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just(""),
                Just("+"),
                Just("$SYS"),
                Just("ab")
            ],
            0..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash || l.is_empty() {
                l.push("#");
            }
            l.join("/")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn topic_matching_agrees_with_reference(f in matching_filter(), t in matching_topic()) {
        prop_assume!(valid_topic_filter(&f));
        prop_assert_eq!(matches(&f, &t), reference_matches(&f, &t), "filter {:?} topic {:?}", f, t);
    }

    /// A topic name used as a filter matches itself and nothing else of a different length.
    #[test]
    fn topic_matches_itself(t in matching_topic()) {
        prop_assert!(matches(&t, &t));
        let longer = format!("{t}/x");
        prop_assert!(!matches(&t, &longer));
    }
}

#[test]
fn reference_matcher_sanity() {
    for (f, t, want) in [
        ("#", "a/b", true),
        ("a/#", "a", true),
        ("a/+", "a", false),
        ("+/+", "/", true),
        ("#", "$SYS/x", false),
        ("$SYS/#", "$SYS", true),
        ("+", "", true),
        ("a/b", "a/b/", false),
    ] {
        assert_eq!(reference_matches(f, t), want, "{f} {t}");
        assert_eq!(matches(f, t), want, "{f} {t}");
    }
}
