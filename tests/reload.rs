//! SIGHUP, black-box: the real broker is started with a config file, clients connect, the file
//! is rewritten and the broker signalled; what changed is then observed from real clients.
//! Connected clients on listeners that did not change keep their connections throughout.
//! Also `allow_anonymous local` for loopback peers; its refusal of other hosts is checked from
//! a LAN host in a network namespace by tests/router.rs.

mod common;

use common::{frame, put_str, Broker, Client, ConnectOpts, TempDir, WAIT};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Rewrites the config file the way the harness wrote it (the loopback listener on an
/// ephemeral port first, so that it stays the same listener) and sends SIGHUP; returns once
/// the broker has logged its `n`th reload. Any request sent after that is handled with the new
/// configuration: the reload is done before the event loop reads a socket again.
fn reload(b: &Broker, body: &str, n: usize) {
    reload_file(
        b,
        b.config_path(),
        &format!("listener 0 127.0.0.1\n{body}"),
        n,
    );
}

/// Writes `text` to `path` (the file the broker was started with), sends SIGHUP and waits for
/// the `n`th reload, as [`reload`] does.
fn reload_file(b: &Broker, path: &Path, text: &str, n: usize) {
    std::fs::write(path, text).unwrap();
    b.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while b
        .logs()
        .iter()
        .filter(|l| l.contains("Reloading config."))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "no reload logged: {:?}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The CONNACK return code for `opts` on `port` (0: accepted).
fn connack(port: u16, opts: &ConnectOpts) -> u8 {
    match Client::try_connect(port, opts) {
        Ok((_, a)) => a.code,
        Err(e) => panic!("no CONNACK on port {port}: {e}"),
    }
}

/// A 5.0 CONNECT without properties; the broker's answer is read as raw bytes.
fn v5_connect(id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 0]);
    put_str(&mut body, id.as_bytes());
    frame(0x10, &body)
}

/// The reason code of the 5.0 CONNACK a refused client gets before the broker closes.
fn v5_refusal(c: &mut Client, id: &str) -> u8 {
    c.send(&v5_connect(id));
    let bytes = c.expect_closed();
    assert_eq!(bytes.first(), Some(&0x20), "CONNACK expected: {bytes:02x?}");
    *bytes.get(3).expect("CONNACK reason code")
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rmqtt_passwd(dir: &Path, args: &[&str]) {
    let link = dir.join("rmqtt_passwd");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), &link).unwrap();
    }
    let out = Command::new(&link).args(args).output().unwrap();
    assert!(out.status.success(), "rmqtt_passwd {args:?}: {out:?}");
}

/// Subscribes at QoS 1 and checks that the client still round-trips a message through the
/// broker: its connection and session survived.
fn still_works(c: &mut Client, topic: &str, pid: u16) {
    let copy = c.publish_q1_to_self(pid, topic, b"still here");
    assert_eq!(&copy.payload[..], b"still here");
}

#[test]
fn anonymous_true_to_false_keeps_connected_clients() {
    let b = Broker::with_config("allow_anonymous true\n");
    let mut old = b.client("old");
    old.subscribe(1, &[("keep/#", 1)]);
    // Accepted before the reload, CONNECT after: judged by the new rule.
    let mut early = b.raw();
    let deadline = Instant::now() + WAIT;
    while b
        .logs()
        .iter()
        .filter(|l| l.contains("New connection from"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "not accepted: {:?}", b.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    reload(&b, "allow_anonymous false\n", 1);
    early.send(&ConnectOpts::new("early").encode());
    assert_eq!(early.expect_connack().code, 5);
    assert_eq!(connack(b.port, &ConnectOpts::new("new")), 5);
    assert_eq!(v5_refusal(&mut b.raw(), "new5"), 0x87);
    still_works(&mut old, "keep/x", 2);
    // And back: anonymous clients are welcome again.
    reload(&b, "allow_anonymous true\n", 2);
    assert_eq!(connack(b.port, &ConnectOpts::new("again")), 0);
    still_works(&mut old, "keep/y", 3);
}

#[test]
fn anonymous_false_to_local() {
    // The second listener takes every address, so that a client can come from a
    // non-loopback one; over it, loopback clients show up as ::ffff:127.0.0.1.
    let body = "listener 0\n";
    let mut b = Broker::with_config(&format!("allow_anonymous false\n{body}"));
    let ports = b.wait_ports(2);
    let all = *ports.get(1).unwrap();
    assert_eq!(connack(b.port, &ConnectOpts::new("a")), 5);
    reload(&b, &format!("allow_anonymous local\n{body}"), 1);
    assert_eq!(connack(b.port, &ConnectOpts::new("lo")), 0);
    assert_eq!(connack(all, &ConnectOpts::new("mapped")), 0);
    // A user name still needs a password file to vouch for it.
    assert_eq!(connack(b.port, &ConnectOpts::new("u").username("u")), 0);
    // A client from another host (refused with 5 / 0x87) is tests/router.rs: its LAN host
    // lives in a network namespace, so no test here talks to a non-loopback address.
    b.assert_healthy();
}

#[test]
fn per_listener_anonymous() {
    let cfg = |first: &str, second: &str| {
        format!(
            "per_listener_settings true\nallow_anonymous {first}\n\
             listener 0 127.0.0.1\nallow_anonymous {second}\n"
        )
    };
    // The harness's first line is the first listener: the first value is that listener's,
    // the second the next one's; neither is global (so unset there: no anonymous access).
    let b = Broker::with_config(&cfg("true", "false"));
    let ports = b.wait_ports(2);
    let (first, second) = (ports[0], ports[1]);
    assert_eq!(connack(first, &ConnectOpts::new("a")), 0);
    assert_eq!(connack(second, &ConnectOpts::new("b")), 5);
    let mut kept = b.client("kept");
    kept.subscribe(1, &[("k", 1)]);
    reload(&b, &cfg("false", "local"), 1);
    assert_eq!(connack(first, &ConnectOpts::new("c")), 5);
    assert_eq!(connack(second, &ConnectOpts::new("d")), 0);
    still_works(&mut kept, "k", 2);
}

#[test]
fn password_file_changes_apply() {
    let dir = TempDir::new("reload-pw");
    let pw = dir.path.join("passwd");
    let pws = pw.display().to_string();
    rmqtt_passwd(&dir.path, &["-c", "-b", &pws, "alice", "a-pass"]);
    let body = format!("allow_anonymous false\npassword_file {pws}\n");
    let b = Broker::with_config(&body);
    let alice = ConnectOpts::new("alice")
        .username("alice")
        .password("a-pass");
    let bob = ConnectOpts::new("bob").username("bob").password("b-pass");
    let mut a = b.client_with(&alice);
    a.subscribe(1, &[("a/#", 1)]);
    assert_eq!(connack(b.port, &bob), 5);
    rmqtt_passwd(&dir.path, &["-b", &pws, "bob", "b-pass"]);
    reload(&b, &body, 1);
    assert_eq!(connack(b.port, &bob), 0);
    rmqtt_passwd(&dir.path, &["-D", &pws, "alice"]);
    reload(&b, &body, 2);
    assert_eq!(connack(b.port, &alice), 5);
    assert_eq!(connack(b.port, &bob), 0);
    // Logged in before the change: stays connected, as in Mosquitto.
    still_works(&mut a, "a/1", 2);
}

/// The SUBACK codes for `filters` (the ACL may refuse some: 0x80).
fn suback(c: &mut Client, pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    c.send(&common::subscribe(pid, filters));
    match c.expect_packet() {
        rmqtt::protocol::Packet::SubAck(a) => a.codes,
        p => panic!("expected SUBACK, got {p:?}"),
    }
}

#[test]
fn acl_changes_apply() {
    let dir = TempDir::new("reload-acl");
    let acl = dir.path.join("acl");
    std::fs::write(&acl, "topic readwrite open/#\n").unwrap();
    let body = format!("allow_anonymous true\nacl_file {}\n", acl.display());
    let b = Broker::with_config(&body);
    let mut sub = b.client("sub");
    assert_eq!(
        suback(&mut sub, 1, &[("secret/#", 0), ("open/#", 0)]),
        [0x80, 0]
    );
    let mut publ = b.client("pub");
    publ.publish_q1(1, "secret/x", b"no");
    publ.publish_q1(2, "open/x", b"yes");
    sub.expect_message("open/x", b"yes", 0);
    std::fs::write(&acl, "topic readwrite secret/#\n").unwrap();
    reload(&b, &body, 1);
    let mut sub2 = b.client("sub2");
    assert_eq!(
        suback(&mut sub2, 1, &[("secret/#", 0), ("open/#", 0)]),
        [0, 0x80]
    );
    publ.publish_q1(3, "open/y", b"no");
    publ.publish_q1(4, "secret/y", b"yes");
    sub2.expect_message("secret/y", b"yes", 0);
    sub2.expect_nothing(200);
}

#[test]
fn listener_port_change() {
    let (p1, p2) = (free_port(), free_port());
    let b = Broker::with_config(&format!("allow_anonymous true\nlistener {p1} 127.0.0.1\n"));
    b.wait_ports(2);
    let mut stay = b.client("stay");
    stay.subscribe(1, &[("will/#", 0), ("s", 1)]);
    let mut moved = Client::open(p1);
    moved.send(
        &ConnectOpts::new("moved")
            .will("will/moved", b"gone", 0, false)
            .encode(),
    );
    assert_eq!(moved.expect_connack().code, 0);
    reload(
        &b,
        &format!("allow_anonymous true\nlistener {p2} 127.0.0.1\n"),
        1,
    );
    b.wait_log(&format!("Opening ipv4 listen socket on port {p2}."));
    b.wait_log(&format!("Closing listen socket on port {p1}."));
    // The client of the removed listener is dropped like by a network failure: its will goes.
    moved.expect_closed();
    stay.expect_message("will/moved", b"gone", 0);
    assert!(
        TcpStream::connect(("127.0.0.1", p1)).is_err(),
        "old port still accepts"
    );
    assert_eq!(connack(p2, &ConnectOpts::new("new-port")), 0);
    still_works(&mut stay, "s", 2);
    // The unchanged listener still accepts too.
    assert_eq!(connack(b.port, &ConnectOpts::new("same-port")), 0);
}

#[test]
fn bad_new_listener_is_logged_and_the_rest_applies() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let b = Broker::with_config("allow_anonymous true\n");
    let mut c = b.client("c");
    c.subscribe(1, &[("t", 1)]);
    reload(
        &b,
        &format!("allow_anonymous false\nlistener {port} 127.0.0.1\npersistence true\n"),
        1,
    );
    let e = b.wait_log(&format!("unable to open the listener on port {port}"));
    assert!(e.contains("ddress"), "the reason is given: {e}");
    b.wait_log("Warning: persistence changed; restart the broker to apply it.");
    assert_eq!(connack(b.port, &ConnectOpts::new("anon")), 5);
    still_works(&mut c, "t", 2);
}

#[test]
fn bridge_added_forwards_and_removed_stops() {
    let remote = Broker::start();
    let mut far = remote.client("far");
    far.subscribe(1, &[("b/#", 0)]);
    let b = Broker::with_config("allow_anonymous true\n");
    let mut local = b.client("local");
    let bridge = format!(
        "allow_anonymous true\nconnection r\naddress 127.0.0.1:{}\ntopic b/# out 0\nnotifications false\n",
        remote.port
    );
    reload(&b, &bridge, 1);
    b.wait_log("Bridge r connected.");
    // The bridge's SUBSCRIBE is not acknowledged by anything we can see; the local side's
    // subscription exists once CONNACK came, so a publish now is forwarded.
    local.publish_q1(1, "b/x", b"over");
    far.expect_message("b/x", b"over", 0);
    reload(&b, "allow_anonymous true\n", 2);
    b.wait_log("Stopping bridge r.");
    local.publish_q1(2, "b/y", b"not over");
    far.expect_nothing(300);
    // Adding it again starts it again.
    reload(&b, &bridge, 3);
    let deadline = Instant::now() + WAIT;
    while b
        .logs()
        .iter()
        .filter(|l| l.contains("Bridge r connected."))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "bridge not restarted: {:?}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    local.publish_q1(3, "b/z", b"again");
    far.expect_message("b/z", b"again", 0);
}

#[test]
fn limits_apply_to_new_connections() {
    let b = Broker::with_config("allow_anonymous true\n");
    reload(&b, "allow_anonymous true\nmessage_size_limit 10\n", 1);
    let mut sub = b.client("sub");
    sub.subscribe(1, &[("big", 0)]);
    let mut publ = b.client("pub");
    publ.publish_q1(1, "big", b"far more than ten bytes");
    publ.publish_q1(2, "big", b"small");
    sub.expect_message("big", b"small", 0);
}

#[test]
fn unprivileged_broker_binds_low_ports_on_reload() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || unsafe { libc::getpwnam(c"nobody".as_ptr()) }.is_null() {
        eprintln!("unprivileged_broker_binds_low_ports_on_reload: needs root and user nobody");
        return;
    }
    let low = (900..1024u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let b = Broker::with_config_args(0, "allow_anonymous true\n", &["--user", "nobody"]);
    b.wait_log("Dropped privileges to user nobody.");
    let mut c = b.client("c");
    c.subscribe(1, &[("t", 1)]);
    reload(
        &b,
        &format!("allow_anonymous true\nlistener {low} 127.0.0.1\n"),
        1,
    );
    b.wait_log(&format!("Opening ipv4 listen socket on port {low}."));
    assert_eq!(connack(low, &ConnectOpts::new("low")), 0);
    still_works(&mut c, "t", 2);
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().skip(1).any(|u| u == "0"), "{uid}");
    let eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(
        eff.ends_with("0000000000000400"),
        "only CAP_NET_BIND_SERVICE: {eff}"
    );
}

#[test]
fn test_config_shows_anonymous_local() {
    let dir = TempDir::new("reload-tc");
    let conf = dir.path.join("rmqtt.conf");
    std::fs::write(&conf, "listener 1883\nallow_anonymous local\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmqtt"))
        .arg("-c")
        .arg(&conf)
        .arg("--test-config")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nallow_anonymous: local\n"), "{text}");
    std::fs::write(&conf, "listener 1883\nallow_anonymous nearby\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmqtt"))
        .arg("-c")
        .arg(&conf)
        .arg("--test-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rmqtt.conf:2:") && err.contains("local"),
        "{err}"
    );
}

/// OpenWrt's own way: `-u` with a UCI file and no listener section, so local-only mode on the
/// `-p` port. Reloads keep that listener and its clients until a listener section appears.
#[test]
fn uci_local_only_mode_reloads() {
    let dir = TempDir::new("reload-uci-local");
    let uci = dir.path.join("rmqtt.uci");
    let general =
        |anon: &str| format!("config mosquitto 'mosquitto'\n\toption allow_anonymous '{anon}'\n");
    std::fs::write(&uci, general("1")).unwrap();
    let port = free_port();
    let b = Broker::with_config_args(
        0,
        "",
        &["-u", &uci.display().to_string(), "-p", &port.to_string()],
    );
    assert_eq!(b.port, port);
    b.wait_log("Starting in local only mode.");
    let mut c = b.client("c");
    c.subscribe(1, &[("t", 1)]);
    reload_file(&b, &uci, &general("local"), 1);
    assert_eq!(connack(port, &ConnectOpts::new("lo")), 0);
    reload_file(&b, &uci, &general("0"), 2);
    assert_eq!(connack(port, &ConnectOpts::new("anon")), 5);
    still_works(&mut c, "t", 2);
    assert!(
        !b.logs().iter().any(|l| l.contains("Closing listen socket")),
        "{:?}",
        b.logs()
    );
    // A listener section ends local-only mode: the -p port is then an extra listener on
    // every address, a different socket, so the old one closes and its clients go.
    let p2 = free_port();
    let text = format!(
        "{}config listener\n\toption port '{p2}'\n\toption bind_address '127.0.0.1'\n",
        general("1")
    );
    reload_file(&b, &uci, &text, 3);
    b.wait_log(&format!("Opening ipv4 listen socket on port {p2}."));
    c.expect_closed();
    assert_eq!(connack(p2, &ConnectOpts::new("p2")), 0);
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI; `None` without it.
fn make_pki(dir: &Path) -> Option<()> {
    let openssl = common::find_openssl()?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
            &[
                "-subj",
                "/CN=rmqtt reload test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new(&openssl)
            .args(&args)
            .current_dir(dir)
            .output()
            .ok()?;
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }
    Some(())
}

/// A bridge section as OpenWrt's mosquitto package writes it, added by a reload: `cafile`
/// makes it TLS (the remote port speaks nothing else) and messages flow.
#[test]
fn uci_bridge_with_cafile_uses_tls_after_reload() {
    let pki = TempDir::new("reload-pki");
    if make_pki(&pki.path).is_none() {
        eprintln!("uci_bridge_with_cafile_uses_tls_after_reload: skipped, no openssl");
        return;
    }
    let f = |n: &str| pki.path.join(n).display().to_string();
    let remote = Broker::with_config(&format!(
        "allow_anonymous true\nlistener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n",
        f("server.crt"),
        f("server.key")
    ));
    let tls_port = remote.wait_ports(2)[1];
    let mut far = remote.client("far");
    far.subscribe(1, &[("up/#", 0)]);

    let dir = TempDir::new("reload-uci-bridge");
    let uci = dir.path.join("rmqtt.uci");
    let base = "config mosquitto 'mosquitto'\n\toption allow_anonymous '1'\n\
                config listener\n\toption port '0'\n\toption bind_address '127.0.0.1'\n";
    std::fs::write(&uci, base).unwrap();
    let b = Broker::with_config_args(0, "", &["-u", &uci.display().to_string()]);
    let mut local = b.client("local");
    let bridge = format!(
        "{base}config bridge\n\toption connection 'cloud'\n\
         \toption address '127.0.0.1:{tls_port}'\n\tlist topic 'up/# out 0'\n\
         \toption cafile '{}'\n\toption notifications '0'\n\toption try_private '0'\n",
        f("ca.crt")
    );
    reload_file(&b, &uci, &bridge, 1);
    b.wait_log("Bridge cloud connected.");
    local.publish_q1(1, "up/x", b"over TLS");
    far.expect_message("up/x", b"over TLS", 0);
}

/// TCP_NODELAY of the broker's end of `client`'s connection, read from the broker's own socket
/// (a duplicate taken with pidfd_getfd).
fn broker_nodelay(b: &Broker, client: &Client) -> bool {
    let want = client.stream.local_addr().unwrap();
    // SAFETY: plain syscalls on descriptors this function opens and closes; the buffers
    // passed are local and sized as the calls expect.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, b.pid() as libc::c_int, 0) as libc::c_int;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let mut found = None;
        for entry in std::fs::read_dir(format!("/proc/{}/fd", b.pid())).unwrap() {
            let Ok(n) = entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<libc::c_int>()
            else {
                continue;
            };
            let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, n, 0) as libc::c_int;
            if fd < 0 {
                continue;
            }
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let peer = libc::getpeername(fd, &mut sa as *mut _ as *mut libc::sockaddr, &mut len);
            if peer == 0
                && i32::from(sa.sin_family) == libc::AF_INET
                && u16::from_be(sa.sin_port) == want.port()
            {
                let mut on: libc::c_int = 0;
                let mut olen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                let r = libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    &mut on as *mut _ as *mut libc::c_void,
                    &mut olen,
                );
                assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
                found = Some(on != 0);
            }
            libc::close(fd);
        }
        libc::close(pidfd);
        found.expect("the broker's socket of the client")
    }
}

/// `set_tcp_nodelay` changed by a reload applies to the connections already open and to the
/// ones accepted after it.
#[test]
fn reload_applies_set_tcp_nodelay() {
    let b = Broker::with_config("allow_anonymous true\nset_tcp_nodelay true\n");
    let old = b.client("nodelay-old");
    assert!(broker_nodelay(&b, &old));
    reload(&b, "allow_anonymous true\nset_tcp_nodelay false\n", 1);
    let new = b.client("nodelay-new");
    assert!(!broker_nodelay(&b, &old));
    assert!(!broker_nodelay(&b, &new));
    reload(&b, "allow_anonymous true\nset_tcp_nodelay true\n", 2);
    assert!(broker_nodelay(&b, &old));
    assert!(broker_nodelay(&b, &new));
}
