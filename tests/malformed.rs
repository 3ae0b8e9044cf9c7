//! Malformed and out-of-order input against the real broker. For every case the offending
//! connection is closed (with no reply, as 3.1.1 asks), while a client connected before it
//! keeps working and the broker process stays up.

mod common;

use common::*;

/// How the offending connection is set up before its bad bytes are sent.
#[derive(Clone, Copy, PartialEq)]
enum Before {
    /// Nothing: the bad bytes are the first thing on the connection.
    Nothing,
    /// A successful 3.1.1 CONNECT.
    Connected,
}

struct Case {
    name: &'static str,
    before: Before,
    bytes: Vec<u8>,
}

fn case(name: &'static str, before: Before, bytes: Vec<u8>) -> Case {
    Case {
        name,
        before,
        bytes,
    }
}

fn cases() -> Vec<Case> {
    use Before::*;
    vec![
        case(
            "first packet PUBLISH",
            Nothing,
            publish("a", b"x", 0, false, false, 0),
        ),
        case("first packet SUBSCRIBE", Nothing, subscribe(1, &[("a", 0)])),
        case("first packet PINGREQ", Nothing, PINGREQ.to_vec()),
        case("first packet DISCONNECT", Nothing, DISCONNECT.to_vec()),
        case("packet type 0", Nothing, vec![0x00, 0x00]),
        case(
            "second CONNECT",
            Connected,
            ConnectOpts::new("again").encode(),
        ),
        case(
            "SUBSCRIBE reserved flags 0000",
            Connected,
            frame(0x80, &subscribe(1, &[("a", 0)])[2..]),
        ),
        case(
            "SUBSCRIBE reserved flags 0011",
            Connected,
            frame(0x83, &subscribe(1, &[("a", 0)])[2..]),
        ),
        case(
            "UNSUBSCRIBE reserved flags 0000",
            Connected,
            frame(0xa0, &unsubscribe(1, &["a"])[2..]),
        ),
        case(
            "PUBREL reserved flags 0000",
            Connected,
            frame(0x60, &[0, 1]),
        ),
        case(
            "PUBACK reserved flags 0010",
            Connected,
            frame(0x42, &[0, 1]),
        ),
        case("PINGREQ reserved flags", Connected, vec![0xc1, 0x00]),
        case(
            "PUBLISH QoS 3",
            Connected,
            publish("a", b"x", 3, false, false, 1),
        ),
        case(
            "PUBLISH QoS 0 with DUP",
            Connected,
            publish("a", b"x", 0, false, true, 0),
        ),
        case(
            "PUBLISH topic with +",
            Connected,
            publish("a/+", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH topic with #",
            Connected,
            publish("a/#", b"x", 1, false, false, 1),
        ),
        case(
            "PUBLISH empty topic",
            Connected,
            publish("", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH invalid UTF-8 topic",
            Connected,
            publish_raw_topic(b"a/\xff\xfe", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH UTF-16 surrogate in topic",
            Connected,
            publish_raw_topic(b"a/\xed\xa0\x80", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH U+0000 in topic",
            Connected,
            publish_raw_topic(b"a/\x00b", b"x", 0, false, false, 0),
        ),
        case(
            "PUBLISH topic length beyond packet",
            Connected,
            vec![0x30, 0x03, 0x00, 0x05, b'a'],
        ),
        case(
            "5-byte remaining length",
            Connected,
            vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
        case(
            "5-byte remaining length before CONNECT",
            Nothing,
            vec![0x10, 0x80, 0x80, 0x80, 0x80, 0x01],
        ),
        case("SUBSCRIBE with no filters", Connected, frame(0x82, &[0, 1])),
        case(
            "SUBSCRIBE requesting QoS 3",
            Connected,
            subscribe(1, &[("a", 3)]),
        ),
        case(
            "SUBSCRIBE reserved option bits",
            Connected,
            subscribe(1, &[("a", 0x40)]),
        ),
        case(
            "SUBSCRIBE bad filter a/#/b",
            Connected,
            subscribe(1, &[("a/#/b", 0)]),
        ),
        case(
            "SUBSCRIBE bad filter a+",
            Connected,
            subscribe(1, &[("a+", 0)]),
        ),
        case(
            "SUBSCRIBE U+0000 in filter",
            Connected,
            subscribe(1, &[("a\0", 0)]),
        ),
        case(
            "UNSUBSCRIBE with no filters",
            Connected,
            frame(0xa2, &[0, 1]),
        ),
        case(
            "PUBLISH QoS 1 packet id 0",
            Connected,
            publish("a", b"x", 1, false, false, 0),
        ),
        case(
            "PUBLISH QoS 2 packet id 0",
            Connected,
            publish("a", b"x", 2, false, false, 0),
        ),
        case(
            "SUBSCRIBE packet id 0",
            Connected,
            subscribe(0, &[("a", 0)]),
        ),
        case("UNSUBSCRIBE packet id 0", Connected, unsubscribe(0, &["a"])),
        case("PINGREQ with a body", Connected, vec![0xc0, 0x01, 0x00]),
        case("DISCONNECT with a body", Connected, vec![0xe0, 0x01, 0x00]),
        case("PUBACK too long", Connected, frame(0x40, &[0, 1, 0])),
        case("PUBACK too short", Connected, frame(0x40, &[0])),
        case(
            "CONNACK from client",
            Connected,
            vec![0x20, 0x02, 0x00, 0x00],
        ),
        case(
            "SUBACK from client",
            Connected,
            vec![0x90, 0x03, 0x00, 0x01, 0x00],
        ),
        case("PINGRESP from client", Connected, vec![0xd0, 0x00]),
        case("AUTH in 3.1.1", Connected, vec![0xf0, 0x00]),
    ]
}

#[test]
fn malformed_packets_close_only_the_offender() {
    let mut b = Broker::start();
    let mut witness = b.client("witness");
    witness.subscribe(1, &[("witness/t", 1)]);
    let mut pid = 1u16;
    let mut failures = vec![];
    for c in cases() {
        let mut bad = match c.before {
            Before::Nothing => b.raw(),
            Before::Connected => b.client("offender"),
        };
        bad.send(&c.bytes);
        // A closed socket is what the whole case is about: check it without panicking so one
        // broken case does not hide the others.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            bad.expect_closed_within(std::time::Duration::from_secs(3))
        }));
        match outcome {
            Ok(rest) if rest.is_empty() => {}
            Ok(rest) => failures.push(format!("{}: closed after sending {rest:02x?}", c.name)),
            Err(_) => failures.push(format!("{}: connection was not closed", c.name)),
        }
        assert!(b.is_alive(), "broker died on case {:?}", c.name);

        pid = pid.wrapping_add(1).max(1);
        let mut publisher = b.client("witness-pub");
        publisher.publish_q1(pid, "witness/t", c.name.as_bytes());
        let p = witness.expect_message("witness/t", c.name.as_bytes(), 1);
        witness.send(&puback(p.pid));
        witness.sync();
        publisher.disconnect();
    }
    b.assert_healthy();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn truncated_packet_then_close_leaves_broker_working() {
    let mut b = Broker::start();
    let mut witness = b.client("witness");
    witness.subscribe(1, &[("witness/t", 0)]);
    let partials: Vec<Vec<u8>> = vec![
        // Half a CONNECT.
        ConnectOpts::new("half").encode()[..8].to_vec(),
        // Only the first byte of a fixed header.
        vec![0x10],
        // An unfinished remaining length.
        vec![0x10, 0x80],
    ];
    for bytes in &partials {
        let mut c = b.raw();
        c.send(bytes);
        drop(c);
    }
    for cut in [1usize, 2, 5, 9] {
        let mut c = b.client_with(&ConnectOpts::new("cut").will("witness/t", b"will", 0, false));
        let full = publish("witness/t", b"never", 1, false, false, 3);
        c.send(&full[..cut]);
        drop(c);
        // A connection that dies mid-packet ended abnormally: its will is due, and the
        // half-sent PUBLISH must not be delivered.
        witness.expect_message("witness/t", b"will", 0);
    }
    let mut publisher = b.client("pub");
    publisher.publish_q0("witness/t", b"still here");
    witness.expect_message("witness/t", b"still here", 0);
    witness.sync();
    assert!(b.is_alive());
    b.assert_healthy();
}

#[test]
fn oversized_length_is_rejected_before_the_body_arrives() {
    let mut b =
        Broker::with_config("allow_anonymous true\nmessage_size_limit 0\nmax_packet_size 1000\n");
    let mut c = b.client("big");
    // Announce 268 MB and send nothing more: the broker must close on the header alone.
    c.send(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
    c.expect_closed();
    b.assert_healthy();
}

#[test]
fn garbage_after_valid_packets_in_one_write() {
    let mut b = Broker::start();
    let mut witness = b.client("witness");
    witness.subscribe(1, &[("g/t", 0)]);
    let mut c = b.client("mixed");
    let mut bytes = publish("g/t", b"good", 0, false, false, 0);
    bytes.extend([0x36, 0x03, 0x00, 0x01, b'g']);
    bytes.extend(publish("g/t", b"after", 0, false, false, 0));
    c.send(&bytes);
    c.expect_closed();
    // What came before the bad packet was handled; what came after it was not.
    witness.expect_message("g/t", b"good", 0);
    witness.sync();
    b.assert_healthy();
}
