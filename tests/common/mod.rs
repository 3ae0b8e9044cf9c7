//! Shared harness for the black-box broker tests: starts the real `rmqtt` binary on an
//! ephemeral loopback port, captures its log, and speaks raw MQTT to it over TCP.
//!
//! Guarantees: every wait is bounded (no test can hang forever), the broker process is killed
//! and its config file removed when the [`Broker`] is dropped, and malformed input is sent as
//! hand-built bytes so the codec under test never "fixes" it on the way out.

#![allow(dead_code)]

use rmqtt::protocol::{decode, ConnAck, Packet, Publish, QoS, Version};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

static CONFIG_SERIAL: AtomicUsize = AtomicUsize::new(0);

/// A running broker process.
pub struct Broker {
    child: Child,
    pub port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    config: PathBuf,
}

impl Broker {
    /// A broker with anonymous access on 127.0.0.1 and an ephemeral port.
    pub fn start() -> Broker {
        Broker::with_config("allow_anonymous true\n")
    }

    /// A broker whose config file is a loopback listener on port 0 followed by `body`.
    pub fn with_config(body: &str) -> Broker {
        Broker::with_config_on(0, body)
    }

    /// A broker whose config file is a loopback listener on `port` (0: ephemeral) followed by
    /// `body`; restarts after a crash use the port the first run got.
    pub fn with_config_on(port: u16, body: &str) -> Broker {
        Broker::with_config_args(port, body, &[])
    }

    /// Like [`Broker::with_config_on`], with more command-line arguments after `-c FILE -v`.
    pub fn with_config_args(port: u16, body: &str, args: &[&str]) -> Broker {
        let config = std::env::temp_dir().join(format!(
            "rmqtt-itest-{}-{}.conf",
            std::process::id(),
            CONFIG_SERIAL.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&config, format!("listener {port} 127.0.0.1\n{body}")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmqtt"))
            .arg("-c")
            .arg(&config)
            .arg("-v")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rmqtt");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = line
                    .split("Opening ipv4 listen socket on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(&config);
                panic!(
                    "broker did not report its listen port; log: {:?}",
                    logs.lock().unwrap()
                );
            }
        };
        Broker {
            child,
            port,
            logs,
            config,
        }
    }

    /// The config file the broker was started with (rewrite it, then send SIGHUP).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// A TCP connection with nothing sent yet.
    pub fn raw(&self) -> Client {
        Client::open(self.port)
    }

    /// A 3.1.1 client with a clean session and keepalive 60, CONNACK 0 already received.
    pub fn client(&self, id: &str) -> Client {
        self.client_with(&ConnectOpts::new(id))
    }

    /// Connects with `opts` and insists on CONNACK 0.
    pub fn client_with(&self, opts: &ConnectOpts) -> Client {
        let mut c = self.raw();
        c.send(&opts.encode());
        let ack = c.expect_connack();
        assert_eq!(ack.code, 0, "CONNACK for {:?}", opts.client_id);
        c
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (bounded) for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() >= deadline {
                panic!("no log line containing {needle:?}; log: {:?}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's process id, for sending it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) to the broker with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded by `within`) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "broker did not exit within {within:?}; log: {:?}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every listen port, in the order the broker opened them, once `n` are known and the
    /// broker reports it is running (bounded wait).
    pub fn wait_ports(&self, n: usize) -> Vec<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            let logs = self.logs();
            let ports: Vec<u16> = logs
                .iter()
                .filter_map(|l| {
                    l.split("listen socket on port ")
                        .nth(1)
                        .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                })
                .collect();
            if ports.len() >= n && logs.iter().any(|l| l.ends_with(" running")) {
                return ports;
            }
            if Instant::now() >= deadline {
                panic!("fewer than {n} listen ports reported; log: {logs:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asserts the process is alive and still serves a full publish/subscribe round trip on a
    /// fresh pair of connections.
    pub fn assert_healthy(&mut self) {
        assert!(self.is_alive(), "broker died; log: {:?}", self.logs());
        let mut sub = self.client("health-sub");
        sub.subscribe(1, &[("health/check", 1)]);
        let mut publisher = self.client("health-pub");
        publisher.publish_q1(1, "health/check", b"ok");
        let p = sub.expect_message("health/check", b"ok", 1);
        sub.send(&puback(p.pid));
        sub.disconnect();
        publisher.disconnect();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Everything a CONNECT can say, with the protocol name and level free so that broken
/// versions can be sent.
#[derive(Clone, Debug)]
pub struct ConnectOpts {
    pub protocol_name: &'static str,
    pub level: u8,
    pub client_id: String,
    pub clean: bool,
    pub keepalive: u16,
    /// Topic, payload, QoS, retain.
    pub will: Option<(String, Vec<u8>, u8, bool)>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

impl ConnectOpts {
    pub fn new(client_id: &str) -> ConnectOpts {
        ConnectOpts {
            protocol_name: "MQTT",
            level: 4,
            client_id: client_id.to_string(),
            clean: true,
            keepalive: 60,
            will: None,
            username: None,
            password: None,
        }
    }

    pub fn v31(client_id: &str) -> ConnectOpts {
        ConnectOpts {
            protocol_name: "MQIsdp",
            level: 3,
            ..ConnectOpts::new(client_id)
        }
    }

    pub fn clean(mut self, clean: bool) -> ConnectOpts {
        self.clean = clean;
        self
    }

    pub fn keepalive(mut self, k: u16) -> ConnectOpts {
        self.keepalive = k;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> ConnectOpts {
        self.will = Some((topic.to_string(), payload.to_vec(), qos, retain));
        self
    }

    pub fn password(mut self, p: &str) -> ConnectOpts {
        self.password = Some(p.as_bytes().to_vec());
        self
    }

    pub fn username(mut self, u: &str) -> ConnectOpts {
        self.username = Some(u.to_string());
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        let mut payload = Vec::new();
        put_str(&mut payload, self.client_id.as_bytes());
        if let Some((topic, msg, qos, retain)) = &self.will {
            flags |= 0x04 | (qos << 3);
            if *retain {
                flags |= 0x20;
            }
            put_str(&mut payload, topic.as_bytes());
            put_str(&mut payload, msg);
        }
        if let Some(u) = &self.username {
            flags |= 0x80;
            put_str(&mut payload, u.as_bytes());
        }
        if let Some(p) = &self.password {
            flags |= 0x40;
            put_str(&mut payload, p);
        }
        let mut body = Vec::new();
        put_str(&mut body, self.protocol_name.as_bytes());
        body.push(self.level);
        body.push(flags);
        body.extend_from_slice(&self.keepalive.to_be_bytes());
        body.extend_from_slice(&payload);
        frame(0x10, &body)
    }
}

/// Appends a length-prefixed string (raw bytes, so invalid UTF-8 can be sent too).
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A fixed header (first byte, variable-length remaining length) followed by `body`.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// PUBLISH with every flag chosen by the caller; `pid` is written only for QoS > 0.
pub fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, dup: bool, pid: u16) -> Vec<u8> {
    publish_raw_topic(topic.as_bytes(), payload, qos, retain, dup, pid)
}

pub fn publish_raw_topic(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
) -> Vec<u8> {
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut body = Vec::new();
    put_str(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(first, &body)
}

pub fn subscribe(pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    frame(0x82, &body)
}

pub fn unsubscribe(pid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    for f in filters {
        put_str(&mut body, f.as_bytes());
    }
    frame(0xa2, &body)
}

pub fn puback(pid: u16) -> Vec<u8> {
    frame(0x40, &pid.to_be_bytes())
}

pub fn pubrec(pid: u16) -> Vec<u8> {
    frame(0x50, &pid.to_be_bytes())
}

pub fn pubrel(pid: u16) -> Vec<u8> {
    frame(0x62, &pid.to_be_bytes())
}

pub fn pubcomp(pid: u16) -> Vec<u8> {
    frame(0x70, &pid.to_be_bytes())
}

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// A raw MQTT connection to the broker.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn open(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to broker");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to broker");
    }

    /// Sends, ignoring failure: for bytes that follow something the broker may already have
    /// closed the connection for.
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads until one whole packet has arrived and returns it; fails the test if the
    /// connection closes or nothing arrives within `within`.
    pub fn expect_packet_within(&mut self, within: Duration) -> Packet {
        let deadline = Instant::now() + within;
        loop {
            match decode(&self.buf, Version::V311, usize::MAX) {
                Ok(Some((p, n))) => {
                    self.buf.drain(..n);
                    return p;
                }
                Ok(None) => {}
                Err(e) => panic!("broker sent undecodable bytes {:02x?}: {e}", self.buf),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no packet from broker within {within:?} (have {:02x?})",
                    self.buf
                );
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "broker closed the connection while a packet was expected (have {:02x?})",
                    self.buf
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed while a packet was expected: {e}"),
            }
        }
    }

    pub fn expect_packet(&mut self) -> Packet {
        self.expect_packet_within(WAIT)
    }

    pub fn expect_connack(&mut self) -> ConnAck {
        match self.expect_packet() {
            Packet::ConnAck(a) => a,
            p => panic!("expected CONNACK, got {p:?}"),
        }
    }

    pub fn expect_publish(&mut self) -> Publish {
        self.expect_publish_within(WAIT)
    }

    pub fn expect_publish_within(&mut self, within: Duration) -> Publish {
        match self.expect_packet_within(within) {
            Packet::Publish(p) => p,
            p => panic!("expected PUBLISH, got {p:?}"),
        }
    }

    /// Expects a PUBLISH with this topic, payload and QoS; returns it for further checks.
    pub fn expect_message(&mut self, topic: &str, payload: &[u8], qos: u8) -> Publish {
        let p = self.expect_publish();
        assert_eq!(&*p.topic, topic, "topic of {p:?}");
        assert_eq!(&p.payload[..], payload, "payload of {p:?}");
        assert_eq!(p.qos.as_u8(), qos, "QoS of {p:?}");
        p
    }

    /// Expects the acknowledgement packet of type `kind` (PUBACK, PUBREC, ...) for `pid`.
    pub fn expect_ack(&mut self, kind: &str, pid: u16) {
        let p = self.expect_packet();
        let got = match (&p, kind) {
            (Packet::PubAck(a), "PUBACK")
            | (Packet::PubRec(a), "PUBREC")
            | (Packet::PubRel(a), "PUBREL")
            | (Packet::PubComp(a), "PUBCOMP") => a.pid,
            (Packet::UnsubAck(a), "UNSUBACK") => a.pid,
            _ => panic!("expected {kind} {pid}, got {p:?}"),
        };
        assert_eq!(got, pid, "packet id of {kind}");
    }

    /// Subscribes and insists every filter is granted the QoS it asked for.
    pub fn subscribe(&mut self, pid: u16, filters: &[(&str, u8)]) {
        self.send(&subscribe(pid, filters));
        match self.expect_packet() {
            Packet::SubAck(a) => {
                assert_eq!(a.pid, pid);
                let want: Vec<u8> = filters.iter().map(|f| f.1).collect();
                assert_eq!(a.codes, want, "SUBACK codes");
            }
            p => panic!("expected SUBACK, got {p:?}"),
        }
    }

    pub fn publish_q0(&mut self, topic: &str, payload: &[u8]) {
        self.send(&publish(topic, payload, 0, false, false, 0));
    }

    /// QoS 1 publish; waits for its PUBACK, so the broker has routed it on return.
    pub fn publish_q1(&mut self, pid: u16, topic: &str, payload: &[u8]) {
        self.send(&publish(topic, payload, 1, false, false, pid));
        self.expect_ack("PUBACK", pid);
    }

    /// QoS 1 publish to a topic this client is subscribed to at QoS 1: the PUBACK and the
    /// delivered copy may come in either order. Returns the copy, acknowledged.
    pub fn publish_q1_to_self(&mut self, pid: u16, topic: &str, payload: &[u8]) -> Publish {
        self.send(&publish(topic, payload, 1, false, false, pid));
        let mut acked = false;
        let mut copy = None;
        for _ in 0..2 {
            match self.expect_packet() {
                Packet::PubAck(a) if !acked && a.pid == pid => acked = true,
                Packet::Publish(p) if copy.is_none() => copy = Some(p),
                p => panic!("expected PUBACK {pid} and a PUBLISH, got {p:?}"),
            }
        }
        let copy = copy.unwrap();
        assert_eq!(&*copy.topic, topic);
        assert_eq!(&copy.payload[..], payload);
        if copy.qos.as_u8() == 1 {
            self.send(&puback(copy.pid));
        }
        copy
    }

    /// Full QoS 2 exchange as publisher.
    pub fn publish_q2(&mut self, pid: u16, topic: &str, payload: &[u8]) {
        self.send(&publish(topic, payload, 2, false, false, pid));
        self.expect_ack("PUBREC", pid);
        self.send(&pubrel(pid));
        self.expect_ack("PUBCOMP", pid);
    }

    /// Retained publish at QoS 1, acknowledged before return.
    pub fn publish_retained(&mut self, pid: u16, topic: &str, payload: &[u8]) {
        self.send(&publish(topic, payload, 1, true, false, pid));
        self.expect_ack("PUBACK", pid);
    }

    /// A PINGREQ round trip. The broker answers in order, so on return everything it had
    /// queued for this connection before reading the PINGREQ has been received; anything but
    /// PINGRESP first fails the test. This is how "nothing (else) was delivered" is asserted
    /// without sleeping.
    pub fn sync(&mut self) {
        self.send(&PINGREQ);
        match self.expect_packet() {
            Packet::PingResp => {}
            p => panic!("expected nothing before PINGRESP, got {p:?}"),
        }
    }

    pub fn disconnect(mut self) {
        self.send(&DISCONNECT);
        let _ = self.stream.shutdown(Shutdown::Write);
        self.expect_closed();
    }

    /// Asserts the broker closes the connection within [`WAIT`]; returns any bytes it sent
    /// before closing (partial packets included).
    pub fn expect_closed(&mut self) -> Vec<u8> {
        self.expect_closed_within(WAIT)
    }

    pub fn expect_closed_within(&mut self, within: Duration) -> Vec<u8> {
        let deadline = Instant::now() + within;
        let mut got = std::mem::take(&mut self.buf);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("broker did not close the connection within {within:?} (got {got:02x?})");
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return got
                }
                Err(e) => panic!("read failed while waiting for close: {e}"),
            }
        }
    }

    /// Asserts no byte arrives for `ms` milliseconds and the connection stays open. Prefer
    /// [`Client::sync`] where ordering makes it possible.
    pub fn expect_nothing(&mut self, ms: u64) {
        assert!(self.buf.is_empty(), "unread bytes {:02x?}", self.buf);
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed while expecting silence"),
                Ok(n) => panic!("expected nothing, got {:02x?}", &chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("read failed while expecting silence: {e}"),
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// The QoS enum from a number, for comparisons.
pub fn qos(n: u8) -> QoS {
    QoS::from_u8(n).unwrap()
}

impl Broker {
    /// Kills the process with SIGKILL (no chance to save anything) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Client {
    /// Like [`Client::expect_packet_within`], but a quiet connection gives `Ok(None)` and a
    /// closed or failed one `Err`, for tests where the broker may die at any moment.
    pub fn try_packet(&mut self, within: Duration) -> Result<Option<Packet>, String> {
        let deadline = Instant::now() + within;
        loop {
            match decode(&self.buf, Version::V311, usize::MAX) {
                Ok(Some((p, n))) => {
                    self.buf.drain(..n);
                    return Ok(Some(p));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("undecodable bytes from broker: {e}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A client over an already connected stream (from another source address, say).
    pub fn from_stream(stream: TcpStream) -> Client {
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes, reporting failure instead of failing the test.
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| e.to_string())
    }

    /// Opens a connection and sends `opts`' CONNECT; the CONNACK, or why there was none.
    pub fn try_connect(port: u16, opts: &ConnectOpts) -> Result<(Client, ConnAck), String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        c.try_send(&opts.encode())?;
        match c.try_packet(WAIT)? {
            Some(Packet::ConnAck(a)) => Ok((c, a)),
            Some(p) => Err(format!("expected CONNACK, got {p:?}")),
            None => Err("no CONNACK".into()),
        }
    }
}

/// The openssl CLI, if installed (tests that make certificates skip without it).
pub fn find_openssl() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("openssl"))
        .find(|p| p.is_file())
}

/// A directory under the system temp dir, removed with everything in it when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "rmqtt-itest-{name}-{}-{}",
            std::process::id(),
            CONFIG_SERIAL.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
