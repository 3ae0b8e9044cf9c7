//! Differential test: the same pseudo-random client sequences run against rmqtt and against
//! Mosquitto 2.0.11 (the oracle), and what every client observes must agree: CONNACK codes and
//! session present, SUBACK/UNSUBACK/PUBACK/PUBREC codes, what a taken-over connection is told,
//! every delivery (QoS 2 exactly once, QoS 1 at least once as a set, QoS 0 as a set), wills,
//! and the retained state at the end. The differences the specification allows are listed in
//! one place, [`ALLOWED`], each with its reference; anything else fails the test and prints the
//! sequence, shrunk (steps dropped while it still fails).
//!
//! A sequence is 2 to 4 clients doing connect (3.1.1 and 5.0, clean session / clean start,
//! session expiry), subscribe and unsubscribe (wildcards, QoS, shared, no-local,
//! retain-as-published), publish (QoS 0 to 2, retain, message expiry), disconnect, abrupt
//! close, reconnect and takeover, with real time advanced in steps. The generator is seeded
//! (xorshift, no crates): a failure names the seed that reproduces it.
//!
//! Bounded in count and time: `RMQTT_DIFF_CASES` cases (default 40), two at a time
//! (`RMQTT_DIFF_JOBS`), every network wait capped. A longer run is one command:
//!
//! ```text
//! RMQTT_DIFF_CASES=1000 cargo test --release --test differential -- --nocapture
//! ```
//!
//! `RMQTT_DIFF_SEED=N` replays the single case `N`; `RMQTT_DIFF_VERBOSE=1` (with
//! `--nocapture`) prints every case's timing and every failing case's differences, unshrunk.
//! Each run starts a fresh rmqtt and a fresh Mosquitto, and the two run the sequence at the
//! same time, each on its own ephemeral loopback port. Without Mosquitto installed the test is
//! skipped, unless `RMQTT_REQUIRE_INTEROP` is set (CI), where it fails.

mod common_interop;

use bytes::BytesMut;
use common_interop::{find_tool, skip_or_fail, start_mosquitto, start_rmqtt};
use rmqtt::protocol::{
    decode, topic, Ack, Connect, Disconnect, Packet, Properties, Publish, QoS, SubOptions,
    Subscribe, Unsubscribe, Version, Will,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The differences between rmqtt and Mosquitto 2.0.11 that the specification allows, and
/// how the comparison accounts for each. This is the only place they are listed.
const ALLOWED: &[(&str, &str)] = &[
    (
        "shared-member",
        "MQTT 5.0 §4.8.2: which member of a shared subscription group gets a message is the \
         server's choice. Deliveries through $share/g/s/# are compared per group (how many \
         times each message reached the group), not per member; only clients with sessions \
         that end with their connection join a group, so no copy waits in an absent member's \
         session.",
    ),
    (
        "takeover-will",
        "[MQTT-3.1.2-8] (3.1.1) and MQTT 5.0 §3.1.4 (non-normative, Will Delay 0): the will \
         of a connection closed by a takeover is published. Mosquitto 2.0.11 discards it when \
         the session is resumed; rmqtt publishes it. Such a will may be missing on Mosquitto's \
         side only; when it was retained, its topic's retained message (in the final state, \
         and as sent to new subscriptions) is not compared either.",
    ),
    (
        "takeover-disconnect",
        "[MQTT-3.1.4-3]: a taken-over 5.0 connection must be closed; the DISCONNECT 0x8E \
         before the close is what §4.13 describes and rmqtt sends, Mosquitto 2.0.11 closes \
         without it. What a taken-over connection is told is compared without it.",
    ),
    (
        "shared-retained",
        "MQTT 5.0 §3.3.1.3: retained messages are sent when a new non-shared subscription is \
         made. Mosquitto 2.0.11 sends them on a shared subscription too; rmqtt does not. \
         Retained messages a shared subscription brings are required to be none on rmqtt's \
         side and not compared.",
    ),
    (
        "overlap",
        "[MQTT-3.3.4-2] (5.0) / [MQTT-3.3.5-1] (3.1.1): a message matching several of a \
         client's subscriptions is delivered once at the highest of their QoS, or (5.0 only) \
         once per subscription. rmqtt sends one copy at the highest QoS; Mosquitto 2.0.11 \
         sends one copy per subscription to 5.0 clients and, to 3.1.1 clients, one copy at \
         the QoS of the first subscription it finds (below the maximum the 3.1.1 rule asks \
         for). On a topic two or more of a client's filters match, only whether the message \
         arrived is compared, not its QoS, retain flag or count.",
    ),
    (
        "resubscribe",
        "[MQTT-3.8.4-3]: a SUBSCRIBE to a filter the session has already must replace that \
         subscription, options included. Mosquitto 2.0.11 was seen to go on delivering a \
         client's own messages after it re-subscribed with No Local. On topics a filter \
         re-subscribed with other No Local or Retain As Published options matches, only \
         whether a message arrived is compared, and the client's own messages not at all.",
    ),
    (
        "qos1-duplicates",
        "[MQTT-4.3.2] QoS 1 is at least once: QoS 1 deliveries are compared as a set.",
    ),
    (
        "qos0-once",
        "[MQTT-4.3.1] QoS 0 is at most once, and loss is allowed only where the network loses \
         it; the runner settles every step, so QoS 0 deliveries are compared as a set.",
    ),
    (
        "order",
        "[MQTT-4.6.0] ordering is only required per topic within a QoS level; deliveries are \
         compared as sets and multisets, not as sequences.",
    ),
    (
        "expiry-granularity",
        "[MQTT-3.3.2-5] [MQTT-3.1.2-23]: Mosquitto counts message and session expiry in whole \
         seconds, so an expiry can come up to a second earlier or later there. The generator \
         never places a step within 1.3 s of a deadline; a run whose steps lag their plan by \
         more than 0.25 s is repeated.",
    ),
    (
        "dup-flag",
        "[MQTT-4.4.0-1] [MQTT-3.3.1-1]: a re-sent PUBLISH carries DUP; whether a message was \
         in flight (re-sent) or queued (sent fresh) on reconnect depends on timing, so DUP is \
         not compared.",
    ),
];

// ---------------------------------------------------------------------------------------------
// Sequences

const TOPICS: &[&str] = &["a", "a/b", "a/c", "a/b/c", "b", "s/x"];
const FILTERS: &[&str] = &["a", "a/b", "a/+", "a/#", "+/b", "+/+/c", "b"];
const SHARED: &str = "$share/g/s/#";

#[derive(Debug, Clone)]
enum Step {
    /// Connects slot `slot` (a takeover when it is connected already).
    Connect {
        slot: usize,
        v5: bool,
        clean: bool,
        /// 5.0 session expiry interval.
        expiry: u32,
        /// (topic, qos, retain); the payload is `w<n>` with `n` the step's index.
        will: Option<(&'static str, u8, bool)>,
    },
    /// Connects slot `slot` with an empty client id (closing its connection first): the
    /// broker assigns one, or refuses (3.1.1 without a clean session) [MQTT-3.1.3-8].
    ConnectAnonymous {
        slot: usize,
        v5: bool,
        clean: bool,
    },
    Subscribe {
        slot: usize,
        filter: &'static str,
        qos: u8,
        no_local: bool,
        rap: bool,
        /// 5.0 Retain Handling: 0 send retained, 1 only for a new subscription, 2 never.
        rh: u8,
    },
    Unsubscribe {
        slot: usize,
        filter: &'static str,
    },
    /// The payload is `m<n>` with `n` the step's index, or empty (`empty`, which with
    /// `retain` deletes the topic's retained message).
    Publish {
        slot: usize,
        topic: &'static str,
        qos: u8,
        retain: bool,
        expiry: Option<u32>,
        empty: bool,
    },
    /// `will`: 5.0 reason 0x04, disconnect with the will message.
    Disconnect {
        slot: usize,
        will: bool,
    },
    Close {
        slot: usize,
    },
    /// Waits until this many milliseconds after the start of the run.
    SleepUntil(u64),
}

/// xorshift64*, enough for test sequences.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// What the generator knows of a slot, to keep steps away from expiry deadlines.
#[derive(Clone, Copy, Default)]
struct Plan {
    connected: bool,
    v5: bool,
    /// The session ends with the connection (3.1.1 clean session, 5.0 expiry 0).
    transient: bool,
    /// The session expires [`SHORT`] seconds after the connection closes.
    short: bool,
}

/// The short expiry (message and session), in seconds; the other one is 100 s, beyond any run.
const SHORT: u32 = 2;

/// How far from an expiry deadline (ms) no step may be: Mosquitto rounds to whole seconds, so
/// its expiry can come up to a second early or late; plus margin for the run's own lag.
const WINDOW: u64 = 1300;

/// What a step costs the runner in time (ms), by plan: the pauses it makes for a broker to
/// notice a close, and round trips. Steps lag their plan only by what this leaves out.
fn cost(step: &Step) -> u64 {
    match step {
        Step::Connect { .. } | Step::ConnectAnonymous { .. } | Step::Close { .. } => 35,
        Step::SleepUntil(_) => 0,
        _ => 3,
    }
}

/// When each step is planned to start (ms after the start of the run).
fn plan(steps: &[Step]) -> Vec<u64> {
    let mut t = 0;
    steps
        .iter()
        .map(|s| {
            let at = t;
            t = match *s {
                Step::SleepUntil(ms) => t.max(ms),
                _ => t + cost(s),
            };
            at
        })
        .collect()
}

/// Moves the plan's clock `t` past every deadline it is near, with a sleep step.
fn clear_of(deadlines: &[u64], t: &mut u64, steps: &mut Vec<Step>) {
    for &d in deadlines {
        if *t + WINDOW >= d && *t <= d + WINDOW {
            *t = d + WINDOW + 100;
            steps.push(Step::SleepUntil(*t));
        }
    }
}

fn generate(seed: u64) -> Vec<Step> {
    let mut r = Rng::new(seed);
    let clients = 2 + r.below(3);
    let len = 12 + r.below(20);
    let mut plan = vec![Plan::default(); clients];
    let mut t: u64 = 0;
    // Deadlines no step may come near: (deadline ms).
    let mut deadlines: Vec<u64> = Vec::new();
    let mut steps = Vec::new();
    while steps.len() < len {
        let slot = r.below(clients);
        let p = plan[slot];
        let step = match r.below(100) {
            _ if !p.connected && r.chance(7) => Step::ConnectAnonymous {
                slot,
                v5: r.chance(50),
                clean: r.chance(50),
            },
            _ if !p.connected && r.chance(70) => {
                let v5 = r.chance(50);
                let clean = r.chance(40);
                let expiry = if v5 { r.pick(&[0, 0, SHORT, 100]) } else { 0 };
                let will = r
                    .chance(30)
                    .then(|| (r.pick(&["a/b", "b"]), r.pick(&[0, 1, 2]), r.chance(30)));
                Step::Connect {
                    slot,
                    v5,
                    clean,
                    expiry,
                    will,
                }
            }
            0..=7 => {
                // A takeover or a reconnect.
                let v5 = r.chance(50);
                Step::Connect {
                    slot,
                    v5,
                    clean: r.chance(30),
                    expiry: if v5 { r.pick(&[0, SHORT, 100]) } else { 0 },
                    will: r.chance(30).then(|| ("a/b", r.pick(&[0, 1]), false)),
                }
            }
            8..=27 => {
                let shared = p.transient && r.chance(20);
                Step::Subscribe {
                    slot,
                    filter: if shared { SHARED } else { r.pick(FILTERS) },
                    qos: r.pick(&[0, 1, 2]),
                    no_local: p.v5 && !shared && r.chance(25),
                    rap: p.v5 && r.chance(40),
                    rh: if p.v5 { r.pick(&[0, 0, 1, 2]) } else { 0 },
                }
            }
            28..=33 => Step::Unsubscribe {
                slot,
                filter: r.pick(FILTERS),
            },
            34..=69 => {
                let retain = r.chance(30);
                Step::Publish {
                    slot,
                    topic: r.pick(TOPICS),
                    qos: r.pick(&[0, 1, 2]),
                    retain,
                    expiry: if p.v5 && r.chance(30) {
                        Some(r.pick(&[SHORT, 100]))
                    } else {
                        None
                    },
                    empty: retain && r.chance(20),
                }
            }
            70..=77 => Step::Disconnect {
                slot,
                will: p.v5 && r.chance(30),
            },
            78..=85 => Step::Close { slot },
            _ => {
                t += r.pick(&[50, 150, 400, 1200]);
                Step::SleepUntil(t)
            }
        };
        // Keep the step clear of every expiry deadline [ALLOWED expiry-granularity].
        if !matches!(step, Step::SleepUntil(_)) {
            clear_of(&deadlines, &mut t, &mut steps);
        }
        match step {
            Step::Connect {
                slot,
                v5,
                clean,
                expiry,
                ..
            } => {
                plan[slot] = Plan {
                    connected: true,
                    v5,
                    transient: if v5 { expiry == 0 } else { clean },
                    short: v5 && expiry == SHORT,
                };
            }
            Step::ConnectAnonymous { slot, .. } => {
                plan[slot] = Plan {
                    connected: true,
                    v5: false,
                    transient: true,
                    short: false,
                };
            }
            Step::Disconnect { slot, .. } | Step::Close { slot } => {
                let p = &mut plan[slot];
                if p.connected && p.short {
                    deadlines.push(t + u64::from(SHORT) * 1000);
                }
                p.connected = false;
            }
            Step::Publish {
                expiry: Some(SHORT),
                ..
            } => deadlines.push(t + u64::from(SHORT) * 1000),
            _ => {}
        }
        t += cost(&step);
        steps.push(step);
    }
    // The final retained check is a step too.
    clear_of(&deadlines, &mut t, &mut steps);
    steps
}

// ---------------------------------------------------------------------------------------------
// What clients observe

/// One delivery as a client sees it (DUP is not compared [ALLOWED dup-flag]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    topic: String,
    payload: String,
    qos: u8,
    retain: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Observed {
    /// Per slot, in order: CONNACKs, SUBACK/UNSUBACK codes, PUBACK/PUBREC codes, what a
    /// closed connection was told.
    events: Vec<Vec<String>>,
    /// Per slot, every delivery not through the shared group.
    deliveries: Vec<Vec<Delivery>>,
    /// Deliveries through the shared group, whoever got them.
    shared: Vec<Delivery>,
    /// Retained messages a shared subscription brought when it was made.
    shared_on_subscribe: Vec<Delivery>,
    /// Retained messages a fresh subscriber to `#` gets at the end.
    retained: BTreeSet<Delivery>,
    /// How far the run lagged behind its plan, at worst, and at which step.
    lag: Duration,
    lag_step: usize,
}

const IO_WAIT: Duration = Duration::from_secs(3);

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    version: Version,
    next_pid: u16,
    /// Connected with an empty client id: a later CONNECT of the slot is no takeover of it.
    anonymous: bool,
}

enum Got {
    Packet(Box<Packet>),
    Closed,
    Timeout,
}

impl Client {
    fn open(port: u16, version: Version) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).ok();
        Client {
            stream,
            buf: Vec::new(),
            version,
            next_pid: 0,
            anonymous: false,
        }
    }

    fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out);
        // A broker that closed the connection makes this fail; the next read says so.
        let _ = self.stream.write_all(&out);
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid % 60000 + 1;
        self.next_pid
    }

    fn read(&mut self, within: Duration) -> Got {
        let deadline = Instant::now() + within;
        loop {
            match decode(&self.buf, self.version, usize::MAX) {
                Ok(Some((p, n))) => {
                    self.buf.drain(..n);
                    return Got::Packet(Box::new(p));
                }
                Ok(None) => {}
                Err(e) => panic!("undecodable bytes from the broker: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).ok();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Got::Closed,
            }
        }
    }
}

struct Run<'a> {
    port: u16,
    steps: &'a [Step],
    conns: Vec<Option<Client>>,
    obs: Observed,
    /// The slot making a shared subscription in this step.
    sharing: Option<usize>,
}

impl Run<'_> {
    fn event(&mut self, slot: usize, e: String) {
        self.obs.events[slot].push(e);
    }

    /// Handles one packet from the broker on `slot`'s connection: deliveries are recorded
    /// and acknowledged. Returns the packet for the caller to look at.
    fn incoming(&mut self, slot: usize, p: Packet) -> Option<Packet> {
        match p {
            Packet::Publish(x) => {
                let d = Delivery {
                    topic: x.topic.to_string(),
                    payload: String::from_utf8_lossy(&x.payload).into_owned(),
                    qos: x.qos.as_u8(),
                    retain: x.retain,
                };
                if d.topic.starts_with("s/") && d.retain && self.sharing == Some(slot) {
                    self.obs.shared_on_subscribe.push(d);
                } else if d.topic.starts_with("s/") {
                    self.obs.shared.push(d);
                } else {
                    self.obs.deliveries[slot].push(d);
                }
                let c = self.conns[slot].as_mut()?;
                match x.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&Packet::PubAck(Ack::new(x.pid))),
                    QoS::ExactlyOnce => c.send(&Packet::PubRec(Ack::new(x.pid))),
                }
                None
            }
            Packet::PubRel(a) => {
                if let Some(c) = self.conns[slot].as_mut() {
                    c.send(&Packet::PubComp(Ack::new(a.pid)));
                }
                None
            }
            other => Some(other),
        }
    }

    /// Reads on `slot` until `want` matches a packet (returned), handling deliveries on the
    /// way; `None` if the connection closed or nothing came in time (recorded as an event).
    fn wait_for(&mut self, slot: usize, want: impl Fn(&Packet) -> bool) -> Option<Packet> {
        loop {
            let got = self.conns[slot].as_mut()?.read(IO_WAIT);
            match got {
                Got::Packet(p) => {
                    if let Some(p) = self.incoming(slot, *p) {
                        if want(&p) {
                            return Some(p);
                        }
                        if let Packet::Disconnect(d) = &p {
                            self.event(slot, format!("DISCONNECT 0x{:02x}", d.reason));
                        }
                    }
                }
                Got::Closed => {
                    self.event(slot, "closed".into());
                    self.conns[slot] = None;
                    return None;
                }
                Got::Timeout => {
                    self.event(slot, "timeout".into());
                    return None;
                }
            }
        }
    }

    /// A PINGREQ round trip: everything the broker sent before it has been handled.
    fn settle(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].as_mut() {
            c.send(&Packet::PingReq);
            self.wait_for(slot, |p| *p == Packet::PingResp);
        }
    }

    fn settle_all(&mut self, first: usize) {
        self.settle(first);
        for s in 0..self.conns.len() {
            if s != first {
                self.settle(s);
            }
        }
    }

    /// Reads a connection the broker is to close, noting what it says on the way.
    fn drain_closed(mut c: Client) -> String {
        let mut told = String::new();
        loop {
            match c.read(IO_WAIT) {
                Got::Packet(p) => match *p {
                    Packet::Disconnect(d) => {
                        let _ = write!(told, "DISCONNECT 0x{:02x} ", d.reason);
                    }
                    // In flight on the old connection: the session re-sends it on the new
                    // one. [MQTT-4.4.0-1]
                    Packet::Publish(_) | Packet::PubRel(_) => {}
                    p => {
                        let _ = write!(told, "{p:?} ");
                    }
                },
                Got::Closed => return format!("{told}closed"),
                Got::Timeout => return format!("{told}still open"),
            }
        }
    }

    fn step(&mut self, i: usize, step: &Step, start: Instant, planned: u64) {
        let lag = start
            .elapsed()
            .saturating_sub(Duration::from_millis(planned));
        if lag > self.obs.lag {
            self.obs.lag = lag;
            self.obs.lag_step = i;
        }
        match *step {
            Step::SleepUntil(ms) => {
                let at = start + Duration::from_millis(ms);
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
            Step::Connect {
                slot,
                v5,
                clean,
                expiry,
                will,
            } => {
                let version = if v5 { Version::V5 } else { Version::V311 };
                let mut c = Client::open(self.port, version);
                let mut props = Properties::default();
                if v5 && expiry > 0 {
                    props.session_expiry_interval = Some(expiry);
                }
                c.send(&Packet::Connect(Box::new(Connect {
                    version,
                    bridge: false,
                    clean_start: clean,
                    keep_alive: 60,
                    client_id: format!("c{slot}"),
                    will: will.map(|(topic, qos, retain)| Will {
                        topic: topic.into(),
                        payload: format!("w{i}").into_bytes().into(),
                        qos: QoS::from_u8(qos).unwrap(),
                        retain,
                        properties: Properties::default(),
                    }),
                    username: None,
                    password: None,
                    properties: props,
                })));
                let mut old = self.conns[slot].replace(c);
                if let Some(a) = old.take_if(|o| o.anonymous) {
                    // Another client id: closed, not taken over.
                    let _ = a.stream.shutdown(Shutdown::Both);
                    std::thread::sleep(Duration::from_millis(30));
                }
                match self.wait_for(slot, |p| matches!(p, Packet::ConnAck(_))) {
                    Some(Packet::ConnAck(a)) => self.event(
                        slot,
                        format!("CONNACK {} sp{}", a.code, u8::from(a.session_present)),
                    ),
                    _ => self.event(slot, "no CONNACK".into()),
                }
                if let Some(old) = old {
                    // [ALLOWED takeover-disconnect]
                    let told = Self::drain_closed(old).replace("DISCONNECT 0x8e ", "");
                    self.event(slot, format!("taken over: {told}"));
                    // The old connection's will is published as it closes.
                    std::thread::sleep(Duration::from_millis(30));
                }
                self.settle_all(slot);
            }
            Step::ConnectAnonymous { slot, v5, clean } => {
                if let Some(old) = self.conns[slot].take() {
                    let _ = old.stream.shutdown(Shutdown::Both);
                    std::thread::sleep(Duration::from_millis(30));
                }
                let version = if v5 { Version::V5 } else { Version::V311 };
                let mut c = Client::open(self.port, version);
                c.anonymous = true;
                c.send(&Packet::Connect(Box::new(Connect {
                    version,
                    bridge: false,
                    clean_start: clean,
                    keep_alive: 60,
                    client_id: String::new(),
                    will: None,
                    username: None,
                    password: None,
                    properties: Properties::default(),
                })));
                self.conns[slot] = Some(c);
                match self.wait_for(slot, |p| matches!(p, Packet::ConnAck(_))) {
                    Some(Packet::ConnAck(a)) => self.event(
                        slot,
                        format!("CONNACK {} sp{}", a.code, u8::from(a.session_present)),
                    ),
                    _ => self.event(slot, "no CONNACK".into()),
                }
                self.settle_all(slot);
            }
            Step::Subscribe {
                slot,
                filter,
                qos,
                no_local,
                rap,
                rh,
            } => {
                let Some(c) = self.conns[slot].as_mut() else {
                    return;
                };
                let pid = c.pid();
                self.sharing = (filter == SHARED).then_some(slot);
                c.send(&Packet::Subscribe(Subscribe {
                    pid,
                    filters: vec![(
                        filter.to_owned(),
                        SubOptions {
                            qos: QoS::from_u8(qos).unwrap(),
                            no_local,
                            retain_as_published: rap,
                            retain_handling: rh,
                        },
                    )],
                    properties: Properties::default(),
                }));
                if let Some(Packet::SubAck(a)) =
                    self.wait_for(slot, |p| matches!(p, Packet::SubAck(_)))
                {
                    self.event(slot, format!("SUBACK {filter} {:?}", a.codes));
                }
                self.settle_all(slot);
                self.sharing = None;
            }
            Step::Unsubscribe { slot, filter } => {
                let Some(c) = self.conns[slot].as_mut() else {
                    return;
                };
                let pid = c.pid();
                c.send(&Packet::Unsubscribe(Unsubscribe {
                    pid,
                    filters: vec![filter.to_owned()],
                    properties: Properties::default(),
                }));
                if let Some(Packet::UnsubAck(a)) =
                    self.wait_for(slot, |p| matches!(p, Packet::UnsubAck(_)))
                {
                    self.event(slot, format!("UNSUBACK {filter} {:?}", a.codes));
                }
                self.settle_all(slot);
            }
            Step::Publish {
                slot,
                topic,
                qos,
                retain,
                expiry,
                empty,
            } => {
                let Some(c) = self.conns[slot].as_mut() else {
                    return;
                };
                let pid = if qos == 0 { 0 } else { c.pid() };
                let properties = Properties {
                    message_expiry_interval: expiry,
                    ..Properties::default()
                };
                c.send(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::from_u8(qos).unwrap(),
                    retain,
                    topic: topic.into(),
                    pid,
                    payload: if empty {
                        Default::default()
                    } else {
                        format!("m{i}").into_bytes().into()
                    },
                    properties,
                }));
                match qos {
                    1 => {
                        if let Some(Packet::PubAck(a)) =
                            self.wait_for(slot, |p| matches!(p, Packet::PubAck(a) if a.pid == pid))
                        {
                            self.event(slot, format!("PUBACK 0x{:02x}", a.reason));
                        }
                    }
                    2 => {
                        if let Some(Packet::PubRec(a)) =
                            self.wait_for(slot, |p| matches!(p, Packet::PubRec(a) if a.pid == pid))
                        {
                            self.event(slot, format!("PUBREC 0x{:02x}", a.reason));
                            if let Some(c) = self.conns[slot].as_mut() {
                                c.send(&Packet::PubRel(Ack::new(pid)));
                            }
                            self.wait_for(
                                slot,
                                |p| matches!(p, Packet::PubComp(a) if a.pid == pid),
                            );
                        }
                    }
                    _ => {}
                }
                self.settle_all(slot);
            }
            Step::Disconnect { slot, will } => {
                let Some(mut c) = self.conns[slot].take() else {
                    return;
                };
                c.send(&Packet::Disconnect(Disconnect {
                    reason: if will { 0x04 } else { 0 },
                    properties: Properties::default(),
                }));
                let told = Self::drain_closed(c);
                self.event(slot, format!("after DISCONNECT: {told}"));
                self.settle_all(slot);
            }
            Step::Close { slot } => {
                let Some(c) = self.conns[slot].take() else {
                    return;
                };
                let _ = c.stream.shutdown(Shutdown::Both);
                drop(c);
                // Let the broker see the close (and publish the will) before others settle.
                std::thread::sleep(Duration::from_millis(30));
                self.settle_all(slot);
            }
        }
    }

    fn retained(&mut self) {
        let mut probe = Client::open(self.port, Version::V311);
        probe.send(&Packet::Connect(Box::new(Connect {
            version: Version::V311,
            bridge: false,
            clean_start: true,
            keep_alive: 60,
            client_id: "probe".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })));
        probe.send(&Packet::Subscribe(Subscribe {
            pid: 1,
            filters: vec![("#".into(), SubOptions::default())],
            properties: Properties::default(),
        }));
        probe.send(&Packet::PingReq);
        while let Got::Packet(p) = probe.read(IO_WAIT) {
            match *p {
                Packet::Publish(x) => {
                    self.obs.retained.insert(Delivery {
                        topic: x.topic.to_string(),
                        payload: String::from_utf8_lossy(&x.payload).into_owned(),
                        qos: 0,
                        retain: x.retain,
                    });
                }
                Packet::PingResp => break,
                _ => {}
            }
        }
    }
}

/// How many client slots a sequence uses.
fn run_slots(steps: &[Step]) -> usize {
    steps
        .iter()
        .map(|s| match *s {
            Step::Connect { slot, .. }
            | Step::ConnectAnonymous { slot, .. }
            | Step::Subscribe { slot, .. }
            | Step::Unsubscribe { slot, .. }
            | Step::Publish { slot, .. }
            | Step::Disconnect { slot, .. }
            | Step::Close { slot } => slot + 1,
            Step::SleepUntil(_) => 0,
        })
        .max()
        .unwrap_or(0)
}

fn run_on(port: u16, steps: &[Step]) -> Observed {
    let slots = run_slots(steps);
    let mut run = Run {
        port,
        steps,
        conns: (0..slots).map(|_| None).collect(),
        sharing: None,
        obs: Observed {
            events: vec![Vec::new(); slots],
            deliveries: vec![Vec::new(); slots],
            ..Observed::default()
        },
    };
    let start = Instant::now();
    for (i, (step, planned)) in run.steps.iter().zip(plan(steps)).enumerate() {
        run.step(i, step, start, planned);
    }
    run.retained();
    run.obs
}

// ---------------------------------------------------------------------------------------------
// Comparison

/// Wills of connections taken over by a resumed session [ALLOWED takeover-will]: their
/// payloads, and the topics of those that were retained.
fn takeover_wills(steps: &[Step]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut will_of: BTreeMap<usize, (String, bool, &str, bool)> = BTreeMap::new();
    let mut topics = BTreeSet::new();
    let mut connected: BTreeMap<usize, bool> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::Connect {
                slot,
                v5,
                clean,
                expiry,
                will,
            } => {
                if connected.get(&slot) == Some(&true) {
                    if let Some((w, persistent, topic, retain)) = will_of.get(&slot) {
                        if *persistent && !clean {
                            out.insert(w.clone());
                            if *retain {
                                topics.insert(topic.to_string());
                            }
                        }
                    }
                }
                let persistent = if v5 { expiry > 0 } else { !clean };
                match will {
                    Some((topic, _, retain)) => {
                        will_of.insert(slot, (format!("w{i}"), persistent, topic, retain))
                    }
                    None => will_of.remove(&slot),
                };
                connected.insert(slot, true);
            }
            Step::ConnectAnonymous { slot, .. } => {
                will_of.remove(&slot);
                connected.insert(slot, true);
            }
            Step::Disconnect { slot, .. } | Step::Close { slot } => {
                connected.insert(slot, false);
            }
            _ => {}
        }
    }
    (out, topics)
}

/// Whether two or more of the filters `slot` ever subscribed to match `topic`
/// [ALLOWED overlap].
fn overlapping(steps: &[Step], slot: usize, topic: &str) -> bool {
    let filters: BTreeSet<&str> = steps
        .iter()
        .filter_map(|s| match *s {
            Step::Subscribe {
                slot: s, filter, ..
            } if s == slot && filter != SHARED => Some(filter),
            _ => None,
        })
        .collect();
    filters.iter().filter(|f| topic::matches(f, topic)).count() >= 2
}

/// Whether `slot` subscribed to a filter matching `topic` again with other no-local or
/// retain-as-published options [ALLOWED resubscribe].
fn resubscribed(steps: &[Step], slot: usize, topic: &str) -> bool {
    let mut seen: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for s in steps {
        if let Step::Subscribe {
            slot: s,
            filter,
            no_local,
            rap,
            ..
        } = *s
        {
            if s != slot {
                continue;
            }
            if let Some(old) = seen.insert(filter, (no_local, rap)) {
                if old != (no_local, rap) && topic::matches(filter, topic) {
                    return true;
                }
            }
        }
    }
    false
}

/// Which slot published the message with this payload (`m<step>`).
fn publisher(steps: &[Step], payload: &str) -> Option<usize> {
    let i: usize = payload.strip_prefix('m')?.parse().ok()?;
    match steps.get(i)? {
        Step::Publish { slot, .. } => Some(*slot),
        _ => None,
    }
}

/// Deliveries as compared: QoS 2 as a multiset, QoS 0 and 1 as sets, on overlapping topics
/// only whether they came; `skip` payloads left out.
fn normalise(
    steps: &[Step],
    slot: usize,
    ds: &[Delivery],
    skip: &BTreeSet<String>,
    skip_retained: &BTreeSet<String>,
) -> BTreeMap<Delivery, usize> {
    let mut m = BTreeMap::new();
    let kept = |d: &&Delivery| {
        let skipped = skip.contains(&d.payload) || d.retain && skip_retained.contains(&d.topic);
        !skipped
    };
    for d in ds.iter().filter(kept) {
        let resub = resubscribed(steps, slot, &d.topic);
        if resub && publisher(steps, &d.payload) == Some(slot) {
            continue;
        }
        let overlap = resub || overlapping(steps, slot, &d.topic);
        let key = if overlap {
            Delivery {
                qos: 9,
                retain: false,
                ..d.clone()
            }
        } else {
            d.clone()
        };
        let n = m.entry(key).or_insert(0);
        *n = if d.qos == 2 && !overlap { *n + 1 } else { 1 };
    }
    m
}

/// Where the two observations differ beyond what [`ALLOWED`] permits; empty when they agree.
fn differences(steps: &[Step], ours: &Observed, oracle: &Observed) -> Vec<String> {
    let (tolerated, will_topics) = takeover_wills(steps);
    let mut out = Vec::new();
    for (slot, (a, b)) in ours.events.iter().zip(&oracle.events).enumerate() {
        if a != b {
            out.push(format!(
                "client c{slot} events:\n    rmqtt:     {a:?}\n    mosquitto: {b:?}"
            ));
        }
    }
    for (slot, (a, b)) in ours.deliveries.iter().zip(&oracle.deliveries).enumerate() {
        let (na, nb) = (
            normalise(steps, slot, a, &tolerated, &will_topics),
            normalise(steps, slot, b, &tolerated, &will_topics),
        );
        if na != nb {
            let only_a: Vec<_> = na.iter().filter(|(k, v)| nb.get(k) != Some(v)).collect();
            let only_b: Vec<_> = nb.iter().filter(|(k, v)| na.get(k) != Some(v)).collect();
            out.push(format!(
                "client c{slot} deliveries:\n    rmqtt only:     {only_a:?}\n    mosquitto only: {only_b:?}"
            ));
        }
        // A tolerated will may be missing on Mosquitto's side only.
        for w in &tolerated {
            let has = |ds: &[Delivery]| ds.iter().any(|d| &d.payload == w);
            if has(b) && !has(a) {
                out.push(format!("client c{slot}: will {w} sent by Mosquitto only"));
            }
        }
    }
    // [ALLOWED shared-member] how often each message reached the group.
    let group = |ds: &[Delivery]| {
        let mut m: BTreeMap<(String, String), usize> = BTreeMap::new();
        for d in ds {
            let n = m.entry((d.topic.clone(), d.payload.clone())).or_insert(0);
            *n = if d.qos == 2 { *n + 1 } else { 1 };
        }
        m
    };
    if group(&ours.shared) != group(&oracle.shared) {
        out.push(format!(
            "shared group deliveries:\n    rmqtt:     {:?}\n    mosquitto: {:?}",
            ours.shared, oracle.shared
        ));
    }
    if !ours.shared_on_subscribe.is_empty() {
        out.push(format!(
            "retained messages sent to a shared subscription: {:?}",
            ours.shared_on_subscribe
        ));
    }
    let kept = |r: &BTreeSet<Delivery>| -> BTreeSet<Delivery> {
        r.iter()
            .filter(|d| !will_topics.contains(&d.topic))
            .cloned()
            .collect()
    };
    if kept(&ours.retained) != kept(&oracle.retained) {
        out.push(format!(
            "retained at the end:\n    rmqtt:     {:?}\n    mosquitto: {:?}",
            ours.retained, oracle.retained
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Driver

const CONFIG: &str = "allow_anonymous true\n";

/// Runs `steps` on a fresh rmqtt and a fresh Mosquitto at once; `None` when the timing of a
/// run was too far off its plan to judge expiry (the caller repeats it).
fn compare(mosquitto: &Path, steps: &[Step]) -> Option<Vec<String>> {
    let ours = start_rmqtt(CONFIG);
    let oracle = start_mosquitto(mosquitto, CONFIG);
    let (po, pm) = (ours.port, oracle.port);
    let theirs = {
        let steps = steps.to_vec();
        std::thread::spawn(move || run_on(pm, &steps))
    };
    let a = run_on(po, steps);
    let b = theirs.join().expect("the Mosquitto run panicked");
    drop((ours, oracle));
    // Lag matters only where an expiry is timed [ALLOWED expiry-granularity].
    let limit = Duration::from_millis(250);
    for (who, o) in [("rmqtt", &a), ("mosquitto", &b)] {
        if o.lag > limit && timed(steps) {
            if std::env::var_os("RMQTT_DIFF_VERBOSE").is_some() {
                let before = o.lag_step.checked_sub(1).and_then(|i| steps.get(i));
                eprintln!(
                    "differential: {who} run {:?} behind its plan at step {} (after {before:?})",
                    o.lag, o.lag_step
                );
                if std::env::var_os("RMQTT_DIFF_SEED").is_some() {
                    eprintln!("{}events: {:?}", show(steps), o.events);
                }
            }
            return None;
        }
    }
    Some(differences(steps, &a, &b))
}

/// Whether a sequence has an expiry that runs out within a run.
fn timed(steps: &[Step]) -> bool {
    steps.iter().any(|s| {
        matches!(
            s,
            Step::Connect {
                v5: true,
                expiry: SHORT,
                ..
            } | Step::Publish {
                expiry: Some(SHORT),
                ..
            }
        )
    })
}

/// Differences of `steps`, repeating a run whose timing was off (at most three times).
fn judge(mosquitto: &Path, steps: &[Step]) -> Vec<String> {
    for _ in 0..3 {
        if let Some(d) = compare(mosquitto, steps) {
            return d;
        }
    }
    eprintln!("differential: timing too far off the plan three times; case not judged");
    Vec::new()
}

/// Drops steps while the sequence still fails, within a bounded number of runs.
fn shrink(mosquitto: &Path, steps: Vec<Step>) -> (Vec<Step>, Vec<String>) {
    let mut best = steps;
    let mut diffs = judge(mosquitto, &best);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    let mut runs = 0;
    while i < best.len() && runs < 60 && Instant::now() < deadline {
        let mut candidate = best.clone();
        candidate.remove(i);
        runs += 1;
        let d = judge(mosquitto, &candidate);
        if d.is_empty() {
            i += 1;
        } else {
            best = candidate;
            diffs = d;
        }
    }
    (best, diffs)
}

fn show(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  {i:2}: {s:?}\n"))
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn rmqtt_agrees_with_mosquitto() {
    let Some(mosquitto) = find_tool("mosquitto") else {
        skip_or_fail("rmqtt_agrees_with_mosquitto", "missing tool: mosquitto");
        return;
    };
    let seeds: Vec<u64> = match std::env::var("RMQTT_DIFF_SEED") {
        Ok(s) => vec![s.parse().expect("RMQTT_DIFF_SEED is a number")],
        Err(_) => (1..=env_number("RMQTT_DIFF_CASES", 40)).collect(),
    };
    let jobs = env_number("RMQTT_DIFF_JOBS", 2).max(1) as usize;
    let queue = Arc::new(Mutex::new(seeds.clone()));
    type Failures = Vec<(u64, Vec<Step>)>;
    let failures: Arc<Mutex<Failures>> = Arc::default();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (queue, failures, mosquitto) = (queue.clone(), failures.clone(), mosquitto.clone());
            std::thread::spawn(move || loop {
                let Some(seed) = queue.lock().unwrap().pop() else {
                    return;
                };
                let steps = generate(seed);
                let t = Instant::now();
                let d = judge(&mosquitto, &steps);
                if std::env::var_os("RMQTT_DIFF_VERBOSE").is_some() {
                    let planned = steps.iter().filter_map(|s| match s {
                        Step::SleepUntil(ms) => Some(*ms),
                        _ => None,
                    });
                    eprintln!(
                        "seed {seed}: {} steps, planned {} ms, took {:?}, {}",
                        steps.len(),
                        planned.max().unwrap_or(0),
                        t.elapsed(),
                        if d.is_empty() { "agree" } else { "DIFFER" }
                    );
                }
                if !d.is_empty() {
                    if std::env::var_os("RMQTT_DIFF_VERBOSE").is_some() {
                        eprintln!("seed {seed}:\n{}{}", show(&steps), d.join("\n"));
                    }
                    failures.lock().unwrap().push((seed, steps));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let mut failures = std::mem::take(&mut *failures.lock().unwrap());
    failures.sort_by_key(|f| f.0);
    eprintln!(
        "differential: {} cases, {} failed; allowed differences: {}",
        seeds.len(),
        failures.len(),
        ALLOWED.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
    );
    let Some((seed, steps)) = failures.into_iter().next() else {
        return;
    };
    let (shrunk, diffs) = shrink(&mosquitto, steps);
    panic!(
        "rmqtt and Mosquitto disagree (seed {seed}; replay with RMQTT_DIFF_SEED={seed}).\n\
         Shrunk sequence:\n{}Differences:\n{}",
        show(&shrunk),
        diffs.join("\n")
    );
}

/// The generator is deterministic, uses 2 to 4 clients, and its clock only moves forward.
#[test]
fn sequences_are_reproducible() {
    for seed in 1..200 {
        let steps = generate(seed);
        assert_eq!(format!("{steps:?}"), format!("{:?}", generate(seed)));
        let mut t = 0;
        for s in &steps {
            if let Step::SleepUntil(ms) = *s {
                assert!(ms >= t, "seed {seed}: the clock went back");
                t = ms;
            }
        }
        let clients = run_slots(&steps);
        assert!(clients <= 4, "seed {seed}: {clients} clients");
    }
}
