//! rmqtt_sub / rmqtt_pub against mosquitto_sub / mosquitto_pub 2.0 when the process is told to
//! stop and when the broker goes away: both tools run the same scenario against a real
//! Mosquitto broker, and their stdout (`-d` lines included), stderr, exit code and whether their
//! will was published must agree.
//!
//! Facts the scenarios pin down, read from sub_client.c / pub_client.c and libmosquitto's
//! `loop_forever`, and seen with the 2.0.11 tools:
//! - mosquitto_sub on SIGINT or SIGTERM sends DISCONNECT with reason 0x04 "disconnect with will
//!   message" and exits 0: over MQTT 3.1.1 (no reason on the wire) the will is discarded, over
//!   MQTT 5 the broker publishes it. It installs its handlers with `sigaction`, so started in
//!   the background of a script (where the shell has set SIGINT to ignored) it still stops on
//!   `kill -INT`.
//! - A lost connection is made again after one second, every second, silently; mosquitto_sub
//!   subscribes again (packet ids go on counting), mosquitto_pub -l sends its unacknowledged
//!   messages again.
//!
//! Intended differences (not asserted as equal):
//! - mosquitto_pub has no signal handlers: `-l` dies of SIGINT / SIGTERM (exit 130 / 143, its
//!   will fires), and in a script's background it ignores `kill -INT` altogether. rmqtt_pub
//!   stops the way mosquitto_sub does (plain DISCONNECT, so no will; exit 0) on both signals.
//!   Checked on rmqtt_pub alone.
//!
//! Skipped, with a message, when Mosquitto or its clients are missing (fails instead when
//! `RMQTT_REQUIRE_INTEROP` is set).

mod common_interop;

use common_interop::{start_mosquitto, start_mosquitto_on, tools_or_skip, Broker, TempDir, STEP};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Mosquitto with every log type on, so that the tests can see each CONNECT and SUBACK.
const VERBOSE: &str = "allow_anonymous true\nlog_type all\n";

fn tools(test: &str) -> Option<PathBuf> {
    tools_or_skip(test, &["mosquitto", "mosquitto_sub", "mosquitto_pub"])
        .and_then(|t| t.into_iter().next())
}

/// Symlinks named rmqtt_pub / rmqtt_sub to the built binary.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["rmqtt_pub", "rmqtt_sub"] {
        let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), bin.join(name));
    }
    bin
}

fn prog(bin: &Path, rmqtt: bool, applet: &str) -> PathBuf {
    if rmqtt {
        bin.join(format!("rmqtt_{applet}"))
    } else {
        PathBuf::from(format!("mosquitto_{applet}"))
    }
}

/// Waits until the broker has logged `needle` at least `n` times.
fn wait_count(broker: &Broker, needle: &str, n: usize) {
    let deadline = Instant::now() + STEP;
    loop {
        let log = broker.log();
        if log.matches(needle).count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "broker never logged {needle:?} {n} times:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client started the way a script starts it: `prog args &` in `sh`, which leaves SIGINT
/// ignored in the child (stdin is passed on explicitly: a background job's is /dev/null
/// otherwise). Its pid and exit code come back through files.
struct Background {
    sh: Child,
    dir: PathBuf,
    stdin: Option<ChildStdin>,
}

#[derive(Debug, PartialEq, Eq)]
struct Out {
    stdout: String,
    stderr: String,
    code: String,
}

impl Background {
    fn start(dir: &Path, prog: &Path, args: &[&str]) -> Background {
        let _ = std::fs::remove_file(dir.join("pid"));
        let _ = std::fs::remove_file(dir.join("rc"));
        let sh = Command::new("sh")
            .arg("-c")
            .arg(
                "exec 3<&0; \"$0\" \"$@\" <&3 2>\"$RMQTT_T/err\" & echo $! >\"$RMQTT_T/pid.tmp\"; \
                 mv \"$RMQTT_T/pid.tmp\" \"$RMQTT_T/pid\"; wait $!; echo $? >\"$RMQTT_T/rc\"",
            )
            .arg(prog)
            .args(args)
            .env("RMQTT_T", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut b = Background {
            sh,
            dir: dir.to_owned(),
            stdin: None,
        };
        b.stdin = b.sh.stdin.take();
        b
    }

    fn pid(&self) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(p) = std::fs::read_to_string(self.dir.join("pid")) {
                return p.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "no pid file");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid();
        assert!(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(&pid)
            .status()
            .unwrap()
            .success());
    }

    fn write_line(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        s.flush().unwrap();
    }

    /// Waits for the client to end (closing its stdin first) and collects what it printed.
    fn finish(mut self) -> Out {
        drop(self.stdin.take());
        let deadline = Instant::now() + STEP;
        while self.sh.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = Command::new("kill").arg("-KILL").arg(self.pid()).status();
                panic!("client did not exit within {STEP:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut stdout = String::new();
        self.sh
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        Out {
            stdout: mask(&stdout),
            stderr: read("err"),
            code: read("rc").trim().to_owned(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.sh.kill();
        let _ = self.sh.wait();
    }
}

/// Broker-assigned ids differ from run to run.
fn mask(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("auto-") {
        out.push_str(&rest[..i]);
        out.push_str("auto-ID");
        let tail = &rest[i + 5..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The retained will on `topic`, if the broker published it.
fn will_published(port: u16, topic: &str) -> bool {
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new("mosquitto_sub")
        .args(["-p", &port.to_string(), "-t", topic, "-W", "1", "-C", "1"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("gone")
}

/// One subscriber run: connect with a retained will, wait for the SUBACK, signal, collect.
fn sub_signalled(
    bin: &Path,
    dir: &Path,
    broker: &Broker,
    rmqtt: bool,
    version: &str,
    sig: &str,
) -> (Out, bool) {
    let tag = format!("{}-{version}-{sig}", if rmqtt { "r" } else { "m" });
    let id = format!("sig-{tag}");
    let will = format!("will/{tag}");
    let port = broker.port.to_string();
    let b = Background::start(
        dir,
        &prog(bin, rmqtt, "sub"),
        &[
            "-p",
            &port,
            "-t",
            "sig/t",
            "-d",
            "-i",
            &id,
            "-V",
            version,
            "--will-topic",
            &will,
            "--will-payload",
            "gone",
            "--will-retain",
        ],
    );
    wait_count(broker, &format!("Sending SUBACK to {id}"), 1);
    b.signal(sig);
    let out = b.finish();
    (out, will_published(broker.port, &will))
}

#[test]
fn sub_on_sigint_and_sigterm_in_a_script_background() {
    let Some(mosquitto) = tools("sub_on_sigint_and_sigterm") else {
        return;
    };
    let dir = TempDir::new("client-sig");
    let bin = bin_dir(dir.path());
    let broker = start_mosquitto(&mosquitto, VERBOSE);
    for version in ["mqttv311", "mqttv5", "mqttv31"] {
        for sig in ["INT", "TERM"] {
            let (m, m_will) = sub_signalled(&bin, dir.path(), &broker, false, version, sig);
            let (r, r_will) = sub_signalled(&bin, dir.path(), &broker, true, version, sig);
            assert_eq!(m.code, "0", "mosquitto_sub {version} SIG{sig}: {m:?}");
            assert!(m.stdout.contains("sending DISCONNECT"), "{m:?}");
            let m_stdout = m.stdout.replace("sig-m-", "sig-X-");
            let r_stdout = r.stdout.replace("sig-r-", "sig-X-");
            assert_eq!(
                (m_stdout, m.stderr, m.code, m_will),
                (r_stdout, r.stderr, r.code, r_will),
                "mosquitto_sub vs rmqtt_sub, {version}, SIG{sig}"
            );
            // MQTT 5 carries mosquitto_sub's "disconnect with will" reason; 3.x cannot.
            assert_eq!(r_will, version == "mqttv5", "{version} SIG{sig}");
        }
    }
}

/// Restarts Mosquitto on the same port (it may take a moment for the port to be free).
fn restart(mosquitto: &Path, mut broker: Broker) -> Broker {
    let port = broker.port;
    broker.terminate();
    drop(broker);
    let deadline = Instant::now() + STEP;
    loop {
        match start_mosquitto_on(mosquitto, port, VERBOSE) {
            Ok(b) => return b,
            Err(e) => assert!(Instant::now() < deadline, "restart on {port}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn publish(port: u16, topic: &str, msg: &str) {
    let st = Command::new("mosquitto_pub")
        .args(["-p", &port.to_string(), "-t", topic, "-m", msg, "-q", "1"])
        .status()
        .unwrap();
    assert!(st.success());
}

fn sub_across_restart(mosquitto: &Path, bin: &Path, dir: &Path, rmqtt: bool) -> Out {
    let broker = start_mosquitto(mosquitto, VERBOSE);
    let port = broker.port;
    let id = "restart-sub";
    let b = Background::start(
        dir,
        &prog(bin, rmqtt, "sub"),
        &[
            "-p",
            &port.to_string(),
            "-t",
            "rs/t",
            "-q",
            "1",
            "-v",
            "-d",
            "-i",
            id,
        ],
    );
    let suback = format!("Sending SUBACK to {id}");
    wait_count(&broker, &suback, 1);
    publish(port, "rs/t", "one");
    wait_count(&broker, &format!("Sending PUBLISH to {id}"), 1);
    let broker = restart(mosquitto, broker);
    wait_count(&broker, &suback, 1);
    publish(port, "rs/t", "two");
    wait_count(&broker, &format!("Received PUBACK from {id}"), 1);
    b.signal("INT");
    let out = b.finish();
    drop(broker);
    out
}

#[test]
fn sub_reconnects_and_subscribes_again_after_a_broker_restart() {
    let Some(mosquitto) = tools("sub_reconnects") else {
        return;
    };
    let dir = TempDir::new("client-restart-sub");
    let bin = bin_dir(dir.path());
    let m = sub_across_restart(&mosquitto, &bin, dir.path(), false);
    let r = sub_across_restart(&mosquitto, &bin, dir.path(), true);
    assert!(m.stdout.contains("rs/t two"), "{m:?}");
    assert!(m.stdout.contains("SUBSCRIBE (Mid: 2"), "{m:?}");
    assert_eq!(m, r, "mosquitto_sub vs rmqtt_sub across a broker restart");
}

fn pub_lines_across_restart(mosquitto: &Path, bin: &Path, dir: &Path, rmqtt: bool) -> Out {
    let broker = start_mosquitto(mosquitto, VERBOSE);
    let port = broker.port;
    let id = "restart-pub";
    let mut b = Background::start(
        dir,
        &prog(bin, rmqtt, "pub"),
        &[
            "-p",
            &port.to_string(),
            "-t",
            "rp/t",
            "-q",
            "1",
            "-l",
            "-d",
            "-i",
            id,
        ],
    );
    let connected = format!("as {id} ");
    wait_count(&broker, &connected, 1);
    b.write_line("one");
    wait_count(&broker, &format!("Sending PUBACK to {id}"), 1);
    let broker = restart(mosquitto, broker);
    wait_count(&broker, &connected, 1);
    b.write_line("two");
    wait_count(&broker, &format!("Sending PUBACK to {id}"), 1);
    let out = b.finish();
    drop(broker);
    out
}

#[test]
fn pub_stdin_lines_reconnect_after_a_broker_restart() {
    let Some(mosquitto) = tools("pub_reconnects") else {
        return;
    };
    let dir = TempDir::new("client-restart-pub");
    let bin = bin_dir(dir.path());
    let m = pub_lines_across_restart(&mosquitto, &bin, dir.path(), false);
    let r = pub_lines_across_restart(&mosquitto, &bin, dir.path(), true);
    assert_eq!(m.code, "0", "{m:?}");
    assert!(m.stdout.contains("'rp/t', ... (3 bytes))"), "{m:?}");
    assert_eq!(
        m, r,
        "mosquitto_pub -l vs rmqtt_pub -l across a broker restart"
    );
}

fn pub_signalled(bin: &Path, dir: &Path, broker: &Broker, rmqtt: bool, sig: &str) -> (Out, bool) {
    let tag = format!("{}-{sig}", if rmqtt { "r" } else { "m" });
    let id = format!("psig-{tag}");
    let will = format!("pwill/{tag}");
    let mut b = Background::start(
        dir,
        &prog(bin, rmqtt, "pub"),
        &[
            "-p",
            &broker.port.to_string(),
            "-t",
            "ps/t",
            "-l",
            "-d",
            "-i",
            &id,
            "-V",
            "mqttv5",
            "--will-topic",
            &will,
            "--will-payload",
            "gone",
            "--will-retain",
        ],
    );
    wait_count(broker, &format!("as {id} "), 1);
    b.write_line("x");
    wait_count(broker, &format!("Received PUBLISH from {id}"), 1);
    b.signal(sig);
    // stdin stays open: only the signal can end the client.
    let stdin = b.stdin.take();
    let deadline = Instant::now() + STEP;
    while !b.dir.join("rc").exists() {
        assert!(Instant::now() < deadline, "rc never written");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stdin);
    let out = b.finish();
    (out, will_published(broker.port, &will))
}

#[test]
fn pub_stdin_lines_on_sigint_and_sigterm() {
    let Some(mosquitto) = tools("pub_on_sigint") else {
        return;
    };
    let dir = TempDir::new("client-sig-pub");
    let bin = bin_dir(dir.path());
    let broker = start_mosquitto(&mosquitto, VERBOSE);
    for sig in ["INT", "TERM"] {
        let (r, will) = pub_signalled(&bin, dir.path(), &broker, true, sig);
        assert_eq!(r.code, "0", "SIG{sig}: {r:?}");
        assert!(
            r.stdout.ends_with("sending DISCONNECT\n"),
            "SIG{sig}: {r:?}"
        );
        assert_eq!(r.stderr, "", "SIG{sig}");
        assert!(!will, "SIG{sig}: the will must not fire");
    }
}
