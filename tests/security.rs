//! Security properties of the real broker, across features: anonymous access refused on every
//! listener (plain and WebSockets) when disabled, the ACL applied to retained and will
//! messages, plaintext refused on a TLS port, no password hash (or password) in a verbose
//! log, `$SYS` not writable by clients, and no way for a client that never authenticates to
//! exhaust memory or connection slots.

mod common;

use common::*;
use rmqtt::auth::password::{hash_password, HashKind};
use rmqtt::protocol::{decode, Packet, Version};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn temp_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rmqtt-security-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A Mosquitto-format password file with PBKDF2 hashes; returns its path and the hash lines.
fn password_file(dir: &std::path::Path, users: &[(&str, &str)]) -> (PathBuf, Vec<String>) {
    let mut text = String::new();
    let mut hashes = Vec::new();
    for (u, p) in users {
        let h = hash_password(
            HashKind::Sha512Pbkdf2,
            NonZeroU32::new(101).unwrap(),
            p.as_bytes(),
        )
        .unwrap();
        text.push_str(&format!("{u}:{h}\n"));
        hashes.push(h);
    }
    let path = dir.join("pwfile");
    std::fs::write(&path, text).unwrap();
    (path, hashes)
}

fn connack_code(port: u16, opts: &ConnectOpts) -> u8 {
    let mut c = Client::open(port);
    c.send(&opts.encode());
    c.expect_connack().code
}

/// A WebSocket client frame: final, binary, masked.
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x82];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Sends `connect` over a WebSocket on `port` and returns the CONNACK code, or `None` when
/// the broker closed without one.
fn ws_connack(port: u16, connect: &[u8]) -> Option<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n",
    )
    .unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + WAIT;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(Instant::now() < deadline, "no upgrade response");
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    buf.drain(..head_end);
    s.write_all(&ws_frame(connect)).unwrap();
    // Server frames are unmasked; a CONNACK fits in one small frame.
    while Instant::now() < deadline {
        if buf.len() >= 2 {
            let len = usize::from(buf[1] & 0x7f);
            if buf.len() >= 2 + len {
                if buf[0] & 0x0f == 0x8 {
                    return None;
                }
                let payload = &buf[2..2 + len];
                return match decode(payload, Version::V311, usize::MAX) {
                    Ok(Some((Packet::ConnAck(a), _))) => Some(a.code),
                    other => panic!("expected CONNACK over WebSockets, got {other:?}"),
                };
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => return None,
            Err(e) => panic!("read over WebSockets: {e}"),
        }
    }
    panic!("no CONNACK over WebSockets within {WAIT:?}");
}

#[test]
fn no_anonymous_access_on_any_listener() {
    let dir = temp_dir("anon");
    let (pw, _) = password_file(&dir, &[("alice", "secret")]);
    for (global, per_listener) in [
        // One global setting covers every listener...
        (
            format!("allow_anonymous false\npassword_file {}\n", pw.display()),
            "",
        ),
        // ...and with per-listener settings, each listener's own.
        (
            "per_listener_settings true\nallow_anonymous false\n".to_string(),
            &*format!("allow_anonymous false\npassword_file {}\n", pw.display()),
        ),
    ] {
        let b = Broker::with_config(&format!(
            "{per_listener}listener 0 127.0.0.1\n{per_listener}\
             listener 0 127.0.0.1\nprotocol websockets\n{per_listener}{global}"
        ));
        let ports = b.wait_ports(3);
        let anon = ConnectOpts::new("anon");
        let good = ConnectOpts::new("alice")
            .username("alice")
            .password("secret");
        let wrong = ConnectOpts::new("alice2")
            .username("alice")
            .password("guess");
        for &port in &ports[..2] {
            assert_eq!(connack_code(port, &anon), 5, "anonymous on port {port}");
            assert_eq!(connack_code(port, &wrong), 5, "wrong password on {port}");
            assert_eq!(connack_code(port, &good), 0, "alice on {port}");
        }
        let ws = ports[2];
        let refused = ws_connack(ws, &anon.encode());
        assert!(
            refused == Some(5) || refused.is_none(),
            "anonymous over WebSockets: {refused:?}"
        );
        assert_eq!(
            ws_connack(ws, &good.encode()),
            Some(0),
            "alice over WebSockets"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads packets until PINGRESP (sent after a PINGREQ); returns the PUBLISHes before it.
fn drain_until_pong(c: &mut Client) -> Vec<rmqtt::protocol::Publish> {
    c.send(&PINGREQ);
    let mut out = Vec::new();
    loop {
        match c.expect_packet() {
            Packet::PingResp => return out,
            Packet::Publish(p) => {
                if p.qos.as_u8() == 1 {
                    c.send(&puback(p.pid));
                }
                out.push(p);
            }
            p => panic!("unexpected {p:?}"),
        }
    }
}

#[test]
fn acl_applies_to_retained_and_will_messages() {
    let dir = temp_dir("acl");
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        // The anonymous block lets the health check's clients through.
        "topic readwrite health/#\n\nuser reader\ntopic read secret/#\n\n\
         user writer\ntopic write public/#\n",
    )
    .unwrap();
    let mut b = Broker::with_config(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let login = |b: &Broker, id: &str, user: &str| {
        let opts = ConnectOpts::new(id).username(user);
        b.client_with(&opts)
    };
    // A retained message to a topic the writer may not write is neither delivered nor kept.
    let mut w = login(&b, "w", "writer");
    w.publish_retained(1, "secret/r", b"stolen");
    w.sync();
    let mut r = login(&b, "r", "reader");
    r.subscribe(1, &[("secret/#", 1)]);
    let got = drain_until_pong(&mut r);
    assert!(got.is_empty(), "retained message bypassed the ACL: {got:?}");
    // A will to a forbidden topic is refused at CONNECT or never published.
    let mut will = ConnectOpts::new("willer").username("writer");
    will = will.will("secret/will", b"stolen will", 1, true);
    let mut c = Client::open(b.port);
    c.send(&will.encode());
    let code = c.expect_connack().code;
    if code == 0 {
        // Dropping the connection without DISCONNECT triggers the will.
        drop(c);
    }
    b.assert_healthy();
    let got = drain_until_pong(&mut r);
    assert!(got.is_empty(), "will bypassed the ACL: {got:?}");
    // And nothing was retained from it either.
    let mut r2 = login(&b, "r2", "reader");
    r2.subscribe(1, &[("secret/#", 1)]);
    let got = drain_until_pong(&mut r2);
    assert!(got.is_empty(), "retained will bypassed the ACL: {got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plaintext_on_the_tls_port_is_refused() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP plaintext_on_the_tls_port_is_refused: openssl not installed");
        return;
    }
    let dir = temp_dir("tls");
    let key = dir.join("key.pem");
    let crt = dir.join("crt.pem");
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(ok.status.success(), "openssl: {ok:?}");
    let mut b = Broker::with_config(&format!(
        "allow_anonymous true\nlistener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n",
        crt.display(),
        key.display()
    ));
    let tls_port = b.wait_ports(2)[1];
    let mut plain = Client::open(tls_port);
    plain.send_lossy(&ConnectOpts::new("plain").encode());
    // Whatever comes back (a TLS alert at most), it is not a CONNACK, and the port closes.
    let got = plain.expect_closed();
    assert!(
        got.first() != Some(&0x20),
        "plaintext CONNECT on the TLS port was answered with {got:02x?}"
    );
    b.assert_healthy();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn password_hashes_never_appear_in_the_log() {
    let dir = temp_dir("log");
    let (pw, hashes) = password_file(&dir, &[("alice", "s3cr3t-pw"), ("bob", "hunter22")]);
    let mut b = Broker::with_config(&format!(
        "allow_anonymous false\npassword_file {}\nlog_type all\nconnection_messages true\n",
        pw.display()
    ));
    for (user, pass) in [("alice", "s3cr3t-pw"), ("bob", "wrong-one"), ("eve", "x")] {
        let opts = ConnectOpts::new(user).username(user).password(pass);
        let _ = connack_code(b.port, &opts);
    }
    let mut c = b.client_with(
        &ConnectOpts::new("a2")
            .username("alice")
            .password("s3cr3t-pw"),
    );
    c.subscribe(1, &[("t", 1)]);
    c.publish_q1_to_self(1, "t", b"m");
    c.disconnect();
    // A reload reads the file again; that must not print it either.
    b.signal("HUP");
    b.wait_log("Reloading");
    assert!(b.is_alive());
    let logs = b.logs().join("\n");
    for h in &hashes {
        let salt_and_key: Vec<&str> = h.split('$').filter(|p| p.len() > 8).collect();
        assert!(!salt_and_key.is_empty());
        for part in salt_and_key {
            assert!(!logs.contains(part), "hash material {part} in the log");
        }
    }
    for secret in ["s3cr3t-pw", "hunter22", "wrong-one"] {
        assert!(!logs.contains(secret), "password {secret} in the log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sys_topics_are_not_writable_by_clients() {
    let mut b = Broker::start();
    let mut sub = b.client("sys-sub");
    sub.subscribe(1, &[("$SYS/#", 1)]);
    drain_until_pong(&mut sub);
    let mut c = b.client("sys-writer");
    // QoS 1 and a retained QoS 0: acknowledged or not, never delivered nor stored.
    c.send(&publish("$SYS/broker/version", b"fake", 1, false, false, 1));
    c.send(&publish(
        "$SYS/broker/version",
        b"fake-retained",
        0,
        true,
        false,
        0,
    ));
    c.send(&publish("$SYS/injected", b"fake", 0, true, false, 0));
    c.send(&PINGREQ);
    loop {
        match c.expect_packet() {
            Packet::PingResp => break,
            Packet::PubAck(_) => {}
            p => panic!("unexpected {p:?}"),
        }
    }
    let got = drain_until_pong(&mut sub);
    assert!(
        got.iter().all(|p| !p.payload.starts_with(b"fake")),
        "client publish to $SYS delivered: {got:?}"
    );
    let mut late = b.client("sys-late");
    late.subscribe(1, &[("$SYS/#", 1)]);
    let got = drain_until_pong(&mut late);
    assert!(
        got.iter().all(|p| !p.payload.starts_with(b"fake")),
        "client publish to $SYS retained: {got:?}"
    );
    assert!(
        got.iter().any(|p| &*p.topic == "$SYS/broker/version"),
        "the broker's own $SYS/broker/version is retained: {got:?}"
    );
    b.assert_healthy();
}

fn rss_kb(b: &Broker) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", b.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn unauthenticated_connections_cannot_exhaust_the_broker() {
    let dir = temp_dir("exhaust");
    let (pw, _) = password_file(&dir, &[("alice", "pw")]);
    let mut b = Broker::with_config(&format!(
        "allow_anonymous false\npassword_file {}\n",
        pw.display()
    ));
    let good = ConnectOpts::new("alice").username("alice").password("pw");
    b.client_with(&good).disconnect();
    let before = rss_kb(&b);
    // 1000 connections that never send CONNECT, each with the start of a large packet.
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
        if i % 2 == 0 {
            let _ = s.write_all(&[0x10, 0xff, 0xff, 0xff, 0x7f, 0, 4, b'M']);
        }
        idle.push(s);
    }
    // A legitimate client still gets in and works.
    let mut c = b.client_with(&good);
    c.subscribe(1, &[("t", 1)]);
    c.publish_q1_to_self(1, "t", b"ok");
    c.disconnect();
    let after = rss_kb(&b);
    println!("1000 idle unauthenticated connections: VmRSS {before} kB -> {after} kB");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
    assert!(b.is_alive());
    drop(idle);
    let _ = std::fs::remove_dir_all(&dir);

    // max_connections counts connections before CONNACK too.
    let b = Broker::with_config("allow_anonymous true\nmax_connections 20\n");
    let mut conns: Vec<Client> = (0..40).map(|_| b.raw()).collect();
    let mut open = 0;
    for c in conns.iter_mut() {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8; 1];
        match c.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => open += 1,
            other => panic!("unexpected read result {other:?}"),
        }
    }
    println!("max_connections 20: {open} of 40 connections kept open");
    assert!(
        open <= 20,
        "{open} connections open with max_connections 20"
    );
    drop(conns);
    // Once they are gone, a client connects again (the broker notices the closes).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = b.raw();
        c.send_lossy(&ConnectOpts::new("after").encode());
        c.stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut head = [0u8; 4];
        if c.stream.read_exact(&mut head).is_ok() {
            assert_eq!(head, [0x20, 0x02, 0x00, 0x00]);
            break;
        }
        assert!(Instant::now() < deadline, "no connection slot freed");
    }
}
