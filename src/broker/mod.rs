//! The broker applet: command line, configuration, and the single-threaded event loop with the
//! state it owns (connections, sessions, subscription tree, retained store).

pub mod core;
mod logging;
pub mod message;
pub mod retain;
mod server;
pub mod session;
mod signals;
pub mod slab;
pub mod subs;

#[cfg(test)]
mod tests;

use crate::config::{self, Config};
use log::{info, warn};
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str = "Usage: rmqtt [-c config_file] [-d] [-h] [-p port] [-v] [--test-config]

 -c : specify the broker config file.
 -d : put the broker into the background after starting.
 -h : display this help.
 -p : start the broker listening on the specified port.
      Not recommended in conjunction with the -c option.
 -v : verbose mode - enable all logging types. This overrides
      any logging options given in the config file.
 --test-config : check the configuration file, print the effective settings and exit.
 --version : print the version and exit.

See https://github.com/ for more information.";

fn usage_error(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    eprintln!("{USAGE}");
    3
}

pub fn main(args: Vec<String>) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optopt("c", "config-file", "config file", "FILE");
    opts.optflag("d", "daemon", "run in the background");
    opts.optflag("h", "help", "help");
    opts.optmulti("p", "port", "port", "PORT");
    opts.optflag("v", "verbose", "verbose");
    opts.optflag("", "version", "version");
    opts.optflag("", "test-config", "check the configuration and exit");
    let m = match opts.parse(args.iter().skip(1)) {
        Ok(m) => m,
        Err(e) => return usage_error(&e.to_string()),
    };
    if m.opt_present("h") {
        println!(
            "rmqtt version {} (a small MQTT v5.0/v3.1.1/v3.1 broker)\n\n{USAGE}",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    if m.opt_present("version") {
        println!("rmqtt version {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if let Some(extra) = m.free.first() {
        return usage_error(&format!("unknown argument '{extra}'"));
    }
    let mut ports = Vec::new();
    for p in m.opt_strs("p") {
        match p.parse::<u16>() {
            Ok(n) => ports.push(n),
            Err(_) => return usage_error(&format!("invalid port '{p}'")),
        }
    }
    if m.opt_present("d") {
        eprintln!("Error: -d (daemon mode) is not supported yet; run under procd or systemd.");
        return 1;
    }

    let (cfg, warnings) = match m.opt_str("c") {
        Some(path) => match config::mosquitto::load(std::path::Path::new(&path)) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("Error: {e}");
                return 3;
            }
        },
        None => (Config::default(), Vec::new()),
    };
    if m.opt_present("test-config") {
        for w in &warnings {
            eprintln!("Warning: {}", w.0);
        }
        println!("{cfg:#?}");
        return 0;
    }
    logging::init(m.opt_present("v"), cfg.log_timestamp);
    info!("rmqtt version {} starting", env!("CARGO_PKG_VERSION"));
    match &cfg.source {
        Some(p) => info!("Config loaded from {}.", p.display()),
        None => info!("Using default config."),
    }
    for w in &warnings {
        warn!("{}", w.0);
    }
    if cfg.local_only() {
        info!("Starting in local only mode. Connections will only be possible from clients running on this machine.");
        info!("Create a configuration file which defines a listener to allow remote access.");
    }
    run(&cfg, &ports)
}

fn run(cfg: &Config, ports: &[u16]) -> i32 {
    let bound = match server::bind(cfg, ports) {
        Ok(b) => b,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let mut signals = match signals::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log::error!("Error: unable to install signal handlers: {e}");
            return 1;
        }
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let broker = core::Broker::new(core::Limits::from_config(cfg), seed);
    let mut server = match server::Server::new(broker, cfg, bound) {
        Ok(s) => s,
        Err(e) => {
            log::error!("Error: {e}");
            return 3;
        }
    };
    info!("rmqtt version {} running", env!("CARGO_PKG_VERSION"));
    match server.run(&mut signals) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("Error: event loop failed: {e}");
            1
        }
    }
}
