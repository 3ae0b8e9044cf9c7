//! The broker's log output: Mosquitto's line format (`1700000000: message`) on stderr.
//!
//! One logger installed at start; `-v` widens it to debug lines.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct Logger {
    level: LevelFilter,
    timestamp: bool,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut line = String::with_capacity(96);
        if self.timestamp {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            line.push_str(&ts.to_string());
            line.push_str(": ");
        }
        if r.level() == Level::Error && !r.args().to_string().starts_with("Error") {
            line.push_str("Error: ");
        } else if r.level() == Level::Warn {
            line.push_str("Warning: ");
        }
        line.push_str(&r.args().to_string());
        line.push('\n');
        // A closed stderr must not take the broker down.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger. Safe to call more than once (later calls only change the level).
pub fn init(verbose: bool, timestamp: bool) {
    let level = if verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let _ = log::set_boxed_logger(Box::new(Logger { level, timestamp }));
    log::set_max_level(level);
}
