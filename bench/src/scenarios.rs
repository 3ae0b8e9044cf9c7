//! The benchmark scenarios. Each one connects its own clients to a freshly started broker (or the
//! raw relay), moves a bounded number of messages under a deadline, and returns its metrics plus
//! the messages lost and duplicated. Every payload carries (publisher, sequence, send time), so
//! loss, duplication and latency are counted per message, never estimated.

use crate::mqtt::{self, Packet};
use crate::net::Net;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes at the front of every payload: publisher (u32), sequence (u32), send time in ns (u64).
const HEADER: usize = 16;

/// Keep alive of every client, in seconds: longer than any run, and not 0, which rumqttd
/// refuses.
const KEEP_ALIVE: u16 = 600;

/// How long subscribers may be quiet before missing messages count as lost. Longer than
/// rmqtt's 2 s stall timeout: a message held up until that timer fires still arrives and shows
/// in the max latency (issue 14) instead of hiding among the losses.
const WRITE_OFF: Duration = Duration::from_millis(3000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    FanInQ0,
    FanInQ1,
    FanOutQ0,
    /// Issue 14's load: the publishers send as fast as the sockets take it, no window.
    FanOutBurst,
    FanInBurst,
    PairsQ1,
    LatencyQ0,
    LatencyQ1,
    LatencyQ2,
    Connections,
    Retained,
    LargeQ1,
}

pub const ALL: [Kind; 12] = [
    Kind::FanInQ0,
    Kind::FanInQ1,
    Kind::FanOutQ0,
    Kind::FanOutBurst,
    Kind::FanInBurst,
    Kind::PairsQ1,
    Kind::LatencyQ0,
    Kind::LatencyQ1,
    Kind::LatencyQ2,
    Kind::Connections,
    Kind::Retained,
    Kind::LargeQ1,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::FanInQ0 => "fanin-q0",
            Kind::FanInQ1 => "fanin-q1",
            Kind::FanOutQ0 => "fanout-q0",
            Kind::FanOutBurst => "fanout-burst",
            Kind::FanInBurst => "fanin-burst",
            Kind::PairsQ1 => "pairs-q1",
            Kind::LatencyQ0 => "latency-q0",
            Kind::LatencyQ1 => "latency-q1",
            Kind::LatencyQ2 => "latency-q2",
            Kind::Connections => "connections",
            Kind::Retained => "retained",
            Kind::LargeQ1 => "large-q1",
        }
    }

    pub fn describe(self, p: &Params) -> String {
        let s = p.sizes();
        match self {
            Kind::FanInQ0 => format!(
                "8 publishers -> 1 '#' subscriber, QoS 0, 64 B, {} msgs each",
                s.fanin
            ),
            Kind::FanInQ1 => format!(
                "8 publishers -> 1 '#' subscriber, QoS 1, 64 B, {} msgs each",
                s.fanin / 2
            ),
            Kind::FanOutQ0 => format!(
                "1 publisher -> 50 subscribers, QoS 0, 64 B, {} msgs",
                s.fanout
            ),
            Kind::FanOutBurst => format!(
                "1 publisher -> 50 subscribers, QoS 0, 64 B, {} msgs sent without a window",
                s.fanout_burst
            ),
            Kind::FanInBurst => format!(
                "8 publishers -> 1 '#' subscriber, QoS 0, 64 B, {} msgs each sent without a window",
                s.fanin_burst
            ),
            Kind::PairsQ1 => format!(
                "100 publisher->subscriber pairs, distinct topics, QoS 1, 64 B, {} msgs each",
                s.pairs
            ),
            Kind::LatencyQ0 => format!(
                "1 -> 1, QoS 0, {} msgs paced at {}/s",
                s.latency, LATENCY_RATE
            ),
            Kind::LatencyQ1 => format!(
                "1 -> 1, QoS 1, {} msgs paced at {}/s",
                s.latency, LATENCY_RATE
            ),
            Kind::LatencyQ2 => format!(
                "1 -> 1, QoS 2, {} msgs paced at {}/s",
                s.latency, LATENCY_RATE
            ),
            Kind::Connections => {
                format!("{} idle clients, each subscribed to its own topic", p.conns)
            }
            Kind::Retained => format!("{} retained topics, then a new '#' subscriber", s.retained),
            Kind::LargeQ1 => format!("1 -> 1, QoS 1, 256 KiB payloads, {} msgs", s.large),
        }
    }

    /// Scenarios where the raw relay gives a meaningful upper bound (one hop, one thread).
    pub fn relay_capable(self) -> bool {
        matches!(
            self,
            Kind::FanInQ0 | Kind::FanInQ1 | Kind::FanInBurst | Kind::PairsQ1 | Kind::LargeQ1
        )
    }

    /// Throughput scenarios, where messages per broker CPU second are also reported.
    pub fn per_cpu_metric(self) -> bool {
        matches!(
            self,
            Kind::FanInQ0
                | Kind::FanInQ1
                | Kind::FanOutQ0
                | Kind::FanOutBurst
                | Kind::FanInBurst
                | Kind::PairsQ1
                | Kind::LargeQ1
        )
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        ALL.iter().copied().find(|k| k.name() == s)
    }
}

const LATENCY_RATE: u32 = 2000;

#[derive(Clone, Debug)]
pub struct Params {
    pub quick: bool,
    pub conns: usize,
    /// Hard limit for one scenario run.
    pub timeout: Duration,
    /// A run with no packet received for this long is abandoned as stalled.
    pub stall: Duration,
}

pub struct Sizes {
    fanin: u32,
    fanout: u32,
    fanout_burst: u32,
    fanin_burst: u32,
    pairs: u32,
    latency: u32,
    retained: u32,
    large: u32,
}

impl Params {
    fn sizes(&self) -> Sizes {
        if self.quick {
            Sizes {
                fanin: 5_000,
                fanout: 2_000,
                fanout_burst: 4_000,
                fanin_burst: 12_500,
                pairs: 200,
                latency: 1_000,
                retained: 2_000,
                large: 100,
            }
        } else {
            Sizes {
                fanin: 25_000,
                fanout: 10_000,
                fanout_burst: 4_000,
                fanin_burst: 50_000,
                pairs: 1_000,
                latency: 3_000,
                retained: 10_000,
                large: 400,
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Metric {
    /// Name and unit, e.g. "msgs/s" or "p99 µs".
    pub key: &'static str,
    pub value: f64,
    pub higher_better: bool,
    /// The metric the targets are judged on (drawn in the chart).
    pub headline: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub metrics: Vec<Metric>,
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub dup: u64,
    /// Messages that arrived after a later one from the same publisher on the same topic
    /// (MQTT 3.1.1 section 4.6 asks brokers to keep that order).
    pub reordered: u64,
    pub timed_out: bool,
    pub error: Option<String>,
    /// Longest time from a message being queued by its publisher to its arrival, over every
    /// message of a flow scenario; `None` where the scenario does not time messages.
    pub max_latency_us: Option<f64>,
}

/// What the connections scenario needs from the broker process between phases.
pub trait Probe {
    fn rss_kb(&self) -> u64;
}

pub fn run(kind: Kind, addr: SocketAddr, relay: bool, p: &Params, probe: &dyn Probe) -> Outcome {
    let s = p.sizes();
    let limits = Limits {
        deadline: Instant::now() + p.timeout,
        stall: p.stall,
    };
    match kind {
        Kind::FanInQ0 | Kind::FanInQ1 => {
            let qos = if kind == Kind::FanInQ0 { 0 } else { 1 };
            let n = if qos == 0 { s.fanin } else { s.fanin / 2 };
            let pubs: Vec<String> = (0..8).map(|i| format!("bench/fanin/{i}")).collect();
            let (subs, routes) = if relay {
                (pubs.clone(), (0..8).map(|i| vec![i]).collect())
            } else {
                (vec!["#".to_string()], vec![vec![0]; 8])
            };
            // Mosquitto 2.0.11 drops QoS 1 messages for a '#' subscriber fed by 8 publishers
            // with 25 per publisher outstanding, far below its queue limits; a window of 10
            // (like the pairs scenario) keeps that rare.
            let window = if qos == 0 { 100 } else { 10 };
            let flow = Flow {
                pubs,
                subs,
                routes,
                qos,
                n,
                payload: 64,
                window,
                pace: None,
            };
            run_flow(addr, relay, &flow, &limits, "msgs/s")
        }
        Kind::FanOutBurst => {
            let flow = Flow {
                pubs: vec!["bench/burst".to_string()],
                subs: vec!["bench/burst".to_string(); 50],
                routes: vec![(0..50).collect()],
                qos: 0,
                n: s.fanout_burst,
                payload: 64,
                window: s.fanout_burst,
                pace: None,
            };
            run_flow(addr, relay, &flow, &limits, "deliveries/s")
        }
        Kind::FanInBurst => {
            let pubs: Vec<String> = (0..8).map(|i| format!("bench/fanin/{i}")).collect();
            let (subs, routes) = if relay {
                (pubs.clone(), (0..8).map(|i| vec![i]).collect())
            } else {
                (vec!["#".to_string()], vec![vec![0]; 8])
            };
            let flow = Flow {
                pubs,
                subs,
                routes,
                qos: 0,
                n: s.fanin_burst,
                payload: 64,
                window: s.fanin_burst,
                pace: None,
            };
            run_flow(addr, relay, &flow, &limits, "msgs/s")
        }
        Kind::FanOutQ0 => {
            let subs = vec!["bench/fanout".to_string(); 50];
            let flow = Flow {
                pubs: vec!["bench/fanout".to_string()],
                subs,
                routes: vec![(0..50).collect()],
                qos: 0,
                n: s.fanout,
                payload: 64,
                window: 500,
                pace: None,
            };
            run_flow(addr, relay, &flow, &limits, "deliveries/s")
        }
        Kind::PairsQ1 => {
            let pubs: Vec<String> = (0..100).map(|i| format!("bench/pair/{i}")).collect();
            let flow = Flow {
                subs: pubs.clone(),
                pubs,
                routes: (0..100).map(|i| vec![i]).collect(),
                qos: 1,
                n: s.pairs,
                payload: 64,
                window: 50,
                pace: None,
            };
            run_flow(addr, relay, &flow, &limits, "msgs/s")
        }
        Kind::LargeQ1 => {
            let flow = Flow {
                pubs: vec!["bench/large".to_string()],
                subs: vec!["bench/large".to_string()],
                routes: vec![vec![0]],
                qos: 1,
                n: s.large,
                payload: 256 * 1024,
                window: 8,
                pace: None,
            };
            run_flow(addr, relay, &flow, &limits, "MB/s")
        }
        Kind::LatencyQ0 | Kind::LatencyQ1 | Kind::LatencyQ2 => {
            let qos = match kind {
                Kind::LatencyQ0 => 0,
                Kind::LatencyQ1 => 1,
                _ => 2,
            };
            let flow = Flow {
                pubs: vec!["bench/latency".to_string()],
                subs: vec!["bench/latency".to_string()],
                routes: vec![vec![0]],
                qos,
                n: s.latency,
                payload: 64,
                // Mosquitto's receive quota (max_inflight_messages 20) also counts incoming QoS 2
                // flows; staying under it keeps this a latency test, not a queueing test.
                window: 10,
                pace: Some(f64::from(LATENCY_RATE)),
            };
            run_flow(addr, relay, &flow, &limits, "latency")
        }
        Kind::Connections => connections(addr, p.conns, &limits, probe),
        Kind::Retained => retained(addr, s.retained, &limits),
    }
}

struct Limits {
    deadline: Instant,
    stall: Duration,
}

/// One client to set up: an MQTT client id and an optional subscription, or, towards the raw
/// relay, a hello naming its pair and role.
struct ClientSpec {
    id: String,
    sub: Option<(String, u8)>,
    hello: Option<[u8; 4]>,
}

/// Connects all clients (at most `window` handshakes at a time), waits for every CONNACK and
/// SUBACK (or, towards the relay, its "paired" PINGRESP), and returns their connection indices.
fn establish(
    net: &mut Net,
    addr: SocketAddr,
    specs: &[ClientSpec],
    window: usize,
    limits: &Limits,
) -> Result<Vec<usize>, String> {
    let base = net.len();
    let mut ready = vec![false; specs.len()];
    let mut got_connack = vec![false; specs.len()];
    let mut ready_count = 0;
    let mut started = 0;
    let mut error: Option<String> = None;
    let mut last_progress = Instant::now();
    while ready_count < specs.len() {
        while started < specs.len() && started - ready_count < window {
            let Some(spec) = specs.get(started) else {
                break;
            };
            let i = net.connect(addr).map_err(|e| format!("connect: {e}"))?;
            let buf = net.out.buf(i);
            if let Some(h) = spec.hello {
                buf.extend_from_slice(&h);
            } else {
                mqtt::connect(buf, spec.id.as_bytes(), KEEP_ALIVE);
                if let Some((filter, qos)) = &spec.sub {
                    mqtt::subscribe(buf, 1, filter.as_bytes(), *qos);
                }
            }
            started += 1;
        }
        if ready_count == specs.len() {
            break;
        }
        let before = net.packets_in;
        net.turn(Duration::from_millis(20), |_, i, p| {
            let Some(k) = i.checked_sub(base) else { return };
            let Some(spec) = specs.get(k) else { return };
            match p {
                Packet::Connack { code, .. } => {
                    if code != 0 {
                        error = Some(format!("CONNACK refused with code {code} for {}", spec.id));
                    }
                    if let Some(g) = got_connack.get_mut(k) {
                        *g = true;
                    }
                    if spec.sub.is_none() {
                        if let Some(r) = ready.get_mut(k) {
                            if !*r {
                                *r = true;
                                ready_count += 1;
                            }
                        }
                    }
                }
                Packet::Suback { codes, .. } => {
                    if codes.contains(&0x80) {
                        error = Some(format!("SUBACK failure for {}", spec.id));
                    }
                    if !got_connack.get(k).copied().unwrap_or(false) {
                        error = Some(format!("SUBACK before CONNACK for {}", spec.id));
                    }
                    if let Some(r) = ready.get_mut(k) {
                        if !*r {
                            *r = true;
                            ready_count += 1;
                        }
                    }
                }
                // The relay's "paired" signal.
                Packet::Pingresp if spec.hello.is_some() => {
                    if let Some(r) = ready.get_mut(k) {
                        if !*r {
                            *r = true;
                            ready_count += 1;
                        }
                    }
                }
                _ => {}
            }
        })
        .map_err(|e| format!("poll: {e}"))?;
        if let Some(e) = error.take() {
            return Err(e);
        }
        if let Some((i, e)) = net.first_error() {
            return Err(format!(
                "client {} during setup: {e}",
                i.saturating_sub(base)
            ));
        }
        if net.packets_in != before {
            last_progress = Instant::now();
        }
        let now = Instant::now();
        if now > limits.deadline || now.duration_since(last_progress) > limits.stall {
            return Err(format!(
                "setup timed out: {ready_count} of {} clients ready",
                specs.len()
            ));
        }
    }
    Ok((base..base + specs.len()).collect())
}

/// A bounded message flow: publishers on their topics, subscribers on their filters, `routes[p]`
/// listing the subscribers that must get publisher p's messages.
struct Flow {
    pubs: Vec<String>,
    subs: Vec<String>,
    routes: Vec<Vec<usize>>,
    qos: u8,
    n: u32,
    payload: usize,
    /// Largest number of a publisher's messages not yet seen by its slowest subscriber (and,
    /// for QoS > 0, not yet acknowledged): the generator never floods a broker's queues.
    window: u32,
    /// Messages per second for latency runs; `None` sends as fast as the window allows.
    pace: Option<f64>,
}

#[derive(Default)]
struct Track {
    bits: Vec<u64>,
    /// One past the highest sequence seen. The window follows it: a broker keeps a publisher's
    /// order per topic, so everything below is delivered or dropped, and a broker that drops
    /// messages (Mosquitto does, even at QoS 1, when its queues fill) cannot stall the run.
    next: u32,
    unique: u32,
}

struct PubState {
    conn: usize,
    topic: Vec<u8>,
    sent: u32,
    inflight: u32,
    next_pid: u16,
}

enum Role {
    Pub(usize),
    Sub(usize),
}

fn hello(pair: usize, role: u8) -> [u8; 4] {
    let p = (pair as u16).to_be_bytes();
    [p[0], p[1], role, 0]
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(idx).copied().unwrap_or(0) as f64
}

fn run_flow(
    addr: SocketAddr,
    relay: bool,
    f: &Flow,
    limits: &Limits,
    unit: &'static str,
) -> Outcome {
    let mut out = Outcome::default();
    let mut net = match Net::new() {
        Ok(n) => n,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let sub_qos = f.qos;
    let mut specs: Vec<ClientSpec> = f
        .subs
        .iter()
        .enumerate()
        .map(|(s, filter)| ClientSpec {
            id: format!("bench-sub-{s}"),
            sub: Some((filter.clone(), sub_qos)),
            hello: relay.then(|| hello(s, b'S')),
        })
        .collect();
    specs.extend(f.pubs.iter().enumerate().map(|(p, _)| ClientSpec {
        id: format!("bench-pub-{p}"),
        sub: None,
        hello: relay.then(|| hello(p, b'P')),
    }));
    // A relay pair is only ready once both halves are connected, so relay clients all start
    // at once; the clock starts after every pair is confirmed either way.
    let window = if relay { specs.len() } else { 64 };
    let conns = match establish(&mut net, addr, &specs, window, limits) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let nsubs = f.subs.len();
    let mut roles: Vec<Option<Role>> = (0..net.len()).map(|_| None).collect();
    for (k, &c) in conns.iter().enumerate() {
        if let Some(r) = roles.get_mut(c) {
            *r = Some(if k < nsubs {
                Role::Sub(k)
            } else {
                Role::Pub(k - nsubs)
            });
        }
    }
    let mut pubs: Vec<PubState> = f
        .pubs
        .iter()
        .enumerate()
        .map(|(p, t)| PubState {
            conn: conns.get(nsubs + p).copied().unwrap_or(0),
            topic: t.as_bytes().to_vec(),
            sent: 0,
            inflight: 0,
            next_pid: 1,
        })
        .collect();
    let sub_conn: Vec<usize> = conns.iter().take(nsubs).copied().collect();
    let words = (f.n as usize).div_ceil(64);
    let mut tracks: Vec<Vec<Option<Track>>> = (0..nsubs)
        .map(|_| (0..f.pubs.len()).map(|_| None).collect())
        .collect();
    for (p, subs) in f.routes.iter().enumerate() {
        for &s in subs {
            if let Some(slot) = tracks.get_mut(s).and_then(|t| t.get_mut(p)) {
                *slot = Some(Track {
                    bits: vec![0; words],
                    next: 0,
                    unique: 0,
                });
            }
        }
    }
    out.expected = f.routes.iter().map(|r| r.len() as u64).sum::<u64>() * u64::from(f.n);
    let mut latencies: Vec<u64> = Vec::with_capacity(f.n as usize);
    let mut max_latency_ns: u64 = 0;
    let mut received: u64 = 0;
    let mut dups: u64 = 0;
    let mut strays: u64 = 0;
    let mut reordered: u64 = 0;
    let mut protocol_error: Option<String> = None;
    let epoch = Instant::now();
    let mut first_send: Option<Instant> = None;
    let mut last_recv = epoch;
    let mut last_progress = Instant::now();
    // Messages given up on after a quiet second: a broker that drops a publisher's last
    // messages must not hold that publisher's window shut.
    let mut written_off: Vec<u32> = vec![0; f.pubs.len()];
    let batch: u32 = if f.payload > 4096 { 1 } else { 32 };
    loop {
        // Queue what the windows allow.
        let now = Instant::now();
        let mut more_ready = false;
        for (p, ps) in pubs.iter_mut().enumerate() {
            if ps.sent >= f.n {
                continue;
            }
            let slowest = f
                .routes
                .get(p)
                .into_iter()
                .flatten()
                .filter_map(|&s| tracks.get(s)?.get(p)?.as_ref().map(|t| t.next))
                .min()
                .unwrap_or(ps.sent)
                .max(written_off.get(p).copied().unwrap_or(0));
            let mut credit = f.window.saturating_sub(ps.sent - slowest.min(ps.sent));
            if f.qos > 0 {
                credit = credit.min(f.window.saturating_sub(ps.inflight));
            }
            if let Some(rate) = f.pace {
                let due = ((now.duration_since(epoch).as_secs_f64() * rate) as u32 + 1).min(f.n);
                credit = credit.min(due.saturating_sub(ps.sent));
            }
            credit = credit.min(f.n - ps.sent).min(batch);
            if credit == 0 || net.out.pending(ps.conn) > 256 * 1024 {
                continue;
            }
            let stamp = now.duration_since(epoch).as_nanos() as u64;
            let buf = net.out.buf(ps.conn);
            for _ in 0..credit {
                let pid = ps.next_pid;
                ps.next_pid = ps.next_pid.checked_add(1).unwrap_or(1);
                let seq = ps.sent;
                mqtt::publish_with(buf, &ps.topic, f.qos, false, pid, f.payload, |body| {
                    write_header(body, p as u32, seq, stamp);
                });
                ps.sent += 1;
                if f.qos > 0 {
                    ps.inflight += 1;
                }
            }
            first_send.get_or_insert(now);
            if f.pace.is_none() && ps.sent < f.n {
                more_ready = true;
            }
        }
        // All sent, all acknowledged, all delivered: done.
        let all_sent = pubs.iter().all(|ps| ps.sent >= f.n && ps.inflight == 0);
        if all_sent && received - dups >= out.expected {
            break;
        }
        let timeout = if more_ready {
            Duration::ZERO
        } else if let Some(rate) = f.pace {
            let next_due = pubs
                .first()
                .map(|ps| f64::from(ps.sent) / rate)
                .unwrap_or(0.0);
            let at = epoch + Duration::from_secs_f64(next_due);
            at.saturating_duration_since(now)
                .min(Duration::from_millis(50))
        } else {
            Duration::from_millis(50)
        };
        let before = net.packets_in;
        let res = net.turn(timeout, |o, i, pkt| {
            let Some(Some(role)) = roles.get(i) else {
                return;
            };
            match (role, pkt) {
                (
                    Role::Sub(s),
                    Packet::Publish {
                        qos, pid, payload, ..
                    },
                ) => {
                    let t = Instant::now();
                    match qos {
                        1 => mqtt::puback(o.buf(i), pid),
                        2 => mqtt::pubrec(o.buf(i), pid),
                        _ => {}
                    }
                    let Some((p, seq, stamp)) = read_header(payload) else {
                        strays += 1;
                        return;
                    };
                    let Some(track) = tracks
                        .get_mut(*s)
                        .and_then(|v| v.get_mut(p as usize))
                        .and_then(Option::as_mut)
                    else {
                        strays += 1;
                        return;
                    };
                    let (w, b) = ((seq / 64) as usize, seq % 64);
                    let Some(word) = track.bits.get_mut(w) else {
                        strays += 1;
                        return;
                    };
                    received += 1;
                    last_recv = t;
                    if *word & (1 << b) != 0 {
                        dups += 1;
                        return;
                    }
                    *word |= 1 << b;
                    if seq < track.next {
                        reordered += 1;
                    }
                    track.unique += 1;
                    track.next = track.next.max(seq + 1);
                    let sent_at = epoch + Duration::from_nanos(stamp);
                    let latency = t.saturating_duration_since(sent_at).as_nanos() as u64;
                    max_latency_ns = max_latency_ns.max(latency);
                    if f.pace.is_some() {
                        latencies.push(latency);
                    }
                }
                (Role::Sub(_), Packet::Pubrel(pid)) => mqtt::pubcomp(o.buf(i), pid),
                (Role::Pub(p), Packet::Puback(_)) | (Role::Pub(p), Packet::Pubcomp(_)) => {
                    if let Some(ps) = pubs.get_mut(*p) {
                        ps.inflight = ps.inflight.saturating_sub(1);
                    }
                }
                (Role::Pub(_), Packet::Pubrec(pid)) => mqtt::pubrel(o.buf(i), pid),
                (_, Packet::Pingresp) => {}
                (_, other) => {
                    protocol_error.get_or_insert_with(|| format!("unexpected packet {other:?}"));
                }
            }
        });
        if let Err(e) = res {
            out.error = Some(format!("poll: {e}"));
            break;
        }
        if let Some(e) = protocol_error.take() {
            out.error = Some(e);
            break;
        }
        let now = Instant::now();
        if net.packets_in != before {
            last_progress = now;
        }
        if let Some((i, e)) = net.first_error() {
            let who = match roles.get(i) {
                Some(Some(Role::Pub(p))) => format!("publisher {p}"),
                Some(Some(Role::Sub(s))) => format!("subscriber {s}"),
                _ => format!("client {i}"),
            };
            out.error = Some(format!("{who}: {e}"));
            break;
        }
        // Messages a broker dropped never arrive: once everything is sent (and acknowledged)
        // and the subscribers have been quiet for a while, the rest counts as lost.
        let quiet = now.duration_since(last_progress);
        if quiet > WRITE_OFF {
            if all_sent {
                break;
            }
            for (w, ps) in written_off.iter_mut().zip(&pubs) {
                *w = ps.sent;
            }
        }
        if now > limits.deadline || quiet > limits.stall {
            out.timed_out = true;
            let state: Vec<String> = pubs
                .iter()
                .enumerate()
                .take(8)
                .map(|(p, ps)| {
                    let seen: u32 = tracks
                        .iter()
                        .filter_map(|t| t.get(p)?.as_ref())
                        .map(|t| t.unique)
                        .sum();
                    format!(
                        "pub {p}: sent {} unacked {} delivered {seen}",
                        ps.sent, ps.inflight
                    )
                })
                .collect();
            out.error = Some(format!(
                "no progress for {:.0} s; {}",
                quiet.as_secs_f64(),
                state.join(", ")
            ));
            break;
        }
    }
    let unique: u64 = tracks
        .iter()
        .flatten()
        .flatten()
        .map(|t| u64::from(t.unique))
        .sum();
    out.received = received;
    out.dup = dups;
    out.reordered = reordered;
    if unique > 0 {
        out.max_latency_us = Some(max_latency_ns as f64 / 1000.0);
    }
    out.lost = out.expected.saturating_sub(unique);
    if strays > 0 && out.error.is_none() {
        out.error = Some(format!(
            "{strays} messages that no subscriber should have received"
        ));
    }
    let elapsed = first_send
        .map(|t| last_recv.saturating_duration_since(t).as_secs_f64())
        .unwrap_or(0.0);
    if f.pace.is_some() {
        latencies.sort_unstable();
        for (key, q) in [("p50 µs", 0.5), ("p99 µs", 0.99)] {
            out.metrics.push(Metric {
                key,

                value: percentile(&latencies, q) / 1000.0,
                higher_better: false,
                headline: true,
            });
        }
    } else if elapsed > 0.0 {
        let value = if unit == "MB/s" {
            unique as f64 * f.payload as f64 / elapsed / 1e6
        } else {
            unique as f64 / elapsed
        };
        out.metrics.push(Metric {
            key: unit,
            value,
            higher_better: true,
            headline: true,
        });
    }
    for &c in &sub_conn {
        net.abort(c);
    }
    for ps in &pubs {
        net.abort(ps.conn);
    }
    out
}

fn write_header(body: &mut [u8], publisher: u32, seq: u32, stamp: u64) {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&publisher.to_le_bytes());
    h[4..8].copy_from_slice(&seq.to_le_bytes());
    h[8..].copy_from_slice(&stamp.to_le_bytes());
    let n = body.len().min(HEADER);
    if let (Some(dst), Some(src)) = (body.get_mut(..n), h.get(..n)) {
        dst.copy_from_slice(src);
    }
}

fn read_header(payload: &[u8]) -> Option<(u32, u32, u64)> {
    let p = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
    let s = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    let t = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((p, s, t))
}

/// N idle subscribed clients: idle RSS, bytes per connection and connects per second; then a
/// message to a sample of them proves the broker still routes with all of them connected.
fn connections(addr: SocketAddr, n: usize, limits: &Limits, probe: &dyn Probe) -> Outcome {
    let mut out = Outcome::default();
    let mut net = match Net::new() {
        Ok(net) => net,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let idle_kb = probe.rss_kb();
    let specs: Vec<ClientSpec> = (0..n)
        .map(|i| ClientSpec {
            id: format!("idle-{i}"),
            sub: Some((format!("bench/idle/{i}"), 0)),
            hello: None,
        })
        .collect();
    let t0 = Instant::now();
    let conns = match establish(&mut net, addr, &specs, 64, limits) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let loaded_kb = probe.rss_kb();
    let per_conn = (loaded_kb.saturating_sub(idle_kb) as f64 * 1024.0) / n.max(1) as f64;
    out.metrics.push(Metric {
        key: "connects/s",
        value: n as f64 / secs,
        higher_better: true,
        headline: true,
    });
    out.metrics.push(Metric {
        key: "bytes/conn",
        value: per_conn,
        higher_better: false,
        headline: true,
    });
    out.metrics.push(Metric {
        key: "idle RSS KB",
        value: idle_kb as f64,
        higher_better: false,
        headline: true,
    });

    // Check that routing still works: one QoS 1 message to each of up to 100 sampled clients.
    let sample: Vec<usize> = (0..n).step_by((n / 100).max(1)).take(100).collect();
    let pub_spec = [ClientSpec {
        id: "idle-pub".into(),
        sub: None,
        hello: None,
    }];
    let pc = match establish(&mut net, addr, &pub_spec, 1, limits) {
        Ok(c) => c.first().copied().unwrap_or(0),
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let buf = net.out.buf(pc);
    for (k, &i) in sample.iter().enumerate() {
        let topic = format!("bench/idle/{i}");
        mqtt::publish_with(buf, topic.as_bytes(), 1, false, (k + 1) as u16, 64, |b| {
            write_header(b, 0, i as u32, 0)
        });
    }
    out.expected = sample.len() as u64;
    let mut seen = vec![false; n];
    let mut acks = 0;
    let mut unique = 0u64;
    let mut last_progress = Instant::now();
    while (acks < sample.len() || unique < out.expected) && out.error.is_none() {
        let before = net.packets_in;
        let res = net.turn(Duration::from_millis(50), |_, i, p| match p {
            Packet::Puback(_) if i == pc => acks += 1,
            Packet::Publish { payload, .. } => {
                out.received += 1;
                let ok =
                    read_header(payload).map(|(_, s, _)| s as usize) == conns.get(i).map(|_| i);
                match seen.get_mut(i) {
                    Some(s) if ok && !*s => {
                        *s = true;
                        unique += 1;
                    }
                    Some(_) if ok => out.dup += 1,
                    _ => {
                        out.error.get_or_insert_with(|| {
                            format!("client {i} got another client's message")
                        });
                    }
                }
            }
            _ => {}
        });
        if let Err(e) = res {
            out.error = Some(e.to_string());
        }
        if net.packets_in != before {
            last_progress = Instant::now();
        }
        if Instant::now() > limits.deadline || last_progress.elapsed() > limits.stall {
            out.timed_out = true;
            break;
        }
        if let Some((i, e)) = net.first_error() {
            out.error.get_or_insert_with(|| format!("client {i}: {e}"));
        }
    }
    out.lost = out.expected.saturating_sub(unique);
    for i in 0..net.len() {
        net.abort(i);
    }
    out
}

/// Stores `n` retained messages (QoS 1, waiting for every PUBACK), then times a new `#`
/// subscriber receiving all of them.
fn retained(addr: SocketAddr, n: u32, limits: &Limits) -> Outcome {
    let mut out = Outcome {
        expected: u64::from(n),
        ..Outcome::default()
    };
    let mut net = match Net::new() {
        Ok(net) => net,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let specs = [
        ClientSpec {
            id: "ret-pub".into(),
            sub: None,
            hello: None,
        },
        ClientSpec {
            id: "ret-sub".into(),
            sub: None,
            hello: None,
        },
    ];
    let (pc, sc) = match establish(&mut net, addr, &specs, 2, limits) {
        Ok(c) => (
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ),
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let t0 = Instant::now();
    let mut sent = 0u32;
    let mut acked = 0u32;
    let mut last_progress = Instant::now();
    while acked < n {
        if sent < n && sent - acked < 100 {
            let buf = net.out.buf(pc);
            while sent < n && sent - acked < 100 {
                let topic = format!("bench/ret/{sent}");
                let seq = sent;
                mqtt::publish_with(
                    buf,
                    topic.as_bytes(),
                    1,
                    true,
                    (seq % 65535 + 1) as u16,
                    64,
                    |b| write_header(b, 0, seq, 0),
                );
                sent += 1;
            }
        }
        let before = net.packets_in;
        if let Err(e) = net.turn(Duration::from_millis(50), |_, i, p| {
            if i == pc && matches!(p, Packet::Puback(_)) {
                acked += 1;
            }
        }) {
            out.error = Some(e.to_string());
            return out;
        }
        if net.packets_in != before {
            last_progress = Instant::now();
        }
        if let Some((i, e)) = net.first_error() {
            out.error = Some(format!("client {i} while storing: {e}"));
            return out;
        }
        if Instant::now() > limits.deadline || last_progress.elapsed() > limits.stall {
            out.timed_out = true;
            out.error = Some(format!("storing stalled: {acked} of {n} acknowledged"));
            return out;
        }
    }
    let store_secs = t0.elapsed().as_secs_f64();
    mqtt::subscribe(net.out.buf(sc), 1, b"#", 0);
    let t1 = Instant::now();
    let mut last_recv = t1;
    let mut seen = vec![false; n as usize];
    let mut unique = 0u64;
    let mut not_retained = 0u64;
    while unique < u64::from(n) {
        let before = net.packets_in;
        if let Err(e) = net.turn(Duration::from_millis(50), |_, i, p| {
            if i != sc {
                return;
            }
            if let Packet::Publish {
                retain, payload, ..
            } = p
            {
                out.received += 1;
                last_recv = Instant::now();
                if !retain {
                    not_retained += 1;
                }
                match read_header(payload).and_then(|(_, s, _)| seen.get_mut(s as usize)) {
                    Some(s) if !*s => {
                        *s = true;
                        unique += 1;
                    }
                    Some(_) => out.dup += 1,
                    None => {}
                }
            }
        }) {
            out.error = Some(e.to_string());
            break;
        }
        if net.packets_in != before {
            last_progress = Instant::now();
        }
        if let Some((i, e)) = net.first_error() {
            out.error = Some(format!("client {i} while delivering: {e}"));
            break;
        }
        if Instant::now() > limits.deadline || last_progress.elapsed() > limits.stall {
            out.timed_out = true;
            break;
        }
    }
    out.lost = u64::from(n).saturating_sub(unique);
    if not_retained > 0 {
        out.error.get_or_insert_with(|| {
            format!("{not_retained} messages arrived without the retain flag")
        });
    }
    let deliver = last_recv.saturating_duration_since(t1).as_secs_f64();
    out.metrics.push(Metric {
        key: "delivery ms",
        value: deliver * 1000.0,
        higher_better: false,
        headline: true,
    });
    out.metrics.push(Metric {
        key: "stores/s",

        value: f64::from(n) / store_secs.max(1e-9),
        higher_better: true,
        headline: false,
    });
    net.abort(pc);
    net.abort(sc);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_payloads_are_rejected() {
        let mut b = [0u8; 64];
        write_header(&mut b, 7, 99, 123456789);
        assert_eq!(read_header(&b), Some((7, 99, 123456789)));
        assert_eq!(read_header(&b[..15]), None);
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn names_round_trip() {
        for k in ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }
}
