//! Mosquitto-style configuration files (`key value...`, `#` comments, `include_dir`).
//!
//! Each line is applied from the one option table, [`super::options::OPTIONS`]. Never panics
//! on file contents; every error carries the file and line. Unknown keys are warnings; keys
//! that weaken security if ignored are errors.

use super::options::{path, with_label, State};
use super::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// A non-fatal remark about the configuration (an unknown or unsupported key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

/// Reads `path` into a [`Config`], with warnings for keys accepted but not acted upon.
pub fn load(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut st = State::new(
        Config {
            source: Some(path.to_owned()),
            ..Config::default()
        },
        false,
    );
    parse_file(&mut st, path)?;
    Ok((st.cfg, st.warnings))
}

/// Parses configuration text as if it came from `name`; for tests and `include_dir`.
pub fn parse_str(name: &str, text: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
    let mut st = State::new(
        Config {
            source: Some(PathBuf::from(name)),
            ..Config::default()
        },
        false,
    );
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
    let uci = std::mem::replace(&mut st.uci, false);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let Some(key) = words.next() else { continue };
        let args: Vec<&str> = words.collect();
        st.at = format!("{name}:{line}: {key}");
        st.label = key.to_owned();
        match st.apply(key, &args) {
            Ok(true) => {}
            Ok(false) => st.warnings.push(Warning(format!(
                "{name}:{line}: unknown configuration variable \"{key}\"; ignored"
            ))),
            Err(m) => {
                // An include's error already names its file and line.
                let message = if key == "include_dir" {
                    m
                } else {
                    with_label(key, m)
                };
                return Err(ConfigError {
                    file: name.to_owned(),
                    line,
                    message,
                });
            }
        }
    }
    st.uci = uci;
    Ok(())
}

/// `include_dir DIR`: applies the `.conf` files of `DIR`, in name order.
pub(super) fn include_dir(st: &mut State, args: &[&str]) -> Result<(), String> {
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
    let r = files
        .iter()
        .try_for_each(|f| parse_file(st, f).map_err(|e| e.to_string()));
    st.depth -= 1;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::duration;
    use crate::config::{Anonymous, Direction};
    use std::time::Duration;

    #[test]
    fn clientid_prefixes_check_retain_source_and_per_listener_auth_files() {
        let (c, _) = parse_str(
            "t.conf",
            "clientid_prefixes sec-\ncheck_retain_source false\n",
        )
        .unwrap();
        assert_eq!(c.clientid_prefixes.as_deref(), Some("sec-"));
        let e = parse_str("t.conf", "\ncheck_retain_source true\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        // With per_listener_settings a listener block's auth files are its own; before the
        // first listener they are the global ones.
        let (c, _) = parse_str(
            "t.conf",
            "per_listener_settings true\npassword_file /p\nlistener 1883\nallow_anonymous true\n\
             acl_file /a\npassword_file /q\nlistener 1884\n",
        )
        .unwrap();
        assert_eq!(c.password_file.as_deref(), Some(std::path::Path::new("/p")));
        assert_eq!(c.acl_file, None);
        let l = &c.listeners[0];
        assert_eq!(l.acl_file.as_deref(), Some(std::path::Path::new("/a")));
        assert_eq!(l.password_file.as_deref(), Some(std::path::Path::new("/q")));
        assert_eq!(
            (&c.listeners[1].password_file, &c.listeners[1].acl_file),
            (&None, &None)
        );
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
