//! Configuration files, black-box through `rmqtt -c FILE --test-config` and real start-ups:
//! every example config in the repository loads, bad configs are refused with the exact
//! `Error: FILE:LINE: ...` line and exit code 3, unknown keys are warned about with file and line
//! and the broker still starts, and security-relevant keys rmqtt cannot honour refuse start-up.

mod common;
mod common_interop;

use common::Broker;
use common_interop::{run, Output, TempDir, STEP};
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `rmqtt -c FILE --test-config`, run from the crate root (fixtures use relative paths).
fn test_config(file: &Path) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_rmqtt"))
            .arg("-c")
            .arg(file)
            .arg("--test-config")
            .current_dir(manifest_dir()),
        None,
        STEP,
    )
}

/// Every Mosquitto-syntax example shipped in the repository plus the test fixtures.
fn example_configs() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["tests/fixtures/configs", "files/etc/rmqtt"] {
        let Ok(rd) = std::fs::read_dir(manifest_dir().join(dir)) else {
            continue;
        };
        files.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf")),
        );
    }
    // The UCI example: `-c` recognises UCI syntax by its first `config` section.
    let uci = manifest_dir().join("files/etc/config/rmqtt");
    if uci.is_file() {
        files.push(uci);
    }
    files.sort();
    files
}

#[test]
fn every_example_config_loads() {
    let files = example_configs();
    assert!(
        files.len() >= 4,
        "expected the fixtures in tests/fixtures/configs, found {files:?}"
    );
    for f in &files {
        let out = test_config(f);
        out.assert_success(&format!("--test-config {}", f.display()));
        assert!(
            !out.stderr.contains("Error"),
            "{}: {}",
            f.display(),
            out.stderr
        );
        assert!(
            out.stdout.starts_with("Configuration: "),
            "{}: {out:?}",
            f.display()
        );
    }
}

/// The fixtures are not only accepted but read as meant.
#[test]
fn example_configs_mean_what_they_say() {
    // Lines of the summary `--test-config` prints (each needle is part of one line).
    let cases: &[(&str, &[&str])] = &[
        (
            "mosquitto-home.conf",
            &[
                "- port: 1883",
                "allow_anonymous: false",
                "password_file: /etc/mosquitto/pwfile",
                "persistence: true",
                "persistence_location: /tmp/mosquitto/",
                "log_dest: syslog",
                "log_type: error, warning, notice, information",
                "connection_messages: true",
                "log_timestamp: true",
                "pid_file: /var/run/mosquitto/mosquitto.pid",
            ],
        ),
        (
            "mosquitto-tls.conf",
            &[
                "- port: 8883",
                "bind_address: 192.168.1.1",
                "cafile: /etc/mosquitto/certs/ca.crt",
                "certfile: /etc/mosquitto/certs/server.crt",
                "keyfile: /etc/mosquitto/certs/server.key",
                "require_certificate: true",
                "use_identity_as_username: true",
                "tls_version: tlsv1.2",
                "acl_file: /etc/mosquitto/aclfile",
                "file /var/log/mosquitto/mosquitto.log",
            ],
        ),
        (
            "mosquitto-include.conf",
            &[
                "- port: 1883",
                "- port: 8883",
                "allow_anonymous: false",
                "certfile: /etc/mosquitto/certs/server.crt",
                "persistence: true",
            ],
        ),
        (
            "mosquitto-legacy.conf",
            &[
                "- port: 1883",
                "bind_address: 0.0.0.0",
                "allow_anonymous: true",
                "max_connections: 200",
                "message_size_limit: 262144",
                "max_keepalive: 300",
                "sys_interval: 30",
                "connection_messages: false",
                "log_type: none",
            ],
        ),
    ];
    for (file, needles) in cases {
        let out = test_config(&manifest_dir().join("tests/fixtures/configs").join(file));
        out.assert_success(file);
        for n in *needles {
            assert!(
                out.stdout.lines().any(|l| l.contains(n)),
                "{file}: no {n} in {}",
                out.stdout
            );
        }
    }
    // The TLS listener settings belong to the 8883 listener, not to the LAN one.
    let out = test_config(&manifest_dir().join("tests/fixtures/configs/mosquitto-tls.conf"));
    let text = &out.stdout;
    let lan = text.find("- port: 1883").unwrap();
    let tls = text.find("- port: 8883").unwrap();
    let cert = text.find("certfile: /").unwrap();
    assert!(lan < tls && tls < cert, "{}", out.stdout);
    // set_tcp_nodelay is honoured, not warned about.
    let out = test_config(&manifest_dir().join("tests/fixtures/configs/mosquitto-legacy.conf"));
    assert!(!out.stderr.contains("set_tcp_nodelay"), "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l == "set_tcp_nodelay: true"),
        "{}",
        out.stdout
    );
}

/// Bad configurations: each is refused with exit code 3 and exactly this first stderr line
/// (`FILE` stands for the path given with `-c`).
const BAD: &[(&str, &str)] = &[
    (
        "listener abc\n",
        "Error: FILE:1: listener: invalid port (abc); use a number from 0 to 65535",
    ),
    ("listener\n", "Error: FILE:1: listener: listener needs a port"),
    (
        "listener 1883 127.0.0.1 extra\n",
        "Error: FILE:1: listener: listener takes a port and an optional address",
    ),
    (
        "listener 70000\n",
        "Error: FILE:1: listener: invalid port (70000); use a number from 0 to 65535",
    ),
    (
        "listener 1883\nallow_anonymous maybe\n",
        "Error: FILE:2: allow_anonymous: invalid value (maybe); use true, false or local",
    ),
    (
        "# comment\n\nmax_inflight_messages 70000\n",
        "Error: FILE:3: max_inflight_messages: value 70000 out of range 0..65535",
    ),
    (
        "max_connections abc\n",
        "Error: FILE:1: max_connections: invalid number (abc)",
    ),
    (
        "listener 1883\nprotocol carrier-pigeon\n",
        "Error: FILE:2: protocol: invalid protocol (carrier-pigeon); use mqtt or websockets",
    ),
    (
        "log_dest printer\n",
        "Error: FILE:1: log_dest: invalid log_dest (printer); use stdout, stderr, syslog, topic, none or file PATH",
    ),
    (
        "log_type loud\n",
        "Error: FILE:1: log_type: invalid log_type value (loud)",
    ),
    (
        "listener 8883\ntls_version tlsv1.1\n",
        "Error: FILE:2: tls_version: unsupported tls_version (tlsv1.1); use tlsv1.2 or tlsv1.3",
    ),
    (
        "listener 8883\nrequire_certificate sometimes\n",
        "Error: FILE:2: require_certificate: invalid boolean value (sometimes); use true or false",
    ),
    (
        "password_file\n",
        "Error: FILE:1: password_file: missing path",
    ),
    (
        "persistence true false\n",
        "Error: FILE:1: persistence: too many values",
    ),
    (
        "persistent_client_expiration 3x\n",
        "Error: FILE:1: persistent_client_expiration: invalid duration (3x); use a number followed by h, d, w, m or y",
    ),
    (
        "listener 1883\nauth_plugin /usr/lib/mosquitto_auth.so\n",
        "Error: FILE:2: auth_plugin is not supported by rmqtt; refusing to start without it",
    ),
    (
        "psk_file /etc/mosquitto/psk\n",
        "Error: FILE:1: psk_file is not supported by rmqtt; refusing to start without it",
    ),
    (
        "plugin /usr/lib/mosquitto_dynamic_security.so\n",
        "Error: FILE:1: plugin is not supported by rmqtt; refusing to start without it",
    ),
];

#[test]
fn bad_configs_name_file_and_line() {
    let dir = TempDir::new("bad-config");
    for (i, (text, want)) in BAD.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.conf"));
        std::fs::write(&file, text).unwrap();
        let out = test_config(&file);
        let want = want.replace("FILE", &file.display().to_string());
        assert_eq!(out.code(), Some(3), "{text:?}: {out:?}");
        assert_eq!(
            out.stderr.lines().next(),
            Some(want.as_str()),
            "{text:?}: {out:?}"
        );
    }
}

#[test]
fn errors_in_included_files_name_that_file() {
    let dir = TempDir::new("bad-include");
    let inc = dir.path().join("conf.d");
    std::fs::create_dir(&inc).unwrap();
    std::fs::write(inc.join("a.conf"), "listener 1883\n").unwrap();
    std::fs::write(inc.join("b.conf"), "\nmax_keepalive -1\n").unwrap();
    // Only *.conf files are read.
    std::fs::write(inc.join("notes.txt"), "this is not config\n").unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, format!("# main\ninclude_dir {}\n", inc.display())).unwrap();
    let out = test_config(&main);
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert_eq!(
        out.stderr.lines().next().unwrap_or_default(),
        format!(
            "Error: {}:2: {}:2: max_keepalive: value -1 out of range 0..65535",
            main.display(),
            inc.join("b.conf").display()
        )
    );

    std::fs::write(inc.join("b.conf"), "allow_anonymous true\n").unwrap();
    test_config(&main).assert_success("include_dir with good files");

    let missing = dir.path().join("missing.conf");
    std::fs::write(&missing, "include_dir /nonexistent/rmqtt.d\n").unwrap();
    let out = test_config(&missing);
    assert_eq!(out.code(), Some(3), "{out:?}");
    let first = out.stderr.lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with(&format!(
            "Error: {}:1: include_dir /nonexistent/rmqtt.d: ",
            missing.display()
        )),
        "{first}"
    );
}

#[test]
fn missing_config_file_is_an_error() {
    let out = test_config(Path::new("/nonexistent/rmqtt.conf"));
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert!(
        out.stderr
            .starts_with("Error: /nonexistent/rmqtt.conf: cannot read configuration file: "),
        "{out:?}"
    );
}

/// Runs the broker (not `--test-config`) on `text`; for configs that must not start.
fn start_fails(text: &str) -> Output {
    let dir = TempDir::new("no-start");
    let file = dir.path().join("broker.conf");
    std::fs::write(&file, text).unwrap();
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_rmqtt"))
            .arg("-c")
            .arg(&file)
            .current_dir(dir.path()),
        None,
        STEP,
    );
    assert_eq!(
        out.code(),
        Some(3),
        "{text:?} must refuse to start: {out:?}"
    );
    out
}

#[test]
fn unknown_keys_warn_with_file_and_line_and_start() {
    let mut b = Broker::with_config(
        "allow_anonymous true\nbogus_option 42\nallow_duplicate_messages false\nwebsockets_log_level 0\n\
         check_retain_source false\n",
    );
    // The harness writes `listener 0 127.0.0.1` as line 1.
    let w = b.wait_log("unknown configuration variable \"bogus_option\"; ignored");
    assert!(w.contains("Warning: ") && w.contains(".conf:3: "), "{w}");
    let w = b.wait_log("allow_duplicate_messages is not supported by rmqtt; ignored");
    assert!(w.contains(".conf:4: "), "{w}");
    let w = b.wait_log("websockets_log_level is not supported by rmqtt; ignored");
    assert!(w.contains(".conf:5: "), "{w}");
    b.assert_healthy();
}

#[test]
fn security_relevant_unknown_keys_refuse_to_start() {
    for (key, line) in [
        ("auth_plugin /usr/lib/mosquitto-go-auth.so", "auth_plugin"),
        ("psk_file /etc/mosquitto/psk", "psk_file"),
        ("psk_hint rmqtt", "psk_hint"),
        ("dhparamfile /etc/mosquitto/dh.pem", "dhparamfile"),
        ("mount_point m/", "mount_point"),
    ] {
        let out = start_fails(&format!("listener 0 127.0.0.1\n{key}\n"));
        assert!(
            out.stderr.contains(&format!(
                "broker.conf:2: {line} is not supported by rmqtt; refusing to start without it"
            )),
            "{key}: {out:?}"
        );
        assert!(
            !out.stderr.contains(" running"),
            "{key} must stop before running: {out:?}"
        );
    }
}

/// Keys whose Mosquitto meaning rmqtt does not implement stop it with file and line: the
/// check of a retained message's publisher.
#[test]
fn check_retain_source_refuses_to_start() {
    let out = start_fails("listener 0 127.0.0.1\ncheck_retain_source true\n");
    assert!(
        out.stderr
            .contains("broker.conf:2: check_retain_source: true is not supported by rmqtt"),
        "{out:?}"
    );
}

/// Files named by the config are read at start-up: a broken ACL file or a missing password
/// file stops the broker with exit code 3 and a line naming the file.
#[test]
fn unreadable_auth_files_refuse_to_start() {
    let dir = TempDir::new("bad-acl");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user bob\ntopic read ok/#\nusr alice\n").unwrap();
    let out = start_fails(&format!(
        "listener 0 127.0.0.1\nacl_file {}\n",
        acl.display()
    ));
    assert!(
        out.stderr.contains(&format!(
            "Error: {}:3: invalid line (unknown keyword 'usr')",
            acl.display()
        )),
        "{out:?}"
    );
    let out = start_fails("listener 0 127.0.0.1\npassword_file /nonexistent/pwfile\n");
    assert!(
        out.stderr
            .contains("Error: /nonexistent/pwfile: unable to read password file: "),
        "{out:?}"
    );
}

/// `--test-config` never prints a secret: bridge passwords (mosquitto.conf `remote_password`,
/// UCI `option password`) show only that one is set, in stdout and stderr alike.
#[test]
fn test_config_never_prints_bridge_passwords() {
    let dir = TempDir::new("secrets");
    let conf = dir.path().join("bridge.conf");
    std::fs::write(
        &conf,
        "listener 1883\nallow_anonymous true\nconnection up\naddress 192.0.2.1:1883\n\
         topic # both 0\nremote_username bob\nremote_password s3cret-conf-pw\n",
    )
    .unwrap();
    let uci = dir.path().join("rmqtt");
    std::fs::write(
        &uci,
        "config mosquitto\n\toption allow_anonymous '1'\n\nconfig listener\n\toption port '1883'\n\n\
         config bridge\n\toption connection 'up'\n\toption address '192.0.2.1:1883'\n\
         \tlist topic '# both 0'\n\toption remote_username 'bob'\n\toption password 's3cret-uci-pw'\n",
    )
    .unwrap();
    for (f, secret) in [(&conf, "s3cret-conf-pw"), (&uci, "s3cret-uci-pw")] {
        let out = test_config(f);
        out.assert_success(&format!("--test-config {}", f.display()));
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains(secret),
            "{} printed its secret:\n{all}",
            f.display()
        );
        assert!(
            out.stdout.contains("remote_password: (set, not shown)"),
            "{}:\n{}",
            f.display(),
            out.stdout
        );
    }
}
