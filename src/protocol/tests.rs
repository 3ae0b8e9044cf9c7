//! Codec tests: hand-written byte fixtures (from the MQTT 3.1.1 and 5.0 specifications' examples
//! and tables) for every packet type and version, checked by decode, encode and round trip;
//! truncation at every byte; malformed variants with their exact error; the v5 property table;
//! and a deterministic garbage run for the never-panic contract.

use super::*;
use bytes::{Bytes, BytesMut};

const V31: Version = Version::V31;
const V311: Version = Version::V311;
const V5: Version = Version::V5;
const ALL: &[Version] = &[V31, V311, V5];
const V3: &[Version] = &[V31, V311];
const ONLY5: &[Version] = &[V5];
const MAX: usize = 4 << 20;

const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");
const TRAILING: DecodeError = DecodeError::Malformed("unexpected bytes at the end of the packet");
const PID0: DecodeError = DecodeError::Malformed("packet identifier 0");
const NOT_ALLOWED: DecodeError = DecodeError::Malformed("property not allowed in this packet");
const DUPLICATE: DecodeError = DecodeError::Protocol("duplicate property");
const UNKNOWN: DecodeError = DecodeError::Protocol("unknown property");
const ZERO: DecodeError = DecodeError::Protocol("property value must not be 0");
const NOT_FLAG: DecodeError = DecodeError::Protocol("property value must be 0 or 1");

fn enc(p: &Packet, v: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out);
    assert_eq!(out.len(), p.encoded_len(v), "encoded_len of {p:?} in {v:?}");
    out.to_vec()
}

/// Variable byte integer written here rather than by the codec, so built fixtures stay independent.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return out;
        }
    }
}

/// A packet from its first byte and body parts, with the remaining length computed.
fn frame(first: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend(body);
    out
}

/// Length of the fixed header at the front of a well-formed packet.
fn header_len(bytes: &[u8]) -> usize {
    2 + bytes[1..].iter().take_while(|b| *b & 0x80 != 0).count()
}

fn s(x: &str) -> String {
    x.to_owned()
}

fn b(x: &[u8]) -> Bytes {
    Bytes::copy_from_slice(x)
}

fn up(k: &str, v: &str) -> (String, String) {
    (s(k), s(v))
}

fn connect(version: Version, client_id: &str) -> Connect {
    Connect {
        version,
        bridge: false,
        clean_start: true,
        keep_alive: 0,
        client_id: s(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

fn will(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: topic.into(),
        payload: b(payload),
        qos,
        retain,
        properties: Properties::default(),
    }
}

/// `flags` is the low nibble of the fixed header, so the value reads like its fixture.
fn publish(flags: u8, topic: &str, pid: u16, payload: &[u8]) -> Publish {
    Publish {
        dup: flags & 8 != 0,
        qos: QoS::from_u8((flags >> 1) & 3).unwrap(),
        retain: flags & 1 != 0,
        topic: topic.into(),
        pid,
        payload: b(payload),
        properties: Properties::default(),
    }
}

fn ack(pid: u16, reason: u8, properties: Properties) -> Ack {
    Ack {
        pid,
        reason,
        properties,
    }
}

fn qos(q: QoS) -> SubOptions {
    SubOptions {
        qos: q,
        ..SubOptions::default()
    }
}

fn reason_string(r: &str) -> Properties {
    Properties {
        reason_string: Some(s(r)),
        ..Properties::default()
    }
}

struct Fixture {
    name: &'static str,
    versions: &'static [Version],
    bytes: Vec<u8>,
    packet: Packet,
    /// Our encoder writes exactly these bytes (otherwise a valid but longer form, decode only).
    canonical: bool,
}

fn fx(name: &'static str, versions: &'static [Version], bytes: &[u8], packet: Packet) -> Fixture {
    Fixture {
        name,
        versions,
        bytes: bytes.to_vec(),
        packet,
        canonical: true,
    }
}

fn alt(name: &'static str, versions: &'static [Version], bytes: &[u8], packet: Packet) -> Fixture {
    Fixture {
        canonical: false,
        ..fx(name, versions, bytes, packet)
    }
}

fn fixtures() -> Vec<Fixture> {
    use Packet::*;
    use QoS::*;
    let mut f = vec![
        // CONNECT: the version argument of decode is ignored, so every fixture runs with all three.
        fx(
            "connect 3.1",
            ALL,
            b"\x10\x0f\x00\x06MQIsdp\x03\x00\x00\x3c\x00\x01a",
            Connect(Box::new(super::Connect {
                clean_start: false,
                keep_alive: 60,
                ..connect(V31, "a")
            })),
        ),
        fx(
            "connect 3.1 will qos 2 retain, user, password",
            ALL,
            b"\x10\x1b\x00\x06MQIsdp\x03\xf6\x00\x1e\x00\x02id\
              \x00\x01t\x00\x00\x00\x01u\x00\x01p",
            Connect(Box::new(super::Connect {
                keep_alive: 30,
                will: Some(will("t", b"", ExactlyOnce, true)),
                username: Some(s("u")),
                password: Some(b(b"p")),
                ..connect(V31, "id")
            })),
        ),
        fx(
            "connect 3.1.1",
            ALL,
            b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd",
            Connect(Box::new(super::Connect {
                keep_alive: 60,
                ..connect(V311, "abcd")
            })),
        ),
        // Flags 0xCE and keep alive 10 are the 3.1.1 spec's example (figure 3.6).
        fx(
            "connect 3.1.1 will qos 1, user, password",
            ALL,
            b"\x10\x24\x00\x04MQTT\x04\xce\x00\x0a\x00\x03cid\
              \x00\x03w/t\x00\x03bye\x00\x04user\x00\x03\x01\x02\x03",
            Connect(Box::new(super::Connect {
                keep_alive: 10,
                will: Some(will("w/t", b"bye", AtLeastOnce, false)),
                username: Some(s("user")),
                password: Some(b(&[1, 2, 3])),
                ..connect(V311, "cid")
            })),
        ),
        fx(
            "connect 3.1.1 user only, empty client id",
            ALL,
            b"\x10\x12\x00\x04MQTT\x04\x82\x00\x00\x00\x00\x00\x04user",
            Connect(Box::new(super::Connect {
                username: Some(s("user")),
                ..connect(V311, "")
            })),
        ),
        fx(
            "connect 5.0",
            ALL,
            b"\x10\x0d\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00",
            Connect(Box::new(super::Connect {
                keep_alive: 60,
                ..connect(V5, "")
            })),
        ),
        fx(
            "connect 5.0 password without user name",
            ALL,
            b"\x10\x12\x00\x04MQTT\x05\x40\x00\x00\x00\x00\x01c\x00\x02pw",
            Connect(Box::new(super::Connect {
                clean_start: false,
                password: Some(b(b"pw")),
                ..connect(V5, "c")
            })),
        ),
        fx(
            "connect 5.0 with every connect and will property",
            ALL,
            b"\x10\x72\x00\x04MQTT\x05\xee\x00\x0a\
              \x26\x11\x00\x00\x00\x0a\x15\x00\x03tok\x16\x00\x02\x01\x02\x17\x00\x19\x01\
              \x21\x00\x14\x22\x00\x0a\x26\x00\x01k\x00\x01v\x27\x00\x00\x10\x00\
              \x00\x03cid\
              \x25\x01\x01\x02\x00\x00\x00\x3c\x03\x00\x04text\x08\x00\x03r/t\
              \x09\x00\x02\xab\xcd\x18\x00\x00\x00\x05\x26\x00\x01a\x00\x01b\
              \x00\x03w/t\x00\x03bye\x00\x04user\x00\x04pass",
            Connect(Box::new(super::Connect {
                keep_alive: 10,
                properties: Properties {
                    session_expiry_interval: Some(10),
                    authentication_method: Some(s("tok")),
                    authentication_data: Some(b(&[1, 2])),
                    request_problem_information: Some(0),
                    request_response_information: Some(1),
                    receive_maximum: Some(20),
                    topic_alias_maximum: Some(10),
                    user_properties: vec![up("k", "v")],
                    maximum_packet_size: Some(4096),
                    ..Properties::default()
                },
                will: Some(Will {
                    properties: Properties {
                        payload_format_indicator: Some(1),
                        message_expiry_interval: Some(60),
                        content_type: Some(s("text")),
                        response_topic: Some(s("r/t")),
                        correlation_data: Some(b(&[0xab, 0xcd])),
                        will_delay_interval: Some(5),
                        user_properties: vec![up("a", "b")],
                        ..Properties::default()
                    },
                    ..will("w/t", b"bye", AtLeastOnce, true)
                }),
                username: Some(s("user")),
                password: Some(b(b"pass")),
                ..connect(V5, "cid")
            })),
        ),
        alt(
            "connect 5.0 properties out of identifier order",
            ALL,
            b"\x10\x15\x00\x04MQTT\x05\x02\x00\x00\x08\x27\x00\x00\x10\x00\x21\x00\x14\x00\x00",
            Connect(Box::new(super::Connect {
                properties: Properties {
                    receive_maximum: Some(20),
                    maximum_packet_size: Some(4096),
                    ..Properties::default()
                },
                ..connect(V5, "")
            })),
        ),
        // CONNACK
        fx(
            "connack accepted",
            V3,
            b"\x20\x02\x00\x00",
            ConnAck(super::ConnAck::default()),
        ),
        fx(
            "connack session present",
            V3,
            b"\x20\x02\x01\x00",
            ConnAck(super::ConnAck {
                session_present: true,
                ..Default::default()
            }),
        ),
        fx(
            "connack not authorised",
            V3,
            b"\x20\x02\x00\x05",
            ConnAck(super::ConnAck {
                code: 5,
                ..Default::default()
            }),
        ),
        fx(
            "connack 5.0",
            ONLY5,
            b"\x20\x03\x00\x00\x00",
            ConnAck(super::ConnAck::default()),
        ),
        fx(
            "connack 5.0 unsupported protocol version",
            ONLY5,
            b"\x20\x03\x00\x84\x00",
            ConnAck(super::ConnAck {
                code: 0x84,
                ..Default::default()
            }),
        ),
        fx(
            "connack 5.0 with every connack property",
            ONLY5,
            b"\x20\x44\x01\x00\x41\
              \x11\x00\x00\x00\x78\x12\x00\x03abc\x13\x00\x3c\x15\x00\x01m\x16\x00\x01d\
              \x1a\x00\x02ri\x1c\x00\x02sv\x1f\x00\x02ok\x21\x00\x0a\x22\x00\x05\x24\x01\x25\x00\
              \x26\x00\x01k\x00\x01v\x27\x00\x01\x00\x00\x28\x00\x29\x01\x2a\x01",
            ConnAck(super::ConnAck {
                session_present: true,
                code: 0,
                properties: Properties {
                    session_expiry_interval: Some(120),
                    assigned_client_identifier: Some(s("abc")),
                    server_keep_alive: Some(60),
                    authentication_method: Some(s("m")),
                    authentication_data: Some(b(b"d")),
                    response_information: Some(s("ri")),
                    server_reference: Some(s("sv")),
                    reason_string: Some(s("ok")),
                    receive_maximum: Some(10),
                    topic_alias_maximum: Some(5),
                    maximum_qos: Some(1),
                    retain_available: Some(0),
                    user_properties: vec![up("k", "v")],
                    maximum_packet_size: Some(65536),
                    wildcard_subscription_available: Some(0),
                    subscription_identifier_available: Some(1),
                    shared_subscription_available: Some(1),
                    ..Properties::default()
                },
            }),
        ),
        // PUBLISH: topic "a/b" and packet identifier 10 are the specs' example (figure 3.11).
        fx(
            "publish qos 0",
            V3,
            b"\x30\x0a\x00\x03a/bhello",
            Publish(publish(0, "a/b", 0, b"hello")),
        ),
        fx(
            "publish qos 1 dup",
            V3,
            b"\x3a\x09\x00\x03a/b\x00\x0ahi",
            Publish(publish(0xa, "a/b", 10, b"hi")),
        ),
        fx(
            "publish qos 2 retain, empty payload",
            V3,
            b"\x35\x07\x00\x03a/b\x12\x34",
            Publish(publish(0x5, "a/b", 0x1234, b"")),
        ),
        fx(
            "publish qos 2 dup retain",
            V3,
            b"\x3d\x07\x00\x01x\xff\xff\x00\x01",
            Publish(publish(0xd, "x", 0xffff, &[0, 1])),
        ),
        fx(
            "publish 5.0 qos 0",
            ONLY5,
            b"\x30\x0b\x00\x03a/b\x00hello",
            Publish(publish(0, "a/b", 0, b"hello")),
        ),
        fx(
            "publish 5.0 qos 1",
            ONLY5,
            b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi",
            Publish(publish(2, "a/b", 10, b"hi")),
        ),
        fx(
            "publish 5.0 with every publish property",
            ONLY5,
            b"\x35\x3c\x00\x03a/b\x00\x2a\x32\
              \x01\x01\x02\x00\x00\x0e\x10\x03\x00\x04json\x08\x00\x05reply\
              \x09\x00\x03\x01\x02\x03\x0b\x05\x0b\x80\x01\x23\x00\x07\
              \x26\x00\x01a\x00\x011\x26\x00\x01a\x00\x012{}",
            Publish(super::Publish {
                properties: Properties {
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(3600),
                    content_type: Some(s("json")),
                    response_topic: Some(s("reply")),
                    correlation_data: Some(b(&[1, 2, 3])),
                    subscription_identifiers: vec![5, 128],
                    topic_alias: Some(7),
                    user_properties: vec![up("a", "1"), up("a", "2")],
                    ..Properties::default()
                },
                ..publish(5, "a/b", 42, b"{}")
            }),
        ),
        fx(
            "publish 5.0 empty topic with a topic alias",
            ONLY5,
            b"\x30\x07\x00\x00\x03\x23\x00\x01x",
            Publish(super::Publish {
                properties: Properties {
                    topic_alias: Some(1),
                    ..Properties::default()
                },
                ..publish(0, "", 0, b"x")
            }),
        ),
        // SUBSCRIBE: the specs' example (figures 3.23 and 3.22, 5.0 figure 3-21).
        fx(
            "subscribe",
            V3,
            b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/d\x02",
            Subscribe(super::Subscribe {
                pid: 10,
                filters: vec![(s("a/b"), qos(AtLeastOnce)), (s("c/d"), qos(ExactlyOnce))],
                properties: Properties::default(),
            }),
        ),
        fx(
            "subscribe wildcards",
            V3,
            b"\x82\x0c\x00\x01\x00\x01#\x00\x00\x03+/x\x01",
            Subscribe(super::Subscribe {
                pid: 1,
                filters: vec![(s("#"), qos(AtMostOnce)), (s("+/x"), qos(AtLeastOnce))],
                properties: Properties::default(),
            }),
        ),
        fx(
            "subscribe 5.0",
            ONLY5,
            b"\x82\x0f\x00\x0a\x00\x00\x03a/b\x01\x00\x03c/d\x02",
            Subscribe(super::Subscribe {
                pid: 10,
                filters: vec![(s("a/b"), qos(AtLeastOnce)), (s("c/d"), qos(ExactlyOnce))],
                properties: Properties::default(),
            }),
        ),
        fx(
            "subscribe 5.0 options and properties",
            ONLY5,
            b"\x82\x23\x00\x0b\x09\x0b\x01\x26\x00\x01k\x00\x01v\
              \x00\x03a/+\x2d\x00\x0a$share/g/t\x12\x00\x01#\x00",
            Subscribe(super::Subscribe {
                pid: 11,
                filters: vec![
                    (
                        s("a/+"),
                        SubOptions {
                            qos: AtLeastOnce,
                            no_local: true,
                            retain_as_published: true,
                            retain_handling: 2,
                        },
                    ),
                    (
                        s("$share/g/t"),
                        SubOptions {
                            qos: ExactlyOnce,
                            retain_handling: 1,
                            ..SubOptions::default()
                        },
                    ),
                    (s("#"), SubOptions::default()),
                ],
                properties: Properties {
                    subscription_identifiers: vec![1],
                    user_properties: vec![up("k", "v")],
                    ..Properties::default()
                },
            }),
        ),
        // SUBACK: the 3.1.1 spec's example return codes (figure 3.26).
        fx(
            "suback",
            V3,
            b"\x90\x06\x00\x0a\x00\x01\x02\x80",
            SubAck(super::SubAck {
                pid: 10,
                codes: vec![0, 1, 2, 0x80],
                properties: Properties::default(),
            }),
        ),
        fx(
            "suback 5.0",
            ONLY5,
            b"\x90\x05\x00\x0a\x00\x01\x87",
            SubAck(super::SubAck {
                pid: 10,
                codes: vec![1, 0x87],
                properties: Properties::default(),
            }),
        ),
        fx(
            "suback 5.0 reason string",
            ONLY5,
            b"\x90\x09\x00\x0a\x05\x1f\x00\x02no\x87",
            SubAck(super::SubAck {
                pid: 10,
                codes: vec![0x87],
                properties: reason_string("no"),
            }),
        ),
        // UNSUBSCRIBE: the specs' example (3.1.1 figure 3.30).
        fx(
            "unsubscribe",
            V3,
            b"\xa2\x0c\x00\x0a\x00\x03a/b\x00\x03c/d",
            Unsubscribe(super::Unsubscribe {
                pid: 10,
                filters: vec![s("a/b"), s("c/d")],
                properties: Properties::default(),
            }),
        ),
        fx(
            "unsubscribe 5.0",
            ONLY5,
            b"\xa2\x0d\x00\x0a\x00\x00\x03a/b\x00\x03c/d",
            Unsubscribe(super::Unsubscribe {
                pid: 10,
                filters: vec![s("a/b"), s("c/d")],
                properties: Properties::default(),
            }),
        ),
        fx(
            "unsubscribe 5.0 user property",
            ONLY5,
            b"\xa2\x0d\x00\x0b\x07\x26\x00\x01k\x00\x01v\x00\x01#",
            Unsubscribe(super::Unsubscribe {
                pid: 11,
                filters: vec![s("#")],
                properties: Properties {
                    user_properties: vec![up("k", "v")],
                    ..Properties::default()
                },
            }),
        ),
        fx(
            "unsuback",
            V3,
            b"\xb0\x02\x00\x0a",
            UnsubAck(super::UnsubAck {
                pid: 10,
                codes: vec![],
                properties: Properties::default(),
            }),
        ),
        fx(
            "unsuback 5.0",
            ONLY5,
            b"\xb0\x05\x00\x0a\x00\x00\x11",
            UnsubAck(super::UnsubAck {
                pid: 10,
                codes: vec![0, 0x11],
                properties: Properties::default(),
            }),
        ),
        fx(
            "unsuback 5.0 reason string",
            ONLY5,
            b"\xb0\x09\x00\x0a\x05\x1f\x00\x02hm\x00",
            UnsubAck(super::UnsubAck {
                pid: 10,
                codes: vec![0],
                properties: reason_string("hm"),
            }),
        ),
        fx("pingreq", ALL, b"\xc0\x00", PingReq),
        fx("pingresp", ALL, b"\xd0\x00", PingResp),
        fx(
            "disconnect",
            ALL,
            b"\xe0\x00",
            Disconnect(super::Disconnect::default()),
        ),
        fx(
            "disconnect 5.0 with will",
            ONLY5,
            b"\xe0\x01\x04",
            Disconnect(super::Disconnect {
                reason: 4,
                ..Default::default()
            }),
        ),
        fx(
            "disconnect 5.0 with every disconnect property",
            ONLY5,
            b"\xe0\x13\x9c\x11\x11\x00\x00\x00\x00\x1c\x00\x03srv\x1f\x00\x03bye",
            Disconnect(super::Disconnect {
                reason: 0x9c,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    server_reference: Some(s("srv")),
                    reason_string: Some(s("bye")),
                    ..Properties::default()
                },
            }),
        ),
        alt(
            "disconnect 5.0 explicit defaults",
            ONLY5,
            b"\xe0\x02\x00\x00",
            Disconnect(super::Disconnect::default()),
        ),
        fx("auth", ONLY5, b"\xf0\x00", Auth(super::Auth::default())),
        fx(
            "auth re-authenticate",
            ONLY5,
            b"\xf0\x01\x19",
            Auth(super::Auth {
                reason: 0x19,
                ..Default::default()
            }),
        ),
        fx(
            "auth continue with method and data",
            ONLY5,
            b"\xf0\x0f\x18\x0d\x15\x00\x05SCRAM\x16\x00\x02\x01\x02",
            Auth(super::Auth {
                reason: 0x18,
                properties: Properties {
                    authentication_method: Some(s("SCRAM")),
                    authentication_data: Some(b(&[1, 2])),
                    ..Properties::default()
                },
            }),
        ),
        alt(
            "auth explicit defaults",
            ONLY5,
            b"\xf0\x02\x00\x00",
            Auth(super::Auth::default()),
        ),
    ];
    // Remaining length 205 takes two bytes: 0xcd 0x01 (spec section 1.5.5 / 2.2.3).
    let mut big = b"\x31\xcd\x01\x00\x03a/b".to_vec();
    big.extend([0xa5; 200]);
    f.push(fx(
        "publish qos 0 retain, two-byte length",
        V3,
        &big,
        Publish(publish(1, "a/b", 0, &[0xa5; 200])),
    ));
    // The four acknowledgements share one layout and differ in the first byte.
    type MakeAck = fn(Ack) -> Packet;
    let acks: [(u8, MakeAck); 4] = [
        (0x40, Packet::PubAck),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ];
    for (first, make) in acks {
        let short = [first, 2, 0, 10];
        f.push(fx("ack", ALL, &short, make(Ack::new(10))));
        f.push(fx(
            "ack 5.0 reason",
            ONLY5,
            &[first, 3, 0x12, 0x34, 0x92],
            make(ack(0x1234, 0x92, Properties::default())),
        ));
        f.push(fx(
            "ack 5.0 reason string",
            ONLY5,
            &[first, 9, 0, 10, 0x10, 5, 0x1f, 0, 2, b'o', b'k'],
            make(ack(10, 0x10, reason_string("ok"))),
        ));
        f.push(fx(
            "ack 5.0 success with properties",
            ONLY5,
            &[first, 9, 0xff, 0xff, 0, 5, 0x1f, 0, 2, b'o', b'k'],
            make(ack(0xffff, 0, reason_string("ok"))),
        ));
        f.push(alt(
            "ack 5.0 explicit success",
            ONLY5,
            &[first, 3, 0, 10, 0],
            make(Ack::new(10)),
        ));
        f.push(alt(
            "ack 5.0 reason with empty properties",
            ONLY5,
            &[first, 4, 0, 10, 0x10, 0],
            make(ack(10, 0x10, Properties::default())),
        ));
    }
    f
}

#[test]
fn fixtures_decode() {
    for f in fixtures() {
        for &v in f.versions {
            let got = decode(&f.bytes, v, MAX);
            assert_eq!(
                got,
                Ok(Some((f.packet.clone(), f.bytes.len()))),
                "{} {v:?}",
                f.name
            );
        }
    }
}

#[test]
fn fixtures_encode_to_the_same_bytes() {
    for f in fixtures().into_iter().filter(|f| f.canonical) {
        for &v in f.versions {
            assert_eq!(enc(&f.packet, v), f.bytes, "{} {v:?}", f.name);
        }
    }
}

#[test]
fn fixtures_round_trip() {
    for f in fixtures() {
        for &v in f.versions {
            let bytes = enc(&f.packet, v);
            assert_eq!(
                decode(&bytes, v, MAX),
                Ok(Some((f.packet.clone(), bytes.len()))),
                "{} {v:?}",
                f.name
            );
        }
    }
}

#[test]
fn fixtures_truncated_at_every_byte() {
    for f in fixtures() {
        for &v in f.versions {
            for n in 0..f.bytes.len() {
                assert_eq!(
                    decode(&f.bytes[..n], v, MAX),
                    Ok(None),
                    "{} {v:?} cut at {n}",
                    f.name
                );
            }
        }
    }
}

#[test]
fn remaining_length_cut_mid_varint() {
    for prefix in [
        &b"\x30\xcd"[..],
        b"\x30\x80",
        b"\x30\x80\x80",
        b"\x30\xff\xff\xff",
        b"\x82\x80\x80\x80",
    ] {
        for &v in ALL {
            assert_eq!(decode(prefix, v, MAX), Ok(None), "{prefix:02x?}");
            assert_eq!(frame_len(prefix, MAX), Ok(None), "{prefix:02x?}");
        }
    }
}

#[test]
fn decode_takes_one_packet_from_a_stream() {
    for f in fixtures() {
        let mut stream = f.bytes.clone();
        stream.extend_from_slice(b"\xc0\x00\x30");
        for &v in f.versions {
            assert_eq!(
                decode(&stream, v, MAX),
                Ok(Some((f.packet.clone(), f.bytes.len()))),
                "{}",
                f.name
            );
            assert_eq!(
                decode(&stream[f.bytes.len()..], v, MAX),
                Ok(Some((Packet::PingReq, 2)))
            );
        }
    }
}

#[test]
fn size_limit_is_checked_from_the_fixed_header_alone() {
    for f in fixtures() {
        let len = f.bytes.len();
        let header = &f.bytes[..header_len(&f.bytes)];
        let too_large = Err(DecodeError::TooLarge {
            size: len,
            max: len - 1,
        });
        for &v in f.versions {
            assert!(decode(&f.bytes, v, len).unwrap().is_some(), "{}", f.name);
            assert_eq!(decode(header, v, len - 1), too_large, "{}", f.name);
            assert_eq!(decode(&f.bytes, v, len - 1), too_large, "{}", f.name);
        }
        assert_eq!(
            frame_len(header, len),
            Ok(Some((f.bytes[0], len))),
            "{}",
            f.name
        );
        assert_eq!(
            frame_len(header, len - 1).map(|_| ()),
            too_large.map(|_| ()),
            "{}",
            f.name
        );
    }
    // The largest remaining length there is, announced with no body at all.
    assert_eq!(
        decode(b"\x30\xff\xff\xff\x7f", V311, 1 << 20),
        Err(DecodeError::TooLarge {
            size: 1 + 4 + 268_435_455,
            max: 1 << 20
        })
    );
    assert_eq!(
        decode(b"\x30\x81\x08", V5, 1027),
        Err(DecodeError::TooLarge {
            size: 1028,
            max: 1027
        })
    );
    assert_eq!(decode(b"\x30\x81\x08", V5, 1028), Ok(None));
}

#[test]
fn remaining_length_boundaries_from_the_spec_table() {
    // Section 1.5.5 / 2.2.3: the smallest and largest value of each encoded length.
    let cases: [(usize, &[u8]); 6] = [
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ];
    for (body, length) in cases {
        let payload = vec![7u8; body - 3];
        let p = Packet::Publish(publish(0, "a", 0, &payload));
        let bytes = enc(&p, V311);
        assert_eq!(&bytes[1..1 + length.len()], length, "body {body}");
        assert_eq!(bytes.len(), 1 + length.len() + body);
        assert_eq!(decode(&bytes, V311, MAX), Ok(Some((p, bytes.len()))));
        if body == 16_384 {
            for n in 0..bytes.len() {
                assert_eq!(decode(&bytes[..n], V311, MAX), Ok(None), "cut at {n}");
            }
        }
    }
}

#[test]
fn publish_view_encodes_like_the_packet() {
    for f in fixtures() {
        let Packet::Publish(p) = &f.packet else {
            continue;
        };
        for &v in f.versions {
            let view = p.view();
            let mut out = BytesMut::new();
            view.encode(v, &mut out);
            assert_eq!(out.len(), view.encoded_len(v), "{}", f.name);
            assert_eq!(&out[..], &enc(&f.packet, v)[..], "{}", f.name);
        }
    }
    let view = PublishView {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b",
        pid: 10,
        payload: b"hi",
        properties: None,
    };
    let mut out = BytesMut::new();
    view.encode(V5, &mut out);
    assert_eq!(&out[..], b"\x32\x0a\x00\x03a/b\x00\x0a\x00hi");
    assert_eq!(view.encoded_len(V5), out.len());
}

/// Wrong reserved flags for every packet type but PUBLISH, whose flags carry meaning.
/// [MQTT-2.2.2-2]
#[test]
fn reserved_flags() {
    for f in fixtures() {
        if matches!(f.packet, Packet::Publish(_)) {
            continue;
        }
        let right = f.bytes[0] & 0x0f;
        for flags in (0..16).filter(|&x| x != right) {
            let mut bytes = f.bytes.clone();
            bytes[0] = (bytes[0] & 0xf0) | flags;
            for &v in f.versions {
                assert_eq!(
                    decode(&bytes, v, MAX),
                    Err(DecodeError::InvalidHeader(bytes[0])),
                    "{} flags {flags}",
                    f.name
                );
            }
        }
    }
}

struct Bad {
    name: &'static str,
    versions: &'static [Version],
    bytes: Vec<u8>,
    err: DecodeError,
}

fn bad(name: &'static str, versions: &'static [Version], bytes: &[u8], err: DecodeError) -> Bad {
    Bad {
        name,
        versions,
        bytes: bytes.to_vec(),
        err,
    }
}

fn subscribe_one(v5: bool, filter: &[u8], opts: u8) -> Vec<u8> {
    let props: &[u8] = if v5 { b"\x00" } else { b"" };
    let len = (filter.len() as u16).to_be_bytes();
    frame(0x82, &[b"\x00\x0a", props, &len, filter, &[opts]])
}

fn unsubscribe_one(v5: bool, filter: &[u8]) -> Vec<u8> {
    let props: &[u8] = if v5 { b"\x00" } else { b"" };
    let len = (filter.len() as u16).to_be_bytes();
    frame(0xa2, &[b"\x00\x0a", props, &len, filter])
}

fn malformed() -> Vec<Bad> {
    use DecodeError::*;
    let m = Malformed;
    let mut t = vec![
        bad("packet type 0", ALL, b"\x00\x00", InvalidHeader(0)),
        bad(
            "packet type 0, flags",
            ALL,
            b"\x0f\x00",
            InvalidHeader(0x0f),
        ),
        bad("AUTH before 5.0", V3, b"\xf0\x00", InvalidHeader(0xf0)),
        bad(
            "AUTH before 5.0, body",
            V3,
            b"\xf0\x01\x18",
            InvalidHeader(0xf0),
        ),
        bad(
            "5-byte remaining length",
            ALL,
            b"\x30\xff\xff\xff\xff\x7f",
            MalformedLength,
        ),
        bad(
            "5-byte remaining length, zero",
            ALL,
            b"\xc0\x80\x80\x80\x80\x00",
            MalformedLength,
        ),
        bad(
            "remaining length not in its shortest form",
            ALL,
            b"\xc0\x80\x00",
            MalformedLength,
        ),
        // PUBLISH
        bad(
            "publish qos 3",
            ALL,
            b"\x36\x07\x00\x03a/b\x00\x01",
            m("QoS 3"),
        ),
        bad(
            "publish qos 3 retain",
            ALL,
            b"\x37\x05\x00\x03a/b",
            m("QoS 3"),
        ),
        bad("publish qos 3 dup", ALL, b"\x3e\x05\x00\x03a/b", m("QoS 3")),
        bad(
            "publish dup on qos 0",
            ALL,
            b"\x38\x05\x00\x03a/b",
            m("DUP set on a QoS 0 message"),
        ),
        bad(
            "publish qos 1 pid 0",
            ALL,
            b"\x32\x07\x00\x03a/b\x00\x00",
            PID0,
        ),
        bad(
            "publish qos 2 pid 0",
            ALL,
            b"\x34\x08\x00\x03a/b\x00\x00\x00",
            PID0,
        ),
        bad("publish topic +", V3, b"\x30\x05\x00\x03a/+", BadTopicName),
        bad("publish topic #", V3, b"\x30\x03\x00\x01#", BadTopicName),
        bad(
            "publish topic #/a",
            V3,
            b"\x30\x05\x00\x03#/a",
            BadTopicName,
        ),
        bad(
            "publish 5.0 topic +",
            ONLY5,
            b"\x30\x06\x00\x03a/+\x00",
            BadTopicName,
        ),
        bad("publish empty topic", V3, b"\x30\x02\x00\x00", BadTopicName),
        bad(
            "publish empty topic, payload",
            V3,
            b"\x30\x03\x00\x00x",
            BadTopicName,
        ),
        bad(
            "publish 5.0 empty topic without alias",
            ONLY5,
            b"\x30\x03\x00\x00\x00",
            BadTopicName,
        ),
        bad(
            "publish topic bad utf-8",
            ALL,
            b"\x30\x04\x00\x02\xc3\x28",
            BadUtf8,
        ),
        bad(
            "publish topic U+0000",
            ALL,
            b"\x30\x04\x00\x02a\x00",
            BadUtf8,
        ),
        bad(
            "publish topic surrogate",
            ALL,
            b"\x30\x05\x00\x03\xed\xa0\x80",
            BadUtf8,
        ),
        bad(
            "publish topic overlong /",
            ALL,
            b"\x30\x04\x00\x02\xc0\xaf",
            BadUtf8,
        ),
        bad(
            "publish topic past the end",
            ALL,
            b"\x30\x03\x00\x05a",
            SHORT,
        ),
        bad("publish no topic", ALL, b"\x30\x01\x00", SHORT),
        bad("publish qos 1 no pid", ALL, b"\x32\x05\x00\x03a/b", SHORT),
        bad(
            "publish 5.0 no properties",
            ONLY5,
            b"\x30\x05\x00\x03a/b",
            SHORT,
        ),
        // CONNECT: decode ignores the connection's version for it.
        bad(
            "connect reserved flag",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x00\x00\x00",
            m("reserved connect flag set"),
        ),
        bad(
            "connect will qos 3",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x1e\x00\x00\x00\x00",
            m("will QoS 3"),
        ),
        bad(
            "connect will qos 1 without will",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x0a\x00\x00\x00\x00",
            m("will QoS or retain without a will"),
        ),
        bad(
            "connect will qos 2 without will",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x12\x00\x00\x00\x00",
            m("will QoS or retain without a will"),
        ),
        bad(
            "connect will retain without will",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x22\x00\x00\x00\x00",
            m("will QoS or retain without a will"),
        ),
        bad(
            "connect 5.0 will retain without will",
            ALL,
            b"\x10\x0d\x00\x04MQTT\x05\x20\x00\x00\x00\x00\x00",
            m("will QoS or retain without a will"),
        ),
        bad(
            "connect password without user name",
            ALL,
            b"\x10\x10\x00\x04MQTT\x04\x42\x00\x00\x00\x00\x00\x02pw",
            m("password without user name"),
        ),
        bad(
            "connect 3.1 password without user name",
            ALL,
            b"\x10\x12\x00\x06MQIsdp\x03\x42\x00\x00\x00\x00\x00\x02pw",
            m("password without user name"),
        ),
        bad(
            "connect protocol name MQTX",
            ALL,
            b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x00\x00\x00",
            BadProtocolName,
        ),
        bad(
            "connect protocol name mqtt",
            ALL,
            b"\x10\x0c\x00\x04mqtt\x04\x02\x00\x00\x00\x00",
            BadProtocolName,
        ),
        bad(
            "connect empty protocol name",
            ALL,
            b"\x10\x08\x00\x00\x04\x02\x00\x00\x00\x00",
            BadProtocolName,
        ),
        bad(
            "connect protocol name bad utf-8",
            ALL,
            b"\x10\x0a\x00\x02\xc3\x28\x04\x02\x00\x00\x00\x00",
            BadUtf8,
        ),
        bad(
            "connect level 6",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x00\x00\x00",
            UnsupportedVersion(6),
        ),
        bad(
            "connect MQTT level 3",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x03\x02\x00\x00\x00\x00",
            UnsupportedVersion(3),
        ),
        bad(
            "connect MQIsdp level 4",
            ALL,
            b"\x10\x0e\x00\x06MQIsdp\x04\x02\x00\x00\x00\x00",
            UnsupportedVersion(4),
        ),
        bad(
            "connect client id bad utf-8",
            ALL,
            b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02\xc3\x28",
            BadUtf8,
        ),
        bad(
            "connect client id U+0000",
            ALL,
            b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02a\x00",
            BadUtf8,
        ),
        bad(
            "connect user name U+0000",
            ALL,
            b"\x10\x10\x00\x04MQTT\x04\x82\x00\x00\x00\x00\x00\x02\x00u",
            BadUtf8,
        ),
        bad(
            "connect will topic #",
            ALL,
            b"\x10\x11\x00\x04MQTT\x04\x06\x00\x00\x00\x00\x00\x01#\x00\x00",
            BadTopicName,
        ),
        bad(
            "connect empty will topic",
            ALL,
            b"\x10\x10\x00\x04MQTT\x04\x06\x00\x00\x00\x00\x00\x00\x00\x00",
            BadTopicName,
        ),
        bad(
            "connect will without payload",
            ALL,
            b"\x10\x0f\x00\x04MQTT\x04\x06\x00\x00\x00\x00\x00\x01t",
            SHORT,
        ),
        bad(
            "connect user name flag without user name",
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x82\x00\x00\x00\x00",
            SHORT,
        ),
        bad(
            "connect trailing byte",
            ALL,
            b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x00\x00",
            TRAILING,
        ),
        bad(
            "connect 5.0 trailing byte",
            ALL,
            b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x00\x00",
            TRAILING,
        ),
        bad(
            "connect 5.0 no properties",
            ALL,
            b"\x10\x0a\x00\x04MQTT\x05\x02\x00\x00",
            SHORT,
        ),
        bad(
            "connect 5.0 topic alias",
            ALL,
            b"\x10\x10\x00\x04MQTT\x05\x02\x00\x00\x03\x23\x00\x01\x00\x00",
            NOT_ALLOWED,
        ),
        bad("connect empty", ALL, b"\x10\x00", SHORT),
        // CONNACK
        bad(
            "connack reserved flag",
            V3,
            b"\x20\x02\x02\x00",
            m("reserved connack flag set"),
        ),
        bad(
            "connack 5.0 reserved flag",
            ONLY5,
            b"\x20\x03\x80\x00\x00",
            m("reserved connack flag set"),
        ),
        bad(
            "connack trailing byte",
            V3,
            b"\x20\x03\x00\x00\x00",
            TRAILING,
        ),
        bad(
            "connack 5.0 trailing byte",
            ONLY5,
            b"\x20\x04\x00\x00\x00\x00",
            TRAILING,
        ),
        bad("connack short", ALL, b"\x20\x01\x00", SHORT),
        // SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK
        bad(
            "subscribe no filters",
            V3,
            b"\x82\x02\x00\x0a",
            Protocol("SUBSCRIBE without topic filters"),
        ),
        bad(
            "subscribe 5.0 no filters",
            ONLY5,
            b"\x82\x03\x00\x0a\x00",
            Protocol("SUBSCRIBE without topic filters"),
        ),
        bad(
            "subscribe pid 0",
            ALL,
            b"\x82\x06\x00\x00\x00\x01a\x00",
            PID0,
        ),
        bad(
            "subscribe no options byte",
            V3,
            b"\x82\x05\x00\x0a\x00\x01a",
            SHORT,
        ),
        bad(
            "subscribe 5.0 two subscription identifiers",
            ONLY5,
            b"\x82\x0b\x00\x0a\x04\x0b\x01\x0b\x02\x00\x01a\x00",
            DUPLICATE,
        ),
        bad(
            "subscribe 5.0 subscription identifier 0",
            ONLY5,
            b"\x82\x09\x00\x0a\x02\x0b\x00\x00\x01a\x00",
            ZERO,
        ),
        bad(
            "suback no codes",
            V3,
            b"\x90\x02\x00\x0a",
            m("SUBACK without return codes"),
        ),
        bad(
            "suback 5.0 no codes",
            ONLY5,
            b"\x90\x03\x00\x0a\x00",
            m("SUBACK without return codes"),
        ),
        bad("suback pid 0", ALL, b"\x90\x04\x00\x00\x00\x00", PID0),
        bad(
            "unsubscribe no filters",
            V3,
            b"\xa2\x02\x00\x0a",
            Protocol("UNSUBSCRIBE without topic filters"),
        ),
        bad(
            "unsubscribe 5.0 no filters",
            ONLY5,
            b"\xa2\x03\x00\x0a\x00",
            Protocol("UNSUBSCRIBE without topic filters"),
        ),
        bad("unsubscribe pid 0", ALL, b"\xa2\x05\x00\x00\x00\x01a", PID0),
        bad(
            "unsubscribe filter past the end",
            V3,
            b"\xa2\x05\x00\x0a\x00\x03a",
            SHORT,
        ),
        bad(
            "unsubscribe 5.0 reason string",
            ONLY5,
            b"\xa2\x0a\x00\x0a\x04\x1f\x00\x01r\x00\x01a",
            NOT_ALLOWED,
        ),
        bad("unsuback pid 0", ALL, b"\xb0\x02\x00\x00", PID0),
        bad(
            "unsuback trailing byte",
            V3,
            b"\xb0\x03\x00\x0a\x00",
            TRAILING,
        ),
        bad(
            "unsuback 5.0 no properties",
            ONLY5,
            b"\xb0\x02\x00\x0a",
            SHORT,
        ),
        // Packets whose length the spec fixes.
        bad("pingreq trailing byte", ALL, b"\xc0\x01\x00", TRAILING),
        bad("pingresp trailing byte", ALL, b"\xd0\x01\x00", TRAILING),
        bad("disconnect trailing byte", V3, b"\xe0\x01\x00", TRAILING),
        bad(
            "disconnect 5.0 trailing byte",
            ONLY5,
            b"\xe0\x03\x00\x00\x00",
            TRAILING,
        ),
        bad(
            "auth trailing byte",
            ONLY5,
            b"\xf0\x03\x18\x00\x00",
            TRAILING,
        ),
        bad(
            "auth 5.0 properties past the end",
            ONLY5,
            b"\xf0\x02\x18\x05",
            SHORT,
        ),
    ];
    for first in [0x40u8, 0x50, 0x62, 0x70] {
        t.push(bad("ack pid 0", ALL, &[first, 2, 0, 0], PID0));
        t.push(bad("ack short", ALL, &[first, 1, 0], SHORT));
        t.push(bad("ack empty", ALL, &[first, 0], SHORT));
        t.push(bad(
            "ack trailing byte",
            V3,
            &[first, 3, 0, 10, 0],
            TRAILING,
        ));
        t.push(bad(
            "ack 5.0 trailing byte",
            ONLY5,
            &[first, 5, 0, 10, 0x10, 0, 0],
            TRAILING,
        ));
        t.push(bad(
            "ack 5.0 properties past the end",
            ONLY5,
            &[first, 5, 0, 10, 0, 5, 0x1f],
            SHORT,
        ));
        t.push(bad(
            "ack 5.0 topic alias",
            ONLY5,
            &[first, 7, 0, 10, 0, 3, 0x23, 0, 1],
            NOT_ALLOWED,
        ));
    }
    for (v5, versions) in [(false, V3), (true, ONLY5)] {
        for f in [
            &b"a#"[..],
            b"a/#/b",
            b"a+",
            b"",
            b"#/a",
            b"a/b+",
            b"+a/b",
            b"##",
        ] {
            t.push(Bad {
                name: "subscribe bad filter",
                versions,
                bytes: subscribe_one(v5, f, 1),
                err: BadTopicFilter,
            });
            t.push(Bad {
                name: "unsubscribe bad filter",
                versions,
                bytes: unsubscribe_one(v5, f),
                err: BadTopicFilter,
            });
        }
        for f in [&b"\xc3\x28"[..], b"a\x00", b"\xff"] {
            t.push(Bad {
                name: "subscribe filter not UTF-8",
                versions,
                bytes: subscribe_one(v5, f, 0),
                err: BadUtf8,
            });
            t.push(Bad {
                name: "unsubscribe filter not UTF-8",
                versions,
                bytes: unsubscribe_one(v5, f),
                err: BadUtf8,
            });
        }
        t.push(Bad {
            name: "subscribe qos 3",
            versions,
            bytes: subscribe_one(v5, b"a", 3),
            err: m("QoS 3"),
        });
    }
    let reserved = m("reserved subscription option bits set");
    // 3.1.1 reserves everything above the QoS bits; 5.0 only the top two. [MQTT-3.8.3-4] [MQTT-3-8.3-5]
    for opts in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xfd] {
        t.push(Bad {
            name: "subscribe reserved option bits",
            versions: V3,
            bytes: subscribe_one(false, b"a", opts),
            err: reserved.clone(),
        });
    }
    for opts in [0x40, 0x80, 0xc1] {
        t.push(Bad {
            name: "subscribe 5.0 reserved option bits",
            versions: ONLY5,
            bytes: subscribe_one(true, b"a", opts),
            err: reserved.clone(),
        });
    }
    for opts in [0x30, 0x31, 0x3e] {
        t.push(Bad {
            name: "subscribe 5.0 retain handling 3",
            versions: ONLY5,
            bytes: subscribe_one(true, b"a", opts),
            err: Protocol("retain handling 3"),
        });
    }
    t.push(Bad {
        name: "subscribe 5.0 no local on a shared subscription",
        versions: ONLY5,
        bytes: subscribe_one(true, b"$share/g/t", 0x04),
        err: Protocol("no local on a shared subscription"),
    });
    t
}

#[test]
fn malformed_variants() {
    for case in malformed() {
        for &v in case.versions {
            assert_eq!(
                decode(&case.bytes, v, MAX),
                Err(case.err.clone()),
                "{} {v:?} {:02x?}",
                case.name,
                case.bytes
            );
            // A prefix is either incomplete or already wrong in the same way, never anything else.
            for n in 0..case.bytes.len() {
                let got = decode(&case.bytes[..n], v, MAX);
                assert!(
                    got == Ok(None) || got == Err(case.err.clone()),
                    "{} {v:?} cut at {n}: {got:?}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn valid_variants_of_the_malformed_ones() {
    // Guards against the malformed table passing for the wrong reason.
    let ok: [(&[Version], Vec<u8>); 6] = [
        (V3, subscribe_one(false, b"a/#", 2)),
        (ONLY5, subscribe_one(true, b"a/+/b", 0x2e)),
        (ONLY5, subscribe_one(true, b"$share/g/t", 0x08)),
        (V3, unsubscribe_one(false, b"+/+/#")),
        (ONLY5, unsubscribe_one(true, b"\xc3\xa9")),
        (
            ALL,
            b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x00\x00\x00".to_vec(),
        ),
    ];
    for (versions, bytes) in ok {
        for &v in versions {
            let got = decode(&bytes, v, MAX);
            assert!(
                matches!(got, Ok(Some((_, n))) if n == bytes.len()),
                "{bytes:02x?} {got:?}"
            );
        }
    }
}

#[test]
fn error_mapping() {
    let unsupported = decode(b"\x10\x0c\x00\x04MQTT\x07\x02\x00\x00\x00\x00", V311, MAX);
    let e = unsupported.unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedVersion(7));
    // [MQTT-3.1.2-2]: 0x01 unacceptable protocol version, then close.
    assert_eq!(e.connack_v3(), Some(1));
    assert_eq!(e.reason_code(), reason::UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(DecodeError::BadProtocolName.connack_v3(), None);
    assert_eq!(DecodeError::MalformedLength.connack_v3(), None);
    assert_eq!(SHORT.reason_code(), reason::MALFORMED_PACKET);
    assert_eq!(DecodeError::BadUtf8.reason_code(), reason::MALFORMED_PACKET);
    assert_eq!(
        DecodeError::InvalidHeader(0).reason_code(),
        reason::MALFORMED_PACKET
    );
    assert_eq!(DUPLICATE.reason_code(), reason::PROTOCOL_ERROR);
    assert_eq!(
        DecodeError::TooLarge { size: 2, max: 1 }.reason_code(),
        reason::PACKET_TOO_LARGE
    );
    assert_eq!(
        DecodeError::BadTopicName.reason_code(),
        reason::TOPIC_NAME_INVALID
    );
    assert_eq!(
        DecodeError::BadTopicFilter.reason_code(),
        reason::TOPIC_FILTER_INVALID
    );
}

/// Every packet that carries 5.0 properties, as a frame around a property block (length
/// included). WILL is a CONNECT whose will properties hold the block.
const OWNERS: [&str; 14] = [
    "CONNECT",
    "WILL",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "DISCONNECT",
    "AUTH",
];

fn with_props(owner: &str, block: &[u8]) -> Vec<u8> {
    match owner {
        "CONNECT" => frame(0x10, &[b"\x00\x04MQTT\x05\x02\x00\x00", block, b"\x00\x00"]),
        "WILL" => frame(
            0x10,
            &[
                b"\x00\x04MQTT\x05\x06\x00\x00\x00\x00\x00",
                block,
                b"\x00\x01t\x00\x00",
            ],
        ),
        "CONNACK" => frame(0x20, &[b"\x00\x00", block]),
        "PUBLISH" => frame(0x32, &[b"\x00\x01t\x00\x01", block]),
        "PUBACK" => frame(0x40, &[b"\x00\x01\x00", block]),
        "PUBREC" => frame(0x50, &[b"\x00\x01\x00", block]),
        "PUBREL" => frame(0x62, &[b"\x00\x01\x00", block]),
        "PUBCOMP" => frame(0x70, &[b"\x00\x01\x00", block]),
        "SUBSCRIBE" => frame(0x82, &[b"\x00\x01", block, b"\x00\x01t\x00"]),
        "SUBACK" => frame(0x90, &[b"\x00\x01", block, b"\x00"]),
        "UNSUBSCRIBE" => frame(0xa2, &[b"\x00\x01", block, b"\x00\x01t"]),
        "UNSUBACK" => frame(0xb0, &[b"\x00\x01", block, b"\x00"]),
        "DISCONNECT" => frame(0xe0, &[b"\x00", block]),
        "AUTH" => frame(0xf0, &[b"\x00", block]),
        _ => unreachable!("{owner}"),
    }
}

fn block(props: &[u8]) -> Vec<u8> {
    [varint(props.len()), props.to_vec()].concat()
}

/// Table 2-4 of the 5.0 specification: identifier, a valid value, where it may appear.
const PROPERTY_TABLE: [(u8, &[u8], &str); 27] = [
    (0x01, b"\x01", "PUBLISH WILL"),
    (0x02, b"\x00\x00\x00\x0a", "PUBLISH WILL"),
    (0x03, b"\x00\x01t", "PUBLISH WILL"),
    (0x08, b"\x00\x01r", "PUBLISH WILL"),
    (0x09, b"\x00\x01\x07", "PUBLISH WILL"),
    (0x0b, b"\x05", "PUBLISH SUBSCRIBE"),
    (0x11, b"\x00\x00\x00\x0a", "CONNECT CONNACK DISCONNECT"),
    (0x12, b"\x00\x01c", "CONNACK"),
    (0x13, b"\x00\x0a", "CONNACK"),
    (0x15, b"\x00\x01m", "CONNECT CONNACK AUTH"),
    (0x16, b"\x00\x01\x07", "CONNECT CONNACK AUTH"),
    (0x17, b"\x01", "CONNECT"),
    (0x18, b"\x00\x00\x00\x05", "WILL"),
    (0x19, b"\x01", "CONNECT"),
    (0x1a, b"\x00\x01i", "CONNACK"),
    (0x1c, b"\x00\x01s", "CONNACK DISCONNECT"),
    (
        0x1f,
        b"\x00\x01r",
        "CONNACK PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK DISCONNECT AUTH",
    ),
    (0x21, b"\x00\x0a", "CONNECT CONNACK"),
    (0x22, b"\x00\x0a", "CONNECT CONNACK"),
    (0x23, b"\x00\x01", "PUBLISH"),
    (0x24, b"\x01", "CONNACK"),
    (0x25, b"\x01", "CONNACK"),
    (0x26, b"\x00\x01k\x00\x01v", "*"),
    (0x27, b"\x00\x00\x01\x00", "CONNECT CONNACK"),
    (0x28, b"\x01", "CONNACK"),
    (0x29, b"\x01", "CONNACK"),
    (0x2a, b"\x01", "CONNACK"),
];

#[test]
fn every_property_in_every_packet() {
    for (id, value, where_) in PROPERTY_TABLE {
        let one = [&[id][..], value].concat();
        for owner in OWNERS {
            let allowed = where_ == "*" || where_.split(' ').any(|w| w == owner);
            let bytes = with_props(owner, &block(&one));
            let got = decode(&bytes, V5, MAX);
            let what = format!("property {id:#04x} in {owner}");
            if !allowed {
                assert_eq!(got, Err(NOT_ALLOWED), "{what}");
                continue;
            }
            // Decoded, it encodes back to the very same bytes: the value went through.
            let (p, n) = got.unwrap().unwrap_or_else(|| panic!("{what}"));
            assert_eq!(n, bytes.len(), "{what}");
            assert_eq!(enc(&p, V5), bytes, "{what}");

            let twice = with_props(owner, &block(&[&one[..], &one].concat()));
            let got = decode(&twice, V5, MAX);
            let may_repeat = id == 0x26 || (id == 0x0b && owner == "PUBLISH");
            if may_repeat {
                let (p, _) = got.unwrap().unwrap();
                assert_eq!(enc(&p, V5), twice, "{what} twice");
            } else {
                assert_eq!(got, Err(DUPLICATE), "{what} twice");
            }
        }
    }
}

#[test]
fn unknown_property_identifiers() {
    let known: Vec<u8> = PROPERTY_TABLE.iter().map(|p| p.0).collect();
    for id in (0u8..0x80).filter(|id| !known.contains(id)) {
        for owner in OWNERS {
            let bytes = with_props(owner, &block(&[id, 0, 0, 0, 0]));
            assert_eq!(decode(&bytes, V5, MAX), Err(UNKNOWN), "{id:#04x} {owner}");
        }
    }
    // Identifiers are variable byte integers; a two-byte one names no property.
    let bytes = with_props("PUBLISH", &block(b"\x80\x01\x00"));
    assert_eq!(decode(&bytes, V5, MAX), Err(UNKNOWN));
    let bytes = with_props("PUBLISH", &block(b"\x81\x00\x01"));
    assert_eq!(decode(&bytes, V5, MAX), Err(DecodeError::MalformedLength));
}

#[test]
fn property_values() {
    use DecodeError::*;
    let cases: [(&str, &[u8], DecodeError); 21] = [
        ("PUBLISH", b"\x01\x02", NOT_FLAG),
        ("WILL", b"\x01\xff", NOT_FLAG),
        ("CONNECT", b"\x17\x02", NOT_FLAG),
        ("CONNECT", b"\x19\x02", NOT_FLAG),
        ("CONNACK", b"\x24\x02", NOT_FLAG),
        ("CONNACK", b"\x25\x02", NOT_FLAG),
        ("CONNACK", b"\x28\x02", NOT_FLAG),
        ("CONNACK", b"\x29\x02", NOT_FLAG),
        ("CONNACK", b"\x2a\x02", NOT_FLAG),
        ("CONNECT", b"\x21\x00\x00", ZERO),
        ("CONNACK", b"\x21\x00\x00", ZERO),
        ("PUBLISH", b"\x23\x00\x00", ZERO),
        ("CONNECT", b"\x27\x00\x00\x00\x00", ZERO),
        ("CONNACK", b"\x27\x00\x00\x00\x00", ZERO),
        ("PUBLISH", b"\x0b\x00", ZERO),
        ("SUBSCRIBE", b"\x0b\x00", ZERO),
        ("PUBLISH", b"\x08\x00\x03a/#", BadTopicName),
        ("WILL", b"\x08\x00\x01+", BadTopicName),
        ("PUBLISH", b"\x03\x00\x02\xc3\x28", BadUtf8),
        ("CONNECT", b"\x26\x00\x01\x00\x00\x01v", BadUtf8),
        ("PUBLISH", b"\x0b\xff\xff\xff\xff\x7f", MalformedLength),
    ];
    for (owner, props, err) in cases {
        let bytes = with_props(owner, &block(props));
        assert_eq!(decode(&bytes, V5, MAX), Err(err), "{owner} {props:02x?}");
    }
    // A value cut by the end of the property block, and a block longer than the packet.
    let cut = with_props("PUBLISH", b"\x03\x02\x00\x00");
    assert_eq!(decode(&cut, V5, MAX), Err(SHORT));
    let long = with_props("DISCONNECT", b"\x09\x1f\x00\x01r");
    assert_eq!(decode(&long, V5, MAX), Err(SHORT));
    // Largest subscription identifier and zero values where zero is fine.
    for (owner, props) in [
        ("PUBLISH", &b"\x0b\xff\xff\xff\x7f"[..]),
        ("SUBSCRIBE", b"\x0b\xff\xff\xff\x7f"),
        ("CONNACK", b"\x22\x00\x00"),
        ("CONNACK", b"\x13\x00\x00"),
        ("WILL", b"\x18\x00\x00\x00\x00"),
    ] {
        let bytes = with_props(owner, &block(props));
        let (p, _) = decode(&bytes, V5, MAX).unwrap().unwrap();
        assert_eq!(enc(&p, V5), bytes, "{owner} {props:02x?}");
    }
}

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The no-panic contract, and whatever does decode encodes exactly and decodes back the same.
/// Answers 0 for incomplete, 1 for a packet, 2 for an error.
fn check_decode(buf: &[u8], v: Version, max: usize) -> usize {
    match decode(buf, v, max) {
        Ok(None) => 0,
        Ok(Some((p, n))) => {
            assert!(n <= buf.len() && n <= max, "{buf:02x?}");
            let again = enc(&p, v);
            assert_eq!(
                decode(&again, v, MAX),
                Ok(Some((p, again.len()))),
                "{v:?} {buf:02x?}"
            );
            1
        }
        Err(_) => 2,
    }
}

#[test]
fn garbage_never_panics() {
    let seeds: Vec<Vec<u8>> = fixtures().into_iter().map(|f| f.bytes).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::with_capacity(256);
    let mut outcomes = [0usize; 3];
    for i in 0..200_000 {
        buf.clear();
        match i % 3 {
            // Anything at all.
            0 => buf.extend((0..rng.below(40)).map(|_| rng.byte())),
            // A well-framed packet of any type and flags with a random body.
            1 => {
                let len = rng.below(40);
                buf.push(rng.byte());
                buf.extend(varint(len));
                buf.extend((0..len).map(|_| rng.byte()));
            }
            // A valid packet with a few bytes changed, so decoding gets deep into the body.
            _ => {
                let seed = &seeds[rng.below(seeds.len())];
                buf.extend_from_slice(seed);
                let body = header_len(seed);
                for _ in 0..1 + rng.below(3) {
                    let at = match rng.below(8) {
                        0 => 0,
                        _ if body < buf.len() => body + rng.below(buf.len() - body),
                        _ => 0,
                    };
                    buf[at] = match rng.below(3) {
                        0 => rng.byte(),
                        1 => buf[at] ^ (1 << rng.below(8)),
                        _ => [0, 0x7f, 0x80, 0xff][rng.below(4)],
                    };
                }
            }
        }
        let max = [3, 64, MAX][rng.below(3)];
        for &v in ALL {
            outcomes[check_decode(&buf, v, max)] += 1;
        }
    }
    // The run reached all three answers in quantity, so it exercised more than the header.
    assert!(outcomes.iter().all(|&n| n > 10_000), "{outcomes:?}");
}

#[test]
fn bridge_protocol_level_flag() {
    // A Mosquitto bridge with try_private: protocol level 0x84.
    let bytes = [
        0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x84, 0x02, 0x00, 0x3c, 0x00, 0x02, b'b',
        b'r',
    ];
    let (p, n) = decode(&bytes, Version::V311, 1024).unwrap().unwrap();
    assert_eq!(n, bytes.len());
    let Packet::Connect(c) = &p else {
        panic!("{p:?}")
    };
    assert!(c.bridge);
    assert_eq!(c.version, Version::V311);
    assert_eq!(enc(&p, Version::V311), bytes);
    assert_eq!(
        decode(
            &[0x10, 0x0a, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x86, 0x02, 0x00, 0x3c],
            Version::V311,
            1024
        ),
        Err(DecodeError::UnsupportedVersion(6))
    );
}

/// `short_ack_bytes` writes what `Packet::encode` writes for a 3.1.1 acknowledgement.
#[test]
fn short_ack_bytes_are_the_encoded_acknowledgements() {
    for pid in [1u16, 0x1234, 0xffff] {
        for (k, p) in [
            (packet::kind::PUBACK, Packet::PubAck(Ack::new(pid))),
            (packet::kind::PUBREC, Packet::PubRec(Ack::new(pid))),
            (packet::kind::PUBREL, Packet::PubRel(Ack::new(pid))),
            (packet::kind::PUBCOMP, Packet::PubComp(Ack::new(pid))),
        ] {
            for v in [Version::V31, Version::V311] {
                assert_eq!(&short_ack_bytes(k, pid)[..], &enc(&p, v)[..], "{p:?}");
            }
        }
    }
}

/// The `Publish` that `decode` builds for what `decode_publish` borrows.
fn owned(v: PublishView<'_>) -> Packet {
    Packet::Publish(Publish {
        dup: v.dup,
        qos: v.qos,
        retain: v.retain,
        topic: v.topic.into(),
        pid: v.pid,
        payload: Bytes::copy_from_slice(v.payload),
        properties: v.properties.cloned().unwrap_or_default(),
    })
}

/// The broker's fast paths answer what `decode` answers: `short_ack` for every four-byte
/// buffer it takes, `decode_publish` for PUBLISHes (valid, cut short and malformed alike).
#[test]
fn fast_paths_agree_with_decode() {
    for v in [Version::V311, Version::V5] {
        for first in 0..=255u8 {
            for len in 0..=3u8 {
                for pid in [0u16, 1, 0x1234, 0xffff] {
                    let [hi, lo] = pid.to_be_bytes();
                    let buf = [first, len, hi, lo];
                    let Some((kind, id)) = short_ack(&buf) else {
                        continue;
                    };
                    let want = match kind {
                        packet::kind::PUBACK => Packet::PubAck(Ack::new(id)),
                        packet::kind::PUBREC => Packet::PubRec(Ack::new(id)),
                        packet::kind::PUBREL => Packet::PubRel(Ack::new(id)),
                        _ => Packet::PubComp(Ack::new(id)),
                    };
                    assert_eq!(decode(&buf, v, 1024), Ok(Some((want, 4))), "{buf:02x?}");
                }
            }
        }
        let plain = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            pid: 7,
            payload: b(b"hello"),
            properties: Properties::default(),
        };
        let p = Packet::Publish(plain.clone());
        let whole = enc(&p, v);
        for cut in 0..=whole.len() {
            let part = whole.get(..cut).unwrap_or_default();
            let fast = decode_publish(part, v, 1024, None).map(|o| o.map(|(p, n)| (owned(p), n)));
            assert_eq!(fast, decode(part, v, 1024), "cut at {cut}");
        }
        if v.is_v5() {
            // With properties (or a property length missing), `decode` takes it.
            let mut with = plain.clone();
            with.properties.message_expiry_interval = Some(9);
            let whole = enc(&Packet::Publish(with), v);
            assert!(matches!(decode_publish(&whole, v, 1024, None), Ok(None)));
            assert!(matches!(decode(&whole, v, 1024), Ok(Some(_))));
            let no_len = frame(0x32, &[&[0, 1], b"a", &[0, 1]]);
            assert!(matches!(decode_publish(&no_len, v, 1024, None), Ok(None)));
            assert!(decode(&no_len, v, 1024).is_err());
        }
        // A 5.0 PUBLISH has a property length (here 0) before the payload.
        let props: &[u8] = if v.is_v5() { &[0] } else { &[] };
        for bad in [
            frame(0x36, &[&[0, 1], b"a", &[0, 1], props]), // QoS 3
            frame(0x38, &[&[0, 1], b"a", props]),          // DUP on QoS 0
            frame(0x30, &[&[0, 3], b"a/+", props]),        // wildcard in a topic name
            frame(0x30, &[&[0, 0], props]),                // empty topic, no alias
            frame(0x30, &[&[0, 2], b"a\0", props]),        // NUL in a topic name
            frame(0x32, &[&[0, 1], b"a", &[0, 0], props]), // packet identifier 0
        ] {
            assert!(
                decode_publish(&bad, v, 1024, Some("a")).is_err(),
                "{bad:02x?}"
            );
            assert_eq!(
                decode_publish(&bad, v, 1024, Some("a")).err(),
                decode(&bad, v, 1024).err(),
                "{bad:02x?}"
            );
        }
        let big = enc(&p, v);
        assert_eq!(
            decode_publish(&big, v, 8, None).err(),
            decode(&big, v, 8).err()
        );
        // A topic of the known name's bytes is that name; any other is checked.
        let known: &str = "a/b";
        let got = decode_publish(&whole, v, 1024, Some(known));
        assert!(matches!(got, Ok(Some((x, _))) if std::ptr::eq(x.topic, known)));
        let got = decode_publish(&whole, v, 1024, Some("a/c"));
        assert!(matches!(got, Ok(Some((x, _))) if x.topic == "a/b"));
    }
}
