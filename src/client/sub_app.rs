//! rmqtt_sub: subscribe and print what arrives, behaving like mosquitto_sub 2.0: same options,
//! output bytes, `-d` lines and exit codes (27 when `-W` runs out).

use super::options::{self, atoi, Applet, Config, Opt, OptError};
use super::output::{self, Style};
use super::session::{report_connect_error, ClientError, Session};
use super::signals;
use crate::protocol::topic::{matches, valid_topic_filter};
use crate::protocol::{
    reason, Ack, Packet, Publish, QoS, SubOptions, Subscribe, Unsubscribe, Version,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Exit code when `-W` expires: mosquitto's `MOSQ_ERR_TIMEOUT`.
const EXIT_TIMEOUT: i32 = 27;

/// libmosquitto's default reconnect delay (no backoff unless the client asks for one).
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

fn set(c: &mut Config, f: fn(&mut Config)) -> Result<(), OptError> {
    f(c);
    Ok(())
}

/// Options only rmqtt_sub takes.
pub(super) static SUB_OPTS: &[Opt] = &[
    Opt {
        names: &["-C"],
        arg_missing: Some("Error: -C argument given but no count specified.\n\n"),
        apply: |c, v| {
            let n = atoi(v);
            if n < 1 {
                return Err(OptError::Bad(format!(
                    "Error: Invalid message count \"{}\".\n\n",
                    n as i32
                )));
            }
            c.msg_count = n.min(i64::from(u32::MAX)) as u32;
            Ok(())
        },
    },
    Opt {
        names: &["-E"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.exit_after_sub = true),
    },
    Opt {
        names: &["-F"],
        arg_missing: Some("Error: -F argument given but no format specified.\n\n"),
        apply: |c, v| {
            output::check_format(v).map_err(OptError::Bad)?;
            c.format = Some(v.to_owned());
            Ok(())
        },
    },
    Opt {
        names: &["-N"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.eol = false),
    },
    Opt {
        names: &["--pretty"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.pretty = true),
    },
    Opt {
        names: &["-R"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.no_retain = true),
    },
    Opt {
        names: &["--remove-retained"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.remove_retained = true),
    },
    Opt {
        names: &["--retain-as-published"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.retain_as_published = true),
    },
    Opt {
        names: &["--retained-only"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.retained_only = true),
    },
    Opt {
        names: &["-T", "--filter-out"],
        arg_missing: Some("Error: -T argument given but no topic filter specified.\n\n"),
        apply: |c, v| {
            if !valid_topic_filter(v) {
                return Err(OptError::Bad(format!(
                    "Error: Invalid filter topic '{v}', are all '+' and '#' wildcards correct?\n"
                )));
            }
            c.filter_outs.push(v.to_owned());
            Ok(())
        },
    },
    Opt {
        names: &["-U", "--unsubscribe"],
        arg_missing: Some("Error: -U argument given but no unsubscribe topic specified.\n\n"),
        apply: |c, v| {
            if !valid_topic_filter(v) {
                return Err(OptError::Bad(format!(
                    "Error: Invalid unsubscribe topic '{v}', are all '+' and '#' wildcards correct?\n"
                )));
            }
            c.unsub_topics.push(v.to_owned());
            Ok(())
        },
    },
    Opt {
        names: &["-v", "--verbose"],
        arg_missing: None,
        apply: |c, _| set(c, |c| c.verbose = true),
    },
    Opt {
        names: &["-W"],
        arg_missing: Some("Error: -W argument given but no timeout specified.\n\n"),
        apply: |c, v| {
            let n = atoi(v);
            if n < 1 {
                return Err(OptError::Bad(format!(
                    "Error: Invalid timeout \"{}\".\n\n",
                    n as i32
                )));
            }
            c.timeout = n.min(i64::from(u32::MAX)) as u32;
            Ok(())
        },
    },
];

fn print_version() {
    println!(
        "rmqtt_sub version {} running on rmqtt {}.",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_VERSION")
    );
}

fn print_usage() {
    super::usage::print(super::usage::SUB, "rmqtt_sub");
}

/// What the subscriber loop decided.
enum Flow {
    Continue,
    /// DISCONNECT sent; exit with this code.
    Done(i32),
}

struct Subscriber<'a> {
    cfg: &'a Config,
    s: Session,
    /// QoS 2 messages received, printed once PUBREL arrives.
    pending: HashMap<u16, Publish>,
    /// Still printing (false once -C or --retained-only said stop).
    processing: bool,
    msg_count: u32,
    /// Mid of the last --remove-retained publish not yet acknowledged, 0 if none.
    last_mid: u16,
}

impl Subscriber<'_> {
    fn subscribe(&mut self) -> Result<(), ClientError> {
        let v5 = self.s.version == Version::V5;
        let opts = SubOptions {
            qos: QoS::from_u8(self.cfg.qos).unwrap_or_default(),
            no_local: false,
            retain_as_published: v5 && self.cfg.retain_as_published,
            retain_handling: if v5 && self.cfg.no_retain { 2 } else { 0 },
        };
        let pid = self.s.next_mid();
        let sub = Subscribe {
            pid,
            filters: self.cfg.topics.iter().map(|t| (t.clone(), opts)).collect(),
            properties: self.cfg.props.subscribe.clone(),
        };
        self.s.send(&Packet::Subscribe(sub))?;
        if !self.cfg.unsub_topics.is_empty() {
            let pid = self.s.next_mid();
            let unsub = Unsubscribe {
                pid,
                filters: self.cfg.unsub_topics.clone(),
                properties: self.cfg.props.unsubscribe.clone(),
            };
            self.s.send(&Packet::Unsubscribe(unsub))?;
        }
        Ok(())
    }

    fn finish(&mut self, code: i32) -> Result<Flow, ClientError> {
        self.s.disconnect(&self.cfg.props.disconnect)?;
        Ok(Flow::Done(code))
    }

    fn on_message(&mut self, m: Publish) -> Result<Flow, ClientError> {
        if !self.processing {
            return Ok(Flow::Continue);
        }
        let cfg = self.cfg;
        if cfg.retained_only && !m.retain {
            self.processing = false;
            if self.last_mid == 0 {
                return self.finish(0);
            }
            return Ok(Flow::Continue);
        }
        if m.retain && cfg.no_retain {
            return Ok(Flow::Continue);
        }
        if cfg.filter_outs.iter().any(|f| matches(f, &m.topic)) {
            return Ok(Flow::Continue);
        }
        if cfg.remove_retained && m.retain {
            let mid = self.s.next_mid();
            let clear = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: m.topic.clone(),
                pid: mid,
                payload: Bytes::new(),
                properties: Default::default(),
            };
            self.s.send_publish(clear, mid)?;
            self.last_mid = mid;
        }
        let style = Style {
            format: cfg.format.as_deref(),
            verbose: cfg.verbose,
            eol: cfg.eol,
            pretty: cfg.pretty,
        };
        output::print_message(&style, &m, cfg.quiet);
        if cfg.msg_count > 0 {
            self.msg_count += 1;
            if self.msg_count == cfg.msg_count {
                self.processing = false;
                if self.last_mid == 0 {
                    return self.finish(0);
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn handle(&mut self, p: Packet) -> Result<Flow, ClientError> {
        match p {
            Packet::Publish(m) => {
                self.s.ack_incoming(&m)?;
                match m.qos {
                    QoS::ExactlyOnce => {
                        self.pending.insert(m.pid, m);
                        Ok(Flow::Continue)
                    }
                    _ => self.on_message(m),
                }
            }
            Packet::PubRel(a) => {
                self.s.send(&Packet::PubComp(Ack::new(a.pid)))?;
                match self.pending.remove(&a.pid) {
                    Some(m) => self.on_message(m),
                    None => Ok(Flow::Continue),
                }
            }
            Packet::SubAck(a) => {
                if self.cfg.debug {
                    let codes: Vec<String> = a.codes.iter().map(|c| c.to_string()).collect();
                    println!("Subscribed (mid: {}): {}", a.pid, codes.join(", "));
                }
                if !a.codes.is_empty() && a.codes.iter().all(|&c| c >= 0x80) {
                    if !self.cfg.quiet {
                        eprintln!("All subscription requests were denied.");
                    }
                    return self.finish(0);
                }
                if self.cfg.exit_after_sub {
                    return self.finish(0);
                }
                Ok(Flow::Continue)
            }
            Packet::PubAck(a) | Packet::PubComp(a) => {
                if !self.processing && a.pid == self.last_mid {
                    return self.finish(0);
                }
                if a.pid == self.last_mid {
                    self.last_mid = 0;
                }
                Ok(Flow::Continue)
            }
            Packet::PubRec(a) => {
                self.s.send(&Packet::PubRel(Ack::new(a.pid)))?;
                Ok(Flow::Continue)
            }
            Packet::Disconnect(_) => Err(ClientError::BrokerDisconnect),
            _ => Ok(Flow::Continue),
        }
    }
}

pub fn main(args: Vec<String>) -> i32 {
    let cfg = match options::load_or_exit(Applet::Sub, SUB_OPTS, &args, print_usage, print_version)
    {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(code) = super::unsupported(&cfg) {
        return code;
    }
    let deadline =
        (cfg.timeout > 0).then(|| Instant::now() + Duration::from_secs(u64::from(cfg.timeout)));
    signals::install();
    let s = match Session::connect(&cfg) {
        Ok((s, _)) => s,
        Err(e) => return report_connect_error(&e, cfg.version, cfg.quiet, false),
    };
    let mut sub = Subscriber {
        cfg: &cfg,
        s,
        pending: HashMap::new(),
        processing: true,
        msg_count: 0,
        last_mid: 0,
    };
    loop {
        match sub.run(deadline) {
            Ok(code) => return code,
            Err(ClientError::Stopped) => return sub.stop(),
            Err(e) if e.is_connection_lost() => {
                if let Some(code) = sub.reconnect(deadline) {
                    return code;
                }
            }
            Err(e) => return report_connect_error(&e, cfg.version, cfg.quiet, false),
        }
    }
}

impl Subscriber<'_> {
    /// Subscribes and handles packets until the applet is done (`Ok`) or the connection fails.
    fn run(&mut self, deadline: Option<Instant>) -> Result<i32, ClientError> {
        self.subscribe()?;
        loop {
            match self.s.recv(deadline)? {
                Some(p) => {
                    if let Flow::Done(code) = self.handle(p)? {
                        return Ok(code);
                    }
                }
                None => return self.timed_out(true),
            }
        }
    }

    fn timed_out(&mut self, connected: bool) -> Result<i32, ClientError> {
        if !self.cfg.quiet {
            eprintln!("Timed out");
        }
        if connected {
            self.s.disconnect(&self.cfg.props.disconnect)?;
        }
        Ok(EXIT_TIMEOUT)
    }

    /// SIGINT / SIGTERM while connected: mosquitto_sub's handler sends DISCONNECT with reason
    /// "disconnect with will message" (which an MQTT 5 broker honours by publishing the will;
    /// a 3.x DISCONNECT carries no reason, so there the will is discarded) and exits 0.
    fn stop(&mut self) -> i32 {
        let _ = self
            .s
            .disconnect_with(reason::DISCONNECT_WITH_WILL, &self.cfg.props.disconnect);
        0
    }

    /// The connection was lost: as libmosquitto's `loop_forever`, wait a second and connect
    /// again, every second, silently, until it works; then `run` subscribes again. `Some`: the
    /// applet ends with this exit code instead (a signal, `-W`, or a refused CONNECT).
    fn reconnect(&mut self, deadline: Option<Instant>) -> Option<i32> {
        loop {
            let wait = match deadline {
                Some(d) => RECONNECT_DELAY.min(d.saturating_duration_since(Instant::now())),
                None => RECONNECT_DELAY,
            };
            if signals::sleep(wait) {
                return Some(0);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Some(self.timed_out(false).unwrap_or(EXIT_TIMEOUT));
            }
            match self.s.reconnect(self.cfg) {
                Ok((s, _)) => {
                    self.s = s;
                    return None;
                }
                Err(ClientError::Stopped) => return Some(0),
                Err(e) if e.is_connection_lost() || matches!(e, ClientError::Lookup) => {}
                Err(e) => {
                    return Some(report_connect_error(
                        &e,
                        self.cfg.version,
                        self.cfg.quiet,
                        false,
                    ))
                }
            }
        }
    }
}
