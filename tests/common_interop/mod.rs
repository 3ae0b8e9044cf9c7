//! Shared harness for the interoperability tests: starts rmqtt and Mosquitto brokers on
//! ephemeral loopback ports and runs third-party clients (mosquitto_pub/sub, paho-mqtt).
//!
//! Guarantees: every wait is bounded, every child process is killed and reaped when its guard
//! is dropped (also when a test panics), and every temporary directory is removed. A test whose
//! tool is missing is skipped only while `RMQTT_REQUIRE_INTEROP` is unset; CI sets it, so there a
//! missing tool fails the test instead.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for any single step (broker start-up, one client run). Generous, because the tests
/// run in parallel on a small machine; reaching it means the step hung, never that it was slow.
pub const STEP: Duration = Duration::from_secs(30);

/// The line both brokers log when they open their listener.
const LISTEN_LINE: &str = "Opening ipv4 listen socket on port ";

/// True when CI demands the interop tools, so that a missing one fails instead of skipping.
pub fn require_interop() -> bool {
    std::env::var_os("RMQTT_REQUIRE_INTEROP").is_some()
}

/// Looks a program up in PATH and in the sbin directories (Debian puts `mosquitto` in
/// /usr/sbin, which a non-root PATH lacks).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Resolves every named tool, or decides the test's fate without them: `None` means "skip" (a
/// reason has been printed); with `RMQTT_REQUIRE_INTEROP` set it panics instead.
pub fn tools_or_skip(test: &str, names: &[&str]) -> Option<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        match find_tool(name) {
            Some(p) => found.push(p),
            None => missing.push(*name),
        }
    }
    if missing.is_empty() {
        return Some(found);
    }
    skip_or_fail(test, &format!("missing tool(s): {}", missing.join(", ")));
    None
}

/// Prints why a test is skipped, or panics when CI requires the interop tools.
pub fn skip_or_fail(test: &str, why: &str) {
    if require_interop() {
        panic!("{test}: {why} (RMQTT_REQUIRE_INTEROP is set; run scripts/install-deps.sh)");
    }
    eprintln!("SKIPPED {test}: {why} (run scripts/install-deps.sh; set RMQTT_REQUIRE_INTEROP=1 to fail instead)");
}

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rmqtt-interop-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which broker implementation a `Broker` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rmqtt,
    Mosquitto,
}

/// A running broker; killed and reaped on drop.
pub struct Broker {
    pub kind: Kind,
    pub port: u16,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Broker {
    /// Everything the broker has written to stderr so far, for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The broker's process id (for /proc and signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (bounded by `STEP`) for the exit; a broker that does not stop in time
    /// is killed. Mosquitto saves its persistence file on this path, unlike on SIGKILL.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if wait_bounded(&mut self.child, STEP).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Waits (bounded by `STEP`) for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + STEP;
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(
                Instant::now() < deadline,
                "no log line containing {needle:?} within {STEP:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts rmqtt with `body` appended to a `listener 0 127.0.0.1` line, so the kernel picks the
/// port; the port is read back from the broker's log.
pub fn start_rmqtt(body: &str) -> Broker {
    let conf = format!("listener 0 127.0.0.1\n{body}");
    match spawn_broker(Kind::Rmqtt, Path::new(env!("CARGO_BIN_EXE_rmqtt")), &conf) {
        Ok(b) => b,
        Err(e) => panic!("rmqtt did not start: {e}"),
    }
}

/// Starts rmqtt with `body` after a `listener PORT 127.0.0.1` line (for configs with several
/// listeners, whose ports the test picks).
pub fn start_rmqtt_on(port: u16, body: &str) -> Result<Broker, String> {
    let conf = format!("listener {port} 127.0.0.1\n{body}");
    spawn_broker(Kind::Rmqtt, Path::new(env!("CARGO_BIN_EXE_rmqtt")), &conf)
}

/// A port that was free a moment ago (another process may take it before it is used).
pub fn free_tcp_port() -> u16 {
    free_port()
}

/// Starts rmqtt on a given port (a restart on the port a bridge is pointed at); panics if it
/// does not start.
pub fn start_rmqtt_at(port: u16, body: &str) -> Broker {
    match start_rmqtt_on(port, body) {
        Ok(b) => b,
        Err(e) => panic!("rmqtt did not start on {port}: {e}"),
    }
}

/// Starts the broker under test: rmqtt, or Mosquitto when `RMQTT_INTEROP_BROKER=mosquitto`,
/// which checks that the tests' expectations hold for the reference implementation.
pub fn start_under_test(body: &str) -> Broker {
    if std::env::var("RMQTT_INTEROP_BROKER").as_deref() == Ok("mosquitto") {
        let Some(mosquitto) = find_tool("mosquitto") else {
            panic!("RMQTT_INTEROP_BROKER=mosquitto but no mosquitto binary found");
        };
        return start_mosquitto(&mosquitto, body);
    }
    start_rmqtt(body)
}

/// The head of every Mosquitto config the tests write. `user root`: Mosquitto started as root
/// otherwise switches to the `mosquitto` user, which cannot read the tests' files when they
/// are private (umask 077, 0600 keys and password files); it is ignored when not run as root.
/// Mosquitto rejects a second `user` line, so `body` must not have one.
fn mosquitto_conf(port: u16, body: &str) -> String {
    format!("listener {port} 127.0.0.1\nuser root\n{body}")
}

/// Starts the Mosquitto broker with `body` after a `listener PORT 127.0.0.1` line.
/// Mosquitto reads port 0 as a unix socket path, so a free port is found by binding port 0 first;
/// another process may grab it in between, hence a few attempts.
pub fn start_mosquitto(mosquitto: &Path, body: &str) -> Broker {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port();
        let conf = mosquitto_conf(port, body);
        match spawn_broker(Kind::Mosquitto, mosquitto, &conf) {
            Ok(b) => return b,
            Err(e) => last = e,
        }
    }
    panic!("mosquitto did not start: {last}");
}

/// Starts Mosquitto on a given port (for a restart on the same port, or a port a bridge was
/// already pointed at); `body` follows the `listener PORT 127.0.0.1` line.
pub fn start_mosquitto_on(mosquitto: &Path, port: u16, body: &str) -> Result<Broker, String> {
    let conf = mosquitto_conf(port, body);
    spawn_broker(Kind::Mosquitto, mosquitto, &conf)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn spawn_broker(kind: Kind, program: &Path, conf: &str) -> Result<Broker, String> {
    let dir = TempDir::new(match kind {
        Kind::Rmqtt => "rmqtt",
        Kind::Mosquitto => "mosquitto",
    });
    let conf_path = dir.path().join("broker.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut child = Command::new(program)
        .arg("-c")
        .arg(&conf_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    // The reader outlives start-up so the broker never blocks on a full stderr pipe.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let mut broker = Broker {
        kind,
        port: 0,
        child,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.split(LISTEN_LINE).nth(1) {
                    let digits = rest.trim_end_matches('.');
                    broker.port = digits
                        .parse()
                        .map_err(|_| format!("unparsable listen line: {line}"))?;
                }
                // The listen line comes before the bind; only "running" proves the bind worked
                // (a failed one must not leave the test talking to whoever owns the port).
                if broker.port != 0 && line.ends_with(" running") {
                    return Ok(broker);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(format!("no listen line within {STEP:?}:\n{}", broker.log()))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(format!("broker exited during start-up:\n{}", broker.log()))
            }
        }
    }
}

/// What a finished (or timed-out) client run produced.
#[derive(Debug)]
pub struct Output {
    /// `None` when the run hit its timeout and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with the full output unless the program exited with status 0.
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.is_some_and(|s| s.success()),
            "{what} failed: status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// `rmqtt FLAG FILE --test-config`, with `text` written to a file named `name` in a fresh
/// directory (`-c` for mosquitto.conf syntax, `-u` for UCI).
pub fn test_config(flag: &str, name: &str, text: &str) -> Output {
    let dir = TempDir::new("test-config");
    let f = dir.path().join(name);
    std::fs::write(&f, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmqtt"));
    run(cmd.arg(flag).arg(&f).arg("--test-config"), None, STEP)
}

/// Runs a program to completion with optional stdin, killing it after `timeout`.
pub fn run(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(text) = input {
        let mut stdin = child.stdin.take().unwrap();
        let text = text.to_owned();
        // A separate thread, so a child that stops reading cannot wedge the test.
        thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let out = slurp(child.stdout.take().unwrap());
    let err = slurp(child.stderr.take().unwrap());
    let status = wait_bounded(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn slurp(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A long-running client whose stdout is read line by line while it runs (e.g. a subscriber the
/// test must see subscribed before it publishes). Killed and reaped on drop.
pub struct Running {
    child: Child,
    lines_rx: Receiver<String>,
    /// Every stdout line received so far, in order.
    pub lines: Vec<String>,
    stderr: Option<JoinHandle<String>>,
    status: Option<ExitStatus>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(slurp(child.stderr.take().unwrap()));
        Running {
            child,
            lines_rx,
            lines: Vec::new(),
            stderr,
            status: None,
        }
    }

    /// Reads stdout until a line satisfies `pred`; panics (with everything seen) after `STEP`.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines_rx.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "waiting for {what}: {e:?}; stdout so far:\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }

    /// Waits for the program to exit on its own, then collects the rest of its stdout.
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
        let Some(status) = wait_bounded(&mut self.child, STEP) else {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
            self.drain();
            panic!(
                "{what} did not exit within {STEP:?}; stdout:\n{}\nstderr:\n{}",
                self.lines.join("\n"),
                self.stderr_text()
            );
        };
        self.status = Some(status);
        self.drain();
        status
    }

    /// SIGKILL: the process gets no chance to send DISCONNECT.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.drain();
    }

    /// Stderr, complete once the process has exited.
    pub fn stderr_text(&mut self) -> String {
        match self.stderr.take() {
            Some(h) if self.status.is_some() => h.join().unwrap_or_default(),
            other => {
                self.stderr = other;
                String::new()
            }
        }
    }

    fn drain(&mut self) {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines_rx.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(_) => return,
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
