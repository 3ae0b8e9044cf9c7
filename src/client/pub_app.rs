//! rmqtt_pub: publish one message (or one per stdin line, or the same one N times) and exit,
//! behaving like mosquitto_pub 2.0: same options, output, exit codes and QoS flows (it waits
//! for PUBACK / PUBCOMP before it disconnects).

use super::options::{self, atoi, Applet, Config, Opt, OptError, PubMode};
use super::session::{report_connect_error, ClientError, Session};
use super::signals;
use crate::protocol::{reason, Ack, Packet, Properties, Publish, QoS, Version};
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

fn set_mode(c: &mut Config, mode: PubMode) -> Result<(), OptError> {
    if c.pub_mode != PubMode::None {
        return Err(OptError::Bad(
            "Error: Only one type of message can be sent at once.\n\n".into(),
        ));
    }
    c.pub_mode = mode;
    Ok(())
}

/// Options only rmqtt_pub takes.
pub(super) static PUB_OPTS: &[Opt] = &[
    Opt {
        names: &["-f", "--file"],
        arg_missing: Some("Error: -f argument given but no file specified.\n\n"),
        apply: |c, v| set_mode(c, PubMode::File(v.to_owned())),
    },
    Opt {
        names: &["-l", "--stdin-line"],
        arg_missing: None,
        apply: |c, _| set_mode(c, PubMode::StdinLine),
    },
    Opt {
        names: &["-m", "--message"],
        arg_missing: Some("Error: -m argument given but no message specified.\n\n"),
        apply: |c, v| set_mode(c, PubMode::Message(v.as_bytes().to_vec())),
    },
    Opt {
        names: &["-n", "--null-message"],
        arg_missing: None,
        apply: |c, _| set_mode(c, PubMode::Null),
    },
    Opt {
        names: &["-r", "--retain"],
        arg_missing: None,
        apply: |c, _| {
            c.retain = true;
            Ok(())
        },
    },
    Opt {
        names: &["--repeat"],
        arg_missing: Some("Error: --repeat argument given but no count specified.\n\n"),
        apply: |c, v| {
            let n = atoi(v);
            if n < 1 {
                return Err(OptError::Bad(
                    "Error: --repeat argument must be >0.\n\n".into(),
                ));
            }
            c.repeat_count = n.min(i64::from(u32::MAX)) as u32;
            Ok(())
        },
    },
    Opt {
        names: &["--repeat-delay"],
        arg_missing: Some("Error: --repeat-delay argument given but no time specified.\n\n"),
        apply: |c, v| {
            let f: f64 = v.trim().parse().unwrap_or(0.0);
            if f < 0.0 || !f.is_finite() {
                return Err(OptError::Bad(
                    "Error: --repeat-delay argument must be >=0.0.\n\n".into(),
                ));
            }
            c.repeat_delay = Duration::from_secs_f64(f.min(1e9));
            Ok(())
        },
    },
    Opt {
        names: &["-s", "--stdin-file"],
        arg_missing: None,
        apply: |c, _| set_mode(c, PubMode::StdinFile),
    },
];

fn print_version() {
    println!(
        "rmqtt_pub version {} running on rmqtt {}.",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    );
}

fn print_usage() {
    super::usage::print(super::usage::PUB, "rmqtt_pub");
}

/// Where each unacknowledged message of ours stands: the packet it waits for.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    PubAck,
    PubRec,
    PubComp,
}

/// libmosquitto's default reconnect delay (no backoff unless the client asks for one).
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

struct Publisher<'a> {
    cfg: &'a Config,
    s: Session,
    /// False while the connection is lost and not yet made again.
    connected: bool,
    topic: String,
    qos: QoS,
    retain: bool,
    props: Properties,
    /// Our unacknowledged QoS 1/2 messages, kept whole so that they can be sent again after a
    /// reconnect.
    inflight: HashMap<u16, (Waiting, Publish)>,
    quiet: bool,
}

impl Publisher<'_> {
    fn publish(&mut self, payload: Bytes) -> Result<(), ClientError> {
        let mid = self.s.next_mid();
        let p = Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.as_str().into(),
            pid: if self.qos == QoS::AtMostOnce { 0 } else { mid },
            payload,
            properties: if self.s.version == Version::V5 {
                self.props.clone()
            } else {
                Properties::default()
            },
        };
        match self.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.inflight.insert(mid, (Waiting::PubAck, p.clone()));
            }
            QoS::ExactlyOnce => {
                self.inflight.insert(mid, (Waiting::PubRec, p.clone()));
            }
        }
        self.s.send_publish(p, mid)
    }

    /// Publishes; a lost connection is made again (the message goes out again then if it is
    /// QoS 1 or 2; a QoS 0 message is lost, as with libmosquitto).
    fn publish_or_reconnect(&mut self, payload: Bytes) -> Result<(), ClientError> {
        match self.publish(payload) {
            Err(e) if e.is_connection_lost() => self.reconnect(),
            r => r,
        }
    }

    /// [`Publisher::step`], connecting again when the connection is lost.
    fn step_or_reconnect(&mut self, deadline: Option<Instant>) -> Result<Option<()>, ClientError> {
        match self.step(deadline) {
            Err(e) if e.is_connection_lost() => self.reconnect().map(Some),
            r => r,
        }
    }

    /// As libmosquitto's `loop_forever`: wait a second, connect again every second until it
    /// works, silently; then send our unacknowledged messages again (PUBLISH with DUP set, or
    /// PUBREL where PUBREC had come).
    fn reconnect(&mut self) -> Result<(), ClientError> {
        self.connected = false;
        loop {
            if signals::sleep(RECONNECT_DELAY) {
                return Err(ClientError::Stopped);
            }
            match self.s.reconnect(self.cfg) {
                Ok((s, _)) => {
                    self.s = s;
                    self.connected = true;
                    break;
                }
                Err(e) if e.is_connection_lost() || matches!(e, ClientError::Lookup) => {}
                Err(e) => return Err(e),
            }
        }
        let mut mids: Vec<u16> = self.inflight.keys().copied().collect();
        crate::sort::sort(&mut mids);
        for mid in mids {
            let Some((waiting, p)) = self.inflight.get(&mid).cloned() else {
                continue;
            };
            if waiting == Waiting::PubComp {
                self.s.send(&Packet::PubRel(Ack::new(mid)))?;
            } else {
                self.s.send_publish(Publish { dup: true, ..p }, mid)?;
            }
        }
        Ok(())
    }

    fn failed(&self, mid: u16, code: u8) {
        if !self.quiet {
            eprintln!(
                "Warning: Publish {mid} failed: {}.",
                reason::reason_string(code)
            );
        }
    }

    /// Handles one packet from the broker. `Ok(None)`: the deadline passed.
    fn step(&mut self, deadline: Option<Instant>) -> Result<Option<()>, ClientError> {
        let Some(p) = self.s.recv(deadline)? else {
            return Ok(None);
        };
        let v5 = self.s.version == Version::V5;
        match p {
            Packet::PubAck(a)
                if self.inflight.remove(&a.pid).is_some() && v5 && a.reason >= 0x80 =>
            {
                self.failed(a.pid, a.reason);
            }
            Packet::PubAck(_) => {}
            Packet::PubRec(a) => {
                if v5 && a.reason >= 0x80 {
                    if self.inflight.remove(&a.pid).is_some() {
                        self.failed(a.pid, a.reason);
                    }
                } else {
                    if let Some(entry) = self.inflight.get_mut(&a.pid) {
                        entry.0 = Waiting::PubComp;
                    }
                    self.s.send(&Packet::PubRel(Ack::new(a.pid)))?;
                }
            }
            Packet::PubComp(a) => {
                self.inflight.remove(&a.pid);
            }
            Packet::Publish(p) => self.s.ack_incoming(&p)?,
            Packet::PubRel(a) => self.s.send(&Packet::PubComp(Ack::new(a.pid)))?,
            Packet::Disconnect(_) => return Err(ClientError::BrokerDisconnect),
            _ => {}
        }
        Ok(Some(()))
    }

    fn drain(&mut self) -> Result<(), ClientError> {
        while !self.inflight.is_empty() {
            self.step_or_reconnect(None)?;
        }
        Ok(())
    }
}

pub(super) fn read_input(cfg: &Config) -> Result<Option<Bytes>, i32> {
    Ok(Some(match &cfg.pub_mode {
        PubMode::Message(m) => Bytes::from(m.clone()),
        PubMode::Null => Bytes::new(),
        PubMode::File(f) => match std::fs::read(f) {
            Ok(b) => Bytes::from(b),
            Err(_) => {
                if !cfg.quiet {
                    eprintln!("Error: Unable to open file \"{f}\".");
                    eprintln!("Error loading input file \"{f}\".");
                }
                return Err(1);
            }
        },
        PubMode::StdinFile => {
            let mut b = Vec::new();
            if std::io::stdin().lock().read_to_end(&mut b).is_err() {
                if !cfg.quiet {
                    eprintln!("Error loading input from stdin.");
                }
                return Err(1);
            }
            Bytes::from(b)
        }
        PubMode::StdinLine | PubMode::None => return Ok(None),
    }))
}

/// What [`StdinLines::next`] gives.
enum Line {
    Got(Bytes),
    Timeout,
    Eof,
}

/// stdin line by line, read on the applet's only thread: [`StdinLines::next`] waits for
/// input at most as long as it is told (poll(2)), so the connection keeps being served
/// (acknowledgements, pings) while stdin is quiet. A reader thread would bring the thread
/// machinery of std and the C library (about 25 KB of the mips binary) for this one queue.
struct StdinLines {
    /// stdin's descriptor, duplicated: read directly, past std's buffer.
    file: Option<std::fs::File>,
    /// Bytes read and not yet given out; `buf[..scanned]` has no newline.
    buf: Vec<u8>,
    scanned: usize,
    eof: bool,
}

impl StdinLines {
    fn new() -> StdinLines {
        use std::os::fd::AsFd;
        let file = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from);
        StdinLines {
            eof: file.is_none(),
            file,
            buf: Vec::new(),
            scanned: 0,
        }
    }

    /// The next line (without its `\n`; a last line without one counts too), or `Timeout`
    /// when nothing complete came within `wait`, or `Eof` after the last line.
    fn next(&mut self, wait: Duration) -> Line {
        let mut wait = wait;
        loop {
            if let Some(i) = self
                .buf
                .get(self.scanned..)
                .and_then(|b| b.iter().position(|&c| c == b'\n').map(|i| i + self.scanned))
            {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                self.scanned = 0;
                return Line::Got(Bytes::from(line));
            }
            self.scanned = self.buf.len();
            if self.eof {
                if self.buf.is_empty() {
                    return Line::Eof;
                }
                self.scanned = 0;
                return Line::Got(Bytes::from(std::mem::take(&mut self.buf)));
            }
            let Some(file) = self.file.as_mut() else {
                self.eof = true;
                continue;
            };
            if !readable(file, wait) {
                return Line::Timeout;
            }
            let mut chunk = [0u8; 4096];
            match file.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Line::Timeout,
                Err(_) => self.eof = true,
            }
            // What is read now is read without waiting again.
            wait = Duration::ZERO;
        }
    }
}

/// Whether `file` has input (or end of file, or an error) within `wait`; an interrupting
/// signal counts as not readable, so that the caller looks at its stop flag.
#[allow(unsafe_code)]
fn readable(file: &std::fs::File, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, and its count.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0
}

fn run(cfg: &Config, p: &mut Publisher<'_>, message: Option<Bytes>) -> Result<(), ClientError> {
    match message {
        Some(m) => {
            for n in 0..cfg.repeat_count {
                if n > 0 && !cfg.repeat_delay.is_zero() {
                    let until = Instant::now() + cfg.repeat_delay;
                    while p.step_or_reconnect(Some(until))?.is_some() {}
                }
                p.publish_or_reconnect(m.clone())?;
                p.drain()?;
            }
        }
        None => {
            let mut rx = StdinLines::new();
            let max = cfg.max_inflight as usize;
            let mut eof = false;
            loop {
                if signals::stop_requested() {
                    return Err(ClientError::Stopped);
                }
                if !eof && p.inflight.len() < max {
                    let wait = if p.inflight.is_empty() {
                        Duration::from_millis(100)
                    } else {
                        Duration::ZERO
                    };
                    match rx.next(wait) {
                        Line::Got(line) => {
                            p.publish_or_reconnect(line)?;
                            continue;
                        }
                        Line::Timeout => {}
                        Line::Eof => eof = true,
                    }
                }
                if eof && p.inflight.is_empty() {
                    break;
                }
                let deadline = if eof || p.inflight.len() >= max {
                    None
                } else {
                    Some(Instant::now() + Duration::from_millis(5))
                };
                p.step_or_reconnect(deadline)?;
            }
        }
    }
    p.s.disconnect(&cfg.props.disconnect)
}

pub fn main(args: Vec<String>) -> i32 {
    let cfg = match options::load_or_exit(Applet::Pub, PUB_OPTS, &args, print_usage, print_version)
    {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.topics.is_empty() || cfg.pub_mode == PubMode::None {
        eprintln!("Error: Both topic and message must be supplied.");
        print_usage();
        return 1;
    }
    if let Some(code) = super::unsupported(&cfg) {
        return code;
    }
    let message = match read_input(&cfg) {
        Ok(m) => m,
        Err(code) => return code,
    };
    signals::install();
    let s = match Session::connect(&cfg) {
        Ok((s, _)) => s,
        Err(e) => return report_connect_error(&e, cfg.version, cfg.quiet, true),
    };
    let mut p = Publisher {
        cfg: &cfg,
        s,
        connected: true,
        topic: cfg.topics.first().cloned().unwrap_or_default(),
        qos: QoS::from_u8(cfg.qos).unwrap_or_default(),
        retain: cfg.retain,
        props: cfg.props.publish.clone(),
        inflight: HashMap::new(),
        quiet: cfg.quiet,
    };
    match run(&cfg, &mut p, message) {
        Ok(()) => 0,
        // mosquitto_pub's SIGINT: a plain DISCONNECT (the will is discarded), exit 0.
        Err(ClientError::Stopped) => {
            if p.connected {
                let _ = p.s.disconnect(&cfg.props.disconnect);
            }
            0
        }
        Err(e) => report_connect_error(&e, cfg.version, cfg.quiet, false),
    }
}
