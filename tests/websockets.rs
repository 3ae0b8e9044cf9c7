//! WebSockets listeners (`protocol websockets`), black-box: mqtt.js in Node over `ws://` with
//! MQTT 3.1.1 and 5.0 and over `wss://`, mqtt.js's browser bundle in headless Chromium, and hand-built
//! frames from Rust for the upgrade and framing rules (RFC 6455): malformed upgrade requests,
//! unmasked and text frames, fragmentation, several packets in one frame, ping and close.
//!
//! Every exchange between the two transports goes through a real MQTT client on the plain TCP
//! listener (`mosquitto_pub`/`mosquitto_sub` or the raw harness client), so both listeners are
//! exercised. The Node and Chromium tests are skipped when node, mqtt.js (`tests/js`, installed by
//! scripts/install-deps.sh), chromium or the Mosquitto clients are missing, unless
//! `RMQTT_REQUIRE_INTEROP` is set.

mod common;
mod common_interop;

use common::{publish, subscribe, ConnectOpts, DISCONNECT, PINGREQ, WAIT};
use common_interop::{find_tool, run, skip_or_fail, tools_or_skip, Output, Running, TempDir, STEP};
use rmqtt::protocol::{decode, Packet, Version};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A TCP listener and a WebSockets listener, both anonymous.
const WS_CONFIG: &str = "allow_anonymous true\nlistener 0 127.0.0.1\nprotocol websockets\n";

/// The example key of RFC 6455 section 1.3 and the accept value it must produce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

fn upgrade_request(port: u16, extra: &str) -> String {
    format!(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n{extra}\r\n"
    )
}

/// A client frame, masked as RFC 6455 5.3 requires of clients (unless `mask` is `None`).
fn client_frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut v = vec![(u8::from(fin) << 7) | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => v.push(bit | n as u8),
        n @ 126..=65535 => {
            v.push(bit | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            v.push(bit | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            v.extend_from_slice(&m);
            v.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => v.extend_from_slice(payload),
    }
    v
}

fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    client_frame(opcode, fin, payload, Some([0x5a, 0x13, 0xc7, 0x81]))
}

/// One frame from the server: opcode, FIN, payload.
#[derive(Debug)]
struct Frame {
    opcode: u8,
    fin: bool,
    payload: Vec<u8>,
}

/// A raw WebSocket connection to the broker, speaking MQTT 3.1.1 inside binary frames.
struct Ws {
    stream: TcpStream,
    /// Bytes read but not yet parsed as frames.
    raw: Vec<u8>,
    /// The MQTT byte stream carried by the binary frames so far.
    mqtt: Vec<u8>,
    /// Control frames received while MQTT packets were awaited.
    control: Vec<Frame>,
}

impl Ws {
    fn tcp(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to websockets listener");
        s.set_nodelay(true).unwrap();
        s
    }

    /// Upgrades a fresh connection and checks the 101 answer.
    fn open(port: u16) -> Ws {
        let mut stream = Ws::tcp(port);
        stream
            .write_all(upgrade_request(port, "").as_bytes())
            .unwrap();
        let (head, rest) = read_http_head(&mut stream);
        assert!(
            head.starts_with("HTTP/1.1 101 "),
            "upgrade refused: {head:?}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"))
                || lower.contains(&format!(
                    "sec-websocket-accept: {}\r\n",
                    ACCEPT.to_lowercase()
                )),
            "wrong accept value: {head:?}"
        );
        assert!(
            lower.contains("sec-websocket-protocol: mqtt\r\n"),
            "subprotocol not confirmed: {head:?}"
        );
        Ws {
            stream,
            raw: rest,
            mqtt: Vec::new(),
            control: Vec::new(),
        }
    }

    /// Upgraded, CONNECTed as `id` (3.1.1, clean) and CONNACK 0 received.
    fn connected(port: u16, id: &str) -> Ws {
        let mut ws = Ws::open(port);
        ws.send_mqtt(&ConnectOpts::new(id).encode());
        match ws.expect_packet() {
            Packet::ConnAck(a) => assert_eq!(a.code, 0, "CONNACK over WebSockets"),
            p => panic!("expected CONNACK, got {p:?}"),
        }
        ws
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to broker");
    }

    /// MQTT bytes in one masked binary frame.
    fn send_mqtt(&mut self, bytes: &[u8]) {
        self.send(&masked(OP_BINARY, true, bytes));
    }

    /// Reads more bytes, bounded by `deadline`. `Ok(false)`: the broker closed the connection.
    fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.raw.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("timed out".into())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Parses one complete server frame off the front of `raw`, insisting it is well formed.
    fn take_frame(&mut self) -> Option<Frame> {
        let b0 = *self.raw.first()?;
        let b1 = *self.raw.get(1)?;
        assert_eq!(b0 & 0x70, 0, "reserved bits set by the server: {b0:#04x}");
        assert_eq!(b1 & 0x80, 0, "the server masked a frame [RFC 6455 5.1]");
        let (len, off) = match b1 & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes(self.raw.get(2..4)?.try_into().unwrap())),
                4,
            ),
            127 => (
                u64::from_be_bytes(self.raw.get(2..10)?.try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        let payload = self.raw.get(off..off + len)?.to_vec();
        self.raw.drain(..off + len);
        Some(Frame {
            opcode: b0 & 0x0f,
            fin: b0 & 0x80 != 0,
            payload,
        })
    }

    /// The next frame, whatever it is.
    fn expect_frame(&mut self) -> Frame {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(f) = self.take_frame() {
                return f;
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => panic!("connection closed while a frame was expected"),
                Err(e) => panic!("no frame within {WAIT:?}: {e}"),
            }
        }
    }

    /// The next MQTT packet out of the binary frames; control frames are kept in `control`.
    fn expect_packet(&mut self) -> Packet {
        let deadline = Instant::now() + WAIT;
        loop {
            match decode(&self.mqtt, Version::V311, usize::MAX) {
                Ok(Some((p, n))) => {
                    self.mqtt.drain(..n);
                    return p;
                }
                Ok(None) => {}
                Err(e) => panic!("undecodable MQTT over WebSockets {:02x?}: {e}", self.mqtt),
            }
            match self.take_frame() {
                Some(f) if matches!(f.opcode, OP_BINARY | OP_CONT) => {
                    self.mqtt.extend_from_slice(&f.payload)
                }
                Some(f) if f.opcode == OP_TEXT => panic!("the server sent a text frame: {f:?}"),
                Some(f) => self.control.push(f),
                None => match self.fill(deadline) {
                    Ok(true) => {}
                    Ok(false) => panic!("connection closed while an MQTT packet was expected"),
                    Err(e) => panic!("no MQTT packet within {WAIT:?}: {e}"),
                },
            }
        }
    }

    /// A PINGREQ round trip: everything queued for this client before it has arrived.
    fn sync(&mut self) {
        self.send_mqtt(&PINGREQ);
        match self.expect_packet() {
            Packet::PingResp => {}
            p => panic!("expected nothing before PINGRESP, got {p:?}"),
        }
    }

    /// Reads frames until the broker closes the TCP connection; returns them.
    fn expect_closed(&mut self) -> Vec<Frame> {
        let deadline = Instant::now() + WAIT;
        let mut frames = Vec::new();
        loop {
            while let Some(f) = self.take_frame() {
                frames.push(f);
            }
            match self.fill(deadline) {
                Ok(true) => {}
                Ok(false) => return frames,
                Err(e) => panic!("broker did not close within {WAIT:?} ({e}); frames: {frames:?}"),
            }
        }
    }
}

/// Reads an HTTP response head; returns it and whatever followed it.
fn read_http_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return (head, buf[end + 4..].to_vec());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no HTTP response within {WAIT:?}: {buf:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "closed before a complete HTTP response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the HTTP response: {e}"),
        }
    }
}

/// Everything the server sends until it closes (bounded); a reset counts as a close.
fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: the server kept the connection open; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return buf
            }
            Err(e) => panic!("read failed while waiting for close: {e}"),
        }
    }
}

fn ws_broker() -> (common::Broker, u16) {
    let broker = common::Broker::with_config(WS_CONFIG);
    let ports = broker.wait_ports(2);
    assert!(
        broker.logs().iter().any(|l| l.contains(&format!(
            "Opening websockets listen socket on port {}.",
            ports[1]
        ))),
        "second listener is not the websockets one: {:?}",
        broker.logs()
    );
    (broker, ports[1])
}

/// A WebSocket subscriber and a TCP publisher still exchange a message.
fn assert_round_trip(broker: &common::Broker, ws_port: u16, tag: &str) {
    let mut sub = Ws::connected(ws_port, &format!("rt-sub-{tag}"));
    sub.send_mqtt(&subscribe(1, &[("rt/check", 1)]));
    match sub.expect_packet() {
        Packet::SubAck(a) => assert_eq!(a.codes, vec![1]),
        p => panic!("expected SUBACK, got {p:?}"),
    }
    let mut publisher = broker.client(&format!("rt-pub-{tag}"));
    publisher.publish_q1(7, "rt/check", tag.as_bytes());
    match sub.expect_packet() {
        Packet::Publish(p) => {
            assert_eq!(&*p.topic, "rt/check");
            assert_eq!(&p.payload[..], tag.as_bytes());
            sub.send_mqtt(&common::puback(p.pid));
        }
        p => panic!("expected PUBLISH, got {p:?}"),
    }
    sub.send_mqtt(&DISCONNECT);
    sub.expect_closed();
    publisher.disconnect();
}

#[test]
fn malformed_upgrade_requests_are_refused_without_disturbing_others() {
    let (mut broker, ws_port) = ws_broker();
    // A client in the middle of a session while the bad requests come in.
    let mut bystander = Ws::connected(ws_port, "bystander");
    bystander.send_mqtt(&subscribe(1, &[("bystander/#", 1)]));
    assert!(matches!(bystander.expect_packet(), Packet::SubAck(_)));

    let good = upgrade_request(ws_port, "");
    let huge = format!(
        "GET /mqtt HTTP/1.1\r\n{}",
        (0..400)
            .map(|i| format!("X-Padding-{i}: {}\r\n", "a".repeat(20)))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "no key",
            good.replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), "")
                .into_bytes(),
        ),
        (
            "wrong version",
            good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8")
                .into_bytes(),
        ),
        ("POST", good.replacen("GET", "POST", 1).into_bytes()),
        (
            "no upgrade header",
            good.replace("Upgrade: websocket\r\n", "").into_bytes(),
        ),
        (
            "foreign subprotocol only",
            good.replace(
                "Sec-WebSocket-Protocol: mqtt",
                "Sec-WebSocket-Protocol: chat",
            )
            .into_bytes(),
        ),
        ("huge headers, never ending", huge.clone().into_bytes()),
        ("huge headers", format!("{huge}\r\n").into_bytes()),
        ("not HTTP", b"HELLO\r\n\r\n".to_vec()),
    ];
    for (what, request) in cases {
        let mut s = Ws::tcp(ws_port);
        // The broker may close before reading everything of an oversized request.
        let _ = s.write_all(&request);
        let answer = read_until_closed(&mut s, what);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{what}: expected 400 or a plain close, got {text:?}"
        );
        assert!(
            !text.contains(" 101 "),
            "{what}: upgrade accepted: {text:?}"
        );
    }

    // The bystander's session went on undisturbed, and new clients still get in.
    let mut publisher = broker.client("bystander-pub");
    publisher.publish_q1(1, "bystander/x", b"still here");
    match bystander.expect_packet() {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"still here"),
        p => panic!("expected PUBLISH, got {p:?}"),
    }
    bystander.sync();
    publisher.disconnect();
    assert_round_trip(&broker, ws_port, "after-bad-upgrades");
    broker.assert_healthy();
}

#[test]
fn unmasked_frame_gets_a_protocol_error_close() {
    let (mut broker, ws_port) = ws_broker();
    let mut ws = Ws::connected(ws_port, "unmasked");
    ws.send(&client_frame(OP_BINARY, true, &PINGREQ, None));
    let frames = ws.expect_closed();
    let close = frames
        .iter()
        .find(|f| f.opcode == OP_CLOSE)
        .unwrap_or_else(|| panic!("no close frame before the close: {frames:?}"));
    assert_eq!(close.payload.get(..2), Some(&1002u16.to_be_bytes()[..]));
    assert!(
        frames.iter().all(|f| f.opcode != OP_BINARY),
        "the unmasked PINGREQ was answered: {frames:?}"
    );
    assert_round_trip(&broker, ws_port, "after-unmasked");
    broker.assert_healthy();
}

#[test]
fn text_frame_gets_a_close() {
    let (mut broker, ws_port) = ws_broker();
    let mut ws = Ws::connected(ws_port, "texter");
    ws.send(&masked(OP_TEXT, true, b"{\"hello\": \"mqtt\"}"));
    let frames = ws.expect_closed();
    let close = frames
        .iter()
        .find(|f| f.opcode == OP_CLOSE)
        .unwrap_or_else(|| panic!("no close frame before the close: {frames:?}"));
    assert_eq!(close.payload.get(..2), Some(&1003u16.to_be_bytes()[..]));
    assert_round_trip(&broker, ws_port, "after-text");
    broker.assert_healthy();
}

#[test]
fn connect_fragmented_over_several_frames_is_accepted() {
    let (broker, ws_port) = ws_broker();
    let mut ws = Ws::open(ws_port);
    let connect = ConnectOpts::new("fragmented").encode();
    let (a, rest) = connect.split_at(3);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.send(&masked(OP_BINARY, false, a));
    // A control frame may come between the fragments of a message [RFC 6455 5.4].
    ws.send(&masked(OP_PING, true, b"mid"));
    ws.send(&masked(OP_CONT, false, b));
    ws.send(&masked(OP_CONT, true, c));
    match ws.expect_packet() {
        Packet::ConnAck(a) => assert_eq!(a.code, 0),
        p => panic!("expected CONNACK, got {p:?}"),
    }
    assert!(
        ws.control
            .iter()
            .any(|f| f.opcode == OP_PONG && f.payload == b"mid"),
        "no pong for the ping between fragments: {:?}",
        ws.control
    );
    // An empty binary frame carries nothing and harms nothing.
    ws.send_mqtt(&[]);
    // Fragments of two bytes each, one TCP write at a time.
    let sub = subscribe(2, &[("frag/t", 0)]);
    for (i, piece) in sub.chunks(2).enumerate() {
        let last = (i + 1) * 2 >= sub.len();
        let op = if i == 0 { OP_BINARY } else { OP_CONT };
        ws.send(&masked(op, last, piece));
    }
    match ws.expect_packet() {
        Packet::SubAck(a) => assert_eq!((a.pid, a.codes), (2, vec![0])),
        p => panic!("expected SUBACK, got {p:?}"),
    }
    let mut publisher = broker.client("frag-pub");
    publisher.publish_q1(1, "frag/t", b"whole");
    match ws.expect_packet() {
        Packet::Publish(p) => assert_eq!((&*p.topic, &p.payload[..]), ("frag/t", &b"whole"[..])),
        p => panic!("expected PUBLISH, got {p:?}"),
    }
    publisher.disconnect();
}

#[test]
fn one_frame_carrying_connect_and_subscribe_and_packets_spanning_frames() {
    let (broker, ws_port) = ws_broker();
    let mut ws = Ws::open(ws_port);
    let mut both = ConnectOpts::new("batched").encode();
    both.extend_from_slice(&subscribe(1, &[("batch/a", 1), ("batch/b", 0)]));
    ws.send_mqtt(&both);
    match ws.expect_packet() {
        Packet::ConnAck(a) => assert_eq!(a.code, 0),
        p => panic!("expected CONNACK, got {p:?}"),
    }
    match ws.expect_packet() {
        Packet::SubAck(a) => assert_eq!((a.pid, a.codes), (1, vec![1, 0])),
        p => panic!("expected SUBACK, got {p:?}"),
    }
    // One PUBLISH split across two frames (two separate messages), the second frame also
    // carrying a whole PINGREQ.
    let mut tcp_sub = broker.client("batch-tcp-sub");
    tcp_sub.subscribe(1, &[("batch/from-ws", 1)]);
    let p = publish("batch/from-ws", &[0xab; 300], 1, false, false, 9);
    let (head, tail) = p.split_at(150);
    ws.send_mqtt(head);
    let mut second = tail.to_vec();
    second.extend_from_slice(&PINGREQ);
    ws.send_mqtt(&second);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(ws.expect_packet());
    }
    assert!(
        matches!(got.as_slice(), [Packet::PubAck(a), Packet::PingResp] if a.pid == 9),
        "expected PUBACK 9 then PINGRESP, got {got:?}"
    );
    let m = tcp_sub.expect_message("batch/from-ws", &[0xab; 300], 1);
    tcp_sub.send(&common::puback(m.pid));

    // Large messages come back in frames with 16- and 64-bit lengths.
    let mut publisher = broker.client("batch-pub");
    for size in [200usize, 70_000, 300_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        publisher.publish_q1(2, "batch/a", &payload);
        match ws.expect_packet() {
            Packet::Publish(p) => {
                assert_eq!(&*p.topic, "batch/a");
                assert_eq!(p.payload.len(), size);
                assert!(
                    p.payload[..] == payload[..],
                    "payload of {size} bytes differs"
                );
                ws.send_mqtt(&common::puback(p.pid));
            }
            p => panic!("expected PUBLISH, got {p:?}"),
        }
    }
    ws.sync();
    publisher.disconnect();
    tcp_sub.disconnect();
}

#[test]
fn ping_gets_pong_and_close_gets_close_reply() {
    let (broker, ws_port) = ws_broker();
    let mut ws = Ws::connected(ws_port, "pinger");
    ws.send(&masked(OP_PING, true, b"are you there"));
    let f = ws.expect_frame();
    assert_eq!(
        (f.opcode, f.fin, f.payload.as_slice()),
        (OP_PONG, true, &b"are you there"[..]),
        "reply to ping"
    );
    // An empty ping too, and an unsolicited pong is ignored.
    ws.send(&masked(OP_PONG, true, b"unsolicited"));
    ws.send(&masked(OP_PING, true, b""));
    let f = ws.expect_frame();
    assert_eq!((f.opcode, f.payload.len()), (OP_PONG, 0));
    ws.sync();

    // Without DISCONNECT, a WebSocket close ends the session like a network close: the will goes.
    let mut watcher = broker.client("will-watcher");
    watcher.subscribe(1, &[("pinger/will", 0)]);
    let mut closer = Ws::open(ws_port);
    closer.send_mqtt(
        &ConnectOpts::new("closer")
            .will("pinger/will", b"gone", 0, false)
            .encode(),
    );
    assert!(matches!(closer.expect_packet(), Packet::ConnAck(_)));
    closer.send(&masked(OP_CLOSE, true, &1000u16.to_be_bytes()));
    let frames = closer.expect_closed();
    let reply = frames
        .iter()
        .find(|f| f.opcode == OP_CLOSE)
        .unwrap_or_else(|| panic!("no close reply: {frames:?}"));
    assert_eq!(reply.payload.get(..2), Some(&1000u16.to_be_bytes()[..]));
    watcher.expect_message("pinger/will", b"gone", 0);

    // An empty close (no status) is answered too.
    ws.send(&masked(OP_CLOSE, true, b""));
    let frames = ws.expect_closed();
    assert!(
        frames.iter().any(|f| f.opcode == OP_CLOSE),
        "no close reply to an empty close: {frames:?}"
    );
    watcher.disconnect();
}

// ---- mqtt.js in Node -------------------------------------------------------------------------

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// node and mqtt.js, or `None` when the test is to be skipped.
fn node_or_skip(test: &str) -> Option<PathBuf> {
    let node = tools_or_skip(test, &["node"])?.pop()?;
    if !js_dir().join("node_modules/mqtt/package.json").is_file() {
        skip_or_fail(
            test,
            "mqtt.js is not installed in tests/js (npm ci --prefix tests/js)",
        );
        return None;
    }
    Some(node)
}

struct MosquittoClients {
    publisher: PathBuf,
    subscriber: PathBuf,
    stdbuf: Option<PathBuf>,
}

fn mosquitto_clients(test: &str) -> Option<MosquittoClients> {
    let mut t = tools_or_skip(test, &["mosquitto_pub", "mosquitto_sub"])?;
    let subscriber = t.pop()?;
    let publisher = t.pop()?;
    Some(MosquittoClients {
        publisher,
        subscriber,
        stdbuf: find_tool("stdbuf"),
    })
}

impl MosquittoClients {
    /// A `-d` subscriber on the TCP listener, returned once subscribed.
    fn start_sub(&self, port: u16, id: &str, args: &[&str]) -> Running {
        // mosquitto_sub's stdout is block-buffered on a pipe; stdbuf makes it line-buffered.
        let mut cmd = match &self.stdbuf {
            Some(stdbuf) => {
                let mut cmd = Command::new(stdbuf);
                cmd.arg("-oL").arg(&self.subscriber);
                cmd
            }
            None => Command::new(&self.subscriber),
        };
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id, "-d"])
            .args(args);
        let mut sub = Running::spawn(&mut cmd);
        sub.wait_line("SUBACK", |l| l.starts_with("Subscribed (mid: "));
        sub
    }

    fn publish(&self, port: u16, args: &[&str]) -> Output {
        let out = run(
            Command::new(&self.publisher)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args),
            None,
            STEP,
        );
        out.assert_success(&format!("mosquitto_pub {args:?}"));
        out
    }
}

/// The port of the broker's websockets listener, from its log.
fn ws_port_of(broker: &common_interop::Broker) -> u16 {
    broker
        .log()
        .lines()
        .find_map(|l| {
            l.split("Opening websockets listen socket on port ")
                .nth(1)
                .and_then(|p| p.trim_end_matches('.').parse().ok())
        })
        .unwrap_or_else(|| panic!("no websockets listener in the log:\n{}", broker.log()))
}

/// mqtt.js connects over `url`, receives what mosquitto_pub sends on the TCP listener, and
/// publishes QoS 1 and 2 messages that a TCP mosquitto_sub receives.
fn mqttjs_round_trip(
    test: &str,
    broker: &common_interop::Broker,
    url: &str,
    version: u8,
    envs: &[(&str, &str)],
) {
    let (Some(node), Some(m)) = (node_or_skip(test), mosquitto_clients(test)) else {
        return;
    };
    let tag = format!("v{version}");
    let in_topic = format!("js/{tag}/in");
    let out_topic = format!("js/{tag}/out");
    let mut tcp_sub = m.start_sub(
        broker.port,
        &format!("tcp-sub-{tag}"),
        &["-q", "2", "-t", &out_topic, "-C", "2", "-F", "%q %t %p"],
    );
    let mut cmd = Command::new(node);
    cmd.arg(js_dir().join("ws_client.js"))
        .args([url, &version.to_string(), &in_topic, &out_topic])
        .current_dir(js_dir());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut js = Running::spawn(&mut cmd);
    let subscribed = js.wait_line("mqtt.js SUBSCRIBED", |l| {
        l.starts_with("SUBSCRIBED") || l.contains("rror")
    });
    assert_eq!(subscribed, "SUBSCRIBED 1", "broker log:\n{}", broker.log());
    let payload = format!("hello mqtt.js {tag}");
    m.publish(broker.port, &["-q", "1", "-t", &in_topic, "-m", &payload]);
    let got = js.wait_line("mqtt.js MESSAGE", |l| l.starts_with("MESSAGE"));
    assert_eq!(got, format!("MESSAGE {in_topic} 1 {payload}"));
    let status = js.wait_exit("ws_client.js");
    assert!(
        status.success(),
        "ws_client.js exited with {status}; stdout:\n{}\nstderr:\n{}\nbroker log:\n{}",
        js.lines.join("\n"),
        js.stderr_text(),
        broker.log()
    );
    assert!(
        js.lines.iter().any(|l| l == "PUBLISHED 2"),
        "{:?}",
        js.lines
    );
    let status = tcp_sub.wait_exit("mosquitto_sub");
    assert!(status.success(), "mosquitto_sub: {:?}", tcp_sub.lines);
    let debug = format!("Client tcp-sub-{tag} ");
    let messages: Vec<&String> = tcp_sub
        .lines
        .iter()
        .filter(|l| !l.starts_with(&debug) && !l.starts_with("Subscribed (mid: "))
        .collect();
    assert_eq!(
        messages,
        vec![
            &format!("1 {out_topic} q1 {payload}"),
            &format!("2 {out_topic} q2 {payload}")
        ],
        "broker log:\n{}",
        broker.log()
    );
}

#[test]
fn mqttjs_over_ws_v311_and_v5_exchanges_with_tcp_clients() {
    let test = "mqttjs_over_ws_v311_and_v5_exchanges_with_tcp_clients";
    if node_or_skip(test).is_none() || mosquitto_clients(test).is_none() {
        return;
    }
    let broker = common_interop::start_rmqtt(WS_CONFIG);
    let url = format!("ws://127.0.0.1:{}", ws_port_of(&broker));
    for version in [4, 5] {
        mqttjs_round_trip(test, &broker, &url, version, &[]);
    }
}

/// wss needs TLS: not part of the nossl build's tests.
#[cfg(feature = "tls")]
#[test]
fn mqttjs_over_wss_with_the_listener_certificate() {
    let test = "mqttjs_over_wss_with_the_listener_certificate";
    let Some(openssl) = tools_or_skip(test, &["openssl"]).and_then(|mut t| t.pop()) else {
        return;
    };
    if node_or_skip(test).is_none() || mosquitto_clients(test).is_none() {
        return;
    }
    let dir = TempDir::new("wss");
    let out = run(
        Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ])
            .current_dir(dir.path()),
        None,
        STEP,
    );
    out.assert_success("openssl req");
    let crt = dir.path().join("server.crt").display().to_string();
    let key = dir.path().join("server.key").display().to_string();
    let broker = common_interop::start_rmqtt(&format!(
        "allow_anonymous true\nlistener 0 127.0.0.1\nprotocol websockets\ncertfile {crt}\nkeyfile {key}\n"
    ));
    let url = format!("wss://localhost:{}", ws_port_of(&broker));
    // Node trusts the self-signed certificate only through NODE_EXTRA_CA_CERTS, so a
    // handshake that is not really TLS with this certificate fails the test.
    mqttjs_round_trip(test, &broker, &url, 4, &[("NODE_EXTRA_CA_CERTS", &crt)]);
}

// ---- headless Chromium -----------------------------------------------------------------------

/// A minimal HTTP/1.1 file server for the test page: `/ws_page.html`, `/mqtt.min.js`, and
/// `/hold`, whose answer waits until the test sends on `release` (or 60 s pass).
struct PageServer {
    port: u16,
    release: mpsc::Sender<()>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (release, released) = mpsc::channel::<()>();
        let released = std::sync::Arc::new(std::sync::Mutex::new(released));
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let released = released.clone();
                thread::spawn(move || serve_one(conn, &released));
            }
        });
        PageServer { port, release }
    }
}

impl Drop for PageServer {
    /// A failing test must not leave Chromium waiting for /hold.
    fn drop(&mut self) {
        let _ = self.release.send(());
    }
}

fn serve_one(mut conn: TcpStream, released: &std::sync::Mutex<mpsc::Receiver<()>>) {
    let _ = conn.set_read_timeout(Some(STEP));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request.split(' ').nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let (status, kind, body) = match path {
        "/ws_page.html" => (
            "200 OK",
            "text/html; charset=utf-8",
            std::fs::read(js_dir().join("ws_page.html")).unwrap(),
        ),
        "/mqtt.min.js" => (
            "200 OK",
            "text/javascript",
            std::fs::read(js_dir().join("node_modules/mqtt/dist/mqtt.min.js")).unwrap(),
        ),
        "/hold" => {
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
            ("200 OK", "text/plain", b"released".to_vec())
        }
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

#[test]
fn chromium_page_with_mqttjs_shows_message_from_mosquitto_pub() {
    let test = "chromium_page_with_mqttjs_shows_message_from_mosquitto_pub";
    let Some(chromium) = tools_or_skip(test, &["chromium"]).and_then(|mut t| t.pop()) else {
        return;
    };
    if node_or_skip(test).is_none() {
        return;
    }
    let Some(m) = mosquitto_clients(test) else {
        return;
    };
    let broker = common_interop::start_rmqtt(WS_CONFIG);
    let ws_port = ws_port_of(&broker);
    let pages = PageServer::start();
    let profile = TempDir::new("chromium");

    // The page reports on TOPIC/ready and TOPIC/got; a raw TCP client watches for both.
    let mut watcher = common::Client::open(broker.port);
    watcher.send(&ConnectOpts::new("page-watcher").encode());
    assert_eq!(watcher.expect_connack().code, 0);
    watcher.subscribe(1, &[("browser/page/+", 1)]);

    let url = format!(
        "http://127.0.0.1:{}/ws_page.html?ws=ws://127.0.0.1:{ws_port}/mqtt&topic=browser/page",
        pages.port
    );
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        &user_data,
        // --dump-dom prints the DOM at the load event, which the page's /hold image delays until
        // the test releases it. No --virtual-time-budget: virtual time stands still while a
        // request is pending, and with it mqtt.js's timers, so the page would never subscribe.
        "--dump-dom",
        &url,
    ]);
    let browser = thread::spawn(move || run(&mut cmd, None, Duration::from_secs(120)));

    // Whatever happens, Chromium is released and its output shown on failure.
    let mut wait_for = |what: &str, within: Duration| {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            watcher.expect_publish_within(within)
        }));
        match got {
            Ok(p) => {
                watcher.send(&common::puback(p.pid));
                Some(p)
            }
            Err(_) => {
                eprintln!("the page did not publish {what}");
                None
            }
        }
    };
    let ready = wait_for("browser/page/ready", Duration::from_secs(20));
    let payload = "hello from mosquitto_pub to the browser";
    let got = if ready.is_some() {
        m.publish(
            broker.port,
            &["-q", "1", "-t", "browser/page", "-m", payload],
        );
        wait_for("browser/page/got", Duration::from_secs(30))
    } else {
        None
    };
    let _ = pages.release.send(());
    let out = browser.join().unwrap();
    let report = || {
        format!(
            "DOM:\n{}\nchromium status {:?}, stderr (tail):\n{}\nbroker log:\n{}",
            out.stdout,
            out.status,
            out.stderr
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n"),
            broker.log()
        )
    };
    let ready = ready.unwrap_or_else(|| panic!("the page never subscribed; {}", report()));
    assert_eq!(
        (&*ready.topic, &ready.payload[..]),
        ("browser/page/ready", &b"ready"[..])
    );
    let got = got.unwrap_or_else(|| panic!("the page never confirmed the message; {}", report()));
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("browser/page/got", payload.as_bytes())
    );
    out.assert_success("chromium --dump-dom");
    let expected = format!("<p id=\"message\">{payload}</p>");
    assert!(
        out.stdout.contains(&expected)
            && out
                .stdout
                .contains(&format!("<title>received: {payload}</title>")),
        "the page does not show the message; {}",
        report()
    );
}

/// `websockets_origin`: an upgrade whose `Origin` is not listed gets 403 and is closed; a
/// listed one (compared ignoring case) is accepted and talks MQTT.
#[test]
fn origin_allow_list_refuses_other_web_pages() {
    let broker = common::Broker::with_config(&format!(
        "{WS_CONFIG}websockets_origin http://router.lan\nwebsockets_origin https://router.lan\n"
    ));
    let ws_port = broker.wait_ports(2)[1];
    for extra in ["Origin: http://evil.example\r\n", ""] {
        let mut s = Ws::tcp(ws_port);
        s.write_all(upgrade_request(ws_port, extra).as_bytes())
            .unwrap();
        let (head, _) = read_http_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 403 "), "{extra:?}: {head:?}");
        read_until_closed(&mut s, "refused origin");
    }
    let mut s = Ws::tcp(ws_port);
    s.write_all(upgrade_request(ws_port, "Origin: HTTP://Router.LAN\r\n").as_bytes())
        .unwrap();
    let (head, _) = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    s.write_all(&masked(
        OP_BINARY,
        true,
        &ConnectOpts::new("origin-ok").encode(),
    ))
    .unwrap();
    // One server frame holding CONNACK, accepted.
    let mut got = [0u8; 6];
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, [0x82, 4, 0x20, 2, 0, 0]);
}

/// Before CONNECT a WebSocket peer may ping a little; a flood of pings is closed with 1008
/// and logged, and a frame larger than `max_connect_size` is refused from its header.
#[test]
fn pre_login_ping_flood_and_oversized_frame_are_closed() {
    let (broker, ws_port) = ws_broker();
    let mut s = Ws::tcp(ws_port);
    s.write_all(upgrade_request(ws_port, "").as_bytes())
        .unwrap();
    let (head, _) = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    let flood: Vec<u8> = (0..40).flat_map(|_| masked(OP_PING, true, b"p")).collect();
    let _ = s.write_all(&flood);
    let rest = read_until_closed(&mut s, "ping flood");
    // The close frame with status 1008 (policy violation) is among what came back.
    assert!(
        rest.windows(4).any(|w| w == [0x88, 0x02, 0x03, 0xf0]),
        "{rest:02x?}"
    );
    broker.wait_log("WebSocket ping flood, disconnecting.");

    let mut s = Ws::tcp(ws_port);
    s.write_all(upgrade_request(ws_port, "").as_bytes())
        .unwrap();
    let (head, _) = read_http_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head:?}");
    // A binary frame header announcing 1 MB (default max_connect_size is 8192).
    let _ = s.write_all(&[0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4]);
    let rest = read_until_closed(&mut s, "oversized frame");
    assert!(
        rest.windows(4).any(|w| w == [0x88, 0x02, 0x03, 0xf1]),
        "{rest:02x?}"
    );
    assert_round_trip(&broker, ws_port, "after-flood");
}
