//! TLS listeners, black-box, with certificates made by the `openssl` CLI at test time and real
//! `mosquitto_sub` / `mosquitto_pub` as the TLS clients: server authentication with `--cafile`,
//! client certificates required and checked against the CA, `use_identity_as_username` with an
//! ACL, a plaintext client on the TLS port, and `tls_version tlsv1.3`.
//!
//! Without `openssl` or the Mosquitto clients the tests are skipped unless
//! `RMQTT_REQUIRE_INTEROP` is set.

mod common;
mod common_interop;

use common::{Broker, Client, ConnectOpts};
use common_interop::{run, tools_or_skip, Output, Running, TempDir, STEP};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Certificates for one test, in a temporary directory.
struct Pki {
    dir: TempDir,
    openssl: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = run(
            Command::new(&self.openssl)
                .args(args)
                .current_dir(self.dir.path()),
            None,
            STEP,
        );
        out.assert_success(&format!("openssl {args:?}"));
    }

    /// A self-signed CA `NAME.crt` / `NAME.key`.
    fn ca(&self, name: &str) {
        let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN=rmqtt test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// A leaf `NAME.crt` / `NAME.key` with common name `cn`, signed by `ca`.
    fn leaf(&self, ca: &str, name: &str, cn: &str, server: bool) {
        self.leaf_subject(ca, name, &format!("/CN={cn}"), &[], server);
    }

    /// A leaf with the subject `subj` (`openssl req -subj`, with `req_args` such as `-utf8`).
    fn leaf_subject(&self, ca: &str, name: &str, subj: &str, req_args: &[&str], server: bool) {
        let ext = format!("{name}.ext");
        let text = if server {
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        } else {
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n"
        };
        std::fs::write(self.dir.path().join(&ext), text).unwrap();
        self.openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subj,
            ]
            .iter()
            .chain(req_args)
            .copied()
            .collect::<Vec<&str>>(),
        );
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &format!("{}", name.len() * 7919 + subj.len()),
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.crt"),
        ]);
    }
}

/// The CA `ca` with a server certificate, clients `alice` and `bob` signed by it, and a
/// client `mallory` signed by an unrelated CA `evil`; `None` when a tool is missing.
fn pki(test: &str) -> Option<(Pki, PathBuf, PathBuf)> {
    let tools = tools_or_skip(test, &["openssl", "mosquitto_sub", "mosquitto_pub"])?;
    let pki = Pki {
        dir: TempDir::new(test),
        openssl: tools[0].clone(),
    };
    pki.ca("ca");
    pki.leaf("ca", "server", "localhost", true);
    pki.leaf("ca", "alice", "alice", false);
    pki.leaf("ca", "bob", "bob", false);
    pki.ca("evil");
    pki.leaf("evil", "mallory", "alice", false);
    Some((pki, tools[1].clone(), tools[2].clone()))
}

/// A broker with a plaintext listener (first) and a TLS listener (second) configured by
/// `tls`, which follows the TLS `listener` line; returns it with the TLS port.
fn tls_broker(pki: &Pki, tls: &str, global: &str) -> (Broker, u16) {
    let broker = Broker::with_config(&format!(
        "{global}listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n{tls}",
        pki.path("server.crt"),
        pki.path("server.key"),
    ));
    let ports = broker.wait_ports(2);
    assert_eq!(ports[0], broker.port);
    (broker, ports[1])
}

/// Common client arguments: host, port, and the CA to check the server against.
fn base(pki: &Pki, port: u16) -> Vec<String> {
    [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "--cafile",
        &pki.path("ca.crt"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn with_cert(mut args: Vec<String>, pki: &Pki, name: &str) -> Vec<String> {
    args.extend([
        "--cert".to_owned(),
        pki.path(&format!("{name}.crt")),
        "--key".to_owned(),
        pki.path(&format!("{name}.key")),
    ]);
    args
}

/// A `mosquitto_sub -v` run, waited on until the broker logs its subscription (its stdout
/// is a pipe, so it may hold its own lines back until it exits).
fn subscriber(broker: &Broker, tool: &Path, args: &[String], topic: &str, count: &str) -> Running {
    let before = subscriptions(broker, topic);
    let sub = Running::spawn(
        Command::new(tool)
            .args(args)
            .args(["-v", "-q", "1", "-t", topic, "-C", count, "-W", "20"]),
    );
    let deadline = Instant::now() + STEP;
    while subscriptions(broker, topic) == before {
        assert!(
            Instant::now() < deadline,
            "subscriber never subscribed; log: {:?}",
            broker.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sub
}

/// How many subscriptions to `topic` at QoS 1 the broker has logged (`CLIENT 1 TOPIC`).
fn subscriptions(broker: &Broker, topic: &str) -> usize {
    let suffix = format!(" 1 {topic}");
    broker
        .logs()
        .iter()
        .filter(|l| l.ends_with(&suffix))
        .count()
}

fn publish(tool: &Path, args: &[String], topic: &str, msg: &str) -> Output {
    run(
        Command::new(tool)
            .args(args)
            .args(["-q", "1", "-t", topic, "-m", msg]),
        None,
        STEP,
    )
}

/// Exited with a non-zero code (and did not hang until killed).
fn refused(out: &Output, what: &str, broker: &Broker) {
    assert!(
        out.code().is_some_and(|c| c != 0),
        "{what} should have been refused: {out:?}\nbroker log: {:?}",
        broker.logs()
    );
}

/// The lines (`topic payload`) a `-v` subscriber printed.
fn messages(sub: &Running) -> Vec<String> {
    sub.lines.clone()
}

#[test]
fn mosquitto_clients_with_cafile() {
    let Some((pki, sub_tool, pub_tool)) = pki("tls-cafile") else {
        return;
    };
    let (broker, port) = tls_broker(&pki, "", "allow_anonymous true\n");
    let args = base(&pki, port);
    let mut sub = subscriber(&broker, &sub_tool, &args, "tls/#", "1");
    publish(&pub_tool, &args, "tls/hello", "over tls").assert_success("mosquitto_pub --cafile");
    sub.wait_exit("mosquitto_sub --cafile");
    assert_eq!(messages(&sub), ["tls/hello over tls"]);

    // The plaintext listener of the same broker sees the same message stream.
    let mut plain = broker.client("plain");
    plain.subscribe(1, &[("tls/#", 1)]);
    publish(&pub_tool, &args, "tls/again", "x").assert_success("second publish");
    plain.expect_message("tls/again", b"x", 1);

    // A client that trusts another CA refuses this server.
    let mut untrusted = args.clone();
    let i = untrusted.iter().position(|a| a == "--cafile").unwrap() + 1;
    untrusted[i] = pki.path("evil.crt");
    refused(
        &publish(&pub_tool, &untrusted, "tls/x", "no"),
        "a client that does not trust the server's CA",
        &broker,
    );
}

#[test]
fn require_certificate_checks_the_client_certificate() {
    let Some((pki, sub_tool, pub_tool)) = pki("tls-require") else {
        return;
    };
    let (broker, port) = tls_broker(
        &pki,
        &format!("cafile {}\nrequire_certificate true\n", pki.path("ca.crt")),
        "allow_anonymous true\n",
    );
    let alice = with_cert(base(&pki, port), &pki, "alice");
    let mut sub = subscriber(&broker, &sub_tool, &alice, "certs/#", "1");

    refused(
        &publish(&pub_tool, &base(&pki, port), "certs/a", "no cert"),
        "a client without a certificate",
        &broker,
    );
    refused(
        &publish(
            &pub_tool,
            &with_cert(base(&pki, port), &pki, "mallory"),
            "certs/a",
            "other CA",
        ),
        "a client certificate from another CA",
        &broker,
    );
    publish(
        &pub_tool,
        &with_cert(base(&pki, port), &pki, "bob"),
        "certs/a",
        "signed",
    )
    .assert_success("a client certificate signed by the CA");
    sub.wait_exit("subscriber with a client certificate");
    assert_eq!(
        messages(&sub),
        ["certs/a signed"],
        "only the accepted client's message arrives"
    );
}

#[test]
fn use_identity_as_username_with_acl() {
    let Some((pki, sub_tool, pub_tool)) = pki("tls-identity") else {
        return;
    };
    let acl = pki.dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite secure/#\n\nuser bob\ntopic read secure/#\n",
    )
    .unwrap();
    let (broker, port) = tls_broker(
        &pki,
        &format!(
            "cafile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            pki.path("ca.crt")
        ),
        &format!("allow_anonymous false\nacl_file {}\n", acl.display()),
    );
    let alice = with_cert(base(&pki, port), &pki, "alice");
    let bob = with_cert(base(&pki, port), &pki, "bob");
    let mut sub = subscriber(&broker, &sub_tool, &bob, "secure/#", "1");
    // bob may only read: his QoS 1 message is acknowledged and dropped, and the next message
    // the subscriber sees is alice's.
    publish(&pub_tool, &bob, "secure/t", "from bob").assert_success("bob publishes");
    // A user name on the command line does not override the certificate's identity.
    let mut bob_as_alice = bob.clone();
    bob_as_alice.extend(["-u".to_owned(), "alice".to_owned()]);
    let _ = publish(&pub_tool, &bob_as_alice, "secure/t", "bob claims alice");
    publish(&pub_tool, &alice, "secure/t", "from alice").assert_success("alice publishes");
    sub.wait_exit("bob's subscriber");
    assert_eq!(messages(&sub), ["secure/t from alice"]);

    // Without allow_anonymous, the plaintext listener still wants credentials.
    let mut c = broker.raw();
    c.send(&ConnectOpts::new("plain").encode());
    assert_eq!(c.expect_connack().code, 5);
}

#[test]
fn plaintext_client_on_tls_port_does_not_disturb_others() {
    let Some((pki, sub_tool, pub_tool)) = pki("tls-plain") else {
        return;
    };
    let (mut broker, port) = tls_broker(&pki, "", "allow_anonymous true\n");
    let args = base(&pki, port);
    let mut sub = subscriber(&broker, &sub_tool, &args, "mix/#", "2");
    publish(&pub_tool, &args, "mix/1", "before").assert_success("first TLS publish");

    // MQTT in the clear, then garbage, then a connection that says nothing and goes away.
    let mut plain = Client::open(port);
    plain.send_lossy(&ConnectOpts::new("cleartext").encode());
    plain.expect_closed();
    let mut junk = Client::open(port);
    junk.send_lossy(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 0]);
    junk.expect_closed();
    drop(Client::open(port));

    publish(&pub_tool, &args, "mix/2", "after").assert_success("TLS publish after");
    sub.wait_exit("TLS subscriber");
    assert_eq!(messages(&sub), ["mix/1 before", "mix/2 after"]);
    broker.assert_healthy();
}

/// `openssl s_client` forced to one TLS version: did the handshake succeed?
fn handshake(pki: &Pki, port: u16, version: &str) -> Output {
    run(
        Command::new(&pki.openssl).args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
            "-CAfile",
            &pki.path("ca.crt"),
            "-verify_return_error",
        ]),
        None,
        STEP,
    )
}

/// Mosquitto's `--tls-version tlsv1.2` only sets a minimum (libmosquitto still offers 1.3),
/// so the client that is really limited to TLS 1.2 is `openssl s_client -tls1_2`.
#[test]
fn tls_version_13_refuses_tls12_clients() {
    let Some((pki, _sub_tool, pub_tool)) = pki("tls-v13") else {
        return;
    };
    let (broker, port) = tls_broker(&pki, "tls_version tlsv1.3\n", "allow_anonymous true\n");
    refused(
        &handshake(&pki, port, "-tls1_2"),
        "a TLS 1.2 client",
        &broker,
    );
    handshake(&pki, port, "-tls1_3").assert_success("a TLS 1.3 handshake");
    let mut v13 = base(&pki, port);
    v13.extend(["--tls-version".to_owned(), "tlsv1.3".to_owned()]);
    publish(&pub_tool, &v13, "v/x", "new").assert_success("mosquitto_pub --tls-version tlsv1.3");

    // Without tls_version both are accepted.
    let (_broker2, port2) = tls_broker(&pki, "", "allow_anonymous true\n");
    handshake(&pki, port2, "-tls1_2").assert_success("TLS 1.2 by default");
    handshake(&pki, port2, "-tls1_3").assert_success("TLS 1.3 by default");
}

/// `rmqtt_sub` / `rmqtt_pub` (the applets, through symlinks) as TLS clients of a real Mosquitto
/// TLS listener: `--cafile` delivers; a server the client does not trust is refused the way
/// `mosquitto_sub` refuses it (`Error: A TLS error occurred.`, exit code 8).
#[test]
fn rmqtt_clients_against_mosquitto_tls() {
    let Some((pki, _, _)) = pki("tls-rmqtt-clients") else {
        return;
    };
    let Some(tools) = tools_or_skip("tls-rmqtt-clients", &["mosquitto"]) else {
        return;
    };
    let bin = TempDir::new("tls-applets");
    for name in ["rmqtt_sub", "rmqtt_pub"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), bin.path().join(name)).unwrap();
    }
    let mosquitto = common_interop::start_mosquitto(
        &tools[0],
        &format!(
            "certfile {}\nkeyfile {}\nallow_anonymous true\n",
            pki.path("server.crt"),
            pki.path("server.key")
        ),
    );
    let args = base(&pki, mosquitto.port);
    let mut sub = Running::spawn(
        Command::new(bin.path().join("rmqtt_sub"))
            .args(&args)
            .args(["-d", "-v", "-q", "1", "-t", "tls/#", "-C", "1", "-W", "20"]),
    );
    sub.wait_line("rmqtt_sub subscribed", |l| l.starts_with("Subscribed"));
    publish(
        &bin.path().join("rmqtt_pub"),
        &args,
        "tls/hello",
        "via rustls",
    )
    .assert_success("rmqtt_pub --cafile against mosquitto");
    sub.wait_exit("rmqtt_sub --cafile against mosquitto");
    assert!(
        sub.lines.iter().any(|l| l == "tls/hello via rustls"),
        "{:?}\nmosquitto log: {}",
        sub.lines,
        mosquitto.log()
    );

    let mut untrusted = args.clone();
    let i = untrusted.iter().position(|a| a == "--cafile").unwrap() + 1;
    untrusted[i] = pki.path("evil.crt");
    let out = run(
        Command::new(bin.path().join("rmqtt_sub"))
            .args(&untrusted)
            .args(["-t", "tls/#", "-C", "1", "-W", "5"]),
        None,
        STEP,
    );
    assert_eq!(out.code(), Some(8), "{out:?}");
    assert!(
        out.stderr.starts_with("Error: A TLS error occurred.\n"),
        "{out:?}"
    );
}

/// `openssl s_client` with `extra` arguments (a version and a cipher choice).
fn s_client(pki: &Pki, port: u16, extra: &[&str]) -> Output {
    run(
        Command::new(&pki.openssl)
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(extra)
            .args(["-CAfile", &pki.path("ca.crt"), "-verify_return_error"]),
        None,
        STEP,
    )
}

/// `ciphers` (TLS 1.2) and `ciphers_tls1.3` take OpenSSL names; a suite left out is refused
/// in the handshake, and a name rustls has no suite for is a configuration error.
#[test]
fn ciphers_and_ciphers_tls13_select_suites() {
    let Some((pki, _sub, _pub)) = pki("tls-ciphers") else {
        return;
    };
    let (broker, port) = tls_broker(
        &pki,
        "ciphers ECDHE-ECDSA-AES256-GCM-SHA384\nciphers_tls1.3 TLS_CHACHA20_POLY1305_SHA256\n",
        "allow_anonymous true\n",
    );
    let ok = s_client(
        &pki,
        port,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
    );
    ok.assert_success("the allowed TLS 1.2 suite");
    assert!(
        ok.stdout.contains("ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{ok:?}"
    );
    let no = s_client(
        &pki,
        port,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    );
    refused(&no, "another TLS 1.2 suite", &broker);
    let ok = s_client(
        &pki,
        port,
        &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
    );
    ok.assert_success("the allowed TLS 1.3 suite");
    assert!(ok.stdout.contains("TLS_CHACHA20_POLY1305_SHA256"), "{ok:?}");
    let no = s_client(
        &pki,
        port,
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"],
    );
    refused(&no, "another TLS 1.3 suite", &broker);

    let out = common_interop::test_config("-c", "bad.conf", "listener 8883\nciphers HIGH:!aNULL\n");
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert!(
        out.stderr
            .contains(":2: ciphers: unsupported cipher (HIGH); use ECDHE-ECDSA-"),
        "{out:?}"
    );
}

/// `crlfile`: a client certificate the CA has revoked is refused, another one still works.
#[test]
fn crlfile_refuses_revoked_client_certificates() {
    let Some((pki, _sub_tool, pub_tool)) = pki("tls-crl") else {
        return;
    };
    std::fs::write(
        pki.dir.path().join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 2\n",
    )
    .unwrap();
    std::fs::write(pki.dir.path().join("index.txt"), "").unwrap();
    std::fs::write(pki.dir.path().join("crlnumber"), "01\n").unwrap();
    let ca = ["-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.crt"];
    pki.openssl(&[&["ca", "-revoke", "bob.crt"][..], &ca].concat());
    pki.openssl(&[&["ca", "-gencrl", "-out", "crl.pem"][..], &ca].concat());
    let (broker, port) = tls_broker(
        &pki,
        &format!(
            "cafile {}\nrequire_certificate true\ncrlfile {}\n",
            pki.path("ca.crt"),
            pki.path("crl.pem")
        ),
        "allow_anonymous true\n",
    );
    let alice = with_cert(base(&pki, port), &pki, "alice");
    publish(&pub_tool, &alice, "c/x", "a").assert_success("alice, not revoked");
    let bob = with_cert(base(&pki, port), &pki, "bob");
    refused(
        &publish(&pub_tool, &bob, "c/x", "b"),
        "bob, revoked",
        &broker,
    );
}

/// TLS on a Unix socket listener (`listener 0 PATH` with `certfile`/`keyfile`), which
/// Mosquitto 2.0 accepts too: `rmqtt_sub`/`rmqtt_pub --unix PATH --cafile` check the
/// certificate against `-h` (default localhost) over the socket, against rmqtt and against
/// Mosquitto 2.0.11; a plaintext client on that socket is refused.
///
/// Intended difference: `mosquitto_pub --unix` with TLS sends the socket path as the TLS
/// server name, which rustls refuses as an invalid name ("peer misbehaved:
/// ServerNameMustContainOneHostName"); Mosquitto's OpenSSL ignores it. Not tested here.
#[test]
fn tls_on_a_unix_listener() {
    let Some((pki, _sub, mosquitto_pub)) = pki("tls_on_a_unix_listener") else {
        return;
    };
    let bin = pki.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["rmqtt_pub", "rmqtt_sub"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), bin.join(name)).unwrap();
    }
    let tls = format!(
        "certfile {}\nkeyfile {}\n",
        pki.path("server.crt"),
        pki.path("server.key")
    );
    let mosquitto = common_interop::find_tool("mosquitto");
    for on_mosquitto in [false, true] {
        let sock = pki.path(if on_mosquitto { "m.sock" } else { "r.sock" });
        let body = format!("allow_anonymous true\nlog_type all\nlistener 0 {sock}\n{tls}");
        let broker = match (&mosquitto, on_mosquitto) {
            (Some(m), true) => common_interop::start_mosquitto(m, &body),
            (None, true) => continue,
            (_, false) => common_interop::start_rmqtt(&body),
        };
        let log = || broker.log();
        let deadline = Instant::now() + STEP;
        while !Path::new(&sock).exists() {
            assert!(Instant::now() < deadline, "no socket:\n{}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let ca = pki.path("ca.crt");
        let id = format!("uxtls-{on_mosquitto}");
        let mut sub = Running::spawn(Command::new(bin.join("rmqtt_sub")).args([
            "--unix", &sock, "--cafile", &ca, "-t", "ux/#", "-C", "1", "-v", "-i", &id,
        ]));
        while !log().contains(&format!("Sending SUBACK to {id}")) {
            assert!(Instant::now() < deadline, "no SUBACK:\n{}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let publ = run(
            Command::new(bin.join("rmqtt_pub")).args([
                "--unix", &sock, "--cafile", &ca, "-t", "ux/1", "-m", "sealed",
            ]),
            None,
            STEP,
        );
        assert_eq!(publ.code(), Some(0), "{publ:?}");
        assert_eq!(sub.wait_exit("subscriber").code(), Some(0));
        assert_eq!(sub.lines, ["ux/1 sealed"], "on Mosquitto: {on_mosquitto}");
        // Plaintext on the TLS socket: refused.
        let plain = run(
            Command::new(&mosquitto_pub).args(["--unix", &sock, "-t", "ux/1", "-m", "x"]),
            None,
            STEP,
        );
        assert_ne!(plain.code(), Some(0), "{plain:?}");
    }
}

/// What `openssl x509 -nameopt RFC2253` prints as the subject of `NAME.crt`: the text
/// Mosquitto's `X509_NAME_print_ex(..., XN_FLAG_RFC2253)` makes the username.
fn openssl_subject(pki: &Pki, name: &str) -> String {
    let out = run(
        Command::new(&pki.openssl)
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(pki.path(&format!("{name}.crt"))),
        None,
        STEP,
    );
    out.assert_success("openssl x509 -subject");
    out.stdout
        .trim_end_matches('\n')
        .strip_prefix("subject=")
        .unwrap_or_else(|| panic!("{out:?}"))
        .to_owned()
}

/// The username a broker's connect line gives client `id` (`..., u'NAME').`).
fn logged_username(log: &str, id: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains(&format!(" as {id} (")))
        .find_map(|l| l.split(", u'").nth(1))
        .and_then(|rest| rest.strip_suffix("').").or(rest.strip_suffix("')")))
        .map(str::to_owned)
}

/// `use_subject_as_username`: the username is the certificate subject in RFC 2253 form,
/// last RDN first, escaped, with OpenSSL's short names, non-ASCII bytes as `\XX` and
/// unknown attributes as `OID=#DER`; the same text `openssl x509 -nameopt RFC2253` prints
/// and Mosquitto 2.0.11 logs for the same certificate. An ACL `pattern` with `%u` then
/// confines the client to its own subject's topics.
#[test]
fn use_subject_as_username_is_the_rfc2253_subject() {
    let Some((pki, sub_tool, pub_tool)) = pki("tls-subject") else {
        return;
    };
    std::fs::write(
        pki.dir.path().join("oid.cnf"),
        "oid_section = new_oids\n[new_oids]\nmyattr = 1.2.3.4\n\
         [req]\ndistinguished_name = dn\n[dn]\n",
    )
    .unwrap();
    let subjects: [(&str, &[&str]); 5] = [
        ("/CN=plain", &[]),
        (
            "/DC=org/DC=example/C=DE/ST=Bayern/L=M\u{fc}nchen/O=Acme\\, Inc.\
             /OU=R\\+D\\;x \\<z\\> \"q\" \\\\ s/street=Main St 1/UID=u1\
             /emailAddress=a@example.org/CN=#sensor 7 ",
            &["-utf8"],
        ),
        ("/CN=a/UID=b+CN=c/O=m\u{e9}", &["-utf8", "-multivalue-rdn"]),
        // An attribute neither OpenSSL nor rmqtt knows: `1.2.3.4=#0C06...` (its DER).
        ("/CN=x/myattr=custom", &["-config", "oid.cnf"]),
        ("/title=eng/serialNumber=42/GN=Ann/SN=Lee/initials=AL", &[]),
    ];
    for (i, (subj, args)) in subjects.iter().enumerate() {
        pki.leaf_subject("ca", &format!("s{i}"), subj, args, false);
    }
    let acl = pki.dir.path().join("acl");
    std::fs::write(&acl, "pattern readwrite own/%u/#\n").unwrap();
    let (broker, port) = tls_broker(
        &pki,
        "cafile CA\nrequire_certificate true\nuse_subject_as_username true\n"
            .replace("CA", &pki.path("ca.crt"))
            .as_str(),
        &format!("allow_anonymous false\nacl_file {}\n", acl.display()),
    );
    for i in 0..subjects.len() {
        let want = openssl_subject(&pki, &format!("s{i}"));
        let mut args = with_cert(base(&pki, port), &pki, &format!("s{i}"));
        args.extend(["-i".to_owned(), format!("client{i}")]);
        publish(&pub_tool, &args, "t", "x").assert_success("publish with a certificate");
        let log = broker.logs().join("\n");
        assert_eq!(
            logged_username(&log, &format!("client{i}")).as_deref(),
            Some(want.as_str()),
            "subject {i}; log:\n{log}"
        );
    }
    // The first subject has no character a topic level may not hold: its own topics are
    // open to it through `%u`, another subject's are not.
    let s0 = with_cert(base(&pki, port), &pki, "s0");
    let mut sub = subscriber(&broker, &sub_tool, &s0, "own/#", "1");
    let s4 = with_cert(base(&pki, port), &pki, "s4");
    publish(&pub_tool, &s4, "own/CN=plain/t", "not mine").assert_success("s4 publishes");
    publish(&pub_tool, &s0, "own/CN=plain/t", "mine").assert_success("s0 publishes");
    sub.wait_exit("s0's subscriber");
    assert_eq!(messages(&sub), ["own/CN=plain/t mine"]);

    if let Some(mosquitto) = common_interop::find_tool("mosquitto") {
        let m = common_interop::start_mosquitto(
            &mosquitto,
            &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
                 use_subject_as_username true\nallow_anonymous false\n",
                pki.path("ca.crt"),
                pki.path("server.crt"),
                pki.path("server.key"),
            ),
        );
        for i in 0..subjects.len() {
            let mut args = with_cert(base(&pki, m.port), &pki, &format!("s{i}"));
            args.extend(["-i".to_owned(), format!("client{i}")]);
            let _ = publish(&pub_tool, &args, "t", "x");
            let id = format!("client{i}");
            m.wait_log(&format!(" as {id} ("));
            assert_eq!(
                logged_username(&m.log(), &id),
                Some(openssl_subject(&pki, &format!("s{i}"))),
                "Mosquitto, subject {i}:\n{}",
                m.log()
            );
        }
    }
}
