//! Bridges, black-box, against the real Mosquitto broker (Debian's `/usr/sbin/mosquitto`) in
//! both roles: rmqtt bridging to Mosquitto and Mosquitto bridging to rmqtt (which must accept
//! Mosquitto's try_private CONNECT, protocol level 0x84). Covered: topic remapping with prefixes
//! in both directions, `both` without loops (in 3.1.1 with try_private and in 5.0 with no-local),
//! a TLS bridge, a remote restart in the middle of a QoS 1 stream, and a remote that is absent
//! for a while (bounded memory, drops counted, notification state 0 then 1, the queue delivered).
//!
//! Every wait is bounded; "exactly once, never echoed" is proven with marker messages that take
//! the same path after the message under test, never with a sleep. Without Mosquitto (or openssl
//! for the TLS test) the tests are skipped unless `RMQTT_REQUIRE_INTEROP` is set.

mod common;
mod common_interop;

use common::{puback, Client, ConnectOpts};
use common_interop::{
    run, start_mosquitto, start_mosquitto_on, start_rmqtt, tools_or_skip, Broker, TempDir, STEP,
};
use rmqtt::protocol::{decode, Packet, Publish, Version};
use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const ANONYMOUS: &str = "allow_anonymous true\n";

fn mosquitto_or_skip(test: &str) -> Option<PathBuf> {
    tools_or_skip(test, &["mosquitto"])?.pop()
}

/// A 3.1.1 client on `port`, CONNACK 0 received.
fn client(port: u16, id: &str) -> Client {
    client_with(port, &ConnectOpts::new(id))
}

fn client_with(port: u16, opts: &ConnectOpts) -> Client {
    let mut c = Client::open(port);
    c.send(&opts.encode());
    let ack = c.expect_connack();
    assert_eq!(ack.code, 0, "CONNACK for {}", opts.client_id);
    c
}

/// Receives one PUBLISH (bounded by `STEP`, since it may cross a bridge that is still
/// connecting), acknowledges it if needed, and returns it.
fn next_message(c: &mut Client) -> Publish {
    let p = c.expect_publish_within(STEP);
    if p.qos.as_u8() == 1 {
        c.send(&puback(p.pid));
    }
    p
}

fn expect_message(c: &mut Client, topic: &str, payload: &str, what: &str) {
    let p = next_message(c);
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        (topic, payload.as_bytes()),
        "{what}"
    );
}

/// Waits until `topic` on the broker at `port` has the retained value `want` (bounded), with a
/// fresh subscription each time, so the retained copy is what is read.
fn wait_retained(port: u16, topic: &str, want: &str) {
    let deadline = Instant::now() + STEP;
    let mut last = String::new();
    let mut n = 0;
    while Instant::now() < deadline {
        n += 1;
        let mut c = client(port, &format!("retained-check-{n}"));
        c.subscribe(1, &[(topic, 0)]);
        c.send(&common::PINGREQ);
        match c.expect_packet() {
            Packet::Publish(p) => {
                last = String::from_utf8_lossy(&p.payload).into_owned();
                if last == want {
                    return;
                }
            }
            Packet::PingResp => last = "(nothing retained)".into(),
            p => panic!("unexpected {p:?}"),
        }
        drop(c);
        thread::sleep(Duration::from_millis(100));
    }
    panic!("{topic} on port {port}: wanted {want:?}, last saw {last:?}");
}

fn state_topic(name: &str) -> String {
    format!("$SYS/broker/connection/{name}/state")
}

/// All ipv4 listen ports a broker logged, in order.
fn listen_ports(b: &Broker) -> Vec<u16> {
    b.log()
        .lines()
        .filter_map(|l| {
            l.split("Opening ipv4 listen socket on port ")
                .nth(1)
                .and_then(|p| p.trim_end_matches('.').parse().ok())
        })
        .collect()
}

#[test]
fn rmqtt_bridges_to_mosquitto_with_prefixes_both_ways() {
    let test = "rmqtt_bridges_to_mosquitto_with_prefixes_both_ways";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    let remote = start_mosquitto(&mosquitto, ANONYMOUS);
    let mut remote_sub = client(remote.port, "remote-sub");
    remote_sub.subscribe(1, &[("site/#", 1), ("status", 1)]);
    let local = start_rmqtt(&format!(
        "allow_anonymous true\n\
         connection up\n\
         address 127.0.0.1:{}\n\
         restart_timeout 1 2\n\
         topic # out 1 up/ site/up/\n\
         topic # in 1 down/ site/down/\n\
         topic status both 1 \"\" \"\"\n",
        remote.port
    ));
    let mut local_sub = client(local.port, "local-sub");
    local_sub.subscribe(1, &[("down/#", 1), ("status", 1), ("site/#", 1)]);
    wait_retained(local.port, &state_topic("up"), "1");
    // The notification is published on the remote too, retained.
    wait_retained(remote.port, &state_topic("up"), "1");

    let mut local_pub = client(local.port, "local-pub");
    local_pub.publish_q1(1, "up/kitchen/temp", b"21.5");
    expect_message(
        &mut remote_sub,
        "site/up/kitchen/temp",
        "21.5",
        "local up/ -> remote site/up/",
    );

    let mut remote_pub = client(remote.port, "remote-pub");
    remote_pub.publish_q1(1, "site/down/valve", b"open");
    // The remote subscriber sees its own broker's message first.
    expect_message(
        &mut remote_sub,
        "site/down/valve",
        "open",
        "remote local copy",
    );
    expect_message(
        &mut local_sub,
        "down/valve",
        "open",
        "remote site/down/ -> local down/",
    );

    // Empty prefixes: the topic is the same on both sides.
    local_pub.publish_q1(2, "status", b"from-local");
    expect_message(&mut local_sub, "status", "from-local", "local copy");
    expect_message(&mut remote_sub, "status", "from-local", "status out");
    remote_pub.publish_q1(2, "status", b"from-remote");
    expect_message(&mut remote_sub, "status", "from-remote", "remote copy");
    expect_message(&mut local_sub, "status", "from-remote", "status in");

    // Nothing unmapped crosses: a remote topic outside site/down/ stays there, and local
    // site/... is not an `out` topic (the up/ prefix is required).
    local_pub.publish_q1(3, "site/up/not-bridged", b"x");
    expect_message(&mut local_sub, "site/up/not-bridged", "x", "local copy");
    remote_pub.publish_q1(3, "site/other", b"y");
    expect_message(&mut remote_sub, "site/other", "y", "remote copy");
    // Markers along both paths: had anything leaked, it would have arrived before them.
    local_pub.publish_q1(4, "up/marker", b"m1");
    expect_message(&mut remote_sub, "site/up/marker", "m1", "marker out");
    remote_pub.publish_q1(4, "site/down/marker", b"m2");
    expect_message(&mut remote_sub, "site/down/marker", "m2", "remote copy");
    expect_message(&mut local_sub, "down/marker", "m2", "marker in");
    local_sub.sync();
    remote_sub.sync();
}

#[test]
fn mosquitto_bridges_to_rmqtt_with_try_private_and_prefixes() {
    let test = "mosquitto_bridges_to_rmqtt_with_try_private_and_prefixes";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    let rm = start_rmqtt(ANONYMOUS);
    let mut rm_sub = client(rm.port, "rm-sub");
    rm_sub.subscribe(1, &[("fromm/#", 1)]);
    let mq = start_mosquitto(
        &mosquitto,
        &format!(
            "allow_anonymous true\n\
             connection m2r\n\
             address 127.0.0.1:{}\n\
             remote_clientid mosq-bridge\n\
             restart_timeout 1\n\
             topic m/# out 1 \"\" fromm/\n\
             topic r/# in 1 \"\" tom/\n",
            rm.port
        ),
    );
    // Mosquitto connects with try_private: protocol level 0x84, which rmqtt accepts.
    let mut mq_sub = client(mq.port, "mq-sub");
    mq_sub.subscribe(1, &[("r/#", 1), ("m/#", 1)]);
    let mut mq_pub = client(mq.port, "mq-pub");
    mq_pub.publish_q1(1, "m/sensor", b"7");
    expect_message(&mut mq_sub, "m/sensor", "7", "mosquitto local copy");
    // Mosquitto queues for its bridge from the start and sends its remote SUBSCRIBE before
    // anything queued, so once this has crossed, the `in` direction is in place too.
    expect_message(&mut rm_sub, "fromm/m/sensor", "7", "m/ -> fromm/m/");
    rm.wait_log(" as mosq-bridge ");

    let mut rm_pub = client(rm.port, "rm-pub");
    rm_pub.publish_q1(1, "tom/r/cmd", b"go");
    expect_message(&mut mq_sub, "r/cmd", "go", "tom/r/ -> r/");
    // rmqtt's subscriber to fromm/# must not see r/cmd come back remapped, and mosquitto's
    // subscriber must not see its own m/sensor twice: markers prove both.
    mq_pub.publish_q1(2, "m/marker", b"end");
    expect_message(&mut mq_sub, "m/marker", "end", "marker local copy");
    expect_message(&mut rm_sub, "fromm/m/marker", "end", "marker");
    rm_sub.sync();
    mq_sub.sync();
}

/// Mosquitto's bridge publishes `$SYS/broker/connection/ID/state` (retained) on its remote;
/// Mosquitto as a remote accepts that one `$SYS` topic from clients, so rmqtt must too.
#[test]
fn mosquitto_bridge_notification_is_kept_on_rmqtt() {
    let test = "mosquitto_bridge_notification_is_kept_on_rmqtt";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    let rm = start_rmqtt(ANONYMOUS);
    let mut rm_sub = client(rm.port, "rm-sub");
    rm_sub.subscribe(1, &[("fromm/#", 1)]);
    let mq = start_mosquitto(
        &mosquitto,
        &format!(
            "allow_anonymous true\nconnection m2r\naddress 127.0.0.1:{}\n\
             remote_clientid mosq-note\nrestart_timeout 1\ntopic m/# out 1 \"\" fromm/\n",
            rm.port
        ),
    );
    let mut mq_pub = client(mq.port, "mq-pub");
    mq_pub.publish_q1(1, "m/connected", b"yes");
    // The notification is sent right after CONNACK, before this message.
    expect_message(&mut rm_sub, "fromm/m/connected", "yes", "bridge up");
    let mut watcher = client(rm.port, "note-watcher");
    watcher.subscribe(1, &[("$SYS/broker/connection/mosq-note/state", 1)]);
    watcher.send(&common::PINGREQ);
    match watcher.expect_packet() {
        Packet::Publish(p) => {
            assert_eq!(&p.payload[..], b"1");
            assert!(p.retain);
        }
        p => panic!(
            "no retained $SYS/broker/connection/mosq-note/state on rmqtt (got {p:?}); \
             rmqtt log:\n{}",
            rm.log()
        ),
    }
}

/// A message published on one side of a `both` bridge arrives once on the other and is not
/// echoed back; checked with rmqtt as the bridging client (3.1.1 try_private, and 5.0
/// no-local) and with rmqtt as the remote of Mosquitto's bridge.
#[test]
fn both_direction_delivers_once_and_never_loops() {
    let test = "both_direction_delivers_once_and_never_loops";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    for version in ["mqttv311", "mqttv50"] {
        let mq = start_mosquitto(&mosquitto, ANONYMOUS);
        let rm = start_rmqtt(&format!(
            "allow_anonymous true\nconnection loop\naddress 127.0.0.1:{}\n\
             bridge_protocol_version {version}\nrestart_timeout 1 2\ntopic loop/# both 1\n",
            mq.port
        ));
        wait_retained(rm.port, &state_topic("loop"), "1");
        check_no_loop(&rm, &mq, version);
    }
    // Mosquitto as the bridging side, rmqtt as its remote.
    let rm = start_rmqtt(ANONYMOUS);
    let mq = start_mosquitto(
        &mosquitto,
        &format!(
            "allow_anonymous true\nconnection loop\naddress 127.0.0.1:{}\n\
             remote_clientid mq-loop\nrestart_timeout 1\ntopic loop/# both 1\n",
            rm.port
        ),
    );
    // Mosquitto subscribes on the remote after CONNACK; wait until a message gets through.
    let mut probe = client(mq.port, "probe");
    probe.subscribe(1, &[("loop/probe", 1)]);
    let mut rm_pub = client(rm.port, "probe-pub");
    let deadline = Instant::now() + STEP;
    let mut pid = 1;
    loop {
        rm_pub.publish_q1(pid, "loop/probe", b"p");
        probe.send(&common::PINGREQ);
        match probe.expect_packet() {
            Packet::Publish(p) => {
                probe.send(&puback(p.pid));
                break;
            }
            Packet::PingResp => {}
            p => panic!("unexpected {p:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "mosquitto's bridge never subscribed on rmqtt"
        );
        pid += 1;
        thread::sleep(Duration::from_millis(100));
    }
    drop(probe);
    drop(rm_pub);
    check_no_loop(&rm, &mq, "mosquitto as the bridge");
}

fn check_no_loop(rm: &Broker, mq: &Broker, what: &str) {
    let mut rm_sub = client(rm.port, "rm-loop-sub");
    rm_sub.subscribe(1, &[("loop/+", 1)]);
    let mut mq_sub = client(mq.port, "mq-loop-sub");
    mq_sub.subscribe(1, &[("loop/+", 1)]);
    let mut rm_pub = client(rm.port, "rm-loop-pub");
    let mut mq_pub = client(mq.port, "mq-loop-pub");

    rm_pub.publish_q1(1, "loop/a", b"from rmqtt");
    expect_message(&mut rm_sub, "loop/a", "from rmqtt", what);
    expect_message(&mut mq_sub, "loop/a", "from rmqtt", what);
    // An echo of loop/a would reach rmqtt over the bridge before this marker does.
    mq_pub.publish_q1(1, "loop/end1", b"m");
    expect_message(&mut mq_sub, "loop/end1", "m", what);
    expect_message(
        &mut rm_sub,
        "loop/end1",
        "m",
        &format!("{what}: echo of loop/a?"),
    );

    mq_pub.publish_q1(2, "loop/b", b"from mosquitto");
    expect_message(&mut mq_sub, "loop/b", "from mosquitto", what);
    expect_message(&mut rm_sub, "loop/b", "from mosquitto", what);
    rm_pub.publish_q1(2, "loop/end2", b"m");
    expect_message(&mut rm_sub, "loop/end2", "m", what);
    expect_message(
        &mut mq_sub,
        "loop/end2",
        "m",
        &format!("{what}: echo of loop/b?"),
    );
    rm_sub.sync();
    mq_sub.sync();
}

/// Certificates made with the openssl CLI: a CA and a server certificate for 127.0.0.1.
fn make_pki(test: &str, dir: &Path) -> Option<()> {
    let openssl = tools_or_skip(test, &["openssl"])?.pop()?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=rmqtt bridge test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    for args in steps {
        run(
            Command::new(&openssl).args(args).current_dir(dir),
            None,
            STEP,
        )
        .assert_success(&format!("openssl {args:?}"));
    }
    // Mosquitto started as root reads its key after dropping to the `mosquitto` user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    Some(())
}

#[test]
fn tls_bridges_in_both_roles() {
    let test = "tls_bridges_in_both_roles";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    let pki = TempDir::new("bridge-pki");
    if make_pki(test, pki.path()).is_none() {
        return;
    }
    let f = |n: &str| pki.path().join(n).display().to_string();

    // Mosquitto bridges to rmqtt's TLS listener, verifying it against the CA.
    let rm = start_rmqtt(&format!(
        "allow_anonymous true\nlistener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n",
        f("server.crt"),
        f("server.key")
    ));
    let ports = listen_ports(&rm);
    assert_eq!(ports.len(), 2, "{}", rm.log());
    let (rm_plain, rm_tls) = (ports[0], ports[1]);
    let mut rm_sub = client(rm_plain, "rm-tls-sub");
    rm_sub.subscribe(1, &[("tls/#", 1)]);
    let mq = start_mosquitto(
        &mosquitto,
        &format!(
            "allow_anonymous true\nconnection tlsup\naddress 127.0.0.1:{rm_tls}\n\
             bridge_cafile {}\nrestart_timeout 1\ntopic tls/# out 1\n",
            f("ca.crt")
        ),
    );
    let mut mq_pub = client(mq.port, "mq-tls-pub");
    mq_pub.publish_q1(1, "tls/one", b"over TLS to rmqtt");
    expect_message(
        &mut rm_sub,
        "tls/one",
        "over TLS to rmqtt",
        "mosquitto -> rmqtt TLS",
    );
    drop(mq);

    // rmqtt bridges to Mosquitto's TLS listener with bridge_cafile.
    let mq = start_mosquitto(
        &mosquitto,
        &format!(
            "allow_anonymous true\ncertfile {}\nkeyfile {}\n",
            f("server.crt"),
            f("server.key")
        ),
    );
    let rm2 = start_rmqtt(&format!(
        "allow_anonymous true\nconnection tlsdown\naddress 127.0.0.1:{}\nbridge_cafile {}\n\
         restart_timeout 1 2\ntopic tls/# both 1\n",
        mq.port,
        f("ca.crt")
    ));
    wait_retained(rm2.port, &state_topic("tlsdown"), "1");
    let mut rm2_sub = client(rm2.port, "rm2-tls-sub");
    rm2_sub.subscribe(1, &[("tls/#", 1)]);
    let mut rm2_pub = client(rm2.port, "rm2-tls-pub");
    // The remote side is TLS only: mosquitto_sub with --cafile watches it.
    let Some(sub_tool) = tools_or_skip(test, &["mosquitto_sub"]).and_then(|mut t| t.pop()) else {
        return;
    };
    let mut cmd = match common_interop::find_tool("stdbuf") {
        // Line-buffered, so the SUBACK line arrives while mosquitto_sub runs.
        Some(stdbuf) => {
            let mut c = Command::new(stdbuf);
            c.arg("-oL").arg(sub_tool);
            c
        }
        None => Command::new(sub_tool),
    };
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &mq.port.to_string(),
        "--cafile",
        &f("ca.crt"),
        "-q",
        "1",
        "-t",
        "tls/#",
        "-F",
        "%t %p",
        "-C",
        "1",
        "-i",
        "mq-tls-watch",
        "-d",
    ]);
    let mut watcher = common_interop::Running::spawn(&mut cmd);
    watcher.wait_line("SUBACK", |l| l.starts_with("Subscribed (mid: "));
    rm2_pub.publish_q1(1, "tls/two", b"over TLS to mosquitto");
    expect_message(
        &mut rm2_sub,
        "tls/two",
        "over TLS to mosquitto",
        "local copy",
    );
    let status = watcher.wait_exit("mosquitto_sub over TLS");
    assert!(status.success(), "{:?}\n{}", watcher.lines, rm2.log());
    assert!(
        watcher
            .lines
            .iter()
            .any(|l| l == "tls/two over TLS to mosquitto"),
        "{:?}",
        watcher.lines
    );
}

/// A persistent QoS 1 subscriber to Mosquitto that reconnects whenever the broker goes away, and
/// records every payload it receives.
struct Collector {
    port: u16,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    got: Vec<String>,
    connects: usize,
}

impl Collector {
    fn new(port: u16, filter: &str) -> Collector {
        let mut c = Collector {
            port,
            stream: None,
            buf: Vec::new(),
            got: Vec::new(),
            connects: 0,
        };
        // The first connect subscribes; later ones resume the session.
        c.connect(STEP);
        let mut s = c.stream.take().unwrap();
        s.write_all(&common::subscribe(1, &[(filter, 1)])).unwrap();
        c.stream = Some(s);
        match c.read_packet(Instant::now() + STEP) {
            Some(Packet::SubAck(a)) => assert_eq!(a.codes, vec![1]),
            p => panic!("expected SUBACK, got {p:?}"),
        }
        c
    }

    /// Reconnects to an existing session without subscribing again.
    fn resume(port: u16) -> Collector {
        let mut c = Collector {
            port,
            stream: None,
            buf: Vec::new(),
            got: Vec::new(),
            connects: 0,
        };
        c.connect(STEP);
        c
    }

    fn connect(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            assert!(Instant::now() < deadline, "remote broker did not come back");
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_nodelay(true);
                let opts = ConnectOpts::new("stream-collector").clean(false);
                if s.write_all(&opts.encode()).is_ok() {
                    self.stream = Some(s);
                    self.buf.clear();
                    match self.read_packet(Instant::now() + Duration::from_secs(5)) {
                        Some(Packet::ConnAck(a)) if a.code == 0 => {
                            self.connects += 1;
                            return;
                        }
                        _ => self.stream = None,
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The next packet, or `None` if the connection broke or `deadline` passed.
    fn read_packet(&mut self, deadline: Instant) -> Option<Packet> {
        loop {
            if let Ok(Some((p, n))) = decode(&self.buf, Version::V311, usize::MAX) {
                self.buf.drain(..n);
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let s = self.stream.as_mut()?;
            s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) => {
                    self.stream = None;
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.stream = None;
                    return None;
                }
            }
        }
    }

    /// Collects until `n` distinct payloads have arrived (bounded by `within`), reconnecting
    /// as needed.
    fn collect(&mut self, n: usize, within: Duration) -> BTreeSet<String> {
        let deadline = Instant::now() + within;
        loop {
            let distinct: BTreeSet<String> = self.got.iter().cloned().collect();
            if distinct.len() >= n || Instant::now() >= deadline {
                return distinct;
            }
            if self.stream.is_none() {
                self.connect(deadline.saturating_duration_since(Instant::now()));
            }
            let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
            if let Some(Packet::Publish(p)) = self.read_packet(step) {
                if p.qos.as_u8() == 1 {
                    if let Some(s) = self.stream.as_mut() {
                        let _ = s.write_all(&puback(p.pid));
                    }
                }
                self.got
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    }
}

#[test]
fn remote_restart_in_the_middle_of_a_qos1_stream_loses_nothing() {
    let test = "remote_restart_in_the_middle_of_a_qos1_stream_loses_nothing";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    let store = persistence_dir("mosquitto-store");
    let body = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n\
         max_queued_messages 5000\nlog_type all\n",
        store.path().display()
    );
    let mut mq = start_mosquitto(&mosquitto, &body);
    let port = mq.port;
    let mut collector = Collector::new(port, "stream/#");
    let rm = start_rmqtt(&format!(
        "allow_anonymous true\nconnection stream\naddress 127.0.0.1:{port}\n\
         restart_timeout 1 2\ntopic stream/# out 1\n"
    ));
    wait_retained(rm.port, &state_topic("stream"), "1");

    const TOTAL: usize = 500;
    let mut publisher = client(rm.port, "stream-pub");
    let payload = |i: usize| format!("{i:04}");
    for i in 0..TOTAL / 2 {
        publisher.publish_q1((i + 1) as u16, "stream/n", payload(i).as_bytes());
    }
    // Stopped while the bridge is still forwarding the first half.
    mq.terminate();
    drop(mq);
    for i in TOTAL / 2..TOTAL {
        publisher.publish_q1((i + 1) as u16, "stream/n", payload(i).as_bytes());
    }
    let mq = start_mosquitto_on(&mosquitto, port, &body)
        .unwrap_or_else(|e| panic!("mosquitto did not restart on port {port}: {e}"));
    let got = collector.collect(TOTAL, Duration::from_secs(60));
    let missing: Vec<String> = (0..TOTAL)
        .map(payload)
        .filter(|p| !got.contains(p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {TOTAL} messages lost across the remote restart (first: {:?}); duplicates \
         seen: {}; collector connects: {}\nrmqtt log:\n{}\nmosquitto log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        collector.got.len() - got.len(),
        collector.connects,
        rm.log(),
        mq.log()
    );
    assert!(
        collector.connects >= 2,
        "the collector never saw the restart"
    );
}

/// A directory Mosquitto can save its database in: started as root, it drops privileges to its
/// `mosquitto` user, which may not write to a directory root created.
fn persistence_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

#[test]
fn absent_remote_bounded_queue_then_delivery_in_order() {
    let test = "absent_remote_bounded_queue_then_delivery_in_order";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    // The remote's subscriber session exists before the remote goes away, so the queue has
    // somewhere to go the moment the bridge reconnects.
    let store = persistence_dir("mosquitto-absent");
    let body = format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n\
         max_queued_messages 30000\nlog_type all\n",
        store.path().display()
    );
    let mut mq = start_mosquitto(&mosquitto, &body);
    let port = mq.port;
    drop(Collector::new(port, "absent/#"));
    mq.terminate();
    drop(mq);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on the remote port"
    );

    let rm = start_rmqtt(&format!(
        "allow_anonymous true\nsys_interval 1\nconnection gone\naddress 127.0.0.1:{port}\n\
         restart_timeout 1 2\ntopic absent/# out 1\n"
    ));
    wait_retained(rm.port, &state_topic("gone"), "0");
    const TOTAL: usize = 20_000;
    const QUEUE: usize = 1000;
    let body_of = |i: usize| {
        let mut p = format!("{i:05}:").into_bytes();
        p.resize(1024, b'x');
        p
    };
    let mut publisher = client(rm.port, "absent-pub");
    let mut rss_after_queue_full = 0;
    for i in 0..TOTAL {
        publisher.publish_q1((i % 65535 + 1) as u16, "absent/data", &body_of(i));
        if i == 2 * QUEUE {
            rss_after_queue_full = vm_rss_kb(rm.pid());
        }
    }
    let rss_end = vm_rss_kb(rm.pid());
    // Unbounded, 18,000 more messages of 1 KB would add about 18 MB.
    assert!(
        rss_end < rss_after_queue_full + 6 * 1024,
        "RSS grew from {rss_after_queue_full} kB to {rss_end} kB while the remote was absent"
    );
    wait_retained(rm.port, &state_topic("gone"), "0");
    // $SYS is published every second; wait for the count of the drops.
    let mut sys = client(rm.port, "sys-watch");
    sys.subscribe(1, &[("$SYS/broker/publish/messages/dropped", 0)]);
    let deadline = Instant::now() + STEP;
    let mut dropped = 0u64;
    while dropped < (TOTAL - QUEUE) as u64 && Instant::now() < deadline {
        let p = sys.expect_publish_within(STEP);
        dropped = String::from_utf8_lossy(&p.payload).parse().unwrap_or(0);
    }
    assert_eq!(
        dropped,
        (TOTAL - QUEUE) as u64,
        "dropped count with max_queued_messages {QUEUE}"
    );

    let mq = start_mosquitto_on(&mosquitto, port, &body)
        .unwrap_or_else(|e| panic!("mosquitto did not start on port {port}: {e}"));
    wait_retained(rm.port, &state_topic("gone"), "1");
    let mut collector = Collector::resume(port);
    collector.collect(QUEUE, Duration::from_secs(60));
    // Whatever arrives beyond the queue would be a bug too: a marker after the queue.
    publisher.publish_q1(1, "absent/marker", b"end");
    let deadline = Instant::now() + STEP;
    while !collector.got.iter().any(|p| p == "end") && Instant::now() < deadline {
        collector.collect(collector.got.len() + 1, Duration::from_secs(1));
    }
    let got: Vec<usize> = collector
        .got
        .iter()
        .filter(|p| p.as_str() != "end")
        .map(|p| p[..5].parse().unwrap())
        .collect();
    assert_eq!(
        got.len(),
        QUEUE,
        "messages delivered after the remote came back (expected the {QUEUE} queued); \
         first: {:?}\nmosquitto log:\n{}",
        &got[..got.len().min(10)],
        mq.log()
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "queued messages out of order: {:?}",
        got
    );
    assert!(
        collector.got.iter().any(|p| p == "end"),
        "marker not delivered"
    );
}

/// `start_type lazy` with `threshold 2` and `idle_timeout 1`: the bridge connects when the
/// second message is queued, disconnects a second after the last message (the remote, here
/// Mosquitto, then publishes the bridge's will: state 0), and comes back with the next two.
/// Mosquitto 2.0.11 as the local side never times out with a keep alive set (it counts its
/// own PINGREQs as traffic), so it is not the reference here; see `bridge_idle_due`.
#[test]
fn lazy_bridge_disconnects_when_idle_and_reconnects_at_the_threshold() {
    let test = "lazy_bridge_disconnects_when_idle_and_reconnects_at_the_threshold";
    let Some(mosquitto) = mosquitto_or_skip(test) else {
        return;
    };
    let remote = start_mosquitto(&mosquitto, ANONYMOUS);
    let mut remote_sub = client(remote.port, "remote-sub");
    remote_sub.subscribe(1, &[("a/#", 1)]);
    let local = start_rmqtt(&format!(
        "allow_anonymous true\n\
         connection lazy\n\
         address 127.0.0.1:{}\n\
         start_type lazy\n\
         threshold 2\n\
         idle_timeout 1\n\
         restart_timeout 1 1\n\
         topic a/# out 1\n",
        remote.port
    ));
    let mut publisher = client(local.port, "pub");
    for round in 0..2 {
        for m in ["m1", "m2"] {
            publisher.publish_q1(1, "a/x", m.as_bytes());
        }
        expect_message(&mut remote_sub, "a/x", "m1", "first of the two");
        expect_message(&mut remote_sub, "a/x", "m2", "second of the two");
        if round == 0 {
            local.wait_log("Bridge connection lazy has exceeded idle timeout, disconnecting.");
            wait_retained(remote.port, &state_topic("lazy"), "0");
        }
    }
    assert_eq!(
        local.log().matches("Connecting bridge lazy").count(),
        2,
        "one connection per threshold reached:\n{}",
        local.log()
    );
}

/// `bridge_tls_version`: the lowest TLS version the bridge accepts. Against a remote that
/// speaks TLS 1.2 only (`openssl s_server -tls1_2`), the default handshake completes (the
/// server prints the cipher, then the CONNECT arrives) and `tlsv1.3` is refused with the
/// server's protocol_version alert.
#[test]
fn bridge_tls_version_sets_the_lowest_version() {
    let test = "bridge_tls_version_sets_the_lowest_version";
    let Some(openssl) = tools_or_skip(test, &["openssl"]).and_then(|mut t| t.pop()) else {
        return;
    };
    let dir = TempDir::new("bridge-tls-version");
    if make_pki(test, dir.path()).is_none() {
        return;
    }
    let port = common_interop::free_tcp_port();
    let out_path = dir.path().join("s_server.out");
    let out = std::fs::File::create(&out_path).unwrap();
    // s_server stops at the end of its standard input: keep it open.
    let mut server = Command::new(&openssl)
        .args(["s_server", "-tls1_2", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "server.crt", "-key", "server.key"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let conf = |extra: &str| {
        format!(
            "allow_anonymous true\n\
             connection b\n\
             address 127.0.0.1:{port}\n\
             bridge_cafile {}\n\
             restart_timeout 1 1\n\
             {extra}\
             topic a out\n",
            dir.path().join("ca.crt").display()
        )
    };
    let wait_output = |needle: &str| {
        let deadline = Instant::now() + STEP;
        loop {
            let text = std::fs::read(&out_path).unwrap_or_default();
            if String::from_utf8_lossy(&text).contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "s_server never printed {needle:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    let default = start_rmqtt(&conf(""));
    wait_output("CIPHER is ");
    wait_output("MQTT");
    drop(default);
    let strict = start_rmqtt(&conf("bridge_tls_version tlsv1.3\n"));
    strict.wait_log("received fatal alert: ProtocolVersion");
    drop(strict);
    let _ = server.kill();
    let _ = server.wait();
}
