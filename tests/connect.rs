//! CONNECT handling against the real broker: CONNACK return codes for each protocol version,
//! client id rules, anonymous access, and the connection log lines users grep for.

mod common;

use common::*;
use rmqtt::protocol::Packet;

#[test]
fn mqtt311_connect_is_accepted_with_code_0() {
    let b = Broker::start();
    let mut c = b.raw();
    c.send(&ConnectOpts::new("c311").encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0);
    assert!(!ack.session_present);
    let line = b.wait_log("as c311 (");
    assert!(
        line.contains(": New client connected from 127.0.0.1:")
            && line.ends_with("as c311 (p2, c1, k60)."),
        "{line}"
    );
    c.sync();
}

#[test]
fn connack_bytes_are_exact() {
    let b = Broker::start();
    let mut c = b.raw();
    c.send(&ConnectOpts::new("bytes").encode());
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, [0x20, 0x02, 0x00, 0x00]);
}

#[test]
fn mqtt31_mqisdp_connect_is_accepted() {
    let b = Broker::start();
    let mut c = b.raw();
    c.send(&ConnectOpts::v31("c31").keepalive(30).encode());
    assert_eq!(c.expect_connack().code, 0);
    let line = b.wait_log("as c31 (");
    assert!(line.ends_with("as c31 (p1, c1, k30)."), "{line}");
    c.subscribe(1, &[("v31/t", 1)]);
    let p = c.publish_q1_to_self(2, "v31/t", b"x");
    assert_eq!(p.qos.as_u8(), 1);
}

#[test]
fn protocol_level_6_gets_connack_1_then_close() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut opts = ConnectOpts::new("lvl6");
    opts.level = 6;
    c.send(&opts.encode());
    assert_eq!(c.expect_connack().code, 1);
    assert_eq!(c.expect_closed(), Vec::<u8>::new());
}

#[test]
fn mqisdp_with_level_4_is_not_accepted() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut opts = ConnectOpts::new("mix");
    opts.protocol_name = "MQIsdp";
    c.send(&opts.encode());
    let rest = c.expect_closed();
    // Either a bare close or CONNACK 1 is acceptable; never CONNACK 0.
    assert!(
        rest.is_empty() || rest == [0x20, 0x02, 0x00, 0x01],
        "{rest:02x?}"
    );
}

#[test]
fn unknown_protocol_name_is_closed() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut opts = ConnectOpts::new("name");
    opts.protocol_name = "MQTX";
    c.send(&opts.encode());
    let rest = c.expect_closed();
    assert!(
        rest.is_empty() || rest == [0x20, 0x02, 0x00, 0x01],
        "{rest:02x?}"
    );
}

#[test]
fn empty_client_id_without_clean_session_gets_code_2() {
    let b = Broker::start();
    let mut c = b.raw();
    c.send(&ConnectOpts::new("").clean(false).encode());
    assert_eq!(c.expect_connack().code, 2);
    c.expect_closed();
}

#[test]
fn empty_client_id_with_clean_session_is_accepted() {
    let b = Broker::start();
    let mut c = b.raw();
    c.send(&ConnectOpts::new("").encode());
    assert_eq!(c.expect_connack().code, 0);
    c.subscribe(1, &[("anon/t", 0)]);
    c.publish_q0("anon/t", b"hi");
    c.expect_message("anon/t", b"hi", 0);
    c.sync();
}

#[test]
fn mqtt31_empty_client_id_gets_code_2() {
    let b = Broker::start();
    let mut c = b.raw();
    c.send(&ConnectOpts::v31("").encode());
    assert_eq!(c.expect_connack().code, 2);
    c.expect_closed();
}

#[test]
fn mqtt31_client_id_over_23_chars_gets_code_2() {
    let b = Broker::start();
    let long = "a".repeat(24);
    let mut c = b.raw();
    c.send(&ConnectOpts::v31(&long).encode());
    assert_eq!(c.expect_connack().code, 2);
    c.expect_closed();

    // 23 characters is still fine.
    let ok = "b".repeat(23);
    let mut c = b.raw();
    c.send(&ConnectOpts::v31(&ok).encode());
    assert_eq!(c.expect_connack().code, 0);
}

#[test]
fn mqtt311_long_client_id_is_accepted() {
    let b = Broker::start();
    let long = "c".repeat(100);
    let mut c = b.raw();
    c.send(&ConnectOpts::new(&long).encode());
    assert_eq!(c.expect_connack().code, 0);
}

#[test]
fn anonymous_refused_with_code_5_when_not_allowed() {
    let b = Broker::with_config("allow_anonymous false\n");
    let mut c = b.raw();
    c.send(&ConnectOpts::new("anon").encode());
    assert_eq!(c.expect_connack().code, 5);
    c.expect_closed();
    // A username without a matching password file is no way around it.
    let mut c = b.raw();
    c.send(&ConnectOpts::new("named").username("bob").encode());
    assert_eq!(c.expect_connack().code, 5);
    c.expect_closed();
}

#[test]
fn reserved_connect_flag_closes_connection() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut bytes = ConnectOpts::new("flag0").encode();
    // Connect flags sit after the fixed header (2), name (6) and level (1). [MQTT-3.1.2-3]
    bytes[9] |= 0x01;
    c.send(&bytes);
    let rest = c.expect_closed();
    assert!(!rest.starts_with(&[0x20, 0x02, 0x00, 0x00]), "{rest:02x?}");
}

#[test]
fn will_qos_3_closes_connection() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut opts = ConnectOpts::new("wq3");
    opts.will = Some(("w".into(), b"x".to_vec(), 3, false));
    c.send(&opts.encode());
    let rest = c.expect_closed();
    assert!(!rest.starts_with(&[0x20, 0x02, 0x00, 0x00]), "{rest:02x?}");
}

#[test]
fn packets_pipelined_behind_connect_are_handled() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut bytes = ConnectOpts::new("pipe").encode();
    bytes.extend(subscribe(1, &[("pipe/t", 0)]));
    bytes.extend(publish("pipe/t", b"p", 0, false, false, 0));
    bytes.extend(PINGREQ);
    c.send(&bytes);
    assert_eq!(c.expect_connack().code, 0);
    assert!(matches!(c.expect_packet(), Packet::SubAck(_)));
    c.expect_message("pipe/t", b"p", 0);
    assert!(matches!(c.expect_packet(), Packet::PingResp));
}

#[test]
fn disconnect_is_logged_and_closes() {
    let b = Broker::start();
    let c = b.client("bye");
    c.disconnect();
    b.wait_log("Client bye disconnected.");
}

#[test]
fn connect_split_into_single_bytes_is_assembled() {
    let b = Broker::start();
    let mut c = b.raw();
    let mut bytes = ConnectOpts::new("slow").encode();
    bytes.extend(subscribe(1, &[("slow/t", 0)]));
    for byte in bytes {
        c.send(&[byte]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(c.expect_connack().code, 0);
    assert!(matches!(c.expect_packet(), Packet::SubAck(_)));
    c.sync();
}
