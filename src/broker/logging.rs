//! The broker's log output in Mosquitto's format (`1700000000: message`), to the destinations
//! and of the types the configuration names: stdout, stderr, syslog, a file, the `$SYS/broker/log`
//! topics, or nowhere.
//!
//! Log types are Mosquitto's (error, warning, notice, information, debug, subscribe,
//! unsubscribe, websockets): the level comes from the `log` macro, the finer type from its
//! target (`info!(target: "notice", ...)`). A failing destination never takes the broker down.
//!
//! Syslog is one RFC 3164 datagram (`<PRI>rmqtt[PID]: message`) to `/dev/log`, written here
//! rather than with the `syslog` crate: the crate (7.0, with `time` and `hostname`) made the
//! stripped x86_64 release binary 46,544 bytes larger (1,949,784 -> 1,996,328) for the same
//! datagram; logd, rsyslog and journald all take this form.

use crate::config::{Config, LogDest};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub const ERROR: u32 = 1;
pub const WARNING: u32 = 2;
pub const NOTICE: u32 = 4;
pub const INFORMATION: u32 = 8;
pub const DEBUG: u32 = 16;
pub const SUBSCRIBE: u32 = 32;
pub const UNSUBSCRIBE: u32 = 64;
pub const WEBSOCKETS: u32 = 128;
pub const ALL: u32 = 0xff;
/// Mosquitto's default set.
pub const DEFAULT_TYPES: u32 = ERROR | WARNING | NOTICE | INFORMATION;

fn type_bit(name: &str) -> u32 {
    match name {
        "error" => ERROR,
        "warning" => WARNING,
        "notice" => NOTICE,
        "information" => INFORMATION,
        "debug" => DEBUG,
        "subscribe" => SUBSCRIBE,
        "unsubscribe" => UNSUBSCRIBE,
        "websockets" => WEBSOCKETS,
        "all" => ALL,
        _ => 0,
    }
}

/// The Mosquitto log type of a record.
fn record_type(r: &Record<'_>) -> u32 {
    match r.level() {
        Level::Error => ERROR,
        Level::Warn => WARNING,
        Level::Info => match r.target() {
            "information" => INFORMATION,
            _ => NOTICE,
        },
        Level::Debug | Level::Trace => match r.target() {
            "subscribe" => SUBSCRIBE,
            "unsubscribe" => UNSUBSCRIBE,
            "websockets" => WEBSOCKETS,
            _ => DEBUG,
        },
    }
}

enum Sink {
    Stdout,
    Stderr,
    /// The socket once connected, the facility (already shifted), the socket's path.
    Syslog(Option<UnixDatagram>, u32, PathBuf),
    File(PathBuf, Option<File>),
    Topic,
}

/// Log settings taken from the configuration; rebuilt on SIGHUP.
pub struct Settings {
    sinks: Vec<Sink>,
    types: u32,
    timestamp: bool,
    timestamp_format: Option<String>,
}

impl Settings {
    pub fn from_config(cfg: &Config, verbose: bool) -> Settings {
        let mut types = cfg.log_types.iter().fold(0, |t, n| t | type_bit(n));
        if cfg.log_types.iter().any(|t| t == "none") {
            types = 0;
        } else if cfg.log_types.is_empty() {
            types = DEFAULT_TYPES;
        }
        if verbose {
            types = ALL;
        }
        let facility = syslog_facility(cfg.log_facility);
        let mut sinks = Vec::new();
        for d in &cfg.log_dest {
            sinks.push(match d {
                LogDest::Stdout => Sink::Stdout,
                LogDest::Stderr => Sink::Stderr,
                LogDest::Syslog => Sink::Syslog(None, facility, PathBuf::from("/dev/log")),
                LogDest::File(p) => Sink::File(p.clone(), None),
                LogDest::Topic => Sink::Topic,
                LogDest::None => continue,
            });
        }
        if cfg.log_dest.is_empty() {
            sinks.push(Sink::Stderr);
        }
        Settings {
            sinks,
            types,
            timestamp: cfg.log_timestamp,
            timestamp_format: cfg.log_timestamp_format.clone(),
        }
    }

    fn level(&self) -> LevelFilter {
        if self.types & (DEBUG | SUBSCRIBE | UNSUBSCRIBE | WEBSOCKETS) != 0 {
            LevelFilter::Debug
        } else if self.types & (NOTICE | INFORMATION) != 0 {
            LevelFilter::Info
        } else if self.types & WARNING != 0 {
            LevelFilter::Warn
        } else if self.types & ERROR != 0 {
            LevelFilter::Error
        } else {
            LevelFilter::Off
        }
    }
}

thread_local! {
    /// Lines for `log_dest topic`, published by the event loop on its next pass. Only the
    /// loop's thread logs, so a thread-local queue is all the hand-over needed.
    static TOPIC_QUEUE: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
}

/// Lines waiting to be published on `$SYS/broker/log/...`, with their log type.
pub fn take_topic_lines() -> Vec<(u32, String)> {
    TOPIC_QUEUE.with(|q| std::mem::take(&mut *q.borrow_mut()))
}

/// The `$SYS/broker/log/X` letter of a log type, as Mosquitto names them.
pub fn topic_letter(t: u32) -> &'static str {
    match t {
        ERROR => "E",
        WARNING => "W",
        NOTICE => "N",
        INFORMATION => "I",
        SUBSCRIBE => "M",
        UNSUBSCRIBE => "M",
        WEBSOCKETS => "WS",
        _ => "D",
    }
}

struct Logger {
    settings: Arc<Mutex<Settings>>,
}

/// A strftime subset (`%Y %m %d %H %M %S %s %F %T %%`), in UTC.
pub fn format_time(fmt: &str, secs: u64) -> String {
    let c = crate::civil::from_unix(i64::try_from(secs).unwrap_or(i64::MAX));
    let (y, mo, d, h, mi, s) = (c.year, c.month, c.day, c.hour, c.minute, c.second);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('s') => out.push_str(&secs.to_string()),
            Some('F') => out.push_str(&format!("{y}-{mo:02}-{d:02}")),
            Some('T') => out.push_str(&format!("{h:02}:{mi:02}:{s:02}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The facility bits of a syslog priority: `daemon` (3) by default as in Mosquitto,
/// `log_facility N` for local0..local7 (16 + N), shifted into place (RFC 3164: facility
/// times 8 plus severity).
fn syslog_facility(log_facility: Option<u32>) -> u32 {
    log_facility.map_or(3 << 3, |n| (16 + n.min(7)) << 3)
}

fn syslog_severity(t: u32) -> u32 {
    match t {
        ERROR => 3,
        WARNING => 4,
        NOTICE => 5,
        INFORMATION => 6,
        _ => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        let Ok(mut st) = self.settings.lock() else {
            return;
        };
        let t = record_type(r);
        if st.types & t == 0 {
            return;
        }
        let mut msg = r.args().to_string();
        if t == ERROR && !msg.starts_with("Error") {
            msg.insert_str(0, "Error: ");
        } else if t == WARNING && !msg.starts_with("Warning") {
            msg.insert_str(0, "Warning: ");
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = if st.timestamp {
            match &st.timestamp_format {
                Some(f) => format!("{}: {msg}\n", format_time(f, secs)),
                None => format!("{secs}: {msg}\n"),
            }
        } else {
            format!("{msg}\n")
        };
        for sink in &mut st.sinks {
            // A closed or full destination must not take the broker down.
            match sink {
                Sink::Stdout => {
                    let _ = std::io::stdout().lock().write_all(line.as_bytes());
                }
                Sink::Stderr => {
                    let _ = std::io::stderr().lock().write_all(line.as_bytes());
                }
                Sink::File(path, file) => {
                    if file.is_none() {
                        *file = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&*path)
                            .ok();
                    }
                    if let Some(f) = file {
                        let _ = f.write_all(line.as_bytes());
                    }
                }
                Sink::Syslog(sock, facility, path) => {
                    if sock.is_none() {
                        *sock = UnixDatagram::unbound()
                            .and_then(|s| s.connect(&*path).map(|()| s))
                            .ok();
                    }
                    if let Some(s) = sock {
                        let pri = *facility | syslog_severity(t);
                        let m = format!("<{pri}>rmqtt[{}]: {msg}", std::process::id());
                        if s.send(m.as_bytes()).is_err() {
                            *sock = None;
                        }
                    }
                }
                // The payload is the line as written elsewhere, timestamp included when
                // `log_timestamp` is on (Mosquitto's log__vprintf does the same).
                Sink::Topic => TOPIC_QUEUE.with(|q| {
                    let mut q = q.borrow_mut();
                    if q.len() < 1000 {
                        q.push((t, line.trim_end_matches('\n').to_owned()));
                    }
                }),
            }
        }
    }

    fn flush(&self) {}
}

/// Handle to change the settings of the installed logger (SIGHUP).
pub struct Handle {
    settings: Arc<Mutex<Settings>>,
}

impl Handle {
    pub fn replace(&self, s: Settings) {
        log::set_max_level(s.level());
        if let Ok(mut cur) = self.settings.lock() {
            *cur = s;
        }
    }
}

/// Installs the logger with `s`. Call once.
pub fn init(s: Settings) -> Handle {
    let level = s.level();
    let settings = Arc::new(Mutex::new(s));
    let _ = log::set_boxed_logger(Box::new(Logger {
        settings: settings.clone(),
    }));
    log::set_max_level(level);
    Handle { settings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        // 2023-11-14 22:13:20 UTC
        assert_eq!(
            format_time("%Y-%m-%dT%H:%M:%S", 1_700_000_000),
            "2023-11-14T22:13:20"
        );
        assert_eq!(format_time("%F %T %% %s", 0), "1970-01-01 00:00:00 % 0");
        assert_eq!(format_time("%q%", 0), "%q%");
    }

    /// `log_facility 5` reaches the datagram: local5 is facility 21, so a notice has
    /// priority 21 * 8 + 5 = 173 and a warning 172; without it, daemon (3): 29. The socket
    /// stands in for `/dev/log`.
    #[test]
    fn syslog_datagram_carries_the_facility() {
        let dir = std::env::temp_dir().join(format!("rmqtt-syslog-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        for (facility, notice, warning) in
            [(Some(5), 173, 172), (None, 29, 28), (Some(0), 133, 132)]
        {
            let path = dir.join(format!("log-{facility:?}"));
            let _ = std::fs::remove_file(&path);
            let server = UnixDatagram::bind(&path).unwrap();
            let c = Config {
                log_dest: vec![LogDest::Syslog],
                log_facility: facility,
                ..Config::default()
            };
            let mut s = Settings::from_config(&c, false);
            for sink in &mut s.sinks {
                if let Sink::Syslog(_, _, p) = sink {
                    p.clone_from(&path);
                }
            }
            let logger = Logger {
                settings: Arc::new(Mutex::new(s)),
            };
            for level in [Level::Info, Level::Warn] {
                logger.log(
                    &Record::builder()
                        .level(level)
                        .target("notice")
                        .args(format_args!("hello"))
                        .build(),
                );
            }
            let mut buf = [0u8; 256];
            let pid = std::process::id();
            for (want, text) in [(notice, "hello"), (warning, "Warning: hello")] {
                let n = server.recv(&mut buf).unwrap();
                assert_eq!(
                    std::str::from_utf8(&buf[..n]).unwrap(),
                    format!("<{want}>rmqtt[{pid}]: {text}"),
                    "log_facility {facility:?}"
                );
            }
            let _ = std::fs::remove_file(&path);
        }
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn types_from_config() {
        let mut c = Config::default();
        assert_eq!(Settings::from_config(&c, false).types, DEFAULT_TYPES);
        c.log_types = vec!["error".into(), "subscribe".into()];
        let s = Settings::from_config(&c, false);
        assert_eq!(s.types, ERROR | SUBSCRIBE);
        assert_eq!(s.level(), LevelFilter::Debug);
        c.log_types = vec!["none".into()];
        assert_eq!(Settings::from_config(&c, false).level(), LevelFilter::Off);
        assert_eq!(Settings::from_config(&c, true).types, ALL);
    }
}
