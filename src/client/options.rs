//! Command-line and defaults-file options of the client applets, parsed the way mosquitto_pub and
//! mosquitto_sub 2.0 parse them: same flags, same error wording, same defaults file.
//!
//! The options both applets take live in one table here; each applet brings its own table of
//! the options only it takes. Parsing never panics on user input: every failure is an
//! [`OptError`] holding the exact text mosquitto prints.

use super::props::{self, PropSet};
use crate::protocol::topic::{valid_topic_filter, valid_topic_name};
use crate::protocol::Version;

/// Which applet is parsing: decides the defaults file name and a few messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applet {
    Pub,
    Sub,
    /// rmqtt_rr: one topic to publish to, like pub.
    Rr,
}

impl Applet {
    /// Mosquitto's defaults file name, kept so existing files keep working.
    fn defaults_file(self) -> &'static str {
        match self {
            Applet::Pub => "mosquitto_pub",
            Applet::Sub => "mosquitto_sub",
            Applet::Rr => "mosquitto_rr",
        }
    }

    /// What the usage hint after a bad option tells people to run.
    fn help_hint(self) -> &'static str {
        match self {
            Applet::Pub => "rmqtt_pub --help",
            Applet::Sub => "rmqtt_sub --help",
            Applet::Rr => "rmqtt_rr --help",
        }
    }
}

/// How rmqtt_pub finds its message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PubMode {
    #[default]
    None,
    Message(Vec<u8>),
    File(String),
    StdinLine,
    StdinFile,
    Null,
}

/// TLS options: parsed now so that scripts fail loudly; the TLS client comes later.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub cafile: Option<String>,
    pub capath: Option<String>,
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    pub insecure: bool,
    pub tls_version: Option<String>,
    pub ciphers: Option<String>,
    pub alpn: Option<String>,
    pub use_os_certs: bool,
}

impl TlsOptions {
    pub fn requested(&self) -> bool {
        self.cafile.is_some()
            || self.capath.is_some()
            || self.certfile.is_some()
            || self.keyfile.is_some()
            || self.use_os_certs
    }
}

/// Everything either applet can be told. Fields only one applet uses stay at their default in
/// the other.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: Option<String>,
    /// `--unix PATH`: connect over a Unix domain socket instead of TCP.
    pub unix: Option<String>,
    /// rmqtt_rr `-e`: where the response is awaited.
    pub response_topic: Option<String>,
    pub port: Option<u16>,
    pub bind_address: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub id: Option<String>,
    pub id_prefix: Option<String>,
    pub keepalive: u16,
    pub clean_session: bool,
    /// -1: not given.
    pub session_expiry: i64,
    pub qos: u8,
    pub version: Version,
    pub debug: bool,
    pub quiet: bool,
    pub nodelay: bool,
    pub max_inflight: u32,
    pub will_topic: Option<String>,
    pub will_payload: Option<Vec<u8>>,
    pub will_qos: u8,
    pub will_retain: bool,
    pub props: PropSet,
    pub tls: TlsOptions,
    /// pub: the one topic; sub: every -t.
    pub topics: Vec<String>,
    // rmqtt_pub
    pub pub_mode: PubMode,
    pub retain: bool,
    pub repeat_count: u32,
    pub repeat_delay: std::time::Duration,
    // rmqtt_sub
    pub msg_count: u32,
    pub exit_after_sub: bool,
    pub timeout: u32,
    pub format: Option<String>,
    pub eol: bool,
    pub verbose: bool,
    pub pretty: bool,
    pub no_retain: bool,
    pub retained_only: bool,
    pub remove_retained: bool,
    pub retain_as_published: bool,
    pub filter_outs: Vec<String>,
    pub unsub_topics: Vec<String>,
    /// Which applet is parsing, for options (like `-L`) whose meaning depends on it.
    applet_hint: Applet,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            host: None,
            port: None,
            bind_address: None,
            username: None,
            password: None,
            id: None,
            id_prefix: None,
            keepalive: 60,
            clean_session: true,
            session_expiry: -1,
            qos: 0,
            version: Version::V311,
            debug: false,
            quiet: false,
            nodelay: false,
            unix: None,
            response_topic: None,
            max_inflight: 20,
            will_topic: None,
            will_payload: None,
            will_qos: 0,
            will_retain: false,
            props: PropSet::default(),
            tls: TlsOptions::default(),
            topics: Vec::new(),
            pub_mode: PubMode::None,
            retain: false,
            repeat_count: 1,
            repeat_delay: std::time::Duration::ZERO,
            msg_count: 0,
            exit_after_sub: false,
            timeout: 0,
            format: None,
            eol: true,
            verbose: false,
            pretty: false,
            no_retain: false,
            retained_only: false,
            remove_retained: false,
            retain_as_published: false,
            filter_outs: Vec::new(),
            unsub_topics: Vec::new(),
            applet_hint: Applet::Pub,
        }
    }
}

/// Why parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptError {
    /// `--help`.
    Help,
    /// `--version`.
    Version,
    /// A bad option: the message (with mosquitto's trailing newlines), then the usage hint.
    Bad(String),
}

fn bad(msg: impl Into<String>) -> OptError {
    OptError::Bad(msg.into())
}

/// C `atoi`: leading blanks, optional sign, digits; stops at the first other character.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

/// One option: its spellings, and what to do with it. `arg_missing` is mosquitto's message
/// when the option's argument is missing; `None` for flags.
#[derive(Clone, Copy)]
pub struct Opt {
    pub names: &'static [&'static str],
    pub arg_missing: Option<&'static str>,
    pub apply: fn(&mut Config, &str) -> Result<(), OptError>,
}

const fn flag(
    names: &'static [&'static str],
    apply: fn(&mut Config, &str) -> Result<(), OptError>,
) -> Opt {
    Opt {
        names,
        arg_missing: None,
        apply,
    }
}

const fn arg(
    names: &'static [&'static str],
    missing: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), OptError>,
) -> Opt {
    Opt {
        names,
        arg_missing: Some(missing),
        apply,
    }
}

fn tls_later(_: &mut Config, _: &str) -> Result<(), OptError> {
    Ok(())
}

/// Options both applets take.
pub static COMMON: &[Opt] = &[
    arg(
        &["-A"],
        "Error: -A argument given but no address specified.\n\n",
        |c, v| {
            c.bind_address = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--cafile"],
        "Error: --cafile argument given but no file specified.\n\n",
        |c, v| {
            c.tls.cafile = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--capath"],
        "Error: --capath argument given but no directory specified.\n\n",
        |c, v| {
            c.tls.capath = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--cert"],
        "Error: --cert argument given but no file specified.\n\n",
        |c, v| {
            c.tls.certfile = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--ciphers"],
        "Error: --ciphers argument given but no ciphers specified.\n\n",
        |c, v| {
            c.tls.ciphers = Some(v.to_owned());
            Ok(())
        },
    ),
    flag(&["-c", "--disable-clean-session"], |c, _| {
        c.clean_session = false;
        Ok(())
    }),
    flag(&["-d", "--debug"], |c, _| {
        c.debug = true;
        Ok(())
    }),
    flag(&["--help"], |_, _| Err(OptError::Help)),
    arg(
        &["-h", "--host"],
        "Error: -h argument given but no host specified.\n\n",
        |c, v| {
            c.host = Some(v.to_owned());
            Ok(())
        },
    ),
    flag(&["--insecure"], |c, _| {
        c.tls.insecure = true;
        Ok(())
    }),
    arg(
        &["-i", "--id"],
        "Error: -i argument given but no id specified.\n\n",
        |c, v| {
            c.id = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["-I", "--id-prefix"],
        "Error: -I argument given but no id prefix specified.\n\n",
        |c, v| {
            c.id_prefix = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["-k", "--keepalive"],
        "Error: -k argument given but no keepalive specified.\n\n",
        |c, v| {
            let k = atoi(v);
            if !(5..=65535).contains(&k) {
                return Err(bad(
                    "Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.\n\n",
                ));
            }
            c.keepalive = k as u16;
            Ok(())
        },
    ),
    arg(
        &["--key"],
        "Error: --key argument given but no file specified.\n\n",
        |c, v| {
            c.tls.keyfile = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--keyform"],
        "Error: --keyform argument given but no keyform specified.\n\n",
        tls_later,
    ),
    arg(
        &["-L", "--url"],
        "Error: -L argument given but no URL specified.\n\n",
        parse_url,
    ),
    arg(
        &["-M"],
        "Error: -M argument given but max_inflight not specified.\n\n",
        |c, v| {
            let m = atoi(v);
            if m < 1 {
                return Err(bad(
                    "Error: Maximum inflight messages must be greater than 0.\n\n",
                ));
            }
            c.max_inflight = m.min(i64::from(u16::MAX)) as u32;
            Ok(())
        },
    ),
    arg(
        &["--unix"],
        "Error: --unix argument given but no socket path specified.\n\n",
        |c, v| {
            c.unix = Some(v.to_owned());
            Ok(())
        },
    ),
    flag(&["--nodelay"], |c, _| {
        c.nodelay = true;
        Ok(())
    }),
    arg(
        &["-p", "--port"],
        "Error: -p argument given but no port specified.\n\n",
        |c, v| {
            let p = atoi(v);
            if !(0..=65535).contains(&p) {
                return Err(bad(format!("Error: Invalid port given: {}\n", p as i32)));
            }
            c.port = Some(p as u16);
            Ok(())
        },
    ),
    arg(
        &["-P", "--pw"],
        "Error: -P argument given but no password specified.\n\n",
        |c, v| {
            c.password = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--proxy"],
        "Error: --proxy argument given but no proxy url specified.\n\n",
        |_, _| Err(bad("Error: --proxy is not supported by rmqtt.\n")),
    ),
    arg(
        &["--psk"],
        "Error: --psk argument given but no key specified.\n\n",
        |_, _| Err(bad("Error: --psk is not supported by rmqtt.\n")),
    ),
    arg(
        &["--psk-identity"],
        "Error: --psk-identity argument given but no identity specified.\n\n",
        |_, _| Err(bad("Error: --psk-identity is not supported by rmqtt.\n")),
    ),
    arg(
        &["-q", "--qos"],
        "Error: -q argument given but no QoS specified.\n\n",
        |c, v| {
            let q = atoi(v);
            if !(0..=2).contains(&q) {
                return Err(bad(format!("Error: Invalid QoS given: {}\n", q as i32)));
            }
            c.qos = q as u8;
            Ok(())
        },
    ),
    flag(&["--quiet"], |c, _| {
        c.quiet = true;
        Ok(())
    }),
    arg(
        &["-t", "--topic"],
        "Error: -t argument given but no topic specified.\n\n",
        |_, _| {
            // Handled per applet in `add_topic`; this entry only exists for the missing-argument text.
            Ok(())
        },
    ),
    arg(
        &["--tls-alpn"],
        "Error: --tls-alpn argument given but no protocol specified.\n\n",
        |c, v| {
            c.tls.alpn = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--tls-engine"],
        "Error: --tls-engine argument given but no engine_id specified.\n\n",
        tls_later,
    ),
    arg(
        &["--tls-engine-kpass-sha1"],
        "Error: --tls-engine-kpass-sha1 argument given but no kpass sha1 specified.\n\n",
        tls_later,
    ),
    flag(&["--tls-use-os-certs"], |c, _| {
        c.tls.use_os_certs = true;
        Ok(())
    }),
    arg(
        &["--tls-version"],
        "Error: --tls-version argument given but no version specified.\n\n",
        |c, v| {
            c.tls.tls_version = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["-u", "--username"],
        "Error: -u argument given but no username specified.\n\n",
        |c, v| {
            c.username = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["--unix"],
        "Error: --unix argument given but no socket path specified.\n\n",
        |_, _| Err(bad("Error: --unix is not supported by rmqtt.\n")),
    ),
    arg(
        &["-V", "--protocol-version"],
        "Error: --protocol-version argument given but no version specified.\n\n",
        |c, v| {
            c.version = match v {
                "mqttv31" | "31" => Version::V31,
                "mqttv311" | "311" => Version::V311,
                "mqttv5" | "5" => Version::V5,
                _ => return Err(bad("Error: Invalid protocol version argument given.\n\n")),
            };
            Ok(())
        },
    ),
    flag(&["--version"], |_, _| Err(OptError::Version)),
    arg(
        &["--will-payload"],
        "Error: --will-payload argument given but no will payload specified.\n\n",
        |c, v| {
            c.will_payload = Some(v.as_bytes().to_vec());
            Ok(())
        },
    ),
    arg(
        &["--will-qos"],
        "Error: --will-qos argument given but no will QoS specified.\n\n",
        |c, v| {
            let q = atoi(v);
            if !(0..=2).contains(&q) {
                return Err(bad(format!("Error: Invalid will QoS {}.\n\n", q as i32)));
            }
            c.will_qos = q as u8;
            Ok(())
        },
    ),
    flag(&["--will-retain"], |c, _| {
        c.will_retain = true;
        Ok(())
    }),
    arg(
        &["--will-topic"],
        "Error: --will-topic argument given but no will topic specified.\n\n",
        |c, v| {
            if !valid_topic_name(v) {
                return Err(bad(format!(
                    "Error: Invalid will topic '{v}', does it contain '+' or '#'?\n"
                )));
            }
            c.will_topic = Some(v.to_owned());
            Ok(())
        },
    ),
    arg(
        &["-x"],
        "Error: -x argument given but no session expiry interval specified.\n\n",
        |c, v| {
            if v == "∞" {
                c.session_expiry = i64::from(u32::MAX);
                return Ok(());
            }
            let parsed = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                i64::from_str_radix(hex, 16).ok()
            } else {
                v.parse::<i64>().ok()
            };
            let Some(n) = parsed else {
                return Err(bad("Error: session-expiry-interval not a number.\n\n"));
            };
            if n > i64::from(u32::MAX) || n < -1 {
                return Err(bad("Error: session-expiry-interval out of range.\n\n"));
            }
            c.session_expiry = if n == -1 { i64::from(u32::MAX) } else { n };
            Ok(())
        },
    ),
];

/// `-L mqtt://[user[:pass]@]host[:port]/topic`.
fn parse_url(c: &mut Config, url: &str) -> Result<(), OptError> {
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("mqtt://") {
        c.port = Some(1883);
        url.get(7..).unwrap_or_default()
    } else if lower.starts_with("mqtts://") {
        // As mosquitto: port 8883, and the system's CA certificates unless --cafile says else.
        c.port = Some(8883);
        c.tls.use_os_certs = true;
        url.get(8..).unwrap_or_default()
    } else {
        return Err(bad("Error: Unsupported URL scheme.\n\n"));
    };
    let Some((authority, topic)) = rest.split_once('/') else {
        return Err(bad(
            "Error: Invalid URL for -L argument specified - topic missing.\n",
        ));
    };
    c.pending_topic(topic, "-L topic")?;
    let hostport = match authority.split_once('@') {
        Some((userinfo, hostport)) => {
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    c.username = Some(u.to_owned());
                    c.password = Some(p.to_owned());
                }
                None => c.username = Some(userinfo.to_owned()),
            }
            hostport
        }
        None => authority,
    };
    match hostport.split_once(':') {
        Some((h, p)) => {
            c.host = Some(h.to_owned());
            c.port = Some(atoi(p).clamp(0, 65535) as u16);
        }
        None => c.host = Some(hostport.to_owned()),
    }
    Ok(())
}

impl Config {
    /// The applet decides what a topic means; `parse_url` calls back through this.
    fn pending_topic(&mut self, topic: &str, what: &str) -> Result<(), OptError> {
        add_topic(self, self.applet_hint, topic, what)
    }
}

/// Adds `topic` as mosquitto's `cfg_add_topic` does: pub keeps one topic name, sub a list of
/// filters.
fn add_topic(c: &mut Config, applet: Applet, topic: &str, _what: &str) -> Result<(), OptError> {
    match applet {
        Applet::Pub | Applet::Rr => {
            if !valid_topic_name(topic) {
                return Err(bad(format!(
                    "Error: Invalid publish topic '{topic}', does it contain '+' or '#'?\n"
                )));
            }
            c.topics = vec![topic.to_owned()];
        }
        Applet::Sub => {
            if !valid_topic_filter(topic) {
                return Err(bad(format!(
                    "Error: Invalid subscription topic '{topic}', are all '+' and '#' wildcards correct?\n"
                )));
            }
            c.topics.push(topic.to_owned());
        }
    }
    Ok(())
}

/// Parses `args` (program name first) into `cfg`, using `COMMON` and the applet's own table.
/// `from_file` is set while reading the defaults file (mosquitto treats both the same way).
pub fn parse_into(
    cfg: &mut Config,
    applet: Applet,
    own: &[Opt],
    args: &[String],
) -> Result<(), OptError> {
    cfg.applet_hint = applet;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "-t" || a == "--topic" {
            let Some(v) = args.get(i + 1) else {
                return Err(bad("Error: -t argument given but no topic specified.\n\n"));
            };
            add_topic(cfg, applet, v, "-t")?;
            i += 2;
            continue;
        }
        if a == "-D" || a == "--property" {
            let used = props::parse_property(&mut cfg.props, &args[i + 1..])?;
            cfg.version = Version::V5;
            i += 1 + used;
            continue;
        }
        let Some(opt) = COMMON
            .iter()
            .chain(own.iter())
            .find(|o| o.names.contains(&a))
        else {
            return Err(bad(format!("Error: Unknown option '{a}'.\n")));
        };
        match opt.arg_missing {
            None => {
                (opt.apply)(cfg, "")?;
                i += 1;
            }
            Some(missing) => {
                let Some(v) = args.get(i + 1) else {
                    return Err(bad(missing));
                };
                (opt.apply)(cfg, v)?;
                i += 2;
            }
        }
    }
    Ok(())
}

/// Where mosquitto looks for its defaults file: `$XDG_CONFIG_HOME/mosquitto_pub`, else
/// `$HOME/.config/mosquitto_pub` (likewise `mosquitto_sub`).
fn defaults_path(applet: Applet) -> Option<std::path::PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Some(std::path::Path::new(&x).join(applet.defaults_file()));
    }
    let home = std::env::var_os("HOME")?;
    Some(
        std::path::Path::new(&home)
            .join(".config")
            .join(applet.defaults_file()),
    )
}

/// Splits one defaults-file line as mosquitto does: the option, then the rest of the line
/// (spaces included) as its single argument.
fn split_defaults_line(line: &str) -> Option<Vec<String>> {
    if line.starts_with('#') {
        return None;
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.trim_start_matches(' ');
    if line.is_empty() {
        return None;
    }
    let mut v = vec![String::new()];
    match line.split_once(' ') {
        Some((opt, rest)) => {
            v.push(opt.to_owned());
            if !rest.is_empty() {
                v.push(rest.to_owned());
            }
        }
        None => v.push(line.to_owned()),
    }
    Some(v)
}

/// Full parse: defaults file, then the command line, then the cross-option checks mosquitto
/// makes in `client_config_load`.
/// [`load`] for an applet's `main`: `--help`, `--version` and bad options are printed the
/// way mosquitto prints them, and give the exit code to return.
pub fn load_or_exit(
    applet: Applet,
    own: &[Opt],
    args: &[String],
    usage: fn(),
    version: fn(),
) -> Result<Config, i32> {
    match load(applet, own, args) {
        Ok(c) => Ok(c),
        Err(OptError::Help) => {
            usage();
            Err(1)
        }
        Err(OptError::Version) => {
            version();
            Err(1)
        }
        Err(OptError::Bad(m)) => {
            eprint!("{m}");
            eprintln!("\nUse '{}' to see usage.", applet.help_hint());
            Err(1)
        }
    }
}

pub fn load(applet: Applet, own: &[Opt], args: &[String]) -> Result<Config, OptError> {
    let mut cfg = Config::default();
    if applet == Applet::Rr {
        // mosquitto_rr speaks MQTT 5 unless told otherwise: request/response is a v5 feature.
        cfg.version = Version::V5;
    }
    if let Some(path) = defaults_path(applet) {
        if let Ok(text) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&text);
            for line in text.split_inclusive('\n') {
                if let Some(argv) = split_defaults_line(line) {
                    parse_into(&mut cfg, applet, own, &argv)?;
                }
            }
        }
    }
    parse_into(&mut cfg, applet, own, args)?;

    if cfg.will_payload.is_some() && cfg.will_topic.is_none() {
        return Err(bad("Error: Will payload given, but no will topic given.\n"));
    }
    if cfg.will_retain && cfg.will_topic.is_none() {
        return Err(bad("Error: Will retain given, but no will topic given.\n"));
    }
    if cfg.id.is_some() && cfg.id_prefix.is_some() {
        return Err(bad(
            "Error: -i and -I argument cannot be used together.\n\n",
        ));
    }
    if cfg.tls.certfile.is_some() != cfg.tls.keyfile.is_some() {
        return Err(bad(
            "Error: Both certfile and keyfile must be provided if one of them is set.\n",
        ));
    }
    if cfg.version == Version::V5 {
        if !cfg.clean_session && cfg.session_expiry == -1 {
            cfg.session_expiry = i64::from(u32::MAX);
        }
        if cfg.session_expiry > 0 {
            if cfg.session_expiry == i64::from(u32::MAX)
                && (cfg.id_prefix.is_some() || cfg.id.is_none())
            {
                return Err(bad(
                    "Error: You must provide a client id if you are using an infinite session expiry interval.\n",
                ));
            }
            cfg.props.connect.session_expiry_interval = Some(cfg.session_expiry as u32);
        }
    } else if !cfg.clean_session && (cfg.id_prefix.is_some() || cfg.id.is_none()) {
        return Err(bad(
            "Error: You must provide a client id if you are using the -c option.\n",
        ));
    }
    if applet == Applet::Sub && cfg.topics.is_empty() {
        return Err(bad("Error: You must specify a topic to subscribe to.\n"));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        std::iter::once("x")
            .chain(s.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi("12abc"), 12);
        assert_eq!(atoi(" -3"), -3);
        assert_eq!(atoi("abc"), 0);
    }

    #[test]
    fn defaults_line_keeps_rest_as_one_argument() {
        assert_eq!(
            split_defaults_line("-m hello world\n").unwrap(),
            vec!["", "-m", "hello world"]
        );
        assert_eq!(split_defaults_line("# c\n"), None);
        assert_eq!(split_defaults_line("\n"), None);
        assert_eq!(split_defaults_line("-d\r\n").unwrap(), vec!["", "-d"]);
    }

    #[test]
    fn common_and_errors() {
        let mut c = Config::default();
        parse_into(
            &mut c,
            Applet::Sub,
            &[],
            &argv(&["-h", "x", "-p", "99", "-t", "a/#", "-V", "mqttv5"]),
        )
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("x"));
        assert_eq!(c.port, Some(99));
        assert_eq!(c.version, Version::V5);
        assert_eq!(c.topics, vec!["a/#"]);
        let e = parse_into(&mut c, Applet::Sub, &[], &argv(&["-z"])).unwrap_err();
        assert_eq!(e, OptError::Bad("Error: Unknown option '-z'.\n".into()));
        let e = parse_into(&mut c, Applet::Sub, &[], &argv(&["-q", "3"])).unwrap_err();
        assert_eq!(e, OptError::Bad("Error: Invalid QoS given: 3\n".into()));
        let e = parse_into(&mut c, Applet::Pub, &[], &argv(&["-t", "a/+"])).unwrap_err();
        assert!(matches!(e, OptError::Bad(m) if m.contains("Invalid publish topic 'a/+'")));
    }

    #[test]
    fn url() {
        let mut c = Config::default();
        parse_into(
            &mut c,
            Applet::Pub,
            &[],
            &argv(&["-L", "mqtt://u:p@h:1234/t/x"]),
        )
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p"));
        assert_eq!(c.host.as_deref(), Some("h"));
        assert_eq!(c.port, Some(1234));
        assert_eq!(c.topics, vec!["t/x"]);
    }
}
