//! What `rmqtt --test-config` prints: the effective settings, one `name: value` line each, in
//! the names of mosquitto.conf where there is one, listeners and bridges as indented blocks.
//! Secrets (bridge passwords) are never printed, only whether one is set.

use super::{Anonymous, Bridge, Config, Direction, Listener, ListenerProtocol, LogDest, StartType};
use std::fmt::Write;
use std::path::Path;

fn opt_path(p: &Option<std::path::PathBuf>) -> String {
    p.as_deref()
        .map_or("(none)".to_owned(), |p| p.display().to_string())
}

fn opt_str(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "(none)".to_owned())
}

fn anonymous(a: Option<Anonymous>) -> &'static str {
    match a {
        None => "(not set)",
        Some(Anonymous::Allow) => "true",
        Some(Anonymous::Deny) => "false",
        Some(Anonymous::Local) => "local",
    }
}

fn listener(out: &mut String, l: &Listener) {
    match l.unix_path() {
        Some(p) => {
            let _ = writeln!(out, "  - unix socket: {}", p.display());
        }
        None => {
            let _ = writeln!(out, "  - port: {}", l.port);
            let _ = writeln!(
                out,
                "    bind_address: {}",
                l.bind.as_deref().unwrap_or("(all)")
            );
        }
    }
    let protocol = match l.protocol {
        ListenerProtocol::Mqtt => "mqtt",
        ListenerProtocol::WebSockets => "websockets",
    };
    let lines = [
        ("protocol", protocol.to_owned()),
        ("max_connections", l.max_connections.to_string()),
        ("allow_anonymous", anonymous(l.allow_anonymous).to_owned()),
        ("cafile", opt_path(&l.cafile)),
        ("capath", opt_path(&l.capath)),
        ("certfile", opt_path(&l.certfile)),
        ("keyfile", opt_path(&l.keyfile)),
        ("require_certificate", l.require_certificate.to_string()),
        (
            "use_identity_as_username",
            l.use_identity_as_username.to_string(),
        ),
        (
            "use_subject_as_username",
            l.use_subject_as_username.to_string(),
        ),
        ("tls_version", opt_str(&l.tls_version)),
        ("bind_interface", opt_str(&l.bind_interface)),
    ];
    for (k, v) in lines {
        let _ = writeln!(out, "    {k}: {v}");
    }
}

fn bridge(out: &mut String, b: &Bridge) {
    let _ = writeln!(out, "  - connection: {}", b.name);
    for (host, port) in &b.addresses {
        let _ = writeln!(out, "    address: {host}:{port}");
    }
    for t in &b.topics {
        let dir = match t.direction {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Both => "both",
        };
        let _ = writeln!(
            out,
            "    topic: {} {dir} {} '{}' '{}'",
            t.pattern, t.qos, t.local_prefix, t.remote_prefix
        );
    }
    let start = match b.start_type {
        StartType::Automatic => "automatic",
        StartType::Lazy => "lazy",
        StartType::Once => "once",
    };
    let lines = [
        ("remote_username", opt_str(&b.remote_username)),
        (
            "remote_password",
            if b.remote_password.is_some() {
                "(set, not shown)".to_owned()
            } else {
                "(none)".to_owned()
            },
        ),
        ("remote_clientid", opt_str(&b.remote_clientid)),
        ("local_clientid", opt_str(&b.local_clientid)),
        ("cleansession", b.cleansession.to_string()),
        ("keepalive_interval", b.keepalive.to_string()),
        (
            "restart_timeout",
            format!("{} {}", b.restart_timeout.0, b.restart_timeout.1),
        ),
        ("start_type", start.to_owned()),
        ("threshold", b.threshold.to_string()),
        ("idle_timeout", b.idle_timeout.to_string()),
        ("try_private", b.try_private.to_string()),
        ("notifications", b.notifications.to_string()),
        ("notification_topic", opt_str(&b.notification_topic)),
        ("bridge_protocol_version", b.protocol_level.to_string()),
        ("bridge_cafile", opt_path(&b.cafile)),
        ("bridge_capath", opt_path(&b.capath)),
        ("bridge_certfile", opt_path(&b.certfile)),
        ("bridge_keyfile", opt_path(&b.keyfile)),
        ("bridge_insecure", b.insecure.to_string()),
        ("bridge_tls_version", opt_str(&b.tls_version)),
        ("bridge_max_packet_size", b.max_packet_size.to_string()),
        ("bridge_outgoing_retain", b.outgoing_retain.to_string()),
        (
            "bridge_attempt_unsubscribe",
            b.attempt_unsubscribe.to_string(),
        ),
        (
            "notifications_local_only",
            b.notifications_local_only.to_string(),
        ),
        ("bridge_bind_address", opt_str(&b.bind_address)),
        ("round_robin", b.round_robin.to_string()),
    ];
    for (k, v) in lines {
        let _ = writeln!(out, "    {k}: {v}");
    }
}

/// The readable summary of `cfg`.
pub fn summary(cfg: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Configuration: {}",
        cfg.source
            .as_deref()
            .map_or("(none: local only mode)".to_owned(), |p: &Path| p
                .display()
                .to_string())
    );
    let _ = writeln!(out, "listeners:");
    if cfg.listeners.is_empty() {
        let _ = writeln!(out, "  (none: 127.0.0.1 and ::1 only, port 1883 or -p)");
    }
    for l in &cfg.listeners {
        listener(&mut out, l);
    }
    let log_dest: Vec<String> = cfg
        .log_dest
        .iter()
        .map(|d| match d {
            LogDest::Stdout => "stdout".to_owned(),
            LogDest::Stderr => "stderr".to_owned(),
            LogDest::Syslog => "syslog".to_owned(),
            LogDest::File(p) => format!("file {}", p.display()),
            LogDest::Topic => "topic".to_owned(),
            LogDest::None => "none".to_owned(),
        })
        .collect();
    let or_default = |v: Vec<String>| {
        if v.is_empty() {
            "(default)".to_owned()
        } else {
            v.join(", ")
        }
    };
    let lines = [
        ("allow_anonymous", anonymous(cfg.allow_anonymous).to_owned()),
        (
            "per_listener_settings",
            cfg.per_listener_settings.to_string(),
        ),
        ("password_file", opt_path(&cfg.password_file)),
        ("acl_file", opt_path(&cfg.acl_file)),
        ("pid_file", opt_path(&cfg.pid_file)),
        ("user", opt_str(&cfg.user)),
        ("max_connections", cfg.max_connections.to_string()),
        ("message_size_limit", cfg.message_size_limit.to_string()),
        ("max_packet_size", cfg.max_packet_size.to_string()),
        (
            "max_inflight_messages",
            cfg.max_inflight_messages.to_string(),
        ),
        ("max_queued_messages", cfg.max_queued_messages.to_string()),
        ("max_inflight_bytes", cfg.max_inflight_bytes.to_string()),
        ("max_queued_bytes", cfg.max_queued_bytes.to_string()),
        ("max_keepalive", cfg.max_keepalive.to_string()),
        ("max_topic_alias", cfg.max_topic_alias.to_string()),
        ("retain_available", cfg.retain_available.to_string()),
        (
            "persistent_client_expiration",
            cfg.persistent_client_expiration
                .map_or("(never)".to_owned(), |d| format!("{}s", d.as_secs())),
        ),
        ("sys_interval", cfg.sys_interval.to_string()),
        ("persistence", cfg.persistence.to_string()),
        ("persistence_location", opt_path(&cfg.persistence_location)),
        ("persistence_file", cfg.persistence_file.clone()),
        ("persistence_journal", cfg.persistence_journal.to_string()),
        ("journal_location", opt_path(&cfg.journal_location)),
        ("autosave_interval", cfg.autosave_interval.to_string()),
        ("autosave_on_changes", cfg.autosave_on_changes.to_string()),
        ("log_dest", or_default(log_dest)),
        ("log_type", or_default(cfg.log_types.clone())),
        ("log_timestamp", cfg.log_timestamp.to_string()),
        ("log_timestamp_format", opt_str(&cfg.log_timestamp_format)),
        (
            "log_facility",
            cfg.log_facility
                .map_or("(default)".to_owned(), |f| f.to_string()),
        ),
        ("connection_messages", cfg.connection_messages.to_string()),
        ("queue_qos0_messages", cfg.queue_qos0_messages.to_string()),
        ("upgrade_outgoing_qos", cfg.upgrade_outgoing_qos.to_string()),
        (
            "allow_zero_length_clientid",
            cfg.allow_zero_length_clientid.to_string(),
        ),
        ("auto_id_prefix", cfg.auto_id_prefix.clone()),
        (
            "use_username_as_clientid",
            cfg.use_username_as_clientid.to_string(),
        ),
        ("set_tcp_nodelay", cfg.set_tcp_nodelay.to_string()),
        ("connect_timeout", cfg.connect_timeout.to_string()),
        ("max_connect_size", cfg.max_connect_size.to_string()),
        (
            "max_pending_connections",
            cfg.max_pending_connections.to_string(),
        ),
        (
            "max_pending_per_address",
            cfg.max_pending_per_address.to_string(),
        ),
        ("memory_limit", cfg.memory_limit.to_string()),
        ("clientid_prefixes", opt_str(&cfg.clientid_prefixes)),
        (
            "max_subscriptions",
            cfg.budget.max_subscriptions.to_string(),
        ),
        (
            "max_shared_groups",
            cfg.budget.max_shared_groups.to_string(),
        ),
        (
            "max_retained_messages",
            cfg.budget.max_retained_messages.to_string(),
        ),
        (
            "max_retained_bytes",
            cfg.budget.max_retained_bytes.to_string(),
        ),
        ("max_sessions", cfg.budget.max_sessions.to_string()),
        (
            "max_offline_sessions",
            cfg.budget.max_offline_sessions.to_string(),
        ),
        ("max_output_bytes", cfg.budget.max_output_bytes.to_string()),
        (
            "max_outgoing_topic_alias",
            cfg.budget.max_outgoing_topic_alias.to_string(),
        ),
        (
            "websockets_origin",
            if cfg.websockets_origins.is_empty() {
                "(any)".to_owned()
            } else {
                cfg.websockets_origins.join(" ")
            },
        ),
    ];
    for (k, v) in lines {
        let _ = writeln!(out, "{k}: {v}");
    }
    let _ = writeln!(out, "bridges:");
    if cfg.bridges.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for b in &cfg.bridges {
        bridge(&mut out, b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_password_is_never_printed() {
        let mut cfg = Config::default();
        let mut b = Bridge::new("up");
        b.remote_password = Some("hunter2-secret".into());
        b.addresses.push(("example.net".into(), 8883));
        cfg.bridges.push(b);
        cfg.listeners.push(Listener::new(1883, None));
        let s = summary(&cfg);
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("    remote_password: (set, not shown)\n"), "{s}");
        assert!(s.contains("  - port: 1883\n"), "{s}");
        assert!(s.contains("    address: example.net:8883\n"), "{s}");
    }
}
