//! Network faults between clients and the real broker. The broker runs in its own network
//! namespace, reached over a veth pair from the test's namespace, where a reconnecting
//! QoS 1 / QoS 2 publisher and a persistent-session subscriber (raw MQTT 3.1.1 over std
//! sockets, with the client-side duties of each QoS) exchange a bounded stream of messages.
//!
//! Faults: `tc netem` on both veth ends (loss, delay with reordering, duplication, a mix) where
//! the kernel has netem, and always a userspace fault proxy on the path that splits the byte
//! stream into tiny delayed pieces and cuts connections at random points, so that sessions
//! must resume and unacknowledged messages must be resent (DUP, PUBREL). Per cell: QoS 1 loses
//! nothing; QoS 2 loses nothing and duplicates nothing. The fault matrix (sent / received /
//! lost / duplicated / reconnects) is printed.
//!
//! Needs root and `ip netns`; skipped with a message when the kernel refuses namespaces or
//! iproute2 is missing (`scripts/install-deps.sh` installs it). Every wait is bounded; the
//! namespace (and with it the veth pair) and the broker are removed on drop.

mod common;

use common::{frame, puback, pubcomp, publish, pubrec, pubrel, subscribe, ConnectOpts};
use rmqtt::protocol::{decode, Packet, Version};
use std::collections::{BTreeMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGES: usize = 500;
const WINDOW: usize = 20;
const BROKER_ADDR: &str = "10.77.0.1";
const HOST_ADDR: &str = "10.77.0.2";
/// Upper bound for one cell; a healthy run needs a few seconds.
const CELL_DEADLINE: Duration = Duration::from_secs(120);

/// (name, netem spec for both veth ends, proxy faults)
const FAULTS: &[(&str, &str, Option<ProxyFaults>)] = &[
    ("none", "", None),
    ("netem loss 10%", "loss 10%", None),
    (
        "netem delay+reorder",
        "delay 40ms 20ms reorder 25% 50%",
        None,
    ),
    ("netem duplicate 25%", "duplicate 25%", None),
    (
        "netem mixed",
        "loss 5% duplicate 10% delay 20ms 10ms reorder 10% 50%",
        None,
    ),
    (
        "proxy split+delay",
        "",
        Some(ProxyFaults {
            chunk_max: 7,
            delay_max_ms: 2,
            cut_after: None,
        }),
    ),
    (
        "proxy cuts",
        "",
        Some(ProxyFaults {
            chunk_max: 4096,
            delay_max_ms: 0,
            cut_after: Some((300, 3_000)),
        }),
    ),
    (
        "proxy cuts+split",
        "",
        Some(ProxyFaults {
            chunk_max: 16,
            delay_max_ms: 1,
            cut_after: Some((200, 2_000)),
        }),
    ),
];

fn run(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The broker's namespace and the veth pair to it; deleted on drop.
struct Net {
    ns: String,
    ns_dev: String,
    host_dev: String,
}

impl Net {
    fn create() -> Result<Net, String> {
        let id = std::process::id() % 100_000;
        let net = Net {
            ns: format!("rmqtt-nf-{id}"),
            ns_dev: format!("nfb{id}"),
            host_dev: format!("nfh{id}"),
        };
        run(&["ip", "netns", "add", &net.ns])?;
        let setup = || -> Result<(), String> {
            run(&[
                "ip",
                "link",
                "add",
                &net.host_dev,
                "type",
                "veth",
                "peer",
                "name",
                &net.ns_dev,
            ])?;
            run(&["ip", "link", "set", &net.ns_dev, "netns", &net.ns])?;
            let ns_addr = format!("{BROKER_ADDR}/24");
            let host_addr = format!("{HOST_ADDR}/24");
            run(&[
                "ip",
                "-n",
                &net.ns,
                "addr",
                "add",
                &ns_addr,
                "dev",
                &net.ns_dev,
            ])?;
            run(&["ip", "-n", &net.ns, "link", "set", &net.ns_dev, "up"])?;
            run(&["ip", "-n", &net.ns, "link", "set", "lo", "up"])?;
            run(&["ip", "addr", "add", &host_addr, "dev", &net.host_dev])?;
            run(&["ip", "link", "set", &net.host_dev, "up"])?;
            Ok(())
        };
        setup()?;
        Ok(net)
    }

    /// Replaces the netem discipline on both ends (`""`: none).
    fn netem(&self, spec: &str) -> Result<(), String> {
        let ends: [(Option<&str>, &str); 2] =
            [(Some(&self.ns), &self.ns_dev), (None, &self.host_dev)];
        for (ns, dev) in ends {
            let mut base: Vec<&str> = vec!["ip", "netns", "exec"];
            match ns {
                Some(ns) => base.push(ns),
                None => base.clear(),
            }
            let mut del = base.clone();
            del.extend(["tc", "qdisc", "del", "dev", dev, "root"]);
            let _ = run(&del);
            if !spec.is_empty() {
                let mut add = base.clone();
                add.extend(["tc", "qdisc", "add", "dev", dev, "root", "netem"]);
                add.extend(spec.split_whitespace());
                run(&add)?;
            }
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &self.host_dev]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct ProxyFaults {
    /// Each forwarded write is at most this many bytes.
    chunk_max: usize,
    /// Random pause before each piece, up to this many milliseconds.
    delay_max_ms: u64,
    /// Cut the connection (both directions) after a random number of bytes in this range.
    cut_after: Option<(usize, usize)>,
}

/// A TCP proxy on 127.0.0.1 to the broker that injects `faults`. Stops with the test process.
fn start_proxy(faults: ProxyFaults, seed: u64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut rng = Rng(seed | 1);
        for down in listener.incoming() {
            let Ok(down) = down else { continue };
            let Ok(up) = TcpStream::connect((BROKER_ADDR, 1883)) else {
                continue;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let budget = faults
                .cut_after
                .map(|(lo, hi)| rng.range(lo, hi))
                .unwrap_or(usize::MAX);
            // Both directions draw from one budget: the cut hits wherever traffic is.
            let left = Arc::new(AtomicUsize::new(budget));
            for (from, to, s) in [
                (
                    down.try_clone().unwrap(),
                    up.try_clone().unwrap(),
                    rng.next(),
                ),
                (up, down, rng.next()),
            ] {
                let left = left.clone();
                std::thread::spawn(move || pump(from, to, faults, left, s));
            }
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, f: ProxyFaults, left: Arc<AtomicUsize>, s: u64) {
    let mut rng = Rng(s | 1);
    let mut buf = [0u8; 4096];
    'outer: loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut off = 0;
        while off < n {
            let piece = rng.range(1, f.chunk_max).min(n - off);
            let before = left.fetch_sub(piece.min(left.load(Ordering::SeqCst)), Ordering::SeqCst);
            if before <= piece {
                // The budget ran out inside this piece: forward part of it, then cut.
                let _ = to.write_all(&buf[off..off + before]);
                break 'outer;
            }
            if f.delay_max_ms > 0 {
                std::thread::sleep(Duration::from_millis(rng.next() % (f.delay_max_ms + 1)));
            }
            if to.write_all(&buf[off..off + piece]).is_err() {
                break 'outer;
            }
            off += piece;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// One MQTT connection: packets in, bytes out; any I/O failure means "reconnect".
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: (&str, u16), id: &str) -> Option<(Conn, bool)> {
        let s = TcpStream::connect_timeout(
            &format!("{}:{}", addr.0, addr.1).parse().ok()?,
            Duration::from_secs(2),
        )
        .ok()?;
        s.set_nodelay(true).ok()?;
        let mut c = Conn { s, buf: Vec::new() };
        c.send(&ConnectOpts::new(id).clean(false).keepalive(30).encode())
            .ok()?;
        match c.read(Duration::from_secs(5)) {
            Ok(Some(Packet::ConnAck(a))) if a.code == 0 => Some((c, a.session_present)),
            _ => None,
        }
    }

    fn send(&mut self, b: &[u8]) -> Result<(), ()> {
        self.s.write_all(b).map_err(|_| ())
    }

    /// `Ok(None)` on timeout, `Err` when the connection is gone or sent garbage.
    fn read(&mut self, within: Duration) -> Result<Option<Packet>, ()> {
        let deadline = Instant::now() + within;
        loop {
            match decode(&self.buf, Version::V311, usize::MAX) {
                Ok(Some((p, n))) => {
                    self.buf.drain(..n);
                    return Ok(Some(p));
                }
                Ok(None) => {}
                Err(_) => return Err(()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.s.set_read_timeout(Some(left)).map_err(|_| ())?;
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err(()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }
}

/// Publishes MESSAGES at `qos` with a window of WINDOW, reconnecting (persistent session) and
/// resending unacknowledged messages with DUP (or their PUBREL) after every cut. Returns how
/// many messages were acknowledged and how many connections it took.
fn publisher(addr: (&'static str, u16), id: String, topic: String, qos: u8) -> (usize, usize) {
    let deadline = Instant::now() + CELL_DEADLINE;
    let mut next = 0usize;
    let mut next_pid = 1u16;
    // pid -> (message index, PUBREC received)
    let mut inflight: BTreeMap<u16, (usize, bool)> = BTreeMap::new();
    let mut acked = 0usize;
    let mut connections = 0usize;
    while acked < MESSAGES && Instant::now() < deadline {
        let Some((mut c, _)) = Conn::open(addr, &id) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        connections += 1;
        let mut ok = true;
        for (&pid, &(idx, released)) in &inflight {
            let p = if released {
                pubrel(pid)
            } else {
                publish(
                    &topic,
                    format!("m-{idx:04}").as_bytes(),
                    qos,
                    false,
                    true,
                    pid,
                )
            };
            ok &= c.send(&p).is_ok();
        }
        while ok && acked < MESSAGES && Instant::now() < deadline {
            while inflight.len() < WINDOW && next < MESSAGES {
                while inflight.contains_key(&next_pid) {
                    next_pid = next_pid.checked_add(1).unwrap_or(1);
                }
                let pid = next_pid;
                next_pid = next_pid.checked_add(1).unwrap_or(1);
                inflight.insert(pid, (next, false));
                let p = publish(
                    &topic,
                    format!("m-{next:04}").as_bytes(),
                    qos,
                    false,
                    false,
                    pid,
                );
                next += 1;
                if c.send(&p).is_err() {
                    ok = false;
                    break;
                }
            }
            match c.read(Duration::from_millis(500)) {
                Ok(Some(Packet::PubAck(a))) if qos == 1 => {
                    if inflight.remove(&a.pid).is_some() {
                        acked += 1;
                    }
                }
                Ok(Some(Packet::PubRec(a))) if qos == 2 => {
                    if let Some(e) = inflight.get_mut(&a.pid) {
                        e.1 = true;
                    }
                    ok = c.send(&pubrel(a.pid)).is_ok();
                }
                Ok(Some(Packet::PubComp(a))) if qos == 2 => {
                    if inflight.remove(&a.pid).is_some() {
                        acked += 1;
                    }
                }
                Ok(Some(p)) => panic!("publisher got unexpected {p:?}"),
                Ok(None) => {}
                Err(()) => ok = false,
            }
        }
        if ok {
            let _ = c.send(&frame(0xe0, &[]));
        }
    }
    (acked, connections)
}

/// What the subscriber saw: every delivered payload, in order.
#[derive(Default)]
struct Seen {
    payloads: Vec<String>,
    connections: usize,
    sessions_lost: usize,
}

/// A persistent-session subscriber doing the receiver's part of QoS 1 and QoS 2: QoS 2
/// messages are delivered on first receipt and their ids remembered until PUBREL, so a DUP
/// resend is not delivered twice. Runs until `stop`.
fn subscriber(
    addr: (&'static str, u16),
    id: String,
    topic: String,
    qos: u8,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    subscribed: mpsc::Sender<()>,
) {
    let mut pending: HashSet<u16> = HashSet::new();
    let mut has_sub = false;
    while !stop.load(Ordering::SeqCst) {
        let Some((mut c, present)) = Conn::open(addr, &id) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        seen.lock().unwrap().connections += 1;
        if has_sub && !present {
            // The broker forgot a persistent session: what it held for us is gone.
            seen.lock().unwrap().sessions_lost += 1;
        }
        if (!has_sub || !present) && c.send(&subscribe(1, &[(&topic, qos)])).is_err() {
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            let r = match c.read(Duration::from_millis(200)) {
                Ok(Some(Packet::SubAck(_))) => {
                    if !has_sub {
                        has_sub = true;
                        let _ = subscribed.send(());
                    }
                    Ok(())
                }
                Ok(Some(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload).to_string();
                    match p.qos.as_u8() {
                        1 => {
                            seen.lock().unwrap().payloads.push(payload);
                            c.send(&puback(p.pid))
                        }
                        2 => {
                            if pending.insert(p.pid) {
                                seen.lock().unwrap().payloads.push(payload);
                            }
                            c.send(&pubrec(p.pid))
                        }
                        _ => {
                            seen.lock().unwrap().payloads.push(payload);
                            Ok(())
                        }
                    }
                }
                Ok(Some(Packet::PubRel(a))) => {
                    pending.remove(&a.pid);
                    c.send(&pubcomp(a.pid))
                }
                Ok(Some(p)) => panic!("subscriber got unexpected {p:?}"),
                Ok(None) => Ok(()),
                Err(()) => Err(()),
            };
            if r.is_err() {
                break;
            }
        }
    }
}

#[derive(Debug)]
struct Cell {
    sent: usize,
    acked: usize,
    received: usize,
    lost: usize,
    duplicated: usize,
    pub_connections: usize,
    sub_connections: usize,
    sessions_lost: usize,
}

fn run_cell(addr: (&'static str, u16), tag: &str, qos: u8) -> Cell {
    let topic = format!("nf/{tag}/{qos}");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let sub = {
        let (seen, stop, topic) = (seen.clone(), stop.clone(), topic.clone());
        let id = format!("nf-sub-{tag}-{qos}");
        std::thread::spawn(move || subscriber(addr, id, topic, qos, seen, stop, tx))
    };
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the subscriber subscribed");
    let (acked, pub_connections) = publisher(addr, format!("nf-pub-{tag}-{qos}"), topic, qos);
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("m-{i:04}")).collect();
    let all_in = || {
        let s = seen.lock().unwrap();
        let got: HashSet<&String> = s.payloads.iter().collect();
        expected.iter().all(|m| got.contains(m))
    };
    while !all_in() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A short grace period in which a late duplicate would show up.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    sub.join().unwrap();
    let s = seen.lock().unwrap();
    let unique: HashSet<&String> = s.payloads.iter().collect();
    Cell {
        sent: MESSAGES,
        acked,
        received: s.payloads.len(),
        lost: expected.iter().filter(|m| !unique.contains(m)).count(),
        duplicated: s.payloads.len() - unique.len(),
        pub_connections,
        sub_connections: s.connections,
        sessions_lost: s.sessions_lost,
    }
}

#[test]
fn qos1_and_qos2_streams_survive_network_faults() {
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP netfaults: iproute2 (ip) not installed; run scripts/install-deps.sh");
        return;
    }
    let net = match Net::create() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("SKIP netfaults: the kernel refuses network namespaces or veth: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("rmqtt-netfaults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("rmqtt.conf");
    std::fs::write(
        &conf,
        format!("listener 1883 {BROKER_ADDR}\nallow_anonymous true\n"),
    )
    .unwrap();
    let log = dir.join("broker.log");
    let _broker = Proc(
        Command::new("ip")
            .args(["netns", "exec", &net.ns, env!("CARGO_BIN_EXE_rmqtt")])
            .arg("-c")
            .arg(&conf)
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start rmqtt in its namespace"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("listen socket on port 1883")
    {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let netem_ok = match net.netem("delay 1ms") {
        Ok(()) => true,
        Err(e) => {
            println!("NOTE: tc netem is not available in this kernel ({e}); netem cells skipped, proxy cells run");
            false
        }
    };
    let _ = net.netem("");

    let mut rows = Vec::new();
    for (i, (name, spec, proxy)) in FAULTS.iter().enumerate() {
        if !spec.is_empty() && !netem_ok {
            rows.push((name, None));
            continue;
        }
        net.netem(spec).unwrap();
        let addr: (&'static str, u16) = match proxy {
            Some(f) => ("127.0.0.1", start_proxy(*f, 0x5eed + i as u64)),
            None => (BROKER_ADDR, 1883),
        };
        for qos in [1u8, 2] {
            let cell = run_cell(addr, &format!("c{i}"), qos);
            println!("{name} QoS {qos}: {cell:?}");
            rows.push((name, Some((qos, cell))));
        }
    }
    let _ = net.netem("");

    println!(
        "\nfault matrix ({MESSAGES} messages per cell, window {WINDOW}, persistent sessions):"
    );
    println!(
        "{:<22} {:>3} {:>5} {:>5} {:>8} {:>5} {:>10} {:>12}",
        "fault", "QoS", "sent", "acked", "received", "lost", "duplicated", "connections"
    );
    let mut failures = Vec::new();
    for (name, row) in &rows {
        let Some((qos, c)) = row else {
            println!("{name:<22} (skipped: no netem)");
            continue;
        };
        println!(
            "{:<22} {:>3} {:>5} {:>5} {:>8} {:>5} {:>10} {:>6}/{:<5}",
            name,
            qos,
            c.sent,
            c.acked,
            c.received,
            c.lost,
            c.duplicated,
            c.pub_connections,
            c.sub_connections
        );
        if c.acked < c.sent {
            failures.push(format!("{name} QoS {qos}: only {} acknowledged", c.acked));
        }
        if c.sessions_lost > 0 {
            failures.push(format!(
                "{name} QoS {qos}: session lost {} times",
                c.sessions_lost
            ));
        }
        if c.lost > 0 {
            failures.push(format!("{name} QoS {qos}: {} lost", c.lost));
        }
        if *qos == 2 && c.duplicated > 0 {
            failures.push(format!("{name} QoS 2: {} duplicated", c.duplicated));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "fault matrix failures: {failures:#?}");
}
