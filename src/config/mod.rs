//! The broker's configuration: one typed [`Config`], whatever file format it came from.
//!
//! Mosquitto-style files are read by [`mosquitto`]. Every error names the file and line.

pub mod mosquitto;
pub mod options;
pub mod summary;
pub mod uci;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a listener speaks on top of TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerProtocol {
    #[default]
    Mqtt,
    WebSockets,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listener {
    pub port: u16,
    /// Address to bind; `None` binds every address (IPv6 dual-stack, else IPv4).
    pub bind: Option<String>,
    pub protocol: ListenerProtocol,
    /// 0 or less: unlimited.
    pub max_connections: i64,
    /// Per-listener setting; `None` follows the global one.
    pub allow_anonymous: Option<Anonymous>,
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub require_certificate: bool,
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`: the certificate's subject (RFC 2253) is the username.
    pub use_subject_as_username: bool,
    pub tls_version: Option<String>,
    /// `ciphers`: the TLS 1.2 suites allowed, OpenSSL names separated by `:`.
    pub ciphers: Option<String>,
    /// `ciphers_tls1.3`: the TLS 1.3 suites allowed.
    pub ciphers_tls13: Option<String>,
    /// `crlfile`: client certificates revoked by these CRLs (PEM) are refused.
    pub crlfile: Option<PathBuf>,
    /// `bind_interface`: listen on this network device's addresses (as Mosquitto does).
    pub bind_interface: Option<String>,
    /// This listener's own password file (per_listener_settings); `None` follows the global one.
    pub password_file: Option<PathBuf>,
    /// This listener's own ACL file (per_listener_settings); `None` follows the global one.
    pub acl_file: Option<PathBuf>,
}

impl Listener {
    pub fn new(port: u16, bind: Option<String>) -> Listener {
        Listener {
            port,
            bind,
            max_connections: -1,
            ..Listener::default()
        }
    }

    /// `listener 0 /path/to.sock`: a Unix domain socket, as in Mosquitto 2.0. (Port 0 with an
    /// IP address is an ephemeral TCP port, which the tests use.)
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        self.bind
            .as_deref()
            .filter(|b| self.port == 0 && b.contains('/'))
            .map(std::path::Path::new)
    }
}

/// The TLS 1.2 suites rmqtt (rustls, ring) has: OpenSSL name, IANA name.
pub const TLS12_CIPHERS: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// The TLS 1.3 suites: OpenSSL name, rustls' name.
pub const TLS13_CIPHERS: &[(&str, &str)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS13_CHACHA20_POLY1305_SHA256",
    ),
];

/// The names in an OpenSSL cipher list (`a:b`, also `,` or spaces between).
pub fn cipher_names(list: &str) -> impl Iterator<Item = &str> {
    list.split([':', ',', ' ']).filter(|n| !n.is_empty())
}

/// Who may connect without a username (`allow_anonymous true|false|local`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anonymous {
    Deny,
    Allow,
    /// Only clients whose peer address is loopback (127.0.0.0/8, ::1, ::ffff:127.x.x.x).
    Local,
}

impl Anonymous {
    /// `local`, or any boolean spelling [`parse_bool`] accepts.
    pub fn parse(v: &str) -> Option<Anonymous> {
        if v == "local" {
            return Some(Anonymous::Local);
        }
        parse_bool(v).map(|b| if b { Anonymous::Allow } else { Anonymous::Deny })
    }

    /// Whether a client without a username connecting from `peer` is let in.
    pub fn allows(self, peer: IpAddr) -> bool {
        match self {
            Anonymous::Deny => false,
            Anonymous::Allow => true,
            Anonymous::Local => is_loopback(peer),
        }
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped 127.x.x.x (what a dual-stack socket reports).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Which way a bridge topic flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

/// One `topic PATTERN [DIR [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]` line of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    pub pattern: String,
    pub direction: Direction,
    pub qos: u8,
    pub local_prefix: String,
    pub remote_prefix: String,
}

impl BridgeTopic {
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    Automatic,
    Lazy,
    Once,
}

/// A `connection NAME` block: an outgoing link to another broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    /// host and port, tried in turn.
    pub addresses: Vec<(String, u16)>,
    pub topics: Vec<BridgeTopic>,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    pub remote_clientid: Option<String>,
    pub local_clientid: Option<String>,
    pub cleansession: bool,
    pub keepalive: u16,
    /// Seconds before reconnecting: base, doubled after each failure up to cap.
    pub restart_timeout: (u32, u32),
    pub start_type: StartType,
    pub threshold: u32,
    /// `idle_timeout`: seconds without a message either way after which a lazy bridge
    /// disconnects (default 60).
    pub idle_timeout: u32,
    pub try_private: bool,
    pub notifications: bool,
    pub notification_topic: Option<String>,
    /// 3, 4 or 5.
    pub protocol_level: u8,
    pub cafile: Option<PathBuf>,
    pub capath: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub insecure: bool,
    /// Lowest TLS version (`tlsv1.2`, `tlsv1.3`); `None`: rustls' default (1.2 and 1.3).
    pub tls_version: Option<String>,
    pub max_packet_size: u32,
    /// `bridge_outgoing_retain false`: the retain flag is cleared on everything sent.
    pub outgoing_retain: bool,
    /// `notifications_local_only`: the connection state is published locally only, with no
    /// will and no copy on the remote.
    pub notifications_local_only: bool,
    /// `bridge_attempt_unsubscribe`: UNSUBSCRIBE the remote topics of `out` rules on connect.
    pub attempt_unsubscribe: bool,
    /// `bridge_bind_address`: the local address the connection comes from.
    pub bind_address: Option<String>,
    /// `round_robin`: false (the default) goes back to the first address once it answers
    /// again; true stays on whichever address took the connection.
    pub round_robin: bool,
}

impl Bridge {
    pub fn new(name: &str) -> Bridge {
        Bridge {
            name: name.to_owned(),
            addresses: Vec::new(),
            topics: Vec::new(),
            remote_username: None,
            remote_password: None,
            remote_clientid: None,
            local_clientid: None,
            cleansession: false,
            keepalive: 60,
            restart_timeout: (5, 30),
            start_type: StartType::Automatic,
            threshold: 10,
            idle_timeout: 60,
            try_private: true,
            notifications: true,
            notification_topic: None,
            protocol_level: 4,
            cafile: None,
            capath: None,
            certfile: None,
            keyfile: None,
            insecure: false,
            tls_version: None,
            max_packet_size: 0,
            outgoing_retain: true,
            notifications_local_only: false,
            attempt_unsubscribe: true,
            bind_address: None,
            round_robin: false,
        }
    }

    pub fn uses_tls(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some() || self.certfile.is_some()
    }
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    Stdout,
    Stderr,
    Syslog,
    File(PathBuf),
    Topic,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file the configuration came from, if any ("local only mode" without one).
    pub source: Option<PathBuf>,
    pub listeners: Vec<Listener>,
    pub bridges: Vec<Bridge>,
    /// `None`: not set in the file; anonymous access is then allowed only in local-only mode.
    pub allow_anonymous: Option<Anonymous>,
    pub per_listener_settings: bool,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub user: Option<String>,
    /// 0 or less: unlimited.
    pub max_connections: i64,
    /// Largest accepted PUBLISH payload; 0: no limit (beyond the protocol's own).
    pub message_size_limit: u32,
    /// Largest accepted packet; 0: no limit.
    pub max_packet_size: u32,
    pub max_inflight_messages: u16,
    /// `max_inflight_bytes`: payload bytes of QoS 1/2 messages in flight to one client above
    /// which the next waits in the queue; 0: no limit.
    pub max_inflight_bytes: u64,
    pub max_queued_messages: u32,
    pub max_queued_bytes: u64,
    pub max_keepalive: u16,
    pub max_topic_alias: u16,
    pub retain_available: bool,
    pub persistent_client_expiration: Option<Duration>,
    pub sys_interval: u32,
    pub persistence: bool,
    pub persistence_location: Option<PathBuf>,
    pub persistence_file: String,
    pub autosave_interval: u32,
    pub autosave_on_changes: bool,
    /// Append every change to a journal, synced before acknowledgements (crash-safe).
    pub persistence_journal: bool,
    /// Where the journal (and the snapshot compaction writes) lives; default: beside the
    /// snapshot.
    pub journal_location: Option<PathBuf>,
    pub log_dest: Vec<LogDest>,
    pub log_types: Vec<String>,
    pub log_timestamp: bool,
    pub log_timestamp_format: Option<String>,
    pub log_facility: Option<u32>,
    pub connection_messages: bool,
    pub queue_qos0_messages: bool,
    pub upgrade_outgoing_qos: bool,
    pub allow_zero_length_clientid: bool,
    pub auto_id_prefix: String,
    /// TCP_NODELAY on accepted sockets. On by default, unlike Mosquitto: the broker already
    /// batches what it writes per pass of its loop, so Nagle's algorithm would only add
    /// delay. `set_tcp_nodelay false` turns Nagle back on.
    pub set_tcp_nodelay: bool,
    /// Seconds a new connection has to send CONNECT (TLS handshake and WebSocket upgrade
    /// included). Mosquitto has no such key and no such limit.
    pub connect_timeout: u32,
    /// Largest CONNECT accepted, and the most a connection may announce before it has sent
    /// one: refused as soon as the fixed header says more, before the body is buffered.
    pub max_connect_size: u32,
    /// Connections that have not completed CONNECT yet, over all addresses; 0: no limit.
    pub max_pending_connections: u32,
    /// Connections that have not completed CONNECT yet, per source address; 0: no limit.
    pub max_pending_per_address: u32,
    /// `Origin` headers a WebSocket upgrade may carry; empty: any (and none).
    pub websockets_origins: Vec<String>,
    /// Heap bytes above which new PUBLISHes are refused; 0: no limit.
    pub memory_limit: u64,
    /// The username replaces the client id; clients without one are refused.
    pub use_username_as_clientid: bool,
    /// `clientid_prefixes`: only client ids starting with this may connect (assigned ids
    /// included, as in Mosquitto); others get CONNACK "not authorised".
    pub clientid_prefixes: Option<String>,
    /// What clients may grow after login; see [`ResourceBudget`].
    pub budget: ResourceBudget,
}

/// Every resource a logged-in client can grow, with its cap, in one place (issue 15). The
/// defaults are sized for a 64 MB router; 0 means no limit. Pre-login caps are the
/// `connect_timeout` .. `max_pending_per_address` keys of [`Config`], the heap as a whole is
/// `memory_limit`, and the queue per session is Mosquitto's `max_queued_messages` /
/// `max_queued_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceBudget {
    /// `max_subscriptions`: subscriptions per session (shared ones included). Over it the
    /// filter's SUBACK code is a failure (5.0: 0x97 Quota exceeded; 3.1.1: 0x80).
    pub max_subscriptions: u32,
    /// `max_shared_groups`: distinct `$share/{group}/{filter}` groups, all sessions. Over it:
    /// SUBACK 0x97 / 0x80 for a filter that would open a new group.
    pub max_shared_groups: u32,
    /// `max_retained_messages`: topics in the retained store. A retained PUBLISH to a new
    /// topic over it is refused (5.0: PUBACK/PUBREC 0x97; 3.1.1 and QoS 0: delivered, not
    /// retained) and logged. Replacing or clearing a topic is always allowed.
    pub max_retained_messages: u32,
    /// `max_retained_bytes`: topic and payload bytes in the retained store, as above.
    pub max_retained_bytes: u64,
    /// `max_sessions`: sessions, connected and offline persistent ones. At the cap a new
    /// client id takes the place of the offline session that left longest ago; when none is
    /// offline, CONNACK refuses it (5.0: 0x97 Quota exceeded; 3.1.1: 3 Server unavailable).
    pub max_sessions: u32,
    /// `max_offline_sessions`: persistent sessions kept without a connection. Over it, the one
    /// that left longest ago is discarded (logged), as if it had expired.
    pub max_offline_sessions: u32,
    /// `max_output_bytes`: encoded packets queued for one connection's socket. Over it, QoS 0
    /// messages to it are dropped (logged once, as Mosquitto does); QoS 1/2 wait in the
    /// session's queue within `max_queued_messages`.
    pub max_output_bytes: u64,
    /// `max_outgoing_topic_alias`: topic aliases the broker sets up towards a 5.0 client, at
    /// most the client's own Topic Alias Maximum.
    pub max_outgoing_topic_alias: u16,
}

impl Default for ResourceBudget {
    fn default() -> ResourceBudget {
        ResourceBudget {
            max_subscriptions: 1000,
            max_shared_groups: 1000,
            max_retained_messages: 10_000,
            max_retained_bytes: 4 << 20,
            max_sessions: 16_384,
            max_offline_sessions: 1000,
            max_output_bytes: 1 << 20,
            max_outgoing_topic_alias: 10,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: None,
            listeners: Vec::new(),
            bridges: Vec::new(),
            allow_anonymous: None,
            per_listener_settings: false,
            password_file: None,
            acl_file: None,
            pid_file: None,
            user: None,
            max_connections: -1,
            message_size_limit: 0,
            max_packet_size: 0,
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            max_keepalive: 65535,
            max_topic_alias: 10,
            retain_available: true,
            persistent_client_expiration: None,
            sys_interval: 10,
            persistence: false,
            persistence_location: None,
            persistence_file: "rmqtt.db".to_owned(),
            autosave_interval: 1800,
            autosave_on_changes: false,
            persistence_journal: true,
            journal_location: None,
            log_dest: Vec::new(),
            log_types: Vec::new(),
            log_timestamp: true,
            log_timestamp_format: None,
            log_facility: None,
            connection_messages: true,
            queue_qos0_messages: false,
            upgrade_outgoing_qos: false,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_owned(),
            set_tcp_nodelay: true,
            connect_timeout: 10,
            max_connect_size: 8192,
            max_pending_connections: 256,
            max_pending_per_address: 64,
            websockets_origins: Vec::new(),
            memory_limit: 0,
            use_username_as_clientid: false,
            clientid_prefixes: None,
            budget: ResourceBudget::default(),
        }
    }
}

impl Config {
    /// True when no listener was configured: bind loopback only, like Mosquitto 2.
    pub fn local_only(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The anonymous-access rule of `listener` (per_listener_settings), else the global one.
    pub fn anonymous_policy(&self, listener: Option<&Listener>) -> Anonymous {
        if let Some(a) = listener.and_then(|l| l.allow_anonymous) {
            if self.per_listener_settings {
                return a;
            }
        }
        self.allow_anonymous.unwrap_or(if self.source.is_none() {
            Anonymous::Allow
        } else {
            Anonymous::Deny
        })
    }

    /// Whether a client without credentials connecting from `peer` may in on `listener`.
    pub fn anonymous_allowed(&self, listener: Option<&Listener>, peer: IpAddr) -> bool {
        self.anonymous_policy(listener).allows(peer)
    }
}

/// A configuration problem, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 0 when the problem is not tied to a line.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a boolean the way Mosquitto and UCI both accept.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" | "on" | "enabled" => Some(true),
        "false" | "0" | "no" | "off" | "disabled" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_values() {
        for (v, want) in [
            ("local", Some(Anonymous::Local)),
            ("true", Some(Anonymous::Allow)),
            ("1", Some(Anonymous::Allow)),
            ("yes", Some(Anonymous::Allow)),
            ("false", Some(Anonymous::Deny)),
            ("off", Some(Anonymous::Deny)),
            ("Local", None),
            ("", None),
            ("maybe", None),
        ] {
            assert_eq!(Anonymous::parse(v), want, "{v:?}");
        }
    }

    #[test]
    fn local_means_loopback_peers() {
        let ok = ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"];
        let no = [
            "10.0.0.1",
            "192.168.1.2",
            "::",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ];
        for a in ok {
            assert!(Anonymous::Local.allows(a.parse().unwrap()), "{a}");
        }
        for a in no {
            assert!(!Anonymous::Local.allows(a.parse().unwrap()), "{a}");
            assert!(Anonymous::Allow.allows(a.parse().unwrap()), "{a}");
        }
        assert!(!Anonymous::Deny.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn per_listener_policy() {
        let mut l = Listener::new(1883, None);
        l.allow_anonymous = Some(Anonymous::Local);
        let mut c = Config {
            source: Some(PathBuf::from("x")),
            allow_anonymous: Some(Anonymous::Deny),
            ..Config::default()
        };
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        // Without per_listener_settings the listener value is not used.
        assert!(!c.anonymous_allowed(Some(&l), lo));
        c.per_listener_settings = true;
        assert!(c.anonymous_allowed(Some(&l), lo));
        assert!(!c.anonymous_allowed(Some(&l), lan));
        assert!(!c.anonymous_allowed(None, lo));
        c.allow_anonymous = Some(Anonymous::Local);
        assert!(c.anonymous_allowed(None, lo));
        assert!(!c.anonymous_allowed(None, lan));
    }
}
