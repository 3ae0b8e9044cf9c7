//! The one option table: every key rmqtt knows, what it sets and what it means.
//!
//! mosquitto.conf lines (`key args...`) are applied straight from [`OPTIONS`]. UCI options are
//! first turned into the same `(key, args)` pairs, the way OpenWrt's mosquitto init script
//! writes a mosquitto.conf from `/etc/config/mosquitto` (see [`super::uci`]), so an option
//! exists in both syntaxes by construction. Handlers never panic on input; the drivers add
//! the file, line and option name to what they return.

use super::mosquitto::Warning;
use super::{
    parse_bool, Anonymous, Bridge, BridgeTopic, Config, Direction, Listener, ListenerProtocol,
    LogDest, StartType,
};
use std::path::PathBuf;
use std::time::Duration;

/// Where a key may appear. In mosquitto.conf, listener keys apply to the last `listener` (or
/// the default one) and bridge keys to the last `connection`. In UCI the scope names the
/// section type: `mosquitto`, `persistence`, `listener`, `bridge`; [`Scope::Both`] keys are
/// accepted in `mosquitto` and `listener` sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    General,
    Persistence,
    Listener,
    Both,
    Bridge,
}

impl Scope {
    /// The UCI section types that accept keys of this scope.
    pub fn sections(self) -> &'static [&'static str] {
        match self {
            Scope::General => &["mosquitto"],
            Scope::Persistence => &["persistence"],
            Scope::Listener => &["listener"],
            Scope::Both => &["mosquitto", "listener"],
            Scope::Bridge => &["bridge"],
        }
    }
}

/// The parser state both syntaxes drive.
pub(super) struct State {
    pub cfg: Config,
    /// Index of the listener that listener-scoped keys apply to; `None` before any `listener`.
    pub current: Option<usize>,
    /// The implicit listener made by the old `port`/`bind_address` keys.
    pub default_listener: Option<usize>,
    pub warnings: Vec<Warning>,
    pub depth: usize,
    /// UCI spells booleans 0 and 1: error messages say so.
    pub uci: bool,
    /// `file:line: name` of the statement being applied, for warnings.
    pub at: String,
    /// The option as the user wrote it (`key`, or `section.option` in UCI), for errors.
    pub label: String,
}

impl State {
    pub fn new(cfg: Config, uci: bool) -> State {
        State {
            cfg,
            current: None,
            default_listener: None,
            warnings: Vec::new(),
            depth: 0,
            uci,
            at: String::new(),
            label: String::new(),
        }
    }

    fn bridge(&mut self, key: &str) -> Result<&mut Bridge, String> {
        self.cfg
            .bridges
            .last_mut()
            .ok_or_else(|| format!("{key} given before any connection"))
    }

    fn listener(&mut self) -> Result<&mut Listener, String> {
        let idx = match self.current.or(self.default_listener) {
            Some(i) => i,
            None => {
                // Mosquitto applies listener options given before any `listener` to the
                // default listener on 1883.
                self.cfg.listeners.push(Listener::new(1883, None));
                let i = self.cfg.listeners.len() - 1;
                self.default_listener = Some(i);
                i
            }
        };
        self.cfg
            .listeners
            .get_mut(idx)
            .ok_or_else(|| "given outside a listener".to_owned())
    }

    fn boolean(&self, args: &[&str]) -> Result<bool, String> {
        let v = one(args)?;
        let hint = if self.uci { "0 or 1" } else { "true or false" };
        parse_bool(v).ok_or_else(|| format!("invalid boolean value ({v}); use {hint}"))
    }

    /// Applies `key args`. `Ok(false)`: no such key.
    pub fn apply(&mut self, key: &str, args: &[&str]) -> Result<bool, String> {
        if key.starts_with("auth_opt_") || key.starts_with("plugin_opt_") {
            // Options for a plugin rmqtt does not load.
            return refused(self, args).map(|_| true);
        }
        let Some(opt) = find(key) else {
            return Ok(false);
        };
        if opt.scope == Scope::Bridge && key != "connection" && self.cfg.bridges.is_empty() {
            return Err(format!("{key} given before any connection"));
        }
        (opt.set)(self, args)?;
        Ok(true)
    }
}

/// `label: message`, unless `message` is a sentence about `label` already (refused,
/// misplaced or repeated).
pub(super) fn with_label(label: &str, m: String) -> String {
    let about = [
        " is not supported",
        " given before any connection",
        " defined twice",
    ];
    if m.starts_with(label) && about.iter().any(|t| m.contains(t)) {
        m
    } else {
        format!("{label}: {m}")
    }
}

type Handler = fn(&mut State, &[&str]) -> Result<(), String>;

/// One key: its mosquitto.conf name, where it may appear, what it does, its description
/// (which `openwrt/README.md` shows for the UCI option).
pub struct Opt {
    pub key: &'static str,
    pub scope: Scope,
    set: Handler,
    pub doc: &'static str,
}

/// The key `key`, if rmqtt knows it.
pub fn find(key: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.key == key)
}

/// Keys that may be given more than once, each adding a value: a UCI `list`.
pub const LISTS: &[&str] = &[
    "log_dest",
    "log_type",
    "websockets_origin",
    "topic",
    "address",
    "addresses",
];

macro_rules! opt {
    ($key:literal, $scope:ident, $set:expr, $doc:literal) => {
        Opt {
            key: $key,
            scope: Scope::$scope,
            set: $set,
            doc: $doc,
        }
    };
}

/// A boolean field of [`Config`].
macro_rules! flag {
    ($field:ident) => {
        |s: &mut State, a: &[&str]| {
            s.cfg.$field = s.boolean(a)?;
            Ok(())
        }
    };
}

/// A numeric field of [`Config`], in `min..=max`.
macro_rules! num {
    ($($field:ident).+, $min:expr, $max:expr) => {
        |s: &mut State, a: &[&str]| {
            s.cfg.$($field).+ = number(a, $min, $max)? as _;
            Ok(())
        }
    };
}

/// An `Option<PathBuf>` field of [`Config`].
macro_rules! file {
    ($field:ident) => {
        |s: &mut State, a: &[&str]| {
            s.cfg.$field = Some(path(a)?);
            Ok(())
        }
    };
}

/// A field of the current [`Listener`], from a conversion of the arguments.
macro_rules! listener {
    ($field:ident, $conv:expr) => {
        |s: &mut State, a: &[&str]| {
            let v = $conv(s, a)?;
            s.listener()?.$field = v;
            Ok(())
        }
    };
}

/// A field of the current [`Bridge`], from a conversion of the arguments.
macro_rules! bridge {
    ($key:literal, $field:ident, $conv:expr) => {
        |s: &mut State, a: &[&str]| {
            let v = $conv(s, a)?;
            s.bridge($key)?.$field = v;
            Ok(())
        }
    };
}

fn c_path(_: &State, a: &[&str]) -> Result<Option<PathBuf>, String> {
    path(a).map(Some)
}

fn c_bool(s: &State, a: &[&str]) -> Result<bool, String> {
    s.boolean(a)
}

fn c_string(_: &State, a: &[&str]) -> Result<Option<String>, String> {
    one(a).map(|v| Some(v.to_owned()))
}

fn c_tls_version(_: &State, a: &[&str]) -> Result<Option<String>, String> {
    let v = one(a)?;
    if !["tlsv1.2", "tlsv1.3"].contains(&v) {
        return Err(format!(
            "unsupported tls_version ({v}); use tlsv1.2 or tlsv1.3"
        ));
    }
    Ok(Some(v.to_owned()))
}

/// `password_file`/`acl_file`: with `per_listener_settings true` one inside a listener block
/// is that listener's own, as in Mosquitto; anywhere else it is the global one, which the
/// listeners without their own use.
fn auth_file(s: &mut State, a: &[&str], acl: bool) -> Result<(), String> {
    let p = path(a)?;
    let own = s.cfg.per_listener_settings;
    let slot = match s.current.and_then(|i| s.cfg.listeners.get_mut(i)) {
        Some(l) if own => {
            if acl {
                &mut l.acl_file
            } else {
                &mut l.password_file
            }
        }
        _ if acl => &mut s.cfg.acl_file,
        _ => &mut s.cfg.password_file,
    };
    *slot = Some(p);
    Ok(())
}

/// A cipher list of names from `known` (OpenSSL's); anything else is an error naming what
/// rustls has, since OpenSSL's cipher-string language (`HIGH:!aNULL`) is not implemented.
fn ciphers(a: &[&str], known: &[(&str, &str)]) -> Result<Option<String>, String> {
    let list = a.join(":");
    for n in super::cipher_names(&list) {
        if !known.iter().any(|(o, _)| *o == n) {
            let names: Vec<&str> = known.iter().map(|(o, _)| *o).collect();
            return Err(format!(
                "unsupported cipher ({n}); use {}",
                names.join(", ")
            ));
        }
    }
    if super::cipher_names(&list).next().is_none() {
        return Err("missing value".to_owned());
    }
    Ok(Some(list))
}

/// An option rmqtt does not implement and whose absence changes nothing about security.
fn ignored(s: &mut State, _: &[&str]) -> Result<(), String> {
    let w = Warning(format!("{} is not supported by rmqtt; ignored", s.at));
    s.warnings.push(w);
    Ok(())
}

/// An option rmqtt does not implement and that would weaken security if ignored.
fn refused(s: &mut State, _: &[&str]) -> Result<(), String> {
    Err(format!(
        "{} is not supported by rmqtt; refusing to start without it",
        s.label
    ))
}

const LOG_TYPES: &[&str] = &[
    "debug",
    "error",
    "warning",
    "notice",
    "information",
    "subscribe",
    "unsubscribe",
    "websockets",
    "none",
    "all",
];

/// Every key rmqtt knows, in both syntaxes.
pub const OPTIONS: &[Opt] = &[
    // Listeners.
    opt!("listener", General, key_listener, "a listener: 'PORT [ADDRESS]'"),
    opt!("port", General, key_port, "a listener on this port, besides the listener sections"),
    opt!("bind_address", General, key_bind_address, "address of the port listener"),
    opt!("protocol", Both, listener!(protocol, |_: &State, a: &[&str]| match one(a)? {
        "mqtt" => Ok(ListenerProtocol::Mqtt),
        "websockets" => Ok(ListenerProtocol::WebSockets),
        other => Err(format!("invalid protocol ({other}); use mqtt or websockets")),
    }), "mqtt or websockets"),
    opt!("max_connections", Both, key_max_connections, "client limit (in a listener: on it), -1 for none"),
    opt!("allow_anonymous", Both, key_allow_anonymous,
        "let clients connect without a username: 1, 0 (default) or local (loopback clients only)"),
    opt!("cafile", Listener, listener!(cafile, c_path), "TLS: CA certificates"),
    opt!("capath", Listener, listener!(capath, c_path), "TLS: CA directory"),
    opt!("certfile", Listener, listener!(certfile, c_path), "TLS: server certificate (enables TLS)"),
    opt!("keyfile", Listener, listener!(keyfile, c_path), "TLS: private key"),
    opt!("require_certificate", Listener, listener!(require_certificate, c_bool),
        "TLS: clients must present a certificate"),
    opt!("use_identity_as_username", Listener, listener!(use_identity_as_username, c_bool),
        "TLS: the certificate CN is the username"),
    opt!("use_subject_as_username", Listener, listener!(use_subject_as_username, c_bool),
        "TLS: the certificate subject, RFC 2253 as Mosquitto writes it, is the username"),
    opt!("ciphers", Listener, listener!(ciphers, |_: &State, a: &[&str]| ciphers(a, super::TLS12_CIPHERS)),
        "TLS 1.2 suites, OpenSSL names separated by ':' (ECDHE-ECDSA-AES128-GCM-SHA256...)"),
    opt!("ciphers_tls1.3", Listener, listener!(ciphers_tls13, |_: &State, a: &[&str]| ciphers(a, super::TLS13_CIPHERS)),
        "TLS 1.3 suites: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256"),
    opt!("crlfile", Listener, listener!(crlfile, c_path),
        "TLS: certificate revocation lists (PEM); revoked client certificates are refused"),
    opt!("bind_interface", Listener, listener!(bind_interface, c_string),
        "listen on this network device's addresses (br-lan), as Mosquitto does"),
    opt!("tls_version", Listener, listener!(tls_version, c_tls_version),
        "TLS: lowest version, tlsv1.2 or tlsv1.3"),
    opt!("use_username_as_clientid", Both, flag!(use_username_as_clientid),
        "the username is the client id; clients without one are refused"),
    opt!("set_tcp_nodelay", General, flag!(set_tcp_nodelay),
        "TCP_NODELAY on client sockets (default 1: writes are batched already)"),
    opt!("websockets_origin", General, |s, a| {
        s.cfg.websockets_origins.push(one(a)?.to_owned());
        Ok(())
    }, "list: Origin headers a WebSocket upgrade may carry (default: any)"),
    // Security.
    opt!("per_listener_settings", General, flag!(per_listener_settings),
        "a listener's allow_anonymous, password_file and acl_file override the global ones"),
    opt!("password_file", Both, |s, a| auth_file(s, a, false),
        "Mosquitto password file (rmqtt_passwd); in a listener: its own (per_listener_settings)"),
    opt!("acl_file", Both, |s, a| auth_file(s, a, true),
        "Mosquitto ACL file; in a listener: its own (per_listener_settings)"),
    opt!("clientid_prefixes", General, |s, a| {
        s.cfg.clientid_prefixes = Some(one(a)?.to_owned());
        Ok(())
    }, "only client ids starting with this may connect (CONNACK not authorised)"),
    opt!("allow_zero_length_clientid", General, flag!(allow_zero_length_clientid),
        "assign ids to clients that send none (default 1)"),
    opt!("auto_id_prefix", General, |s, a| {
        s.cfg.auto_id_prefix = one(a)?.to_owned();
        Ok(())
    }, "prefix of assigned client ids (default auto-)"),
    // Process.
    opt!("pid_file", General, file!(pid_file), "write the process id here"),
    opt!("user", General, |s, a| {
        s.cfg.user = Some(one(a)?.to_owned());
        Ok(())
    }, "drop privileges to this user"),
    opt!("include_dir", General, |s, a| super::mosquitto::include_dir(s, a),
        "also read the Mosquitto-syntax .conf files in this directory"),
    // Limits.
    opt!("message_size_limit", General, num!(message_size_limit, 0, 268_435_455),
        "largest payload accepted, 0 for no limit"),
    opt!("max_packet_size", General, num!(max_packet_size, 0, 268_435_460),
        "largest packet accepted, 0 for no limit"),
    opt!("connect_timeout", General, num!(connect_timeout, 1, 3600),
        "seconds a new connection has to send CONNECT, TLS and WebSocket set-up included (default 10)"),
    opt!("max_connect_size", General, num!(max_connect_size, 64, 268_435_460),
        "largest CONNECT accepted, refused from its fixed header (default 8192)"),
    opt!("max_pending_connections", General, num!(max_pending_connections, 0, i64::from(u32::MAX)),
        "connections not logged in yet, all addresses, 0 for no limit (default 256)"),
    opt!("max_pending_per_address", General, num!(max_pending_per_address, 0, i64::from(u32::MAX)),
        "connections not logged in yet per source address, 0 for no limit (default 64)"),
    opt!("memory_limit", General, num!(memory_limit, 0, i64::MAX),
        "heap bytes above which new PUBLISHes are refused (v5: 0x97), 0 for no limit"),
    // The resource budget after login (`ResourceBudget`).
    opt!("max_subscriptions", General, num!(budget.max_subscriptions, 0, i64::from(u32::MAX)),
        "subscriptions per session, 0 for no limit (default 1000; over it SUBACK 0x97/0x80)"),
    opt!("max_shared_groups", General, num!(budget.max_shared_groups, 0, i64::from(u32::MAX)),
        "$share groups over all sessions, 0 for no limit (default 1000)"),
    opt!("max_retained_messages", General,
        num!(budget.max_retained_messages, 0, i64::from(u32::MAX)),
        "topics in the retained store, 0 for no limit (default 10000)"),
    opt!("max_retained_bytes", General, num!(budget.max_retained_bytes, 0, i64::MAX),
        "bytes in the retained store, 0 for no limit (default 4194304)"),
    opt!("max_sessions", General, num!(budget.max_sessions, 0, i64::from(u32::MAX)),
        "sessions, offline persistent ones included, 0 for no limit (default 16384)"),
    opt!("max_offline_sessions", General,
        num!(budget.max_offline_sessions, 0, i64::from(u32::MAX)),
        "persistent sessions kept offline; the oldest is discarded over it (default 1000)"),
    opt!("max_output_bytes", General, num!(budget.max_output_bytes, 0, i64::MAX),
        "bytes queued for one connection's socket; QoS 0 dropped over it (default 1048576)"),
    opt!("max_outgoing_topic_alias", General, num!(budget.max_outgoing_topic_alias, 0, 65535),
        "topic aliases the broker sets up towards a 5.0 client (default 10)"),
    opt!("max_inflight_messages", General, num!(max_inflight_messages, 0, 65535),
        "QoS 1/2 messages in flight per client (default 20)"),
    opt!("max_inflight_bytes", General, num!(max_inflight_bytes, 0, i64::MAX),
        "payload bytes of QoS 1/2 messages in flight per client, 0 for no limit; the next waits"),
    opt!("max_queued_messages", General, num!(max_queued_messages, 0, i64::from(u32::MAX)),
        "messages queued per client (default 1000)"),
    opt!("max_queued_bytes", General, num!(max_queued_bytes, 0, i64::MAX),
        "bytes queued per client, 0 for no limit"),
    opt!("max_keepalive", General, num!(max_keepalive, 0, 65535),
        "largest keepalive granted to v5 clients"),
    opt!("max_topic_alias", General, num!(max_topic_alias, 0, 65535),
        "topic aliases a v5 client may use (default 10)"),
    opt!("retain_available", General, flag!(retain_available), "accept retained messages (default 1)"),
    opt!("sys_interval", General, num!(sys_interval, 0, 65535),
        "seconds between $SYS updates, 0 to disable (default 10)"),
    opt!("queue_qos0_messages", General, flag!(queue_qos0_messages),
        "queue QoS 0 messages for offline persistent clients"),
    opt!("upgrade_outgoing_qos", General, flag!(upgrade_outgoing_qos), "deliver at the subscription QoS"),
    // Persistence.
    opt!("persistence", Persistence, flag!(persistence),
        "keep retained messages and sessions across restarts"),
    opt!("persistence_location", Persistence, file!(persistence_location),
        "directory of the database (keep it in RAM, /tmp, to spare the flash)"),
    opt!("persistence_file", Persistence, |s, a| {
        s.cfg.persistence_file = one(a)?.to_owned();
        Ok(())
    }, "database file name (default rmqtt.db)"),
    opt!("autosave_interval", Persistence, num!(autosave_interval, 0, i64::from(u32::MAX)),
        "seconds between saves (default 1800)"),
    opt!("autosave_on_changes", Persistence, flag!(autosave_on_changes),
        "autosave_interval counts changes instead of seconds"),
    opt!("persistence_journal", Persistence, flag!(persistence_journal),
        "append every change to a journal synced before acknowledgements (default 1: crash-safe)"),
    opt!("journal_location", Persistence, file!(journal_location),
        "directory of the journal (default: location); in RAM it survives a crash, not a reboot"),
    opt!("persistent_client_expiration", Persistence, |s, a| {
        s.cfg.persistent_client_expiration = Some(duration(one(a)?)?);
        Ok(())
    }, "forget persistent clients idle this long (1h, 2d, 3w, 4m, 1y)"),
    // Logging.
    opt!("log_dest", General, key_log_dest, "list: stdout, stderr, syslog, topic, none or 'file PATH'"),
    opt!("log_type", General, |s, a| {
        let t = one(a)?;
        if !LOG_TYPES.contains(&t) {
            return Err(format!("invalid log_type value ({t})"));
        }
        s.cfg.log_types.push(t.to_owned());
        Ok(())
    }, "list: debug, error, warning, notice, information, subscribe, unsubscribe, all, none"),
    opt!("log_timestamp", General, flag!(log_timestamp), "prefix log lines with the time (default 1)"),
    opt!("log_timestamp_format", General, |s, a| {
        s.cfg.log_timestamp_format = Some(a.join(" "));
        Ok(())
    }, "strftime format for log timestamps"),
    opt!("log_facility", General, |s, a| {
        s.cfg.log_facility = Some(number(a, 0, 7)? as u32);
        Ok(())
    }, "syslog facility local0..local7 as 0..7"),
    opt!("connection_messages", General, flag!(connection_messages),
        "log connects and disconnects (default 1)"),
    // Bridges.
    opt!("connection", Bridge, |s, a| {
        let name = one(a)?;
        if s.cfg.bridges.iter().any(|b| b.name == name) {
            return Err(format!("connection {name} defined twice"));
        }
        s.cfg.bridges.push(Bridge::new(name));
        Ok(())
    }, "bridge name"),
    opt!("address", Bridge, key_address, "remote host[:port], several tried in turn"),
    opt!("addresses", Bridge, key_address, "same as address"),
    opt!("topic", Bridge, key_bridge_topic, "list: 'pattern [in|out|both] [qos] [local] [remote]'"),
    opt!("remote_username", Bridge, bridge!("remote_username", remote_username, c_string),
        "user name on the remote broker"),
    opt!("remote_password", Bridge, bridge!("remote_password", remote_password, c_string),
        "password on the remote broker"),
    opt!("remote_clientid", Bridge, bridge!("remote_clientid", remote_clientid, c_string),
        "client id on the remote broker"),
    opt!("clientid", Bridge, bridge!("clientid", remote_clientid, c_string), "old name of remote_clientid"),
    opt!("local_clientid", Bridge, bridge!("local_clientid", local_clientid, c_string),
        "client id of the bridge's local session"),
    opt!("cleansession", Bridge, bridge!("cleansession", cleansession, c_bool),
        "clean session on the remote broker"),
    opt!("local_cleansession", Bridge, |s, a| {
        s.boolean(a)?;
        Ok(())
    }, "accepted; the bridge's local session lives inside the broker"),
    opt!("keepalive_interval", Bridge, bridge!("keepalive_interval", keepalive, |_: &State, a: &[&str]| {
        number(a, 0, 65535).map(|n| n as u16)
    }), "keep alive in seconds (default 60)"),
    opt!("restart_timeout", Bridge, |s, a| {
        let n = |v: &str| v.parse().map_err(|_| format!("invalid number ({v})"));
        let t = match a {
            [base] => (n(base)?, n(base)?),
            [base, cap] => (n(base)?, n(cap)?),
            _ => return Err("restart_timeout takes one or two numbers".to_owned()),
        };
        s.bridge("restart_timeout")?.restart_timeout = t;
        Ok(())
    }, "seconds before reconnecting: 'base [cap]'"),
    opt!("start_type", Bridge, bridge!("start_type", start_type, |_: &State, a: &[&str]| match one(a)? {
        "automatic" => Ok(StartType::Automatic),
        "lazy" => Ok(StartType::Lazy),
        "once" => Ok(StartType::Once),
        other => Err(format!("invalid start_type ({other}); use automatic, lazy or once")),
    }), "automatic, lazy or once"),
    opt!("threshold", Bridge, bridge!("threshold", threshold, |_: &State, a: &[&str]| {
        number(a, 1, i64::from(u32::MAX)).map(|n| n as u32)
    }), "messages queued before a lazy bridge connects"),
    opt!("try_private", Bridge, bridge!("try_private", try_private, c_bool),
        "tell the remote broker it is a bridge (default 1)"),
    opt!("notifications", Bridge, bridge!("notifications", notifications, c_bool),
        "publish the connection state (default 1)"),
    opt!("notification_topic", Bridge, bridge!("notification_topic", notification_topic, c_string),
        "topic of the connection state"),
    opt!("bridge_protocol_version", Bridge, bridge!("bridge_protocol_version", protocol_level,
        |_: &State, a: &[&str]| match one(a)? {
            "mqttv31" => Ok(3),
            "mqttv311" => Ok(4),
            "mqttv50" | "mqttv5" => Ok(5),
            other => Err(format!(
                "invalid bridge_protocol_version ({other}); use mqttv31, mqttv311 or mqttv50"
            )),
        }), "mqttv31, mqttv311 or mqttv50"),
    opt!("bridge_cafile", Bridge, bridge!("bridge_cafile", cafile, c_path),
        "TLS: CA certificates of the remote (enables TLS)"),
    opt!("bridge_capath", Bridge, bridge!("bridge_capath", capath, c_path), "TLS: CA directory (enables TLS)"),
    opt!("bridge_certfile", Bridge, bridge!("bridge_certfile", certfile, c_path),
        "TLS: client certificate (enables TLS)"),
    opt!("bridge_keyfile", Bridge, bridge!("bridge_keyfile", keyfile, c_path), "TLS: client key"),
    opt!("bridge_insecure", Bridge, bridge!("bridge_insecure", insecure, c_bool),
        "TLS: do not check the remote's host name"),
    opt!("bridge_tls_version", Bridge, bridge!("bridge_tls_version", tls_version, c_tls_version),
        "TLS: lowest version, tlsv1.2 or tlsv1.3"),
    opt!("bridge_max_packet_size", Bridge, bridge!("bridge_max_packet_size", max_packet_size,
        |_: &State, a: &[&str]| number(a, 0, 268_435_460).map(|n| n as u32)),
        "largest packet accepted from the remote, 0 for no limit"),
    opt!("bridge_attempt_unsubscribe", Bridge, bridge!("bridge_attempt_unsubscribe", attempt_unsubscribe, c_bool),
        "UNSUBSCRIBE the remote topics of out rules on connect (default 1)"),
    opt!("bridge_outgoing_retain", Bridge, bridge!("bridge_outgoing_retain", outgoing_retain, c_bool),
        "0: clear the retain flag of everything sent to the remote (default 1)"),
    opt!("notifications_local_only", Bridge, bridge!("notifications_local_only", notifications_local_only, c_bool),
        "publish the connection state locally only: no will, no copy on the remote"),
    opt!("bridge_bind_address", Bridge, bridge!("bridge_bind_address", bind_address, |_: &State, a: &[&str]| {
        let v = one(a)?;
        v.parse::<std::net::IpAddr>()
            .map(|_| Some(v.to_owned()))
            .map_err(|_| format!("invalid address ({v}); use an IPv4 or IPv6 address"))
    }),
        "local address the bridge connects from"),
    opt!("idle_timeout", Bridge, bridge!("idle_timeout", idle_timeout, |_: &State, a: &[&str]| {
        number(a, 1, i64::from(u32::MAX)).map(|n| n as u32)
    }), "seconds without a message after which a lazy bridge disconnects (default 60)"),
    // Mosquitto passes these only to plugins; its ACL does not apply to a bridge's local
    // side (`mosquitto_acl_check_default`), and neither does rmqtt's.
    opt!("local_username", Bridge, ignored, "only for plugins in Mosquitto (none here); ignored"),
    opt!("local_password", Bridge, ignored, "only for plugins in Mosquitto (none here); ignored"),
    opt!("round_robin", Bridge, bridge!("round_robin", round_robin, c_bool),
        "0 (default): back to the first address when it answers; 1: stay where connected"),
    // Accepted, not acted upon: nothing about security depends on them.
    opt!("allow_duplicate_messages", General, ignored,
        "not supported (duplicates are always delivered); ignored"),
    opt!("check_retain_source", General, |s, a| {
        // Mosquitto's default is true: a retained message is not sent once its publisher has
        // lost write access. rmqtt does not keep a retained message's publisher.
        if s.boolean(a)? {
            Err("true is not supported by rmqtt (retained messages do not record their \
                 publisher); set it to false"
                .to_owned())
        } else {
            Ok(())
        }
    }, "false only: true is refused (retained messages do not record their publisher)"),
    opt!("socket_domain", Listener, ignored, "not supported; ignored"),
    opt!("http_dir", Listener, ignored, "not supported (no HTTP files); ignored"),
    opt!("websockets_headers_size", Listener, ignored, "not supported; ignored"),
    opt!("websockets_log_level", Both, ignored, "not supported; ignored"),
    opt!("store_clean_interval", Persistence, ignored, "obsolete in Mosquitto; ignored"),
    // Refused: ignoring them would change who may connect or what they may do.
    opt!("psk_file", General, refused, "not supported (TLS-PSK): refused"),
    opt!("psk_hint", Listener, refused, "not supported (TLS-PSK): refused"),
    opt!("mount_point", Listener, refused, "not supported: refused (it confines the listener's clients)"),
    opt!("dhparamfile", Listener, refused, "not supported: refused"),
    opt!("auth_plugin", Both, refused, "not supported (plugins; also any auth_opt_*): refused"),
    opt!("plugin", Both, refused, "not supported (plugins; also any plugin_opt_*): refused"),
    opt!("bridge_identity", Bridge, refused, "not supported (TLS-PSK): refused"),
    opt!("bridge_psk", Bridge, refused, "not supported (TLS-PSK): refused"),
    opt!("bridge_alpn", Bridge, refused, "not supported: refused"),
    opt!("bridge_require_ocsp", Bridge, refused, "not supported: refused"),
];

fn key_address(s: &mut State, a: &[&str]) -> Result<(), String> {
    if a.is_empty() {
        return Err("address needs host[:port]".to_owned());
    }
    let mut list = Vec::new();
    for addr in a {
        let (host, port) = match addr.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                (h.trim_start_matches('[').trim_end_matches(']'), port(p)?)
            }
            _ => (*addr, 1883),
        };
        if host.is_empty() {
            return Err(format!("invalid address ({addr})"));
        }
        list.push((host.to_owned(), port));
    }
    s.bridge("address")?.addresses.extend(list);
    Ok(())
}

fn key_bridge_topic(s: &mut State, a: &[&str]) -> Result<(), String> {
    // `""` stands for an empty pattern or prefix, as in Mosquitto.
    let unq = |w: &str| {
        if w == "\"\"" {
            String::new()
        } else {
            w.to_owned()
        }
    };
    let (pattern, rest) = a.split_first().ok_or("topic needs a pattern")?;
    let direction = match rest.first().copied() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some("both") => Direction::Both,
        Some(other) => {
            return Err(format!(
                "invalid topic direction ({other}); use in, out or both"
            ))
        }
    };
    let qos = match rest.get(1).copied() {
        None | Some("0") => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some(other) => return Err(format!("invalid topic QoS ({other})")),
    };
    let (local_prefix, remote_prefix) = match (rest.get(2), rest.get(3)) {
        (None, None) => (String::new(), String::new()),
        (Some(l), Some(r)) => (unq(l), unq(r)),
        _ => return Err("topic takes both a local and a remote prefix, or neither".to_owned()),
    };
    if rest.len() > 4 {
        return Err("too many values for topic".to_owned());
    }
    let t = BridgeTopic {
        pattern: unq(pattern),
        direction,
        qos,
        local_prefix,
        remote_prefix,
    };
    if t.pattern.is_empty() && t.local_prefix.is_empty() && t.remote_prefix.is_empty() {
        return Err("empty topic pattern".to_owned());
    }
    for f in [t.local_filter(), t.remote_filter()] {
        if !crate::protocol::topic::valid_topic_filter(&f) {
            return Err(format!("invalid topic filter ({f})"));
        }
    }
    s.bridge("topic")?.topics.push(t);
    Ok(())
}

pub(super) fn one<'a>(args: &[&'a str]) -> Result<&'a str, String> {
    match args {
        [v] => Ok(v),
        [] => Err("missing value".to_owned()),
        _ => Err("too many values".to_owned()),
    }
}

fn number(args: &[&str], min: i64, max: i64) -> Result<i64, String> {
    let v = one(args)?;
    let n: i64 = v.parse().map_err(|_| format!("invalid number ({v})"))?;
    if n < min || n > max {
        return Err(format!("value {n} out of range {min}..{max}"));
    }
    Ok(n)
}

pub(super) fn path(args: &[&str]) -> Result<PathBuf, String> {
    // Paths may contain spaces: the rest of the line is the path.
    if args.is_empty() || args == [""] {
        return Err("missing path".to_owned());
    }
    Ok(PathBuf::from(args.join(" ")))
}

fn port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| format!("invalid port ({v}); use a number from 0 to 65535"))
}

/// `1h`, `2d`, `3w`, `4m` (months), `1y`, or seconds as in Mosquitto.
pub(super) fn duration(v: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration ({v}); use a number followed by h, d, w, m or y");
    // The unit is the last character, which need not be one byte: split on a char boundary.
    let last = v.char_indices().last().map_or(0, |(i, _)| i);
    let (num, unit) = v.split_at(last);
    let (num, mult) = match unit {
        "h" => (num, 3600u64),
        "d" => (num, 86_400),
        "w" => (num, 7 * 86_400),
        "m" => (num, 30 * 86_400),
        "y" => (num, 365 * 86_400),
        _ => (v, 1),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

fn key_listener(s: &mut State, a: &[&str]) -> Result<(), String> {
    let (p, bind) = match a {
        [p] => (port(p)?, None),
        [p, addr] => (port(p)?, Some((*addr).to_owned())),
        [] => return Err("listener needs a port".to_owned()),
        _ => return Err("listener takes a port and an optional address".to_owned()),
    };
    s.cfg.listeners.push(Listener::new(p, bind));
    s.current = Some(s.cfg.listeners.len() - 1);
    Ok(())
}

fn key_port(s: &mut State, a: &[&str]) -> Result<(), String> {
    let p = port(one(a)?)?;
    match s.default_listener.and_then(|i| s.cfg.listeners.get_mut(i)) {
        Some(l) => l.port = p,
        None => {
            s.cfg.listeners.push(Listener::new(p, None));
            s.default_listener = Some(s.cfg.listeners.len() - 1);
        }
    }
    Ok(())
}

fn key_bind_address(s: &mut State, a: &[&str]) -> Result<(), String> {
    let addr = one(a)?.to_owned();
    if s.default_listener.is_none() {
        s.cfg.listeners.push(Listener::new(1883, None));
        s.default_listener = Some(s.cfg.listeners.len() - 1);
    }
    if let Some(l) = s.default_listener.and_then(|i| s.cfg.listeners.get_mut(i)) {
        l.bind = Some(addr);
    }
    Ok(())
}

fn key_allow_anonymous(s: &mut State, a: &[&str]) -> Result<(), String> {
    let v = one(a)?;
    let hint = if s.uci { "0, 1" } else { "true, false" };
    let b =
        Anonymous::parse(v).ok_or_else(|| format!("invalid value ({v}); use {hint} or local"))?;
    match s.current.and_then(|i| s.cfg.listeners.get_mut(i)) {
        Some(l) if s.cfg.per_listener_settings => l.allow_anonymous = Some(b),
        _ => s.cfg.allow_anonymous = Some(b),
    }
    Ok(())
}

fn key_max_connections(s: &mut State, a: &[&str]) -> Result<(), String> {
    let n = number(a, -1, i64::from(i32::MAX))?;
    match s.current.and_then(|i| s.cfg.listeners.get_mut(i)) {
        Some(l) => l.max_connections = n,
        None => s.cfg.max_connections = n,
    }
    Ok(())
}

fn key_log_dest(s: &mut State, a: &[&str]) -> Result<(), String> {
    let d = match a {
        ["stdout"] => LogDest::Stdout,
        ["stderr"] => LogDest::Stderr,
        ["syslog"] => LogDest::Syslog,
        ["topic"] => LogDest::Topic,
        ["none"] => LogDest::None,
        ["file", rest @ ..] if !rest.is_empty() => LogDest::File(PathBuf::from(rest.join(" "))),
        ["dlt"] => return Err("log_dest dlt is not supported".to_owned()),
        _ => {
            return Err(format!(
                "invalid log_dest ({}); use stdout, stderr, syslog, topic, none or file PATH",
                a.join(" ")
            ))
        }
    };
    s.cfg.log_dest.push(d);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{mosquitto, uci};
    use super::*;

    /// Values tried for each key, in turn: the first one mosquitto.conf accepts is used.
    const SAMPLES: &[&str] = &[
        "1",
        "8",
        "tlsv1.2",
        "/tmp/x",
        "websockets",
        "a/# both 1 l/ r/",
        "h:1884",
        "lazy",
        "mqttv50",
        "syslog",
        "error",
        "10 20",
        "2d",
        "local",
        // check_retain_source takes false only.
        "0",
        "br-lan",
        "TLS_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "127.0.0.2",
    ];

    fn parsed(text: String, uci_text: String) -> (Result<Config, String>, Result<Config, String>) {
        let strip = |r: Result<(Config, Vec<Warning>), super::super::ConfigError>| {
            r.map(|(mut c, _)| {
                c.source = None;
                c
            })
            .map_err(|e| e.message)
        };
        (
            strip(mosquitto::parse_str("t.conf", &text)),
            strip(uci::parse_str("t", &uci_text)),
        )
    }

    fn section_type(s: Scope) -> &'static str {
        s.sections().last().copied().unwrap_or_default()
    }

    /// Every mosquitto.conf key is a UCI option of the sections of its scope, set to the same
    /// value it means the same; every UCI option is a key of the table, renamed or not, or one
    /// of the few UCI-only ones.
    #[test]
    fn both_syntaxes_come_from_the_one_table() {
        for o in OPTIONS.iter().filter(|o| o.key != "listener") {
            let (before, section) = match o.scope {
                Scope::General | Scope::Both => ("", "config mosquitto\n"),
                Scope::Persistence => ("", "config persistence\n"),
                Scope::Listener => ("listener 1883\n", "config listener\n option port 1883\n"),
                Scope::Bridge if o.key == "connection" => ("", "config bridge\n"),
                Scope::Bridge => ("connection b\n", "config bridge 'b'\n"),
            };
            let mut tried = 0;
            for v in SAMPLES {
                let (m, u) = parsed(
                    format!("{before}{} {v}\n", o.key),
                    format!(
                        "{section} option {} '{v}'\n",
                        uci::uci_name(section_type(o.scope), o.key)
                    ),
                );
                if m.is_ok() || v == SAMPLES.last().unwrap() {
                    match (&m, &u) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b, "{} {v}", o.key),
                        (Err(a), Err(b)) => assert!(
                            b.contains(a.as_str()) || a.contains("not supported"),
                            "{}: {a} / {b}",
                            o.key
                        ),
                        _ => panic!("{} {v}: {m:?} / {u:?}", o.key),
                    }
                    tried += 1;
                    break;
                }
            }
            assert_eq!(tried, 1, "{}", o.key);
        }
        for (stype, name, _) in uci::known_options() {
            let key = uci::key_of(stype, name);
            assert!(
                key.is_some_and(|k| find(k).is_some())
                    || matches!(
                        (stype, name),
                        ("owrt", _)
                            | (_, "no_remote_access")
                            | ("listener", "port" | "bind_address")
                    ),
                "{stype}.{name}"
            );
        }
    }
}
