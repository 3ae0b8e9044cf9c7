//! rmqtt_pub / rmqtt_sub against mosquitto_pub / mosquitto_sub: both run against a real
//! Mosquitto broker on an ephemeral loopback port, and their stdout, stderr and exit codes must
//! match byte for byte (after masking random client ids, timestamps and the program name).
//!
//! Skipped, with a message, when /usr/sbin/mosquitto or the mosquitto clients are missing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn available() -> bool {
    let ok = Path::new(MOSQUITTO).exists()
        && Command::new("mosquitto_pub")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    if !ok {
        eprintln!("skipping: {MOSQUITTO} or mosquitto_pub/mosquitto_sub not installed");
    }
    ok
}

/// A fresh directory, unique per call: the tests run in parallel in one process.
fn tempdir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "rmqtt-clients-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A mosquitto broker on a free loopback port, killed on drop.
struct Broker {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Broker {
    /// A free port is found by binding port 0 and letting it go, so another process can take
    /// it first: a broker that exits before it listens is started again on a new port.
    fn start(tag: &str, extra: &str) -> Broker {
        let dir = tempdir(tag);
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = dir.join("mosquitto.conf");
            // `user root`: a root-run Mosquitto otherwise switches to the `mosquitto` user, which
            // may not read the password file in a private temp dir. Ignored when not root.
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nuser root\n{extra}\n"),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
            let mut child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Broker {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() >= until {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
        panic!("mosquitto did not start in five attempts; its last stderr:\n{log}");
    }

    fn anonymous(tag: &str) -> Broker {
        Broker::start(tag, "allow_anonymous true")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Symlinks named rmqtt_pub / rmqtt_sub to the built binary.
fn bin_dir() -> PathBuf {
    let dir = tempdir("bin");
    for name in ["rmqtt_pub", "rmqtt_sub"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), dir.join(name)).unwrap();
    }
    dir
}

#[derive(Debug, PartialEq, Eq)]
struct Out {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs `prog args` with `stdin`, killing it after 20 s.
fn run(prog: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> Out {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let r1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let r2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Out {
        stdout: mask(&String::from_utf8_lossy(&r1.join().unwrap())),
        stderr: mask(&String::from_utf8_lossy(&r2.join().unwrap())),
        code: status.code(),
    }
}

/// Replaces what differs from run to run: generated client ids, times, program names.
fn mask(s: &str) -> String {
    let mut s = s
        .replace("mosquitto_pub", "X_pub")
        .replace("mosquitto_sub", "X_sub");
    s = s
        .replace("rmqtt_pub", "X_pub")
        .replace("rmqtt_sub", "X_sub");
    for (prefix, repl) in [("mosq-", "mosq-ID"), ("auto-", "auto-ID")] {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(prefix) {
            out.push_str(&rest[..i]);
            out.push_str(repl);
            let tail = &rest[i + prefix.len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(tail.len());
            rest = &tail[end..];
        }
        out.push_str(rest);
        s = out;
    }
    // JSON "tst" values.
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("\"tst\":") {
        out.push_str(&rest[..i + 6]);
        let tail = rest[i + 6..].trim_start();
        let end = tail
            .get(1..)
            .and_then(|t| t.find('"'))
            .map_or(tail.len(), |e| e + 2);
        out.push_str("\"TST\"");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

struct Pair {
    bin: PathBuf,
}

impl Pair {
    fn new() -> Pair {
        Pair { bin: bin_dir() }
    }

    fn prog(&self, rmqtt: bool, applet: &str) -> PathBuf {
        if rmqtt {
            self.bin.join(format!("rmqtt_{applet}"))
        } else {
            PathBuf::from(format!("mosquitto_{applet}"))
        }
    }

    fn one(&self, rmqtt: bool, applet: &str, args: &[&str], stdin: &[u8]) -> Out {
        run(&self.prog(rmqtt, applet), args, stdin, &[])
    }

    /// Runs the same command with both tools and asserts identical results.
    fn same(&self, applet: &str, args: &[&str], stdin: &[u8]) -> Out {
        let mut m = self.one(false, applet, args, stdin);
        let mut r = self.one(true, applet, args, stdin);
        // The usage text names options rmqtt does not have; only its first line must match.
        let usage = format!("X_{applet} is a simple mqtt client");
        if m.stdout.starts_with(&usage) {
            assert!(r.stdout.starts_with(&usage), "{r:?}");
            m.stdout.clear();
            r.stdout.clear();
        }
        assert_eq!(m, r, "mosquitto_{applet} vs rmqtt_{applet} {args:?}");
        r
    }
}

#[test]
fn pub_debug_lines_for_each_qos_and_version() {
    if !available() {
        return;
    }
    let b = Broker::anonymous("pubdbg");
    let port = b.port.to_string();
    let t = Pair::new();
    for v in ["31", "311", "5"] {
        for q in ["0", "1", "2"] {
            let o = t.same(
                "pub",
                &[
                    "-p", &port, "-t", "d/x", "-m", "hello", "-d", "-q", q, "-V", v,
                ],
                b"",
            );
            assert_eq!(o.code, Some(0));
            assert!(o.stdout.contains("sending DISCONNECT"), "{o:?}");
        }
    }
    t.same(
        "pub",
        &[
            "-p", &port, "-t", "d/x", "-n", "-d", "-q", "1", "-r", "-i", "fixed",
        ],
        b"",
    );
    // -I appends the pid, which differs between the two runs.
    for rmqtt in [false, true] {
        let o = t.one(
            rmqtt,
            "pub",
            &[
                "-p", &port, "-t", "d/x", "-m", "x", "-d", "-I", "pre", "-q", "1",
            ],
            b"",
        );
        assert_eq!(o.code, Some(0));
        assert!(o.stdout.starts_with("Client pre"), "{o:?}");
        assert!(!o.stdout.starts_with("Client pre sending"), "{o:?}");
    }
}

#[test]
fn qos_flows_into_a_persistent_session() {
    if !available() {
        return;
    }
    let b = Broker::anonymous("session");
    let port = b.port.to_string();
    let t = Pair::new();
    let mut outs = Vec::new();
    for rmqtt in [false, true] {
        let id = if rmqtt { "sess-r" } else { "sess-m" };
        let o = t.one(
            rmqtt,
            "sub",
            &[
                "-p", &port, "-t", "s/#", "-q", "2", "-c", "-i", id, "-E", "-d",
            ],
            b"",
        );
        assert_eq!(o.code, Some(0), "{o:?}");
        outs.push(o.stdout.replace(id, "ID"));
        for (q, m) in [("0", "zero"), ("1", "one"), ("2", "two")] {
            let o = t.one(
                rmqtt,
                "pub",
                &["-p", &port, "-t", &format!("s/{q}"), "-m", m, "-q", q],
                b"",
            );
            assert_eq!(o.code, Some(0), "{o:?}");
        }
        let o = t.one(
            rmqtt,
            "sub",
            &[
                "-p", &port, "-t", "s/#", "-q", "2", "-c", "-i", id, "-C", "2", "-d", "-v", "-W",
                "10",
            ],
            b"",
        );
        assert_eq!(o.code, Some(0), "{o:?}");
        outs.push(o.stdout.replace(id, "ID"));
    }
    assert_eq!(outs[0], outs[2]);
    assert_eq!(outs[1], outs[3]);
    assert!(outs[1].contains("sending PUBREC"), "{}", outs[1]);
    assert!(outs[1].contains("s/1 one\n"), "{}", outs[1]);
    assert!(outs[1].contains("s/2 two\n"), "{}", outs[1]);
}

#[test]
fn output_formats_match() {
    if !available() {
        return;
    }
    let b = Broker::anonymous("format");
    let port = b.port.to_string();
    let t = Pair::new();
    t.same(
        "pub",
        &[
            "-p",
            &port,
            "-t",
            "f/x",
            "-m",
            "he\"llo\tw",
            "-r",
            "-q",
            "1",
        ],
        b"",
    );
    t.same(
        "pub",
        &[
            "-p",
            &port,
            "-t",
            "f/j",
            "-m",
            r#"{"a": [1, 2.5, true], "b" : {"c":null}}"#,
            "-r",
        ],
        b"",
    );
    let formats = [
        "%t|%p|%x|%X|%l|%m|%q|%r|%%",
        "%10t|%-10t|%5.2t|%08l|%-8l|%3q",
        "\\t\\\\%t\\n@@",
        "%j",
        "%J",
        "%A|%C|%5E|%F|%R|%S|%P|%D",
    ];
    for f in formats {
        for topic in ["f/x", "f/j"] {
            t.same("sub", &["-p", &port, "-t", topic, "-C", "1", "-F", f], b"");
        }
    }
    t.same(
        "sub",
        &["-p", &port, "-t", "f/j", "-C", "1", "-F", "%J", "--pretty"],
        b"",
    );
    t.same(
        "sub",
        &["-p", &port, "-t", "f/x", "-C", "1", "-F", "%j", "--pretty"],
        b"",
    );
    t.same(
        "sub",
        &["-p", &port, "-t", "f/x", "-C", "1", "-v", "-N"],
        b"",
    );
    t.same(
        "sub",
        &["-p", &port, "-t", "f/x", "-t", "f/j", "-C", "2", "-v", "-d"],
        b"",
    );
    // v5 properties come through to %C / %P / %j.
    t.same(
        "pub",
        &[
            "-p",
            &port,
            "-t",
            "f/v5",
            "-m",
            "p",
            "-r",
            "-V",
            "5",
            "-D",
            "publish",
            "content-type",
            "text/x",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
        b"",
    );
    t.same(
        "sub",
        &[
            "-p", &port, "-t", "f/v5", "-C", "1", "-V", "5", "-F", "%C|%P|%j",
        ],
        b"",
    );
}

#[test]
fn retained_handling_and_exit_codes() {
    if !available() {
        return;
    }
    let b = Broker::anonymous("retain");
    let port = b.port.to_string();
    let t = Pair::new();
    t.same("pub", &["-p", &port, "-t", "r/a", "-m", "old", "-r"], b"");
    // -R hides the retained message; -W ends with 27 and "Timed out".
    let o = t.same(
        "sub",
        &["-p", &port, "-t", "r/#", "-R", "-W", "1", "-v"],
        b"",
    );
    assert_eq!(o.code, Some(27));
    assert_eq!(o.stderr, "Timed out\n");
    t.same(
        "sub",
        &["-p", &port, "-t", "r/#", "-R", "-W", "1", "-V", "5", "-d"],
        b"",
    );
    t.same(
        "sub",
        &["-p", &port, "-t", "r/#", "-W", "1", "--quiet", "-C", "2"],
        b"",
    );
    t.same("sub", &["-p", &port, "-t", "r/#", "-E", "-d"], b"");
    // --retained-only stops at the first live message; -C counts.
    let o = t.same(
        "sub",
        &["-p", &port, "-t", "r/#", "-C", "1", "--retained-only", "-v"],
        b"",
    );
    assert_eq!(o.stdout, "r/a old\n");
    // --remove-retained clears it (each tool gets its own retained message to clear).
    for rmqtt in [false, true] {
        let o = t.one(
            rmqtt,
            "pub",
            &["-p", &port, "-t", "r/b", "-m", "x", "-r"],
            b"",
        );
        assert_eq!(o.code, Some(0));
        let o = t.one(
            rmqtt,
            "sub",
            &[
                "-p",
                &port,
                "-t",
                "r/b",
                "--remove-retained",
                "-W",
                "1",
                "-v",
                "-d",
            ],
            b"",
        );
        assert_eq!(o.code, Some(27), "{o:?}");
        assert!(
            o.stdout
                .contains("sending PUBLISH (d0, q1, r1, m2, 'r/b', ... (0 bytes))"),
            "{o:?}"
        );
        let o = t.one(rmqtt, "sub", &["-p", &port, "-t", "r/b", "-W", "1"], b"");
        assert_eq!(o.stdout, "", "retained message still there");
    }
    // -T filters out.
    t.same(
        "sub",
        &["-p", &port, "-t", "r/#", "-T", "r/a", "-W", "1", "-v"],
        b"",
    );
}

#[test]
fn stdin_modes() {
    if !available() {
        return;
    }
    let b = Broker::anonymous("stdin");
    let port = b.port.to_string();
    let t = Pair::new();
    let input = b"first\n\nthird\nlast-no-newline";
    t.same("pub", &["-p", &port, "-t", "l/x", "-l", "-d"], input);
    // With QoS > 0, how acknowledgements interleave with sends depends on timing (mosquitto
    // reads stdin on another thread too): compare the lines, not their order.
    for q in ["1", "2"] {
        let args = ["-p", &port, "-t", "l/x", "-l", "-q", q, "-d"];
        let sorted = |o: Out| {
            let mut v: Vec<String> = o.stdout.lines().map(String::from).collect();
            v.sort();
            (v, o.stderr, o.code)
        };
        let m = sorted(t.one(false, "pub", &args, input));
        let r = sorted(t.one(true, "pub", &args, input));
        assert_eq!(m, r);
        assert_eq!(r.2, Some(0));
    }
    t.same(
        "pub",
        &["-p", &port, "-t", "l/x", "-s", "-q", "1", "-d"],
        input,
    );
    t.same("pub", &["-p", &port, "-t", "l/x", "-l", "-d"], b"");
    t.same(
        "pub",
        &[
            "-p", &port, "-t", "l/x", "-m", "r", "--repeat", "3", "-q", "1", "-d",
        ],
        b"",
    );
    // The lines arrive as separate messages, the empty one as (null).
    let mut outs = Vec::new();
    for rmqtt in [false, true] {
        let id = if rmqtt { "lines-r" } else { "lines-m" };
        t.one(
            rmqtt,
            "sub",
            &["-p", &port, "-t", "l/y", "-q", "1", "-c", "-i", id, "-E"],
            b"",
        );
        t.one(
            rmqtt,
            "pub",
            &["-p", &port, "-t", "l/y", "-l", "-q", "1"],
            input,
        );
        outs.push(t.one(
            rmqtt,
            "sub",
            &[
                "-p", &port, "-t", "l/y", "-q", "1", "-c", "-i", id, "-C", "4", "-v", "-W", "10",
            ],
            b"",
        ));
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(
        outs[1].stdout,
        "l/y first\nl/y (null)\nl/y third\nl/y last-no-newline\n"
    );
}

#[test]
fn argument_errors() {
    if !available() {
        return;
    }
    let t = Pair::new();
    for args in [
        &["-z"][..],
        &["-m", "x"],
        &["-t", "a"],
        &["-t", "a/+", "-m", "x"],
        &["-t", "a", "-m", "x", "-q", "3"],
        &["-t", "a", "-m", "x", "-k", "2"],
        &["-t", "a", "-m", "x", "-V", "6"],
        &["-t", "a", "-m", "x", "-c"],
        &["-t", "a", "-m", "x", "-I", "p", "-i", "x"],
        &["-t", "a", "-m", "x", "--will-payload", "x"],
        &["-t", "a", "-m", "x", "-n"],
        &["-t", "a", "-m", "x", "-D", "foo", "content-type", "x"],
        &["-t", "a", "-m", "x", "-D", "connect", "content-type", "x"],
        &["-t", "a", "-m", "x", "-D", "publish", "nonsense", "x"],
        &["-t", "a", "-m", "x", "-h"],
        &["-t", "a", "-f", "/nonexistent/file"],
        &["-t", "a", "-m", "x", "-C", "1"],
    ] {
        let o = t.same("pub", args, b"");
        assert_eq!(o.code, Some(1));
    }
    for args in [
        &["-p", "1"][..],
        &["-t", "a/#/b"],
        &["-t", "a", "-F", "%"],
        &["-t", "a", "-F", "%k"],
        &["-t", "a", "-F", "\\q"],
        &["-t", "a", "-C", "0"],
        &["-t", "a", "-W", "x"],
        &["-t", "a", "-T", "a/#/b"],
        &["-t", "a", "-m", "x"],
    ] {
        let o = t.same("sub", args, b"");
        assert_eq!(o.code, Some(1));
    }
}

#[test]
fn connection_errors() {
    if !available() {
        return;
    }
    let dir = tempdir("auth");
    let pwfile = dir.join("passwd");
    std::fs::write(&pwfile, "").unwrap();
    let st = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&pwfile)
        .args(["user", "pass"])
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        eprintln!("skipping: mosquitto_passwd not available");
        return;
    }
    let b = Broker::start(
        "auth",
        &format!("allow_anonymous false\npassword_file {}", pwfile.display()),
    );
    let port = b.port.to_string();
    let t = Pair::new();
    for v in ["311", "5"] {
        let o = t.same("pub", &["-p", &port, "-t", "a", "-m", "x", "-V", v], b"");
        assert_ne!(o.code, Some(0));
        let o = t.same(
            "pub",
            &[
                "-p", &port, "-t", "a", "-m", "x", "-V", v, "-u", "user", "-P", "bad", "-d",
            ],
            b"",
        );
        assert_ne!(o.code, Some(0));
        let o = t.same("sub", &["-p", &port, "-t", "a", "-V", v], b"");
        assert_ne!(o.code, Some(0));
        t.same("sub", &["-p", &port, "-t", "a", "-V", v, "--quiet"], b"");
        let o = t.same(
            "pub",
            &[
                "-p", &port, "-t", "a", "-m", "x", "-V", v, "-u", "user", "-P", "pass",
            ],
            b"",
        );
        assert_eq!(o.code, Some(0));
    }
    let o = t.same("pub", &["-p", &port, "-t", "a", "-m", "x"], b"");
    assert_eq!(o.stderr, "Connection error: Connection Refused: not authorised.\nError: The connection was refused.\n");
    assert_eq!(o.code, Some(5));
    // Nothing listening.
    drop(b);
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let o = t.same("pub", &["-p", &free, "-t", "a", "-m", "x"], b"");
    assert_eq!(o.stderr, "Error: Connection refused\n");
    t.same("sub", &["-p", &free, "-t", "a"], b"");
    t.same("pub", &["-p", &free, "-t", "a", "-m", "x", "--quiet"], b"");
}

#[test]
fn defaults_file_is_read() {
    if !available() {
        return;
    }
    let b = Broker::anonymous("defaults");
    let t = Pair::new();
    let cfgdir = tempdir("xdg");
    std::fs::write(
        cfgdir.join("mosquitto_pub"),
        format!("# comment\n-p {}\n-d\n", b.port),
    )
    .unwrap();
    let env = [("XDG_CONFIG_HOME", cfgdir.as_path())];
    let m = run(&t.prog(false, "pub"), &["-t", "x", "-m", "y"], b"", &env);
    let r = run(&t.prog(true, "pub"), &["-t", "x", "-m", "y"], b"", &env);
    assert_eq!(m, r);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("sending CONNECT"));
}
