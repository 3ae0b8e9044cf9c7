//! Mosquitto-style configuration files (`key value...`, `#` comments, `include_dir`).
//!
//! Table driven: one small function per key. Never panics on file contents; every error
//! carries the file and line. Unknown keys are warnings, except those that weaken security if
//! ignored, which are errors.

use super::{
    parse_bool, Anonymous, Bridge, BridgeTopic, Config, ConfigError, Direction, Listener,
    ListenerProtocol, LogDest, StartType,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A non-fatal remark about the configuration (an unknown or unsupported key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

struct State {
    cfg: Config,
    /// Index of the listener that listener-scoped keys apply to; `None` before any `listener`.
    current: Option<usize>,
    /// The implicit listener made by the old `port`/`bind_address` keys.
    default_listener: Option<usize>,
    warnings: Vec<Warning>,
    depth: usize,
}

type Handler = fn(&mut State, &[&str]) -> Result<(), String>;

/// Every key rmqtt understands.
const KEYS: &[(&str, Handler)] = &[
    ("listener", key_listener),
    ("port", key_port),
    ("bind_address", key_bind_address),
    ("protocol", key_protocol),
    ("allow_anonymous", key_allow_anonymous),
    ("per_listener_settings", |s, a| {
        s.cfg.per_listener_settings = boolean(a)?;
        Ok(())
    }),
    ("password_file", |s, a| {
        per_listener_auth_refused(s, "password_file")?;
        s.cfg.password_file = Some(path(a)?);
        Ok(())
    }),
    ("acl_file", |s, a| {
        per_listener_auth_refused(s, "acl_file")?;
        s.cfg.acl_file = Some(path(a)?);
        Ok(())
    }),
    ("clientid_prefixes", |s, a| {
        s.cfg.clientid_prefixes = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("check_retain_source", |_, a| {
        // Mosquitto's default is true: a retained message is not sent once its publisher has
        // lost write access. rmqtt does not keep a retained message's publisher.
        if boolean(a)? {
            Err(
                "true is not supported by rmqtt (retained messages do not record their \
                 publisher); set it to false"
                    .to_owned(),
            )
        } else {
            Ok(())
        }
    }),
    ("pid_file", |s, a| {
        s.cfg.pid_file = Some(path(a)?);
        Ok(())
    }),
    ("user", |s, a| {
        s.cfg.user = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("max_connections", key_max_connections),
    ("message_size_limit", |s, a| {
        s.cfg.message_size_limit = number(a, 0, 268_435_455)? as u32;
        Ok(())
    }),
    ("max_packet_size", |s, a| {
        s.cfg.max_packet_size = number(a, 0, 268_435_460)? as u32;
        Ok(())
    }),
    ("connect_timeout", |s, a| {
        s.cfg.connect_timeout = number(a, 1, 3600)? as u32;
        Ok(())
    }),
    ("max_connect_size", |s, a| {
        s.cfg.max_connect_size = number(a, 64, 268_435_460)? as u32;
        Ok(())
    }),
    ("max_pending_connections", |s, a| {
        s.cfg.max_pending_connections = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("max_pending_per_address", |s, a| {
        s.cfg.max_pending_per_address = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("memory_limit", |s, a| {
        s.cfg.memory_limit = number(a, 0, i64::MAX)? as u64;
        Ok(())
    }),
    ("max_subscriptions", |s, a| {
        s.cfg.budget.max_subscriptions = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("max_shared_groups", |s, a| {
        s.cfg.budget.max_shared_groups = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("max_retained_messages", |s, a| {
        s.cfg.budget.max_retained_messages = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("max_retained_bytes", |s, a| {
        s.cfg.budget.max_retained_bytes = number(a, 0, i64::MAX)? as u64;
        Ok(())
    }),
    ("max_sessions", |s, a| {
        s.cfg.budget.max_sessions = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("max_offline_sessions", |s, a| {
        s.cfg.budget.max_offline_sessions = number(a, 0, i64::from(u32::MAX))? as u32;
        Ok(())
    }),
    ("max_output_bytes", |s, a| {
        s.cfg.budget.max_output_bytes = number(a, 0, i64::MAX)? as u64;
        Ok(())
    }),
    ("max_outgoing_topic_alias", |s, a| {
        s.cfg.budget.max_outgoing_topic_alias = number(a, 0, 65535)? as u16;
        Ok(())
    }),
    ("websockets_origin", |s, a| {
        s.cfg.websockets_origins.push(one(a)?.to_owned());
        Ok(())
    }),
    ("max_inflight_messages", |s, a| {
        s.cfg.max_inflight_messages = number(a, 0, 65535)? as u16;
        Ok(())
    }),
    ("max_queued_messages", |s, a| {
        s.cfg.max_queued_messages = number(a, 0, u32::MAX as i64)? as u32;
        Ok(())
    }),
    ("max_queued_bytes", |s, a| {
        s.cfg.max_queued_bytes = number(a, 0, i64::MAX)? as u64;
        Ok(())
    }),
    ("max_keepalive", |s, a| {
        s.cfg.max_keepalive = number(a, 0, 65535)? as u16;
        Ok(())
    }),
    ("max_topic_alias", |s, a| {
        s.cfg.max_topic_alias = number(a, 0, 65535)? as u16;
        Ok(())
    }),
    ("retain_available", |s, a| {
        s.cfg.retain_available = boolean(a)?;
        Ok(())
    }),
    ("set_tcp_nodelay", |s, a| {
        s.cfg.set_tcp_nodelay = boolean(a)?;
        Ok(())
    }),
    ("persistent_client_expiration", |s, a| {
        s.cfg.persistent_client_expiration = Some(duration(one(a)?)?);
        Ok(())
    }),
    ("sys_interval", |s, a| {
        s.cfg.sys_interval = number(a, 0, 65535)? as u32;
        Ok(())
    }),
    ("persistence", |s, a| {
        s.cfg.persistence = boolean(a)?;
        Ok(())
    }),
    ("persistence_location", |s, a| {
        s.cfg.persistence_location = Some(path(a)?);
        Ok(())
    }),
    ("persistence_file", |s, a| {
        s.cfg.persistence_file = one(a)?.to_owned();
        Ok(())
    }),
    ("autosave_interval", |s, a| {
        s.cfg.autosave_interval = number(a, 0, u32::MAX as i64)? as u32;
        Ok(())
    }),
    ("autosave_on_changes", |s, a| {
        s.cfg.autosave_on_changes = boolean(a)?;
        Ok(())
    }),
    ("persistence_journal", |s, a| {
        s.cfg.persistence_journal = boolean(a)?;
        Ok(())
    }),
    ("journal_location", |s, a| {
        s.cfg.journal_location = Some(path(a)?);
        Ok(())
    }),
    ("log_dest", key_log_dest),
    ("log_type", |s, a| {
        let t = one(a)?;
        const TYPES: &[&str] = &[
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
        if !TYPES.contains(&t) {
            return Err(format!("invalid log_type value ({t})"));
        }
        s.cfg.log_types.push(t.to_owned());
        Ok(())
    }),
    ("log_timestamp", |s, a| {
        s.cfg.log_timestamp = boolean(a)?;
        Ok(())
    }),
    ("log_timestamp_format", |s, a| {
        s.cfg.log_timestamp_format = Some(a.join(" "));
        Ok(())
    }),
    ("log_facility", |s, a| {
        s.cfg.log_facility = Some(number(a, 0, 7)? as u32);
        Ok(())
    }),
    ("connection_messages", |s, a| {
        s.cfg.connection_messages = boolean(a)?;
        Ok(())
    }),
    ("queue_qos0_messages", |s, a| {
        s.cfg.queue_qos0_messages = boolean(a)?;
        Ok(())
    }),
    ("upgrade_outgoing_qos", |s, a| {
        s.cfg.upgrade_outgoing_qos = boolean(a)?;
        Ok(())
    }),
    ("use_username_as_clientid", |s, a| {
        s.cfg.use_username_as_clientid = boolean(a)?;
        Ok(())
    }),
    ("allow_zero_length_clientid", |s, a| {
        s.cfg.allow_zero_length_clientid = boolean(a)?;
        Ok(())
    }),
    ("auto_id_prefix", |s, a| {
        s.cfg.auto_id_prefix = one(a)?.to_owned();
        Ok(())
    }),
    ("cafile", |s, a| {
        let p = path(a)?;
        s.listener("cafile")?.cafile = Some(p);
        Ok(())
    }),
    ("capath", |s, a| {
        let p = path(a)?;
        s.listener("capath")?.capath = Some(p);
        Ok(())
    }),
    ("certfile", |s, a| {
        let p = path(a)?;
        s.listener("certfile")?.certfile = Some(p);
        Ok(())
    }),
    ("keyfile", |s, a| {
        let p = path(a)?;
        s.listener("keyfile")?.keyfile = Some(p);
        Ok(())
    }),
    ("require_certificate", |s, a| {
        let b = boolean(a)?;
        s.listener("require_certificate")?.require_certificate = b;
        Ok(())
    }),
    ("use_identity_as_username", |s, a| {
        let b = boolean(a)?;
        s.listener("use_identity_as_username")?
            .use_identity_as_username = b;
        Ok(())
    }),
    ("tls_version", |s, a| {
        let v = one(a)?.to_owned();
        if !["tlsv1.2", "tlsv1.3"].contains(&v.as_str()) {
            return Err(format!(
                "unsupported tls_version ({v}); use tlsv1.2 or tlsv1.3"
            ));
        }
        s.listener("tls_version")?.tls_version = Some(v);
        Ok(())
    }),
];

/// Bridge keys: they apply to the last `connection`.
const BRIDGE_KEYS: &[(&str, Handler)] = &[
    ("address", key_address),
    ("addresses", key_address),
    ("topic", key_bridge_topic),
    ("remote_username", |s, a| {
        s.bridge("remote_username")?.remote_username = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("remote_password", |s, a| {
        s.bridge("remote_password")?.remote_password = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("remote_clientid", |s, a| {
        s.bridge("remote_clientid")?.remote_clientid = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("clientid", |s, a| {
        s.bridge("clientid")?.remote_clientid = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("local_clientid", |s, a| {
        s.bridge("local_clientid")?.local_clientid = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("cleansession", |s, a| {
        let b = boolean(a)?;
        s.bridge("cleansession")?.cleansession = b;
        Ok(())
    }),
    ("local_cleansession", |s, a| {
        boolean(a)?;
        s.bridge("local_cleansession")?;
        Ok(())
    }),
    ("keepalive_interval", |s, a| {
        let n = number(a, 0, 65535)? as u16;
        s.bridge("keepalive_interval")?.keepalive = n;
        Ok(())
    }),
    ("restart_timeout", |s, a| {
        let t = match a {
            [base] => {
                let b = base
                    .parse()
                    .map_err(|_| format!("invalid number ({base})"))?;
                (b, b)
            }
            [base, cap] => (
                base.parse()
                    .map_err(|_| format!("invalid number ({base})"))?,
                cap.parse().map_err(|_| format!("invalid number ({cap})"))?,
            ),
            _ => return Err("restart_timeout takes one or two numbers".to_owned()),
        };
        s.bridge("restart_timeout")?.restart_timeout = t;
        Ok(())
    }),
    ("start_type", |s, a| {
        let t = match one(a)? {
            "automatic" => StartType::Automatic,
            "lazy" => StartType::Lazy,
            "once" => StartType::Once,
            other => {
                return Err(format!(
                    "invalid start_type ({other}); use automatic, lazy or once"
                ))
            }
        };
        s.bridge("start_type")?.start_type = t;
        Ok(())
    }),
    ("threshold", |s, a| {
        let n = number(a, 1, u32::MAX as i64)? as u32;
        s.bridge("threshold")?.threshold = n;
        Ok(())
    }),
    ("try_private", |s, a| {
        let b = boolean(a)?;
        s.bridge("try_private")?.try_private = b;
        Ok(())
    }),
    ("notifications", |s, a| {
        let b = boolean(a)?;
        s.bridge("notifications")?.notifications = b;
        Ok(())
    }),
    ("notification_topic", |s, a| {
        s.bridge("notification_topic")?.notification_topic = Some(one(a)?.to_owned());
        Ok(())
    }),
    ("bridge_protocol_version", |s, a| {
        let v = match one(a)? {
            "mqttv31" => 3,
            "mqttv311" => 4,
            "mqttv50" | "mqttv5" => 5,
            other => {
                return Err(format!(
                    "invalid bridge_protocol_version ({other}); use mqttv31, mqttv311 or mqttv50"
                ))
            }
        };
        s.bridge("bridge_protocol_version")?.protocol_level = v;
        Ok(())
    }),
    ("bridge_cafile", |s, a| {
        let p = path(a)?;
        s.bridge("bridge_cafile")?.cafile = Some(p);
        Ok(())
    }),
    ("bridge_capath", |s, a| {
        let p = path(a)?;
        s.bridge("bridge_capath")?.capath = Some(p);
        Ok(())
    }),
    ("bridge_certfile", |s, a| {
        let p = path(a)?;
        s.bridge("bridge_certfile")?.certfile = Some(p);
        Ok(())
    }),
    ("bridge_keyfile", |s, a| {
        let p = path(a)?;
        s.bridge("bridge_keyfile")?.keyfile = Some(p);
        Ok(())
    }),
    ("bridge_insecure", |s, a| {
        let b = boolean(a)?;
        s.bridge("bridge_insecure")?.insecure = b;
        Ok(())
    }),
    ("bridge_tls_version", |s, a| {
        let v = one(a)?.to_owned();
        if !["tlsv1.2", "tlsv1.3"].contains(&v.as_str()) {
            return Err(format!(
                "unsupported bridge_tls_version ({v}); use tlsv1.2 or tlsv1.3"
            ));
        }
        s.bridge("bridge_tls_version")?.tls_version = Some(v);
        Ok(())
    }),
    ("bridge_max_packet_size", |s, a| {
        let n = number(a, 0, 268_435_460)? as u32;
        s.bridge("bridge_max_packet_size")?.max_packet_size = n;
        Ok(())
    }),
];

/// Mosquitto keys that rmqtt does not implement but that change nothing about who may do
/// what: accepted with a warning.
const IGNORED: &[&str] = &[
    "autosave_on_changes",
    "http_dir",
    "include_dir",
    "log_facility",
    "max_inflight_bytes",
    "socket_domain",
    "websockets_headers_size",
    "websockets_log_level",
];

/// Mosquitto keys that would weaken security if silently ignored: refused.
const REFUSED: &[&str] = &[
    "auth_plugin",
    "mount_point",
    "plugin",
    "plugin_opt",
    "psk_file",
    "psk_hint",
    "ciphers",
    "ciphers_tls1.3",
    "crlfile",
    "dhparamfile",
    "use_subject_as_username",
    "bridge_psk",
    "bridge_identity",
    "bridge_alpn",
    "bridge_require_ocsp",
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
    let qos = match rest.get(1) {
        None => 0,
        Some(q) => match *q {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            other => return Err(format!("invalid topic QoS ({other})")),
        },
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

impl State {
    fn bridge(&mut self, key: &str) -> Result<&mut Bridge, String> {
        self.cfg
            .bridges
            .last_mut()
            .ok_or_else(|| format!("{key} given before any connection"))
    }

    fn listener(&mut self, key: &str) -> Result<&mut Listener, String> {
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
            .ok_or_else(|| format!("{key} given outside a listener"))
    }
}

fn one<'a>(args: &[&'a str]) -> Result<&'a str, String> {
    match args {
        [v] => Ok(v),
        [] => Err("missing value".to_owned()),
        _ => Err("too many values".to_owned()),
    }
}

fn boolean(args: &[&str]) -> Result<bool, String> {
    let v = one(args)?;
    parse_bool(v).ok_or_else(|| format!("invalid boolean value ({v}); use true or false"))
}

fn number(args: &[&str], min: i64, max: i64) -> Result<i64, String> {
    let v = one(args)?;
    let n: i64 = v.parse().map_err(|_| format!("invalid number ({v})"))?;
    if n < min || n > max {
        return Err(format!("value {n} out of range {min}..{max}"));
    }
    Ok(n)
}

fn path(args: &[&str]) -> Result<PathBuf, String> {
    // Paths may contain spaces: the rest of the line is the path.
    if args.is_empty() {
        return Err("missing path".to_owned());
    }
    Ok(PathBuf::from(args.join(" ")))
}

fn port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| format!("invalid port ({v}); use a number from 0 to 65535"))
}

/// `1h`, `2d`, `3w`, `4m` (months), `1y`, or seconds as in Mosquitto.
fn duration(v: &str) -> Result<Duration, String> {
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
    match s.default_listener {
        Some(i) => {
            if let Some(l) = s.cfg.listeners.get_mut(i) {
                l.port = p;
            }
        }
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

/// With `per_listener_settings true`, Mosquitto scopes a `password_file` or `acl_file` inside
/// a listener block to that listener. rmqtt has one password file and one ACL for all
/// listeners, so rather than widen one listener's rules to every listener, it refuses.
fn per_listener_auth_refused(s: &State, key: &str) -> Result<(), String> {
    if s.cfg.per_listener_settings && s.current.is_some() {
        return Err(format!(
            "one listener's own {key} (per_listener_settings true) is not supported by \
             rmqtt; set it before the first listener, with per_listener_settings false"
        ));
    }
    Ok(())
}

fn key_protocol(s: &mut State, a: &[&str]) -> Result<(), String> {
    let p = match one(a)? {
        "mqtt" => ListenerProtocol::Mqtt,
        "websockets" => ListenerProtocol::WebSockets,
        other => {
            return Err(format!(
                "invalid protocol ({other}); use mqtt or websockets"
            ))
        }
    };
    s.listener("protocol")?.protocol = p;
    Ok(())
}

fn key_allow_anonymous(s: &mut State, a: &[&str]) -> Result<(), String> {
    let v = one(a)?;
    let b = Anonymous::parse(v)
        .ok_or_else(|| format!("invalid value ({v}); use true, false or local"))?;
    match s.current {
        Some(i) if s.cfg.per_listener_settings => {
            if let Some(l) = s.cfg.listeners.get_mut(i) {
                l.allow_anonymous = Some(b);
            }
        }
        _ => s.cfg.allow_anonymous = Some(b),
    }
    Ok(())
}

fn key_max_connections(s: &mut State, a: &[&str]) -> Result<(), String> {
    let n = number(a, -1, i64::from(i32::MAX))?;
    match s.current {
        Some(i) => {
            if let Some(l) = s.cfg.listeners.get_mut(i) {
                l.max_connections = n;
            }
        }
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

/// Reads `path` into a [`Config`], with warnings for keys accepted but not acted upon.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut st = State {
        cfg: Config {
            source: Some(path.to_owned()),
            ..Config::default()
        },
        current: None,
        default_listener: None,
        warnings: Vec::new(),
        depth: 0,
    };
    parse_file(&mut st, path)?;
    Ok((st.cfg, st.warnings))
}

/// Parses configuration text as if it came from `name`; for tests and `include_dir`.
pub fn parse_str(name: &str, text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut st = State {
        cfg: Config {
            source: Some(PathBuf::from(name)),
            ..Config::default()
        },
        current: None,
        default_listener: None,
        warnings: Vec::new(),
        depth: 0,
    };
    parse_text(&mut st, name, text)?;
    Ok((st.cfg, st.warnings))
}

fn parse_file(st: &mut State, path: &Path) -> Result<(), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: 0,
        message: format!("cannot read configuration file: {e}"),
    })?;
    parse_text(st, &name, &text)
}

fn parse_text(st: &mut State, name: &str, text: &str) -> Result<(), ConfigError> {
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| ConfigError {
            file: name.to_owned(),
            line,
            message,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let Some(key) = words.next() else { continue };
        let args: Vec<&str> = words.collect();
        if key == "include_dir" {
            include_dir(st, &args).map_err(err)?;
            continue;
        }
        if key == "connection" {
            let name = one(&args).map_err(|m| err(format!("connection: {m}")))?;
            if st.cfg.bridges.iter().any(|b| b.name == name) {
                return Err(err(format!("connection {name} defined twice")));
            }
            st.cfg.bridges.push(Bridge::new(name));
            continue;
        }
        let in_bridge = !st.cfg.bridges.is_empty();
        let bridge_key = BRIDGE_KEYS.iter().find(|(k, _)| *k == key);
        if let (true, Some((_, handler))) = (in_bridge, bridge_key) {
            handler(st, &args).map_err(|m| err(format!("{key}: {m}")))?;
        } else if let Some((_, handler)) = KEYS.iter().find(|(k, _)| *k == key) {
            handler(st, &args).map_err(|m| err(format!("{key}: {m}")))?;
        } else if bridge_key.is_some() {
            return Err(err(format!("{key} given before any connection")));
        } else if REFUSED.contains(&key) {
            return Err(err(format!(
                "{key} is not supported by rmqtt; refusing to start without it"
            )));
        } else if IGNORED.contains(&key) {
            st.warnings.push(Warning(format!(
                "{name}:{line}: {key} is not supported by rmqtt; ignored"
            )));
        } else {
            st.warnings.push(Warning(format!(
                "{name}:{line}: unknown configuration variable \"{key}\"; ignored"
            )));
        }
    }
    Ok(())
}

/// Applies the `.conf` files of `dir` to `cfg`, as `include_dir` does; for the UCI loader,
/// whose general section may name one (OpenWrt's mosquitto package passes it through).
pub fn include_into(cfg: Config, dir: &Path) -> Result<(Config, Vec<Warning>), String> {
    let mut st = State {
        cfg,
        current: None,
        default_listener: None,
        warnings: Vec::new(),
        depth: 0,
    };
    let d = dir.display().to_string();
    include_dir(&mut st, &[d.as_str()])?;
    Ok((st.cfg, st.warnings))
}

fn include_dir(st: &mut State, args: &[&str]) -> Result<(), String> {
    let dir = path(args)?;
    if st.depth > 8 {
        return Err("include_dir nested too deeply".to_owned());
    }
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("include_dir {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    st.depth += 1;
    for f in files {
        parse_file(st, &f).map_err(|e| e.to_string())?;
    }
    st.depth -= 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clientid_prefixes_check_retain_source_and_per_listener_auth() {
        let (c, _) = parse_str(
            "t.conf",
            "clientid_prefixes sec-\ncheck_retain_source false\n",
        )
        .unwrap();
        assert_eq!(c.clientid_prefixes.as_deref(), Some("sec-"));
        let e = parse_str("t.conf", "\ncheck_retain_source true\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        // Global auth files are fine with per_listener_settings; a listener's own are refused.
        let (c, _) = parse_str(
            "t.conf",
            "per_listener_settings true\npassword_file /p\nlistener 1883\nallow_anonymous true\n",
        )
        .unwrap();
        assert_eq!(c.password_file.as_deref(), Some(std::path::Path::new("/p")));
        let e = parse_str(
            "t.conf",
            "per_listener_settings true\nlistener 1883\nacl_file /a\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let (c, _) = parse_str("t.conf", "listener 1883\nacl_file /a\n").unwrap();
        assert_eq!(c.acl_file.as_deref(), Some(std::path::Path::new("/a")));
    }

    #[test]
    fn resource_budget_keys_defaults_ranges_and_lines() {
        let (d, _) = parse_str("t.conf", "").unwrap();
        assert_eq!(d.budget, crate::config::ResourceBudget::default());
        assert_eq!(
            (
                d.budget.max_subscriptions,
                d.budget.max_sessions,
                d.budget.max_offline_sessions,
                d.budget.max_output_bytes
            ),
            (1000, 16_384, 1000, 1 << 20)
        );
        let (c, w) = parse_str(
            "t.conf",
            "max_subscriptions 0\nmax_shared_groups 7\nmax_retained_messages 8\n\
             max_retained_bytes 9\nmax_sessions 10\nmax_output_bytes 11\n\
             max_outgoing_topic_alias 12\nmax_offline_sessions 13\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let b = c.budget;
        assert_eq!(
            (
                b.max_subscriptions,
                b.max_shared_groups,
                b.max_retained_messages,
                b.max_retained_bytes,
                b.max_sessions,
                b.max_output_bytes,
                b.max_outgoing_topic_alias
            ),
            (0, 7, 8, 9, 10, 11, 12)
        );
        assert_eq!(b.max_offline_sessions, 13);
        for bad in [
            "max_subscriptions -1",
            "max_shared_groups x",
            "max_retained_bytes",
            "max_outgoing_topic_alias 65536",
        ] {
            let e = parse_str("t.conf", &format!("# c\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
    }

    #[test]
    fn admission_keys_defaults_ranges_and_lines() {
        let (d, _) = parse_str("t.conf", "").unwrap();
        assert_eq!(
            (
                d.connect_timeout,
                d.max_connect_size,
                d.max_pending_connections,
                d.max_pending_per_address,
                d.memory_limit
            ),
            (10, 8192, 256, 64, 0)
        );
        assert!(d.websockets_origins.is_empty());
        let (c, w) = parse_str(
            "t.conf",
            "connect_timeout 3\nmax_connect_size 65536\nmax_pending_connections 0\n\
             max_pending_per_address 8\nmemory_limit 33554432\n\
             websockets_origin http://router.lan\nwebsockets_origin https://router.lan\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            (
                c.connect_timeout,
                c.max_connect_size,
                c.max_pending_connections,
                c.max_pending_per_address,
                c.memory_limit
            ),
            (3, 65536, 0, 8, 33_554_432)
        );
        assert_eq!(
            c.websockets_origins,
            ["http://router.lan", "https://router.lan"]
        );
        for bad in [
            "connect_timeout 0",
            "connect_timeout 3601",
            "max_connect_size 10",
            "max_pending_per_address -1",
            "memory_limit lots",
        ] {
            let e = parse_str("t.conf", &format!("# x\n{bad}\n")).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
    }

    #[test]
    fn listeners_and_globals() {
        let (c, w) = parse_str(
            "t.conf",
            "# comment\nlistener 1883\nlistener 8883 127.0.0.1\ncertfile /x y\nallow_anonymous false\n\
             max_inflight_messages 10\nfoo bar\n",
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].port, 1883);
        assert_eq!(c.listeners[1].bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.listeners[1].certfile, Some(PathBuf::from("/x y")));
        assert_eq!(c.allow_anonymous, Some(Anonymous::Deny));
        assert_eq!(c.max_inflight_messages, 10);
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("t.conf:7"), "{w:?}");
    }

    #[test]
    fn set_tcp_nodelay_is_honoured() {
        let (c, w) = parse_str("t.conf", "").unwrap();
        assert!(
            c.set_tcp_nodelay,
            "on by default: writes are batched already"
        );
        for (text, want) in [
            ("set_tcp_nodelay false\n", false),
            ("set_tcp_nodelay true\n", true),
        ] {
            let (c, w2) = parse_str("t.conf", text).unwrap();
            assert_eq!(c.set_tcp_nodelay, want, "{text}");
            assert!(w2.is_empty(), "not warned about: {w2:?}");
        }
        assert!(w.is_empty());
        assert!(parse_str("t.conf", "set_tcp_nodelay sometimes\n").is_err());
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line, needle) in [
            ("listener abc\n", 1, "invalid port"),
            ("\nallow_anonymous maybe\n", 2, "use true, false or local"),
            ("max_inflight_messages 70000\n", 1, "out of range"),
            (
                "listener 1883\nprotocol carrier-pigeon\n",
                2,
                "invalid protocol",
            ),
            ("auth_plugin /x.so\n", 1, "not supported"),
            ("log_dest printer\n", 1, "invalid log_dest"),
        ] {
            let e = parse_str("bad.conf", text).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert_eq!(e.file, "bad.conf");
            assert!(e.message.contains(needle), "{e}");
        }
    }

    #[test]
    fn anonymous_defaults() {
        let lan: std::net::IpAddr = "192.168.1.5".parse().unwrap();
        let local = Config::default();
        assert!(local.anonymous_allowed(None, lan));
        let (c, _) = parse_str("t.conf", "listener 1883\n").unwrap();
        assert!(!c.anonymous_allowed(None, lan));
    }

    #[test]
    fn anonymous_local() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let lan: std::net::IpAddr = "192.168.1.5".parse().unwrap();
        let (c, _) = parse_str("t.conf", "listener 1883\nallow_anonymous local\n").unwrap();
        assert_eq!(c.allow_anonymous, Some(Anonymous::Local));
        assert!(c.anonymous_allowed(None, lo) && !c.anonymous_allowed(None, lan));
        let (c, _) = parse_str(
            "t.conf",
            "per_listener_settings true\nlistener 1883\nallow_anonymous local\n\
             listener 1884\nallow_anonymous yes\nlistener 1885\n",
        )
        .unwrap();
        assert_eq!(c.allow_anonymous, None);
        assert_eq!(c.listeners[0].allow_anonymous, Some(Anonymous::Local));
        assert_eq!(c.listeners[1].allow_anonymous, Some(Anonymous::Allow));
        assert!(c.anonymous_allowed(Some(&c.listeners[1]), lan));
        assert!(!c.anonymous_allowed(Some(&c.listeners[0]), lan));
        assert!(!c.anonymous_allowed(Some(&c.listeners[2]), lo));
    }

    #[test]
    fn bridges() {
        let (c, w) = parse_str(
            "b.conf",
            "listener 1883\nconnection cloud\naddress broker.example.com:8883 10.0.0.2\n\
             topic sensors/# out 1 home/ site1/\ntopic cmd/+ in 2\ntopic \"\" both 0 a/b c/d\n\
             remote_username u\nrestart_timeout 2 60\nbridge_protocol_version mqttv50\n\
             try_private false\nconnection second\naddress [::1]:1884\ntopic x\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let b = &c.bridges[0];
        assert_eq!(
            b.addresses,
            vec![
                ("broker.example.com".into(), 8883),
                ("10.0.0.2".into(), 1883)
            ]
        );
        assert_eq!(b.topics[0].local_filter(), "home/sensors/#");
        assert_eq!(b.topics[0].remote_filter(), "site1/sensors/#");
        assert_eq!(b.topics[0].qos, 1);
        assert_eq!(b.topics[1].direction, Direction::In);
        assert_eq!(b.topics[2].local_filter(), "a/b");
        assert_eq!(b.restart_timeout, (2, 60));
        assert_eq!(b.protocol_level, 5);
        assert!(!b.try_private);
        assert_eq!(c.bridges[1].addresses, vec![("::1".into(), 1884)]);
        for (text, line, needle) in [
            ("address x\n", 1, "before any connection"),
            (
                "connection a\ntopic a/# sideways\n",
                2,
                "invalid topic direction",
            ),
            ("connection a\ntopic a/# in 3\n", 2, "invalid topic QoS"),
            (
                "connection a\ntopic a/# in 1 x/\n",
                2,
                "both a local and a remote prefix",
            ),
            ("connection a\nconnection a\n", 2, "defined twice"),
            (
                "connection a\nstart_type sometimes\n",
                2,
                "invalid start_type",
            ),
        ] {
            let e = parse_str("b.conf", text).unwrap_err();
            assert_eq!((e.line, e.message.contains(needle)), (line, true), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration("30").unwrap(), Duration::from_secs(30));
        assert!(duration("x").is_err());
    }
}
