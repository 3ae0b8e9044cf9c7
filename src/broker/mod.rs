//! The broker applet: command line, configuration, and the single-threaded event loop with the
//! state it owns (connections, sessions, subscription tree, retained store).

mod admission;
mod args;
mod bridge;
mod compact;
mod conn;
mod connect;
pub mod core;
mod delivery;
pub mod journal;
mod listen;
mod logging;
pub mod memory;
pub mod message;
pub mod mosquitto_db;
mod packet_log;
pub mod persist;
mod process;
mod publish;
pub mod retain;
mod server;
pub mod session;
mod sessions;
mod signals;
pub mod slab;
pub mod subs;
mod subscribe;
mod sys;
mod timers;
pub mod ws;

#[cfg(test)]
mod tests;

use crate::config::{self, Config};
use log::{info, warn};
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "Usage: rmqtt [-c|-u config_file] [-d] [-h] [-p port] [-v] [--user name] [--test-config]

 -c : specify the broker config file (Mosquitto syntax, or UCI syntax when its
      first line is a `config` section).
 -u : specify the broker config file in UCI syntax (OpenWrt's /etc/config/rmqtt).
 -d : put the broker into the background after starting.
 -h : display this help.
 -p : start the broker listening on the specified port.
      Not recommended in conjunction with the -c option.
 -v : verbose mode - enable all logging types. This overrides
      any logging options given in the config file.
 --user : when started as root, drop privileges to this user after opening the
          listeners and persistence (overrides `user` in the config file).
 --test-config : check the configuration file, print the effective settings and exit.
 --version : print the version and exit.

The configuration file follows mosquitto.conf(5): https://mosquitto.org/man/mosquitto-conf-5.html
(what rmqtt does differently is in its README).";

fn usage_error(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    eprintln!("{USAGE}");
    3
}

pub fn main(args: Vec<String>) -> i32 {
    let m = match args::parse(args.get(1..).unwrap_or_default()) {
        Ok(m) => m,
        Err(e) => return usage_error(&e),
    };
    if m.present(args::HELP) {
        println!(
            "rmqtt version {} (a small MQTT v5.0/v3.1.1/v3.1 broker)\n\n{USAGE}",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    if m.present(args::VERSION) {
        println!("rmqtt version {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if let Some(extra) = m.free.first() {
        return usage_error(&format!("unknown argument '{extra}'"));
    }
    let mut ports = Vec::new();
    for p in m.values(args::PORT) {
        match p.parse::<u16>() {
            Ok(n) => ports.push(n),
            Err(_) => return usage_error(&format!("invalid port '{p}'")),
        }
    }
    let user = m.value(args::USER);
    if user.as_deref() == Some("") {
        return usage_error("--user needs a user name");
    }
    let source = Source {
        file: m
            .value(args::UCI)
            .map(|p| (p, true))
            .or_else(|| m.value(args::CONFIG).map(|p| (p, false))),
        user,
    };
    let (cfg, warnings) = match source.load() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("Error: {e}");
            return 3;
        }
    };
    if m.present(args::TEST_CONFIG) {
        for w in &warnings {
            eprintln!("Warning: {}", w.0);
        }
        // The files the broker reads at start-up are checked too. One that does not exist
        // (yet: a package creates it on install) is a warning, one that is wrong an error.
        let referenced = cfg.password_file.iter().chain(cfg.acl_file.iter()).chain(
            cfg.listeners.iter().flat_map(|l| {
                [
                    &l.certfile,
                    &l.keyfile,
                    &l.cafile,
                    &l.password_file,
                    &l.acl_file,
                ]
                .into_iter()
                .flatten()
            }),
        );
        let mut missing = false;
        for f in referenced {
            if !f.exists() {
                eprintln!(
                    "Warning: {} does not exist; the broker will not start without it.",
                    f.display()
                );
                missing = true;
            }
        }
        if !missing {
            if let Err(e) = core::Auth::load(&cfg) {
                eprintln!("Error: {e}");
                return 3;
            }
            let tls = cfg
                .listeners
                .iter()
                .filter(|l| l.certfile.is_some() || l.keyfile.is_some());
            for l in tls {
                if let Err(e) = crate::tls::ServerTls::new(l) {
                    eprintln!("Error: {e}");
                    return 3;
                }
            }
        }
        print!("{}", config::summary::summary(&cfg));
        if let Some(line) = mosquitto_db::preview(&cfg) {
            print!("{line}");
        }
        return 0;
    }
    let verbose = m.present(args::VERBOSE);
    let log = logging::init(logging::Settings::from_config(&cfg, verbose));
    if m.present(args::DAEMON) {
        if let Err(e) = process::daemonize() {
            eprintln!("Error: unable to run in the background: {e}");
            return 1;
        }
    }
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
    run(cfg, &source, &ports, verbose, log)
}

/// Where the configuration comes from: the file named by `-c`/`-u` (re-read on SIGHUP) and
/// the `--user` override.
struct Source {
    /// The path, and whether `-u` (UCI) named it.
    file: Option<(String, bool)>,
    user: Option<String>,
}

impl Source {
    fn load(&self) -> Result<(Config, Vec<config::mosquitto::Warning>), config::ConfigError> {
        let (mut cfg, warnings) = match &self.file {
            Some((path, uci)) => config::uci::load_auto(std::path::Path::new(path), *uci)?,
            None => (Config::default(), Vec::new()),
        };
        if let Some(u) = &self.user {
            cfg.user = Some(u.clone());
        }
        Ok((cfg, warnings))
    }
}

/// Settings a running broker cannot change: each one that differs is named in a warning and
/// the running value is kept in `new`, so that the next reload warns again.
fn keep_restart_only(old: &Config, new: &mut Config) {
    fn keep<T: PartialEq + Clone>(key: &str, old: &T, new: &mut T) {
        if old != new {
            warn!("Warning: {key} changed; restart the broker to apply it.");
            *new = old.clone();
        }
    }
    keep("persistence", &old.persistence, &mut new.persistence);
    keep(
        "persistence_location",
        &old.persistence_location,
        &mut new.persistence_location,
    );
    keep(
        "persistence_file",
        &old.persistence_file,
        &mut new.persistence_file,
    );
    keep(
        "persistence_journal",
        &old.persistence_journal,
        &mut new.persistence_journal,
    );
    keep(
        "journal_location",
        &old.journal_location,
        &mut new.journal_location,
    );
    keep("user", &old.user, &mut new.user);
    keep("pid_file", &old.pid_file, &mut new.pid_file);
}

/// Re-reads the configuration file for SIGHUP; `None` (and a log line) if it no longer loads.
fn reload(source: &Source) -> Option<Config> {
    source.file.as_ref()?;
    match source.load() {
        Ok((c, warnings)) => {
            for w in &warnings {
                warn!("{}", w.0);
            }
            Some(c)
        }
        Err(e) => {
            log::error!("Error: reload failed, keeping the running configuration: {e}");
            None
        }
    }
}

fn run(
    mut cfg: Config,
    source: &Source,
    ports: &[u16],
    verbose: bool,
    log: logging::Handle,
) -> i32 {
    // Handlers first: a SIGHUP sent while the broker starts (a reload right after a start,
    // as procd and LuCI do) is then a reload on the first pass, not the end of the process.
    let signals = match signals::Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log::error!("Error: unable to install signal handlers: {e}");
            return 1;
        }
    };
    let bound = match server::bind(&cfg, ports) {
        Ok(b) => b,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    let mut broker = core::Broker::new(core::Limits::from_config(&cfg), seed);
    broker.auth = match core::Auth::load(&cfg) {
        Ok(a) => a,
        Err(e) => {
            log::error!("Error: {e}");
            return 3;
        }
    };
    let mut server = match server::Server::new(broker, &cfg, bound, signals) {
        Ok(s) => s,
        Err(e) => {
            log::error!("Error: {e}");
            return 3;
        }
    };
    let _pid_file = match &cfg.pid_file {
        Some(p) => match process::PidFile::create(p) {
            Ok(f) => Some(f),
            Err(e) => {
                log::error!("Error: unable to write pid file {}: {e}", p.display());
                return 1;
            }
        },
        None => None,
    };
    if let Some(user) = &cfg.user {
        match process::drop_privileges(user) {
            Ok(true) => info!("Dropped privileges to user {user}."),
            Ok(false) => {}
            Err(e) => {
                log::error!("Error: {e}");
                return 1;
            }
        }
    }
    info!("rmqtt version {} running", env!("CARGO_PKG_VERSION"));
    loop {
        match server.run() {
            Ok(server::Stop::Terminate) => return 0,
            Ok(server::Stop::Reload) => {
                info!("Reloading config.");
                if let Some(mut new) = reload(source) {
                    log.replace(logging::Settings::from_config(&new, verbose));
                    keep_restart_only(&cfg, &mut new);
                    let auth = match core::Auth::load(&new) {
                        Ok(a) => Some(a),
                        Err(e) => {
                            log::error!(
                                "Error: reloading the password file or ACL failed, keeping the old ones: {e}"
                            );
                            None
                        }
                    };
                    server.reload(&new, ports, auth);
                    cfg = new;
                }
            }
            Err(e) => {
                log::error!("Error: event loop failed: {e}");
                return 1;
            }
        }
    }
}
