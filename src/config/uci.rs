//! UCI configuration files (OpenWrt's `/etc/config/*` syntax) and the loader that maps the
//! `rmqtt` package onto the typed [`Config`].
//!
//! The parser follows libuci's file syntax: `package`, `config TYPE ['name']`,
//! `option NAME VALUE`, `list NAME VALUE` (and their one-letter forms), `'...'` literal,
//! `"..."` where a backslash takes the next character literally, unquoted words ending at
//! whitespace, pieces glued together (`a'b c'"d"`), quoted values spanning lines, a trailing
//! backslash continuing the line, `#` comments and `;` between statements. It never panics on
//! file contents, and every error carries the file and the line.
//!
//! The loader uses the section and option names of OpenWrt's mosquitto package (`owrt`,
//! `mosquitto`, `persistence`, `listener`, `bridge`), so a user migrates by renaming the file:
//! every option that package's init script turns into mosquitto.conf (its `convert_mosq_general`,
//! `convert_persistence`, `add_listener` and `add_bridge`) means the same here, bridge options
//! included (`cafile` there is `bridge_cafile` in mosquitto.conf, and makes the bridge use TLS).
//! Every option it knows is in [`SECTIONS`]. An option rmqtt does not implement is a warning
//! when ignoring it changes nothing about security, and an error (file, line, option) when it
//! would (TLS-PSK, cipher lists, CRLs, plugins, mount points...); unknown options are warnings,
//! never silently dropped.

use super::mosquitto::Warning;
use super::{parse_bool, Anonymous, Config, ConfigError, Listener, ListenerProtocol, LogDest};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `use_uci 0` sends the broker when the `owrt` section names no other file.
pub const DEFAULT_MOSQUITTO_CONF: &str = "/etc/rmqtt/rmqtt.conf";

/// The value of an option: `option` gives one string, `list` a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Single(String),
    List(Vec<String>),
}

impl Value {
    /// Every string in the value, in order.
    pub fn items(&self) -> &[String] {
        match self {
            Value::Single(s) => std::slice::from_ref(s),
            Value::List(l) => l,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UciOption {
    pub name: String,
    pub value: Value,
    /// Line of the statement that last set the option (or first added to the list).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub stype: String,
    /// `None` for an anonymous section (`config listener` without a name).
    pub name: Option<String>,
    pub line: usize,
    pub options: Vec<UciOption>,
}

impl Section {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.options
            .iter()
            .find(|o| o.name == name)
            .map(|o| &o.value)
    }
}

/// One statement: its words after quoting is resolved, and the line it started on.
struct Statement {
    line: usize,
    words: Vec<String>,
}

fn parse_error(file: &str, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        line,
        message: message.into(),
    }
}

/// Splits `text` into statements, resolving quotes, escapes, comments and continuations.
fn lex(file: &str, text: &str) -> Result<Vec<Statement>, ConfigError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut words: Vec<String> = Vec::new();
    let mut stmt_line = 1;
    let flush = |words: &mut Vec<String>, out: &mut Vec<Statement>, at: usize| {
        if !words.is_empty() {
            out.push(Statement {
                line: at,
                words: std::mem::take(words),
            });
        }
    };
    loop {
        while chars
            .peek()
            .is_some_and(|c| *c != '\n' && c.is_whitespace())
        {
            chars.next();
        }
        match chars.peek().copied() {
            None => {
                flush(&mut words, &mut out, stmt_line);
                return Ok(out);
            }
            Some('\n') => {
                chars.next();
                flush(&mut words, &mut out, stmt_line);
                line += 1;
            }
            Some(';') => {
                chars.next();
                flush(&mut words, &mut out, stmt_line);
            }
            Some('#') => {
                while chars.peek().is_some_and(|c| *c != '\n') {
                    chars.next();
                }
            }
            Some(_) => {
                if words.is_empty() {
                    stmt_line = line;
                }
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == ';' || c == '#' {
                        break;
                    }
                    chars.next();
                    match c {
                        '\'' => {
                            let opened = line;
                            loop {
                                match chars.next() {
                                    None => {
                                        return Err(parse_error(
                                            file,
                                            opened,
                                            "unterminated ' (single quote)",
                                        ))
                                    }
                                    Some('\'') => break,
                                    Some(ch) => {
                                        if ch == '\n' {
                                            line += 1;
                                        }
                                        word.push(ch);
                                    }
                                }
                            }
                        }
                        '"' => {
                            let opened = line;
                            loop {
                                match chars.next() {
                                    None => {
                                        return Err(parse_error(
                                            file,
                                            opened,
                                            "unterminated \" (double quote)",
                                        ))
                                    }
                                    Some('"') => break,
                                    Some('\\') => match chars.next() {
                                        None => {
                                            return Err(parse_error(
                                                file,
                                                opened,
                                                "unterminated \" (double quote)",
                                            ))
                                        }
                                        // A backslash before the line end joins the lines.
                                        Some('\n') => line += 1,
                                        Some(ch) => word.push(ch),
                                    },
                                    Some(ch) => {
                                        if ch == '\n' {
                                            line += 1;
                                        }
                                        word.push(ch);
                                    }
                                }
                            }
                        }
                        '\\' => match chars.next() {
                            None => {}
                            Some('\n') => line += 1,
                            Some(ch) => word.push(ch),
                        },
                        ch => word.push(ch),
                    }
                }
                words.push(word);
            }
        }
    }
}

/// UCI names (section names, option names, types): `[A-Za-z0-9_]+`.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses UCI text as if it came from `file`. Sections with the same name merge, `option`
/// replaces, `list` appends (turning an earlier `option` into the list's first item), and an
/// empty `option` value deletes the option, all as libuci does.
pub fn parse(file: &str, text: &str) -> Result<Vec<Section>, ConfigError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    for st in lex(file, text)? {
        let err = |m: String| parse_error(file, st.line, m);
        let (cmd, args) = match st.words.split_first() {
            Some(x) => x,
            None => continue,
        };
        match cmd.as_str() {
            "package" | "p" => match args {
                [name] if !name.is_empty() => {}
                [] | [_] => return Err(err("package without name".into())),
                _ => return Err(err("too many arguments to package".into())),
            },
            "config" | "c" => {
                let (stype, name) = match args {
                    [t] => (t, None),
                    [t, n] => (t, Some(n)),
                    [] => return Err(err("config without a section type".into())),
                    _ => return Err(err("too many arguments to config".into())),
                };
                if !valid_name(stype) {
                    return Err(err(format!(
                        "invalid section type '{stype}' (use letters, digits and _)"
                    )));
                }
                let name = name.filter(|n| !n.is_empty());
                if let Some(n) = name {
                    if !valid_name(n) {
                        return Err(err(format!(
                            "invalid section name '{n}' (use letters, digits and _)"
                        )));
                    }
                }
                let existing = name.and_then(|n| {
                    sections
                        .iter()
                        .position(|s| s.name.as_deref() == Some(n.as_str()))
                });
                match existing {
                    Some(i) => {
                        if let Some(s) = sections.get_mut(i) {
                            s.stype = stype.clone();
                        }
                        current = Some(i);
                    }
                    None => {
                        sections.push(Section {
                            stype: stype.clone(),
                            name: name.cloned(),
                            line: st.line,
                            options: Vec::new(),
                        });
                        current = Some(sections.len() - 1);
                    }
                }
            }
            "option" | "o" | "list" | "l" => {
                let is_list = cmd.starts_with('l');
                let Some(sec) = current.and_then(|i| sections.get_mut(i)) else {
                    return Err(err(format!("{cmd} found before the first section")));
                };
                let (name, value) = match args {
                    [n] => (n, String::new()),
                    [n, v] => (n, v.clone()),
                    [] => return Err(err(format!("{cmd} without a name"))),
                    _ => {
                        return Err(err(format!(
                            "too many arguments to {cmd} (quote values that contain spaces)"
                        )))
                    }
                };
                if !valid_name(name) {
                    return Err(err(format!(
                        "invalid option name '{name}' (use letters, digits and _)"
                    )));
                }
                let pos = sec.options.iter().position(|o| o.name == *name);
                match (is_list, pos) {
                    (false, Some(i)) if value.is_empty() => {
                        sec.options.remove(i);
                    }
                    (false, _) if value.is_empty() => {}
                    (false, Some(i)) => {
                        if let Some(o) = sec.options.get_mut(i) {
                            o.value = Value::Single(value);
                            o.line = st.line;
                        }
                    }
                    (true, Some(i)) => {
                        if let Some(o) = sec.options.get_mut(i) {
                            o.value = match std::mem::replace(&mut o.value, Value::List(vec![])) {
                                Value::Single(s) => Value::List(vec![s, value]),
                                Value::List(mut l) => {
                                    l.push(value);
                                    Value::List(l)
                                }
                            };
                        }
                    }
                    (is_list, None) => sec.options.push(UciOption {
                        name: name.clone(),
                        value: if is_list {
                            Value::List(vec![value])
                        } else {
                            Value::Single(value)
                        },
                        line: st.line,
                    }),
                }
            }
            other => {
                return Err(err(format!(
                    "invalid command '{other}' (expected config, option, list or package)"
                )))
            }
        }
    }
    Ok(sections)
}

/// True when `text` is UCI rather than Mosquitto syntax: its first statement is `config` or
/// `package` (Mosquitto has neither key).
pub fn looks_like_uci(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().next())
        .is_some_and(|w| w == "config" || w == "package")
}

/// What an option handler gets: the option's value, `option` or `list`.
struct Arg<'a> {
    value: &'a Value,
}

impl Arg<'_> {
    fn one(&self) -> Result<&str, String> {
        match self.value {
            Value::Single(s) => Ok(s),
            Value::List(l) => match l.as_slice() {
                [s] => Ok(s),
                _ => Err("expects a single value, not a list".to_owned()),
            },
        }
    }

    fn boolean(&self) -> Result<bool, String> {
        let v = self.one()?;
        parse_bool(v).ok_or_else(|| format!("invalid boolean value ({v}); use 0 or 1"))
    }

    fn anonymous(&self) -> Result<Anonymous, String> {
        let v = self.one()?;
        Anonymous::parse(v).ok_or_else(|| format!("invalid value ({v}); use 0, 1 or local"))
    }

    fn number(&self, min: i64, max: i64) -> Result<i64, String> {
        let v = self.one()?;
        let n: i64 = v.parse().map_err(|_| format!("invalid number ({v})"))?;
        if n < min || n > max {
            return Err(format!("value {n} out of range {min}..{max}"));
        }
        Ok(n)
    }

    fn path(&self) -> Result<PathBuf, String> {
        let v = self.one()?;
        if v.is_empty() {
            return Err("missing path".to_owned());
        }
        Ok(PathBuf::from(v))
    }
}

/// Loader state while walking the sections.
struct Loader {
    cfg: Config,
    warnings: Vec<Warning>,
    /// `owrt.use_uci`: `false` sends the broker to a Mosquitto-syntax file.
    use_uci: bool,
    mosquitto_conf: PathBuf,
    /// Listener made by the general section's `port`/`protocol`/`no_remote_access`.
    general_listener: Option<Listener>,
    general_no_remote: bool,
    /// `file:line: section.option` of the option being applied, for warnings.
    at: String,
}

type Handler = fn(&mut Loader, &mut Listener, &Arg) -> Result<(), String>;

/// A section type and the options it understands, each with a one-line description. The
/// descriptions are what `openwrt/README.md` documents; a test keeps the two in step.
pub struct SectionSpec {
    pub stype: &'static str,
    options: &'static [(&'static str, Handler, &'static str)],
}

macro_rules! set {
    ($($field:ident).+, $conv:expr) => {
        |l: &mut Loader, _: &mut Listener, a: &Arg| {
            l.cfg.$($field).+ = $conv(a)?;
            Ok(())
        }
    };
}

macro_rules! set_listener {
    ($field:ident, $conv:expr) => {
        |_: &mut Loader, li: &mut Listener, a: &Arg| {
            li.$field = $conv(a)?;
            Ok(())
        }
    };
}

fn some_path(a: &Arg) -> Result<Option<PathBuf>, String> {
    a.path().map(Some)
}

fn owned(a: &Arg) -> Result<String, String> {
    a.one().map(str::to_owned)
}

fn protocol(a: &Arg) -> Result<ListenerProtocol, String> {
    match a.one()? {
        "mqtt" => Ok(ListenerProtocol::Mqtt),
        "websockets" => Ok(ListenerProtocol::WebSockets),
        other => Err(format!(
            "invalid protocol ({other}); use mqtt or websockets"
        )),
    }
}

fn port(a: &Arg) -> Result<u16, String> {
    let v = a.one()?;
    v.parse::<u16>()
        .map_err(|_| format!("invalid port ({v}); use a number from 0 to 65535"))
}

/// `1h`, `2d`, `3w`, `4m` (months), `1y`, or plain seconds, as in Mosquitto.
fn duration(a: &Arg) -> Result<Option<Duration>, String> {
    let v = a.one()?;
    let err = || format!("invalid duration ({v}); use a number followed by h, d, w, m or y");
    let (num, mult) = match v.char_indices().last() {
        Some((i, 'h')) => (v.get(..i), 3600u64),
        Some((i, 'd')) => (v.get(..i), 86_400),
        Some((i, 'w')) => (v.get(..i), 7 * 86_400),
        Some((i, 'm')) => (v.get(..i), 30 * 86_400),
        Some((i, 'y')) => (v.get(..i), 365 * 86_400),
        _ => (Some(v), 1),
    };
    let n: u64 = num.ok_or_else(err)?.parse().map_err(|_| err())?;
    Ok(Some(Duration::from_secs(n.saturating_mul(mult))))
}

fn log_dest(item: &str) -> Result<LogDest, String> {
    let words: Vec<&str> = item.split_whitespace().collect();
    Ok(match words.as_slice() {
        ["stdout"] => LogDest::Stdout,
        ["stderr"] => LogDest::Stderr,
        ["syslog"] => LogDest::Syslog,
        ["topic"] => LogDest::Topic,
        ["none"] => LogDest::None,
        ["file", rest @ ..] if !rest.is_empty() => LogDest::File(PathBuf::from(rest.join(" "))),
        _ => {
            return Err(format!(
                "invalid log_dest ({item}); use stdout, stderr, syslog, topic, none or file PATH"
            ))
        }
    })
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

/// An option rmqtt does not implement and whose absence changes nothing about security.
fn ignored(l: &mut Loader, _: &mut Listener, _: &Arg) -> Result<(), String> {
    l.warnings.push(Warning(format!(
        "{} is not supported by rmqtt; ignored",
        l.at
    )));
    Ok(())
}

const REFUSED: &str = "is not supported by rmqtt, and ignoring it would change who may connect \
                       or what they may do; refusing to start (remove the option)";

/// An option rmqtt does not implement and that would weaken security if ignored.
fn refused(_: &mut Loader, _: &mut Listener, _: &Arg) -> Result<(), String> {
    Err(REFUSED.to_owned())
}

/// Bridge options are handed to the mosquitto.conf parser by `load_bridge`; this table entry
/// only names and documents them.
fn bridge_option(_: &mut Loader, _: &mut Listener, _: &Arg) -> Result<(), String> {
    Ok(())
}

/// What a bridge option of OpenWrt's mosquitto package becomes in mosquitto.conf (its
/// `add_bridge`); the options not listed keep their name.
const BRIDGE_RENAMES: &[(&str, &str)] = &[
    ("protocol_version", "bridge_protocol_version"),
    ("clientid", "remote_clientid"),
    ("username", "remote_username"),
    ("password", "remote_password"),
    ("cafile", "bridge_cafile"),
    ("capath", "bridge_capath"),
    ("certfile", "bridge_certfile"),
    ("keyfile", "bridge_keyfile"),
    ("insecure", "bridge_insecure"),
    ("tls_version", "bridge_tls_version"),
];

/// Bridge options rmqtt does not implement, harmless to ignore: the bridge is part of the
/// broker, so it needs no local login, and it never idles out or round-robins.
const BRIDGE_IGNORED: &[&str] = &[
    "attempt_unsubscribe",
    "idle_timeout",
    "local_password",
    "local_username",
    "notifications_local_only",
    "round_robin",
];

/// Bridge options that would weaken security if ignored: TLS-PSK.
const BRIDGE_REFUSED: &[&str] = &["identity", "psk"];

/// A `bridge` section becomes a mosquitto.conf `connection` block, parsed by the same code,
/// with errors pointing at the UCI file's lines.
fn load_bridge(l: &mut Loader, file: &str, sec: &Section) -> Result<(), ConfigError> {
    let spec = SECTIONS.iter().find(|s| s.stype == "bridge");
    let conn = match sec.get("connection") {
        Some(v) => v.items().first().cloned().unwrap_or_default(),
        None => sec
            .name
            .clone()
            .unwrap_or_else(|| format!("bridge{}", sec.line)),
    };
    let mut text = format!("connection {conn}\n");
    let mut lines = vec![sec.line];
    for opt in &sec.options {
        let name = opt.name.as_str();
        if name == "connection" {
            continue;
        }
        let err = |message: String| ConfigError {
            file: file.to_owned(),
            line: opt.line,
            message: format!("bridge.{name}: {message}"),
        };
        let known = spec.is_some_and(|s| s.options.iter().any(|(n, _, _)| *n == name));
        if !known {
            l.warnings.push(Warning(format!(
                "{file}:{}: unknown option \"{name}\" in bridge section; ignored",
                opt.line
            )));
            continue;
        }
        if BRIDGE_REFUSED.contains(&name) {
            return Err(err(REFUSED.to_owned()));
        }
        if BRIDGE_IGNORED.contains(&name) {
            l.warnings.push(Warning(format!(
                "{file}:{}: bridge.{name} is not supported by rmqtt; ignored",
                opt.line
            )));
            continue;
        }
        let key = BRIDGE_RENAMES
            .iter()
            .find(|(u, _)| *u == name)
            .map_or(name, |(_, k)| *k);
        for v in opt.value.items() {
            if v.contains('\n') {
                return Err(err("the value contains a line break".to_owned()));
            }
            let v = if v.is_empty() { "\"\"" } else { v.as_str() };
            text.push_str(&format!("{key} {v}\n"));
            lines.push(opt.line);
        }
    }
    match super::mosquitto::parse_str(file, &text) {
        Ok((c, _)) => {
            l.cfg.bridges.extend(c.bridges);
            Ok(())
        }
        Err(e) => Err(ConfigError {
            file: file.to_owned(),
            line: lines
                .get(e.line.saturating_sub(1))
                .copied()
                .unwrap_or(sec.line),
            message: format!("bridge.{}", e.message),
        }),
    }
}

/// Every section type and option the loader understands.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec {
        stype: "owrt",
        options: &[
            (
                "use_uci",
                |l, _, a| {
                    l.use_uci = a.boolean()?;
                    Ok(())
                },
                "1: configure from this file; 0: use the Mosquitto-syntax file in config_file",
            ),
            (
                "config_file",
                |l, _, a| {
                    l.mosquitto_conf = a.path()?;
                    Ok(())
                },
                "Mosquitto-syntax file used when use_uci is 0 (default /etc/rmqtt/rmqtt.conf)",
            ),
            (
                "write_pid",
                ignored,
                "mosquitto's procd pid file switch; ignored (use pid_file)",
            ),
        ],
    },
    SectionSpec {
        stype: "mosquitto",
        options: &[
            (
                "allow_anonymous",
                |l, _, a| {
                    l.cfg.allow_anonymous = Some(a.anonymous()?);
                    Ok(())
                },
                "let clients connect without a username: 1, 0 (default) or local (loopback clients only)",
            ),
            (
                "password_file",
                set!(password_file, some_path),
                "Mosquitto password file (rmqtt_passwd)",
            ),
            ("acl_file", set!(acl_file, some_path), "Mosquitto ACL file"),
            ("pid_file", set!(pid_file, some_path), "write the process id here"),
            (
                "user",
                |l, _, a| {
                    l.cfg.user = Some(owned(a)?);
                    Ok(())
                },
                "drop privileges to this user",
            ),
            (
                "per_listener_settings",
                set!(per_listener_settings, |a: &Arg| a.boolean()),
                "listener allow_anonymous overrides the global one",
            ),
            (
                "log_dest",
                |l, _, a| {
                    for item in a.value.items() {
                        // The old option form held several destinations separated by spaces.
                        if item.starts_with("file") || matches!(a.value, Value::List(_)) {
                            l.cfg.log_dest.push(log_dest(item)?);
                        } else {
                            for w in item.split_whitespace() {
                                l.cfg.log_dest.push(log_dest(w)?);
                            }
                        }
                    }
                    Ok(())
                },
                "list: stdout, stderr, syslog, topic, none or 'file PATH'",
            ),
            (
                "log_types",
                |l, _, a| {
                    for t in a.value.items().iter().flat_map(|i| i.split_whitespace()) {
                        if !LOG_TYPES.contains(&t) {
                            return Err(format!("invalid log type ({t})"));
                        }
                        l.cfg.log_types.push(t.to_owned());
                    }
                    Ok(())
                },
                "list: debug, error, warning, notice, information, subscribe, unsubscribe, all, none",
            ),
            (
                "log_timestamp",
                set!(log_timestamp, |a: &Arg| a.boolean()),
                "prefix log lines with the time (default 1)",
            ),
            (
                "log_timestamp_format",
                |l, _, a| {
                    l.cfg.log_timestamp_format = Some(owned(a)?);
                    Ok(())
                },
                "strftime format for log timestamps",
            ),
            (
                "connection_messages",
                set!(connection_messages, |a: &Arg| a.boolean()),
                "log connects and disconnects (default 1)",
            ),
            (
                "max_connections",
                set!(max_connections, |a: &Arg| a
                    .number(-1, i64::from(i32::MAX))),
                "total client limit, -1 for none",
            ),
            (
                "max_inflight_messages",
                set!(max_inflight_messages, |a: &Arg| a
                    .number(0, 65535)
                    .map(|n| n as u16)),
                "QoS 1/2 messages in flight per client (default 20)",
            ),
            (
                "max_queued_messages",
                set!(max_queued_messages, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "messages queued per client (default 1000)",
            ),
            (
                "max_queued_bytes",
                set!(max_queued_bytes, |a: &Arg| a
                    .number(0, i64::MAX)
                    .map(|n| n as u64)),
                "bytes queued per client, 0 for no limit",
            ),
            (
                "message_size_limit",
                set!(message_size_limit, |a: &Arg| a
                    .number(0, 268_435_455)
                    .map(|n| n as u32)),
                "largest payload accepted, 0 for no limit",
            ),
            (
                "max_packet_size",
                set!(max_packet_size, |a: &Arg| a
                    .number(0, 268_435_460)
                    .map(|n| n as u32)),
                "largest packet accepted, 0 for no limit",
            ),
            (
                "max_keepalive",
                set!(max_keepalive, |a: &Arg| a.number(0, 65535).map(|n| n as u16)),
                "largest keepalive granted to v5 clients",
            ),
            (
                "sys_interval",
                set!(sys_interval, |a: &Arg| a.number(0, 65535).map(|n| n as u32)),
                "seconds between $SYS updates, 0 to disable (default 10)",
            ),
            (
                "retain_available",
                set!(retain_available, |a: &Arg| a.boolean()),
                "accept retained messages (default 1)",
            ),
            (
                "set_tcp_nodelay",
                set!(set_tcp_nodelay, |a: &Arg| a.boolean()),
                "TCP_NODELAY on client sockets (default 1: writes are batched already)",
            ),
            (
                "queue_qos0_messages",
                set!(queue_qos0_messages, |a: &Arg| a.boolean()),
                "queue QoS 0 messages for offline persistent clients",
            ),
            (
                "connect_timeout",
                set!(connect_timeout, |a: &Arg| a.number(1, 3600).map(|n| n as u32)),
                "seconds a new connection has to send CONNECT, TLS and WebSocket set-up included (default 10)",
            ),
            (
                "max_connect_size",
                set!(max_connect_size, |a: &Arg| a
                    .number(64, 268_435_460)
                    .map(|n| n as u32)),
                "largest CONNECT accepted, refused from its fixed header (default 8192)",
            ),
            (
                "max_pending_connections",
                set!(max_pending_connections, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "connections not logged in yet, all addresses, 0 for no limit (default 256)",
            ),
            (
                "max_pending_per_address",
                set!(max_pending_per_address, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "connections not logged in yet per source address, 0 for no limit (default 64)",
            ),
            (
                "memory_limit",
                set!(memory_limit, |a: &Arg| a.number(0, i64::MAX).map(|n| n as u64)),
                "heap bytes above which new PUBLISHes are refused (v5: 0x97), 0 for no limit",
            ),
            (
                "max_subscriptions",
                set!(budget.max_subscriptions, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "subscriptions per session, 0 for no limit (default 1000; over it SUBACK 0x97/0x80)",
            ),
            (
                "max_shared_groups",
                set!(budget.max_shared_groups, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "$share groups over all sessions, 0 for no limit (default 1000)",
            ),
            (
                "max_retained_messages",
                set!(budget.max_retained_messages, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "topics in the retained store, 0 for no limit (default 10000)",
            ),
            (
                "max_retained_bytes",
                set!(budget.max_retained_bytes, |a: &Arg| a
                    .number(0, i64::MAX)
                    .map(|n| n as u64)),
                "bytes in the retained store, 0 for no limit (default 4194304)",
            ),
            (
                "max_sessions",
                set!(budget.max_sessions, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "sessions, offline persistent ones included, 0 for no limit (default 16384)",
            ),
            (
                "max_offline_sessions",
                set!(budget.max_offline_sessions, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "persistent sessions kept offline; the oldest is discarded over it (default 1000)",
            ),
            (
                "max_output_bytes",
                set!(budget.max_output_bytes, |a: &Arg| a
                    .number(0, i64::MAX)
                    .map(|n| n as u64)),
                "bytes queued for one connection's socket; QoS 0 dropped over it (default 1048576)",
            ),
            (
                "max_outgoing_topic_alias",
                set!(budget.max_outgoing_topic_alias, |a: &Arg| a
                    .number(0, 65535)
                    .map(|n| n as u16)),
                "topic aliases the broker sets up towards a 5.0 client (default 10)",
            ),
            (
                "websockets_origin",
                |l, _, a| {
                    for o in a.value.items() {
                        l.cfg.websockets_origins.push(o.to_owned());
                    }
                    Ok(())
                },
                "list: Origin headers a WebSocket upgrade may carry (default: any)",
            ),
            (
                "upgrade_outgoing_qos",
                set!(upgrade_outgoing_qos, |a: &Arg| a.boolean()),
                "deliver at the subscription QoS",
            ),
            (
                "allow_zero_length_clientid",
                set!(allow_zero_length_clientid, |a: &Arg| a.boolean()),
                "assign ids to clients that send none (default 1)",
            ),
            (
                "auto_id_prefix",
                set!(auto_id_prefix, owned),
                "prefix of assigned client ids (default auto-)",
            ),
            (
                "port",
                |l, _, a| {
                    let p = port(a)?;
                    l.general_listener
                        .get_or_insert_with(|| Listener::new(1883, None))
                        .port = p;
                    Ok(())
                },
                "a listener on this port, besides the listener sections",
            ),
            (
                "protocol",
                |l, _, a| {
                    let p = protocol(a)?;
                    l.general_listener
                        .get_or_insert_with(|| Listener::new(1883, None))
                        .protocol = p;
                    Ok(())
                },
                "protocol of the general port: mqtt or websockets",
            ),
            (
                "no_remote_access",
                |l, _, a| {
                    l.general_no_remote = a.boolean()?;
                    Ok(())
                },
                "bind the general port to 127.0.0.1 only",
            ),
            (
                "include_dir",
                |l, _, a| {
                    let dir = a.path()?;
                    let (cfg, warnings) =
                        super::mosquitto::include_into(std::mem::take(&mut l.cfg), &dir)?;
                    l.cfg = cfg;
                    l.warnings.extend(warnings);
                    Ok(())
                },
                "also read the Mosquitto-syntax .conf files in this directory",
            ),
            (
                "log_facility",
                |l, _, a| {
                    l.cfg.log_facility = Some(a.number(0, 7)? as u32);
                    Ok(())
                },
                "syslog facility local0..local7 as 0..7",
            ),
            (
                "allow_duplicate_messages",
                ignored,
                "not supported (duplicates are always delivered); ignored",
            ),
            (
                "max_inflight_bytes",
                ignored,
                "not supported; ignored",
            ),
            (
                "set_tcp_nodelay",
                ignored,
                "not supported (always on); ignored",
            ),
            (
                "clientid_prefixes",
                set!(clientid_prefixes, |a: &Arg| owned(a).map(Some)),
                "only client ids starting with this may connect (CONNACK not authorised)",
            ),
            ("psk_file", refused, "not supported (TLS-PSK): refused"),
        ],
    },
    SectionSpec {
        stype: "persistence",
        options: &[
            (
                "persistence",
                set!(persistence, |a: &Arg| a.boolean()),
                "keep retained messages and sessions across restarts",
            ),
            (
                "location",
                set!(persistence_location, some_path),
                "directory of the database (keep it in RAM, /tmp, to spare the flash)",
            ),
            (
                "file",
                set!(persistence_file, owned),
                "database file name (default rmqtt.db)",
            ),
            (
                "autosave_interval",
                set!(autosave_interval, |a: &Arg| a
                    .number(0, i64::from(u32::MAX))
                    .map(|n| n as u32)),
                "seconds between saves (default 1800)",
            ),
            (
                "autosave_on_changes",
                set!(autosave_on_changes, |a: &Arg| a.boolean()),
                "autosave_interval counts changes instead of seconds",
            ),
            (
                "journal",
                set!(persistence_journal, |a: &Arg| a.boolean()),
                "append every change to a journal synced before acknowledgements (default 1: crash-safe)",
            ),
            (
                "journal_location",
                set!(journal_location, some_path),
                "directory of the journal (default: location); in RAM it survives a crash, not a reboot",
            ),
            (
                "client_expiration",
                set!(persistent_client_expiration, duration),
                "forget persistent clients idle this long (1h, 2d, 3w, 4m, 1y)",
            ),
            (
                "store_clean_interval",
                ignored,
                "obsolete in Mosquitto; ignored",
            ),
        ],
    },
    SectionSpec {
        stype: "listener",
        options: &[
            ("port", set_listener!(port, port), "TCP port (required)"),
            (
                "bind_address",
                |_, li, a| {
                    li.bind = Some(owned(a)?);
                    Ok(())
                },
                "address to listen on (default: all)",
            ),
            (
                "no_remote_access",
                |_, li, a| {
                    if a.boolean()? {
                        li.bind = Some("127.0.0.1".to_owned());
                    }
                    Ok(())
                },
                "listen on 127.0.0.1 only",
            ),
            (
                "protocol",
                set_listener!(protocol, protocol),
                "mqtt or websockets",
            ),
            (
                "allow_anonymous",
                |l, li, a| {
                    li.allow_anonymous = Some(a.anonymous()?);
                    // A per-listener choice in the UI only means something with this on.
                    l.cfg.per_listener_settings = true;
                    Ok(())
                },
                "anonymous access on this listener: 1, 0 or local (overrides the general one)",
            ),
            (
                "max_connections",
                set_listener!(max_connections, |a: &Arg| a
                    .number(-1, i64::from(i32::MAX))),
                "client limit on this listener, -1 for none",
            ),
            ("cafile", set_listener!(cafile, some_path), "TLS: CA certificates"),
            ("capath", set_listener!(capath, some_path), "TLS: CA directory"),
            (
                "certfile",
                set_listener!(certfile, some_path),
                "TLS: server certificate (enables TLS)",
            ),
            ("keyfile", set_listener!(keyfile, some_path), "TLS: private key"),
            (
                "require_certificate",
                set_listener!(require_certificate, |a: &Arg| a.boolean()),
                "TLS: clients must present a certificate",
            ),
            (
                "use_identity_as_username",
                set_listener!(use_identity_as_username, |a: &Arg| a.boolean()),
                "TLS: the certificate CN is the username",
            ),
            (
                "tls_version",
                |_, li, a| {
                    let v = owned(a)?;
                    if !["tlsv1.2", "tlsv1.3"].contains(&v.as_str()) {
                        return Err(format!(
                            "unsupported tls_version ({v}); use tlsv1.2 or tlsv1.3"
                        ));
                    }
                    li.tls_version = Some(v);
                    Ok(())
                },
                "TLS: tlsv1.2 or tlsv1.3",
            ),
            ("http_dir", ignored, "not supported (no HTTP files); ignored"),
            (
                "websockets_log_level",
                ignored,
                "not supported; ignored",
            ),
            (
                "mount_point",
                refused,
                "not supported: refused (it confines the listener's clients)",
            ),
            (
                "use_username_as_clientid",
                set!(use_username_as_clientid, |a: &Arg| a.boolean()),
                "the username is the client id; clients without one are refused",
            ),
            (
                "use_subject_as_username",
                refused,
                "not supported: refused",
            ),
            ("ciphers", refused, "not supported (TLS cipher list): refused"),
            ("crlfile", refused, "not supported (TLS revocation list): refused"),
            ("psk_hint", refused, "not supported (TLS-PSK): refused"),
            (
                "auth_plugin",
                refused,
                "not supported (plugins; also any auth_opt_*): refused",
            ),
        ],
    },
    SectionSpec {
        stype: "bridge",
        options: &[
            ("connection", bridge_option, "bridge name"),
            ("address", bridge_option, "remote host[:port]"),
            (
                "topic",
                bridge_option,
                "list: 'pattern [in|out|both] [qos] [local] [remote]'",
            ),
            ("remote_username", bridge_option, "user name on the remote broker"),
            ("username", bridge_option, "old name of remote_username"),
            ("remote_password", bridge_option, "password on the remote broker"),
            ("password", bridge_option, "old name of remote_password"),
            ("remote_clientid", bridge_option, "client id on the remote broker"),
            ("clientid", bridge_option, "old name of remote_clientid"),
            ("local_clientid", bridge_option, "client id of the bridge's local session"),
            ("cleansession", bridge_option, "clean session on the remote broker"),
            ("keepalive_interval", bridge_option, "keep alive in seconds (default 60)"),
            ("restart_timeout", bridge_option, "seconds before reconnecting: 'base [cap]'"),
            ("start_type", bridge_option, "automatic, lazy or once"),
            ("threshold", bridge_option, "messages queued before a lazy bridge connects"),
            ("try_private", bridge_option, "tell the remote broker it is a bridge (default 1)"),
            ("notifications", bridge_option, "publish the connection state (default 1)"),
            (
                "notification_topic",
                bridge_option,
                "topic of the connection state",
            ),
            ("protocol_version", bridge_option, "mqttv31, mqttv311 or mqttv50"),
            ("bridge_protocol_version", bridge_option, "same as protocol_version"),
            ("cafile", bridge_option, "TLS: CA certificates of the remote (enables TLS)"),
            ("bridge_cafile", bridge_option, "same as cafile"),
            ("capath", bridge_option, "TLS: CA directory (enables TLS)"),
            ("certfile", bridge_option, "TLS: client certificate (enables TLS)"),
            ("keyfile", bridge_option, "TLS: client key"),
            ("insecure", bridge_option, "TLS: do not check the remote's host name"),
            ("bridge_insecure", bridge_option, "same as insecure"),
            ("tls_version", bridge_option, "TLS: lowest version, tlsv1.2 or tlsv1.3"),
            ("identity", bridge_option, "not supported (TLS-PSK): refused"),
            ("psk", bridge_option, "not supported (TLS-PSK): refused"),
            ("attempt_unsubscribe", bridge_option, "not supported; ignored"),
            ("idle_timeout", bridge_option, "not supported; ignored"),
            ("local_username", bridge_option, "not needed (the bridge is internal); ignored"),
            ("local_password", bridge_option, "not needed (the bridge is internal); ignored"),
            ("notifications_local_only", bridge_option, "not supported; ignored"),
            ("round_robin", bridge_option, "not supported; ignored"),
        ],
    },
];

/// Every `(section type, option)` pair the loader knows, with its description.
pub fn known_options() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    SECTIONS
        .iter()
        .flat_map(|s| s.options.iter().map(move |(o, _, d)| (s.stype, *o, *d)))
}

/// Reads the UCI file `path` into a [`Config`]. With `use_uci 0` in the `owrt` section the
/// Mosquitto-syntax file it names (default [`DEFAULT_MOSQUITTO_CONF`]) is loaded instead.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: 0,
        message: format!("cannot read configuration file: {e}"),
    })?;
    let (mut cfg, warnings, redirect) = parse_config(&name, &text)?;
    if let Some(conf) = redirect {
        return super::mosquitto::load(&conf);
    }
    cfg.source = Some(path.to_owned());
    Ok((cfg, warnings))
}

/// Reads `path` as UCI when `uci` is set or when its content looks like UCI (see
/// [`looks_like_uci`]), else as a Mosquitto-style file: what `rmqtt -u` / `-c` and SIGHUP use.
pub fn load_auto(path: &Path, uci: bool) -> Result<(Config, Vec<Warning>), ConfigError> {
    if uci {
        return load(path);
    }
    match std::fs::read_to_string(path) {
        Ok(text) if looks_like_uci(&text) => load(path),
        // Read errors are reported, with the file name, by the Mosquitto loader.
        _ => super::mosquitto::load(path),
    }
}

/// Maps UCI text onto a [`Config`] as if it came from `name`. `use_uci 0` is reported as an
/// error here: only [`load`] follows it to another file.
pub fn parse_str(name: &str, text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    match parse_config(name, text)? {
        (cfg, w, None) => Ok((cfg, w)),
        (_, _, Some(p)) => Err(ConfigError {
            file: name.to_owned(),
            line: 0,
            message: format!("use_uci is 0: the configuration is in {}", p.display()),
        }),
    }
}

type Parsed = (Config, Vec<Warning>, Option<PathBuf>);

fn parse_config(name: &str, text: &str) -> Result<Parsed, ConfigError> {
    let sections = parse(name, text)?;
    let mut l = Loader {
        cfg: Config {
            source: Some(PathBuf::from(name)),
            ..Config::default()
        },
        warnings: Vec::new(),
        use_uci: true,
        mosquitto_conf: PathBuf::from(DEFAULT_MOSQUITTO_CONF),
        general_listener: None,
        general_no_remote: false,
        at: String::new(),
    };
    // `owrt` first: with use_uci 0 nothing else in the file matters, errors included.
    for sec in sections.iter().filter(|s| s.stype == "owrt") {
        apply_section(&mut l, name, sec, &mut Listener::new(0, None))?;
    }
    if !l.use_uci {
        return Ok((l.cfg, l.warnings, Some(l.mosquitto_conf)));
    }
    for sec in sections.iter().filter(|s| s.stype != "owrt") {
        match sec.stype.as_str() {
            "listener" => {
                let mut li = Listener::new(0, None);
                apply_section(&mut l, name, sec, &mut li)?;
                if sec.get("port").is_none() {
                    l.warnings.push(Warning(format!(
                        "{name}:{}: listener section without port; ignored",
                        sec.line
                    )));
                } else {
                    l.cfg.listeners.push(li);
                }
            }
            "mosquitto" | "persistence" => {
                apply_section(&mut l, name, sec, &mut Listener::new(0, None))?;
            }
            "bridge" => load_bridge(&mut l, name, sec)?,
            other => l.warnings.push(Warning(format!(
                "{name}:{}: unknown section type \"{other}\"; ignored",
                sec.line
            ))),
        }
    }
    if let Some(mut g) = l.general_listener.take() {
        if l.general_no_remote {
            g.bind = Some("127.0.0.1".to_owned());
        }
        l.cfg.listeners.insert(0, g);
    } else if l.general_no_remote {
        // Without a general port, "no remote access" can only mean every listener.
        for li in &mut l.cfg.listeners {
            li.bind = Some("127.0.0.1".to_owned());
        }
    }
    Ok((l.cfg, l.warnings, None))
}

fn apply_section(
    l: &mut Loader,
    file: &str,
    sec: &Section,
    li: &mut Listener,
) -> Result<(), ConfigError> {
    let Some(spec) = SECTIONS.iter().find(|s| s.stype == sec.stype) else {
        return Ok(());
    };
    for opt in &sec.options {
        let err = |message: String| ConfigError {
            file: file.to_owned(),
            line: opt.line,
            message: format!("{}.{}: {message}", sec.stype, opt.name),
        };
        if opt.name.starts_with("auth_opt_") {
            // Options for an authentication plugin rmqtt does not load.
            return Err(err(REFUSED.to_owned()));
        }
        l.at = format!("{file}:{}: {}.{}", opt.line, sec.stype, opt.name);
        let Some((_, handler, _)) = spec.options.iter().find(|(n, _, _)| *n == opt.name) else {
            l.warnings.push(Warning(format!(
                "{file}:{}: unknown option \"{}\" in {} section; ignored",
                opt.line, opt.name, sec.stype
            )));
            continue;
        };
        handler(l, li, &Arg { value: &opt.value }).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Section {
        let mut s = parse("t", text).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        s.remove(0)
    }

    fn single(s: &Section, name: &str) -> String {
        match s.get(name) {
            Some(Value::Single(v)) => v.clone(),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn resource_budget_options() {
        let (c, w) = parse_str(
            "rmqtt",
            "config mosquitto\n\toption max_subscriptions '50'\n\toption max_shared_groups '5'\n\
             \toption max_retained_messages '600'\n\toption max_retained_bytes '70000'\n\
             \toption max_sessions '80'\n\toption max_output_bytes '90000'\n\
             \toption max_outgoing_topic_alias '0'\n\toption max_offline_sessions '3'\n",
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
            (50, 5, 600, 70_000, 80, 90_000, 0)
        );
        assert_eq!(b.max_offline_sessions, 3);
        let e = parse_str("rmqtt", "config mosquitto\n\n\toption max_sessions '-1'\n").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn admission_options() {
        let (c, w) = parse_str(
            "rmqtt",
            "config mosquitto\n\toption connect_timeout '4'\n\toption max_connect_size '16384'\n\
             \toption max_pending_connections '100'\n\toption max_pending_per_address '10'\n\
             \toption memory_limit '8000000'\n\tlist websockets_origin 'http://a'\n\
             \tlist websockets_origin 'http://b'\n",
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
            (4, 16384, 100, 10, 8_000_000)
        );
        assert_eq!(c.websockets_origins, ["http://a", "http://b"]);
        assert!(parse_str("rmqtt", "config mosquitto\n\toption connect_timeout '0'\n").is_err());
    }

    #[test]
    fn quoting() {
        let s = one(concat!(
            "config listener 'lan'\n",
            "\toption a 'single quoted \"x\" \\n'\n",
            "\toption b \"double quoted 'y'\"\n",
            "\toption c unquoted\n",
            "\toption d glued'together 'with\" pieces\"\n",
            "\toption e ''\n",
            "\toption f '#not a comment'\n",
        ));
        assert_eq!(s.stype, "listener");
        assert_eq!(s.name.as_deref(), Some("lan"));
        assert_eq!(single(&s, "a"), "single quoted \"x\" \\n");
        assert_eq!(single(&s, "b"), "double quoted 'y'");
        assert_eq!(single(&s, "c"), "unquoted");
        assert_eq!(single(&s, "d"), "gluedtogether with pieces");
        // An empty value deletes the option, as `uci set x.y.z=''` does.
        assert_eq!(s.get("e"), None);
        assert_eq!(single(&s, "f"), "#not a comment");
    }

    #[test]
    fn escapes() {
        let s = one(concat!(
            "config x\n",
            "option a \"quote \\\" backslash \\\\ n \\n\"\n",
            "option b un\\ quoted\\'\n",
            "option c \"joined \\\nline\"\n",
            "option d long\\\n",
            "value\n",
            "option e 'multi\nline'\n",
            "option f after\n",
        ));
        assert_eq!(single(&s, "a"), "quote \" backslash \\ n n");
        assert_eq!(single(&s, "b"), "un quoted'");
        assert_eq!(single(&s, "c"), "joined line");
        assert_eq!(single(&s, "d"), "longvalue");
        assert_eq!(single(&s, "e"), "multi\nline");
        let f = s.options.iter().find(|o| o.name == "f").unwrap();
        assert_eq!(
            f.line, 10,
            "line numbers survive continuations and multi-line strings"
        );
    }

    #[test]
    fn lists_and_overrides() {
        let s = one(concat!(
            "config mosquitto\n",
            "  list log_dest syslog\n",
            "  list log_dest 'file /tmp/x y'\n",
            "  option port 1\n",
            "  option port 2\n",
            "  option t first\n",
            "  list t second\n",
        ));
        assert_eq!(
            s.get("log_dest"),
            Some(&Value::List(vec!["syslog".into(), "file /tmp/x y".into()]))
        );
        assert_eq!(single(&s, "port"), "2");
        assert_eq!(
            s.get("t"),
            Some(&Value::List(vec!["first".into(), "second".into()]))
        );
    }

    #[test]
    fn anonymous_and_named_sections() {
        let secs = parse(
            "t",
            concat!(
                "package rmqtt\n",
                "# a comment\n",
                "config listener\n option port 1883 # trailing comment\n",
                "config listener; option port 8883\n",
                "config mosquitto 'general'\n option a 1\n",
                "config mosquitto general\n option b 2\n",
                "c listener\n o port 9001\n l x y\n",
            ),
        )
        .unwrap();
        assert_eq!(secs.len(), 4, "{secs:?}");
        assert_eq!(secs[0].name, None);
        assert_eq!(secs[0].line, 3);
        assert_eq!(single(&secs[0], "port"), "1883");
        assert_eq!(single(&secs[1], "port"), "8883");
        // Same name: one section, options merged.
        assert_eq!(secs[2].name.as_deref(), Some("general"));
        assert_eq!(single(&secs[2], "a"), "1");
        assert_eq!(single(&secs[2], "b"), "2");
        assert_eq!(single(&secs[3], "port"), "9001");
    }

    #[test]
    fn bad_input_with_line_numbers() {
        for (text, line, needle) in [
            ("option port 1883\n", 1, "before the first section"),
            ("\n\nlist x y\n", 3, "before the first section"),
            ("config\n", 1, "without a section type"),
            ("config lis-tener\n", 1, "invalid section type"),
            ("config listener 'my lan'\n", 1, "invalid section name"),
            ("config a b c\n", 1, "too many arguments"),
            ("config a\noption bad-name 1\n", 2, "invalid option name"),
            ("config a\noption x one two\n", 2, "too many arguments"),
            ("config a\n\noption\n", 3, "without a name"),
            ("config a\nsetting x 1\n", 2, "invalid command"),
            ("config a\noption x 'open\n\n", 2, "unterminated '"),
            ("config a\n\noption x \"open\\\"\n", 3, "unterminated \""),
        ] {
            let e = parse("bad", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert_eq!(e.file, "bad");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn detects_uci() {
        assert!(looks_like_uci("# x\n\nconfig owrt 'owrt'\n"));
        assert!(looks_like_uci("package rmqtt\nconfig x\n"));
        assert!(!looks_like_uci("# config listener\nlistener 1883\n"));
        assert!(!looks_like_uci(""));
    }

    #[test]
    fn maps_onto_config() {
        let (c, w) = parse_str(
            "rmqtt",
            concat!(
                "config owrt 'owrt'\n option use_uci '1'\n",
                "config mosquitto 'mosquitto'\n",
                " option allow_anonymous '0'\n",
                " option password_file '/etc/rmqtt/passwd'\n",
                " list log_dest 'syslog'\n list log_dest 'file /tmp/rmqtt.log'\n",
                " list log_types 'error'\n list log_types 'warning'\n",
                " option max_inflight_messages '10'\n",
                " option sys_interval 30\n",
                " option set_tcp_nodelay 0\n",
                " option frobnicate 1\n",
                "config persistence 'persistence'\n",
                " option persistence 1\n option location /tmp/rmqtt/\n",
                " option client_expiration 2d\n",
                "config listener\n option port 1883\n option no_remote_access 1\n",
                "config listener\n option port 8883\n option certfile /etc/c.pem\n",
                " option keyfile /etc/k.pem\n option allow_anonymous 1\n",
                "config listener\n option protocol websockets\n",
                "config bridge\n option connection cloud\n list topic '# out 1'\n",
            ),
        )
        .unwrap();
        assert_eq!(c.allow_anonymous, Some(Anonymous::Deny));
        assert_eq!(c.password_file, Some(PathBuf::from("/etc/rmqtt/passwd")));
        assert_eq!(
            c.log_dest,
            vec![LogDest::Syslog, LogDest::File("/tmp/rmqtt.log".into())]
        );
        assert_eq!(c.log_types, vec!["error", "warning"]);
        assert_eq!(c.max_inflight_messages, 10);
        assert_eq!(c.sys_interval, 30);
        assert!(!c.set_tcp_nodelay);
        assert!(c.persistence);
        assert_eq!(c.persistence_location, Some(PathBuf::from("/tmp/rmqtt/")));
        assert_eq!(
            c.persistent_client_expiration,
            Some(Duration::from_secs(2 * 86_400))
        );
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].port, 1883);
        assert_eq!(c.listeners[0].bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.listeners[1].certfile, Some(PathBuf::from("/etc/c.pem")));
        let lan: std::net::IpAddr = "192.168.1.5".parse().unwrap();
        assert!(c.anonymous_allowed(Some(&c.listeners[1]), lan));
        assert!(!c.anonymous_allowed(Some(&c.listeners[0]), lan));
        let w: Vec<&str> = w.iter().map(|w| w.0.as_str()).collect();
        assert!(
            w.iter()
                .any(|w| w.contains("rmqtt:13:") && w.contains("frobnicate")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("without port")), "{w:?}");
        assert_eq!(w.len(), 2, "bridge options load without warnings: {w:?}");
        assert_eq!(c.bridges.len(), 1);
        assert_eq!(c.bridges[0].name, "cloud");
        assert_eq!(c.bridges[0].topics[0].pattern, "#");
        assert_eq!(c.bridges[0].topics[0].qos, 1);
    }

    #[test]
    fn bridge_errors_point_at_the_uci_line() {
        let e = parse_str(
            "rmqtt",
            "config bridge 'b'\n option address 'h:1883'\n\n list topic 'a/# sideways'\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("invalid topic direction"), "{e}");
    }

    #[test]
    fn general_port_and_errors() {
        let (c, _) = parse_str(
            "t",
            "config mosquitto\n option port 1884\n option no_remote_access 1\nconfig listener\n option port 9001\n",
        )
        .unwrap();
        assert_eq!(c.listeners[0].port, 1884);
        assert_eq!(c.listeners[0].bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.listeners[1].bind, None);
        for (text, line, needle) in [
            (
                "config mosquitto\n\n option allow_anonymous maybe\n",
                3,
                "use 0, 1 or local",
            ),
            ("config listener\n option port 99999\n", 2, "invalid port"),
            (
                "config listener\n option port 1\n option protocol x\n",
                3,
                "invalid protocol",
            ),
            (
                "config mosquitto\n list log_dest printer\n",
                2,
                "invalid log_dest",
            ),
            (
                "config mosquitto\n list max_inflight_messages 1\n list max_inflight_messages 2\n",
                2,
                "single value",
            ),
        ] {
            let e = parse_str("t", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{e}");
        }
    }

    /// An `/etc/config/mosquitto` as OpenWrt's mosquitto package and luci-app-mosquitto
    /// write it (option names from its init script), with a TLS bridge.
    const MIGRATED: &str = "\
config owrt 'owrt'
	option use_uci '1'
	option write_pid '0'

config mosquitto 'mosquitto'
	list log_dest 'syslog'
	list log_dest 'stderr'
	option no_remote_access '0'
	option allow_anonymous '0'
	option connection_messages '1'
	option log_timestamp '1'
	list log_types 'error'
	list log_types 'notice'
	option max_inflight_messages '30'
	option max_queued_messages '500'
	option max_queued_bytes '0'
	option message_size_limit '65536'
	option password_file '/etc/mosquitto/passwd'
	option acl_file '/etc/mosquitto/acl'
	option pid_file '/var/run/mosquitto.pid'
	option queue_qos0_messages '0'
	option set_tcp_nodelay '1'
	option sys_interval '60'
	option upgrade_outgoing_qos '0'
	option user 'mosquitto'
	option per_listener_settings '0'
	option log_facility '3'

config persistence 'persistence'
	option persistence '1'
	option location '/tmp/mosquitto/'
	option file 'mosquitto.db'
	option autosave_interval '600'
	option autosave_on_changes '0'
	option client_expiration '2w'

config listener
	option port '1883'
	option protocol 'mqtt'
	option max_connections '50'

config listener
	option port '8883'
	option cafile '/etc/ssl/ca.pem'
	option certfile '/etc/ssl/server.pem'
	option keyfile '/etc/ssl/server.key'
	option tls_version 'tlsv1.2'
	option require_certificate '1'
	option use_identity_as_username '1'

config listener
	option port '9001'
	option protocol 'websockets'
	option no_remote_access '1'

config bridge
	option connection 'cloud'
	option address 'mqtt.example.com:8883'
	list topic 'home/# out 1 \"\" site1/'
	list topic 'cmd/# in 2 site1/cmd/ remote/cmd/'
	option protocol_version 'mqttv311'
	option cleansession '1'
	option keepalive_interval '120'
	option local_clientid 'router-local'
	option remote_clientid 'router1'
	option username 'router1'
	option password 'secret'
	option notifications '1'
	option notification_topic 'routers/router1/state'
	option restart_timeout '10 120'
	option start_type 'automatic'
	option try_private '0'
	option cafile '/etc/ssl/cloud-ca.pem'
	option certfile '/etc/ssl/router1.pem'
	option keyfile '/etc/ssl/router1.key'
	option tls_version 'tlsv1.3'
	option insecure '0'
	option idle_timeout '60'

config bridge
	option connection 'plain'
	option address '192.168.1.2'
	list topic 'x/# both'
";

    #[test]
    fn migrated_mosquitto_config() {
        let (c, w) = parse_str("/etc/config/mosquitto", MIGRATED).unwrap();
        assert_eq!(c.allow_anonymous, Some(Anonymous::Deny));
        assert_eq!(c.log_dest, vec![LogDest::Syslog, LogDest::Stderr]);
        assert_eq!(c.log_types, vec!["error", "notice"]);
        assert_eq!(c.max_inflight_messages, 30);
        assert_eq!(c.max_queued_messages, 500);
        assert_eq!(c.message_size_limit, 65536);
        assert_eq!(
            c.password_file,
            Some(PathBuf::from("/etc/mosquitto/passwd"))
        );
        assert_eq!(c.acl_file, Some(PathBuf::from("/etc/mosquitto/acl")));
        assert_eq!(c.pid_file, Some(PathBuf::from("/var/run/mosquitto.pid")));
        assert_eq!(c.user.as_deref(), Some("mosquitto"));
        assert_eq!(c.sys_interval, 60);
        assert_eq!(c.log_facility, Some(3));
        assert!(c.persistence);
        assert_eq!(
            c.persistence_location,
            Some(PathBuf::from("/tmp/mosquitto/"))
        );
        assert_eq!(c.persistence_file, "mosquitto.db");
        assert_eq!(c.autosave_interval, 600);
        assert_eq!(
            c.persistent_client_expiration,
            Some(Duration::from_secs(14 * 86_400))
        );

        let ports: Vec<u16> = c.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![1883, 8883, 9001]);
        assert_eq!(c.listeners[0].max_connections, 50);
        let tls = &c.listeners[1];
        assert_eq!(tls.cafile, Some(PathBuf::from("/etc/ssl/ca.pem")));
        assert_eq!(tls.certfile, Some(PathBuf::from("/etc/ssl/server.pem")));
        assert_eq!(tls.keyfile, Some(PathBuf::from("/etc/ssl/server.key")));
        assert_eq!(tls.tls_version.as_deref(), Some("tlsv1.2"));
        assert!(tls.require_certificate && tls.use_identity_as_username);
        assert_eq!(c.listeners[2].protocol, ListenerProtocol::WebSockets);
        assert_eq!(c.listeners[2].bind.as_deref(), Some("127.0.0.1"));

        assert_eq!(c.bridges.len(), 2);
        let b = &c.bridges[0];
        assert_eq!(b.name, "cloud");
        assert_eq!(b.addresses, vec![("mqtt.example.com".to_owned(), 8883)]);
        assert!(b.uses_tls(), "a bridge with cafile uses TLS");
        assert_eq!(b.cafile, Some(PathBuf::from("/etc/ssl/cloud-ca.pem")));
        assert_eq!(b.certfile, Some(PathBuf::from("/etc/ssl/router1.pem")));
        assert_eq!(b.keyfile, Some(PathBuf::from("/etc/ssl/router1.key")));
        assert_eq!(b.tls_version.as_deref(), Some("tlsv1.3"));
        assert!(!b.insecure);
        assert_eq!(b.protocol_level, 4);
        assert!(b.cleansession && !b.try_private && b.notifications);
        assert_eq!(b.keepalive, 120);
        assert_eq!(b.local_clientid.as_deref(), Some("router-local"));
        assert_eq!(b.remote_clientid.as_deref(), Some("router1"));
        assert_eq!(b.remote_username.as_deref(), Some("router1"));
        assert_eq!(b.remote_password.as_deref(), Some("secret"));
        assert_eq!(
            b.notification_topic.as_deref(),
            Some("routers/router1/state")
        );
        assert_eq!(b.restart_timeout, (10, 120));
        assert_eq!(b.topics.len(), 2);
        assert_eq!(b.topics[0].local_filter(), "home/#");
        assert_eq!(b.topics[0].remote_filter(), "site1/home/#");
        assert_eq!(b.topics[1].direction, super::super::Direction::In);
        assert!(!c.bridges[1].uses_tls());
        assert_eq!(
            c.bridges[1].addresses,
            vec![("192.168.1.2".to_owned(), 1883)]
        );

        // The harmless options rmqtt does not implement are named, with their lines.
        let w: Vec<&str> = w.iter().map(|w| w.0.as_str()).collect();
        for (line, opt) in [(3, "owrt.write_pid"), (78, "bridge.idle_timeout")] {
            assert!(
                w.iter().any(|x| x.contains(&format!(":{line}: {opt} "))),
                "{opt}: {w:?}"
            );
        }
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[test]
    fn allow_anonymous_local() {
        let (c, _) = parse_str(
            "t",
            "config mosquitto\n option allow_anonymous local\n\
             config listener\n option port 1\n option allow_anonymous 'local'\n\
             config listener\n option port 2\n option allow_anonymous yes\n",
        )
        .unwrap();
        assert_eq!(c.allow_anonymous, Some(Anonymous::Local));
        assert!(c.per_listener_settings);
        assert_eq!(c.listeners[0].allow_anonymous, Some(Anonymous::Local));
        assert_eq!(c.listeners[1].allow_anonymous, Some(Anonymous::Allow));
        let e = parse_str("t", "config listener\n option allow_anonymous lan\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("use 0, 1 or local"), "{e}");
    }

    #[test]
    fn security_options_rmqtt_lacks_are_errors() {
        for (text, line, opt) in [
            (
                "config mosquitto\n option psk_file /x\n",
                2,
                "mosquitto.psk_file",
            ),
            (
                "config listener\n option port 1\n option ciphers HIGH\n",
                3,
                "listener.ciphers",
            ),
            (
                "config listener\n option crlfile /c\n",
                2,
                "listener.crlfile",
            ),
            (
                "config listener\n option psk_hint h\n",
                2,
                "listener.psk_hint",
            ),
            (
                "config listener\n option mount_point m/\n",
                2,
                "listener.mount_point",
            ),
            (
                "config listener\n option use_subject_as_username 1\n",
                2,
                "listener.use_subject_as_username",
            ),
            (
                "config listener\n\n option auth_plugin /p.so\n",
                3,
                "listener.auth_plugin",
            ),
            (
                "config listener\n option auth_opt_db x\n",
                2,
                "listener.auth_opt_db",
            ),
            (
                "config bridge\n option address h\n list topic '#'\n option identity me\n",
                4,
                "bridge.identity",
            ),
            (
                "config bridge\n option address h\n option psk 0a0b\n",
                3,
                "bridge.psk",
            ),
            (
                "config bridge\n option address h\n option tls_version tlsv1.1\n",
                3,
                "bridge.",
            ),
            (
                "config listener\n option port 1\n option tls_version tlsv1.1\n",
                3,
                "listener.tls_version",
            ),
        ] {
            let e = parse_str("/etc/config/rmqtt", text).unwrap_err();
            assert_eq!(
                (e.file.as_str(), e.line),
                ("/etc/config/rmqtt", line),
                "{text:?}: {e}"
            );
            assert!(e.message.starts_with(opt), "{text:?}: {e}");
        }
    }

    #[test]
    fn include_dir_from_uci() {
        let dir = std::env::temp_dir().join(format!("rmqtt-uci-inc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.conf"), "listener 1999\nmax_keepalive 100\n").unwrap();
        let text = format!(
            "config mosquitto\n option include_dir '{}'\nconfig listener\n option port 1\n",
            dir.display()
        );
        let (c, _) = parse_str("t", &text).unwrap();
        assert_eq!(c.max_keepalive, 100);
        let ports: Vec<u16> = c.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![1999, 1]);
        std::fs::write(dir.join("b.conf"), "psk_file /x\n").unwrap();
        let e = parse_str("t", &text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.message.contains("b.conf:1") && e.message.contains("psk_file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn use_uci_0_reads_the_mosquitto_file() {
        let dir = std::env::temp_dir().join(format!("rmqtt-uci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("rmqtt.conf");
        std::fs::write(&conf, "listener 1999\nallow_anonymous true\n").unwrap();
        let uci = dir.join("rmqtt");
        std::fs::write(
            &uci,
            format!(
                "config owrt 'owrt'\n option use_uci 0\n option config_file '{}'\nconfig listener\n option port 1\n",
                conf.display()
            ),
        )
        .unwrap();
        let (c, _) = load(&uci).unwrap();
        assert_eq!(c.source, Some(conf.clone()));
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].port, 1999);
        assert!(parse_str("x", &std::fs::read_to_string(&uci).unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
