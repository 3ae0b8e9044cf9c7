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
//! Each option is turned into the mosquitto.conf line the init script would write for it and
//! applied from the one option table, [`super::options::OPTIONS`], so every key exists in
//! both syntaxes; errors name the UCI file, the option's line and `section.option`. An option
//! rmqtt does not implement is a warning when ignoring it changes nothing about security, and
//! an error when it would (TLS-PSK, plugins, mount points...); unknown options are warnings,
//! never silently dropped.

use super::mosquitto::Warning;
use super::options::{self, State};
use super::{parse_bool, Config, ConfigError};
use std::path::{Path, PathBuf};

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

/// Options that exist only in UCI, with their descriptions. What they become in
/// mosquitto.conf terms is written out below, as the init script does: a listener section's
/// `port`, `bind_address` and `no_remote_access` make its `listener PORT [ADDRESS]` line.
const UCI_ONLY: &[(&str, &str, &str)] = &[
    (
        "owrt",
        "use_uci",
        "1: configure from this file; 0: use the Mosquitto-syntax file in config_file",
    ),
    (
        "owrt",
        "config_file",
        "Mosquitto-syntax file used when use_uci is 0 (default /etc/rmqtt/rmqtt.conf)",
    ),
    (
        "owrt",
        "write_pid",
        "mosquitto's procd pid file switch; ignored (use pid_file)",
    ),
    (
        "mosquitto",
        "no_remote_access",
        "bind the general port to 127.0.0.1 only",
    ),
    (
        "listener",
        "port",
        "TCP port (required; 0 with a socket path in bind_address: a Unix socket)",
    ),
    (
        "listener",
        "bind_address",
        "address to listen on (default: all)",
    ),
    ("listener", "no_remote_access", "listen on 127.0.0.1 only"),
];

/// UCI options whose mosquitto.conf key has another name: the renames of the init script
/// (`convert_persistence`, `add_bridge`). Every other option is named as its key.
const RENAMES: &[(&str, &str, &str)] = &[
    ("mosquitto", "log_types", "log_type"),
    ("persistence", "location", "persistence_location"),
    ("persistence", "file", "persistence_file"),
    ("persistence", "journal", "persistence_journal"),
    (
        "persistence",
        "client_expiration",
        "persistent_client_expiration",
    ),
    ("bridge", "protocol_version", "bridge_protocol_version"),
    ("bridge", "username", "remote_username"),
    ("bridge", "password", "remote_password"),
    ("bridge", "cafile", "bridge_cafile"),
    ("bridge", "capath", "bridge_capath"),
    ("bridge", "certfile", "bridge_certfile"),
    ("bridge", "keyfile", "bridge_keyfile"),
    ("bridge", "insecure", "bridge_insecure"),
    ("bridge", "tls_version", "bridge_tls_version"),
    ("bridge", "identity", "bridge_identity"),
    ("bridge", "psk", "bridge_psk"),
    (
        "bridge",
        "attempt_unsubscribe",
        "bridge_attempt_unsubscribe",
    ),
    // UCI names have no dots.
    ("listener", "ciphers_tls13", "ciphers_tls1.3"),
];

/// Keys with no UCI option of their own name: the sections are the listeners, and UCI names
/// have no dots.
const NOT_IN_UCI: &[&str] = &["listener", "ciphers_tls1.3"];

/// The UCI name of `key` in a `stype` section.
pub fn uci_name(stype: &str, key: &'static str) -> &'static str {
    RENAMES
        .iter()
        .find(|(s, _, k)| *s == stype && *k == key)
        .map_or(key, |(_, u, _)| u)
}

/// The mosquitto.conf key that option `name` of a `stype` section stands for.
pub fn key_of(stype: &str, name: &str) -> Option<&'static str> {
    if let Some((_, _, k)) = RENAMES.iter().find(|(s, u, _)| *s == stype && *u == name) {
        return Some(k);
    }
    options::find(name)
        .filter(|o| o.scope.sections().contains(&stype) && !NOT_IN_UCI.contains(&o.key))
        .map(|o| o.key)
}

/// Every `(section type, option, description)` the loader knows: the UCI-only options, the
/// renamed ones and every key of [`options::OPTIONS`] in the sections of its scope.
pub fn known_options() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    let renamed = RENAMES
        .iter()
        .map(|(s, u, k)| (*s, *u, options::find(k).map_or("", |o| o.doc)));
    let keys = options::OPTIONS
        .iter()
        .filter(|o| !NOT_IN_UCI.contains(&o.key))
        .flat_map(|o| o.scope.sections().iter().map(move |s| (*s, o.key, o.doc)));
    UCI_ONLY.iter().copied().chain(renamed).chain(keys)
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

/// A single value: a `list` of more than one item is an error.
fn single(opt: &UciOption) -> Result<&str, String> {
    match opt.value.items() {
        [s] => Ok(s),
        _ => Err("expects a single value, not a list".to_owned()),
    }
}

fn uci_bool(opt: &UciOption) -> Result<bool, String> {
    let v = single(opt)?;
    parse_bool(v).ok_or_else(|| format!("invalid boolean value ({v}); use 0 or 1"))
}

/// Walks the sections in the init script's order (`owrt`, then `mosquitto`, `persistence`,
/// `listener` and `bridge` sections, each in file order) and applies each option as its
/// mosquitto.conf line.
fn parse_config(name: &str, text: &str) -> Result<Parsed, ConfigError> {
    let sections = parse(name, text)?;
    let mut st = State::new(
        Config {
            source: Some(PathBuf::from(name)),
            ..Config::default()
        },
        true,
    );
    // `owrt` first: with use_uci 0 nothing else in the file matters, errors included.
    let mut use_uci = true;
    let mut conf = PathBuf::from(DEFAULT_MOSQUITTO_CONF);
    for sec in sections.iter().filter(|s| s.stype == "owrt") {
        for o in &sec.options {
            let err = |m: String| parse_error(name, o.line, format!("owrt.{}: {m}", o.name));
            match o.name.as_str() {
                "use_uci" => use_uci = uci_bool(o).map_err(err)?,
                "config_file" => conf = options::path(&[single(o).map_err(err)?]).map_err(err)?,
                "write_pid" => st.warnings.push(Warning(format!(
                    "{name}:{}: owrt.write_pid is not supported by rmqtt; ignored",
                    o.line
                ))),
                other => st.warnings.push(Warning(format!(
                    "{name}:{}: unknown option \"{other}\" in owrt section; ignored",
                    o.line
                ))),
            }
        }
    }
    if !use_uci {
        return Ok((st.cfg, st.warnings, Some(conf)));
    }
    let mut no_remote = false;
    for stype in ["mosquitto", "persistence", "listener", "bridge"] {
        for sec in sections.iter().filter(|s| s.stype == stype) {
            let mut skip: &[&str] = &[];
            let mut scratch = false;
            if stype == "listener" {
                skip = &["port", "bind_address", "no_remote_access"];
                scratch = start_listener(&mut st, name, sec)?;
            } else if stype == "bridge" {
                skip = &["connection"];
                let conn = sec.options.iter().find(|o| o.name == "connection");
                let bridge = match conn {
                    Some(o) => o.value.items().first().cloned().unwrap_or_default(),
                    None => sec
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("bridge{}", sec.line)),
                };
                let line = conn.map_or(sec.line, |o| o.line);
                apply(
                    &mut st,
                    name,
                    line,
                    "bridge.connection",
                    "connection",
                    &[&bridge],
                )?;
            }
            for o in &sec.options {
                if skip.contains(&o.name.as_str()) {
                    continue;
                }
                if stype == "mosquitto" && o.name == "no_remote_access" {
                    no_remote = uci_bool(o).map_err(|m| {
                        parse_error(name, o.line, format!("mosquitto.no_remote_access: {m}"))
                    })?;
                    continue;
                }
                if stype != "listener" {
                    // An included file's `listener` does not capture the general options.
                    st.current = None;
                }
                apply_option(&mut st, name, stype, o)?;
            }
            if scratch {
                // A listener without a port is checked, then dropped, as the init script
                // drops it.
                st.cfg.listeners.pop();
                st.current = None;
                st.warnings.push(Warning(format!(
                    "{name}:{}: listener section without port; ignored",
                    sec.line
                )));
            }
        }
        st.current = None;
    }
    for sec in &sections {
        if !["owrt", "mosquitto", "persistence", "listener", "bridge"].contains(&sec.stype.as_str())
        {
            st.warnings.push(Warning(format!(
                "{name}:{}: unknown section type \"{}\"; ignored",
                sec.line, sec.stype
            )));
        }
    }
    if no_remote {
        match st
            .default_listener
            .and_then(|i| st.cfg.listeners.get_mut(i))
        {
            Some(g) => g.bind = Some("127.0.0.1".to_owned()),
            // Without a general port, "no remote access" can only mean every listener.
            None => {
                for li in &mut st.cfg.listeners {
                    li.bind = Some("127.0.0.1".to_owned());
                }
            }
        }
    }
    Ok((st.cfg, st.warnings, None))
}

/// Writes a listener section's `listener PORT [ADDRESS]`. `Ok(true)`: the section has no
/// port, and the listener made to check its options must be dropped afterwards.
fn start_listener(st: &mut State, file: &str, sec: &Section) -> Result<bool, ConfigError> {
    let mut bind: Option<&str> = None;
    for o in &sec.options {
        let err = |m: String| parse_error(file, o.line, format!("listener.{}: {m}", o.name));
        match o.name.as_str() {
            "bind_address" => bind = Some(single(o).map_err(err)?),
            "no_remote_access" if uci_bool(o).map_err(err)? => bind = Some("127.0.0.1"),
            _ => {}
        }
    }
    let port = sec.options.iter().find(|o| o.name == "port");
    let (line, p) = match port {
        Some(o) => (
            o.line,
            single(o).map_err(|m| parse_error(file, o.line, format!("listener.port: {m}")))?,
        ),
        None => (sec.line, "0"),
    };
    let mut args = vec![p];
    args.extend(bind);
    apply(st, file, line, "listener.port", "listener", &args)?;
    st.current = Some(st.cfg.listeners.len().saturating_sub(1));
    Ok(port.is_none())
}

/// Applies UCI option `o` of a `stype` section as the mosquitto.conf lines it stands for.
fn apply_option(st: &mut State, file: &str, stype: &str, o: &UciOption) -> Result<(), ConfigError> {
    let label = format!("{stype}.{}", o.name);
    let Some(key) = key_of(stype, &o.name) else {
        if o.name.starts_with("auth_opt_") || o.name.starts_with("plugin_opt_") {
            return apply(st, file, o.line, &label, &o.name, &[]);
        }
        st.warnings.push(Warning(format!(
            "{file}:{}: unknown option \"{}\" in {stype} section; ignored",
            o.line, o.name
        )));
        return Ok(());
    };
    let items = o.value.items();
    if items.len() > 1 && !options::LISTS.contains(&key) {
        return Err(parse_error(
            file,
            o.line,
            format!("{label}: expects a single value, not a list"),
        ));
    }
    if stype == "listener" && ["allow_anonymous", "password_file", "acl_file"].contains(&key) {
        // A per-listener choice in the UI only means something with this on.
        st.cfg.per_listener_settings = true;
    }
    for item in items {
        let words: Vec<&str> = item.split_whitespace().collect();
        // `log_types 'error warning'` and the old `log_dest 'syslog stderr'` hold several
        // values; `file PATH` is one.
        let each = key == "log_type"
            || (key == "log_dest"
                && matches!(o.value, Value::Single(_))
                && !item.starts_with("file"));
        if each {
            for w in &words {
                apply(st, file, o.line, &label, key, &[w])?;
            }
        } else if words.is_empty() {
            apply(st, file, o.line, &label, key, &[""])?;
        } else {
            apply(st, file, o.line, &label, key, &words)?;
        }
    }
    Ok(())
}

/// One mosquitto.conf line, `key args`, from option `label` at `file:line`.
fn apply(
    st: &mut State,
    file: &str,
    line: usize,
    label: &str,
    key: &str,
    args: &[&str],
) -> Result<(), ConfigError> {
    st.at = format!("{file}:{line}: {label}");
    st.label = label.to_owned();
    st.uci = true;
    match st.apply(key, args) {
        Ok(_) => Ok(()),
        Err(m) => Err(parse_error(file, line, options::with_label(label, m))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Anonymous, ListenerProtocol, LogDest};
    use std::time::Duration;

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
	option idle_timeout '45'

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
        assert_eq!(c.bridges[0].idle_timeout, 45);
        assert!(!c.bridges[1].uses_tls());
        assert_eq!(
            c.bridges[1].addresses,
            vec![("192.168.1.2".to_owned(), 1883)]
        );

        // The harmless options rmqtt does not implement are named, with their lines.
        let w: Vec<&str> = w.iter().map(|w| w.0.as_str()).collect();
        assert!(
            w.iter().any(|x| x.contains(":3: owrt.write_pid ")),
            "owrt.write_pid: {w:?}"
        );
        assert_eq!(w.len(), 1, "{w:?}");
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
                "config listener\n option ciphers_tls13 TLS_AES_128_CCM_SHA256\n",
                2,
                "listener.ciphers_tls13: unsupported cipher",
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

    #[test]
    fn listener_auth_files_are_the_listeners_own() {
        let (c, _) = parse_str(
            "rmqtt",
            "config mosquitto 'mosquitto'\n\
             \toption password_file '/etc/pw'\n\
             config listener\n\
             \toption port '1883'\n\
             \toption password_file '/etc/pw_lan'\n\
             \toption acl_file '/etc/acl_lan'\n\
             config listener\n\
             \toption port '1884'\n",
        )
        .unwrap();
        assert!(c.per_listener_settings);
        assert_eq!(c.password_file, Some(PathBuf::from("/etc/pw")));
        assert_eq!(
            c.listeners[0].password_file,
            Some(PathBuf::from("/etc/pw_lan"))
        );
        assert_eq!(c.listeners[0].acl_file, Some(PathBuf::from("/etc/acl_lan")));
        assert_eq!(c.listeners[1].password_file, None);
    }
}
