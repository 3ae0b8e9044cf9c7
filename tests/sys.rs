//! The `$SYS` tree as users see it, through `rmqtt_sub -t '$SYS/#'` (the built binary under
//! that name) against a broker with `sys_interval 1`: Mosquitto's topics appear, retained;
//! values follow what clients do; a value that did not change is not published again.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The topics of issue 9 item 3 (Mosquitto's names), under `$SYS/broker/`.
fn expected_topics() -> Vec<String> {
    let mut t: Vec<String> = [
        "version",
        "uptime",
        "clients/connected",
        "clients/disconnected",
        "clients/total",
        "clients/maximum",
        "clients/expired",
        "messages/received",
        "messages/sent",
        "messages/stored",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
        "bytes/received",
        "bytes/sent",
        "retained messages/count",
        "subscriptions/count",
        "store/messages/count",
        "store/messages/bytes",
        "heap/current",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for span in ["1min", "5min", "15min"] {
        for kind in ["messages", "bytes", "publish"] {
            for dir in ["received", "sent"] {
                t.push(format!("load/{kind}/{dir}/{span}"));
            }
        }
        t.push(format!("load/connections/{span}"));
    }
    t.into_iter().map(|s| format!("$SYS/broker/{s}")).collect()
}

/// `rmqtt_sub -t '$SYS/#' -F '%r|%t|%p'` running against the broker; its lines arrive as
/// (retain flag, topic, payload).
struct SysSub {
    child: Child,
    lines: Receiver<(bool, String, String)>,
    _dir: TempDir,
}

impl SysSub {
    fn start(port: u16) -> SysSub {
        let dir = TempDir::new("sys-sub");
        let link = dir.path.join("rmqtt_sub");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rmqtt"), &link).unwrap();
        let mut child = Command::new(&link)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "$SYS/#", "-F", "%r|%t|%p"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(3, '|');
                let (Some(flag), Some(topic), Some(value)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let (topic, value) = (topic.to_string(), value.to_string());
                if tx.send((flag == "1", topic, value)).is_err() {
                    break;
                }
            }
        });
        SysSub {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Lines until `done` holds for the latest values (bounded); returns them all in order.
    fn until(
        &self,
        latest: &mut HashMap<String, String>,
        within: Duration,
        done: impl Fn(&HashMap<String, String>) -> bool,
    ) -> Vec<(bool, String, String)> {
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        while !done(latest) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "condition not reached; latest: {latest:#?}"
            );
            if let Ok(l) = self.lines.recv_timeout(left) {
                latest.insert(l.1.clone(), l.2.clone());
                all.push(l);
            }
        }
        all
    }

    /// Every line that arrives during `d`.
    fn during(
        &self,
        latest: &mut HashMap<String, String>,
        d: Duration,
    ) -> Vec<(bool, String, String)> {
        let deadline = Instant::now() + d;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return all;
            }
            if let Ok(l) = self.lines.recv_timeout(left) {
                latest.insert(l.1.clone(), l.2.clone());
                all.push(l);
            }
        }
    }
}

impl Drop for SysSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num(latest: &HashMap<String, String>, topic: &str) -> u64 {
    latest
        .get(&format!("$SYS/broker/{topic}"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const SYS: &str = "allow_anonymous true\nsys_interval 1\n";

#[test]
fn sys_topics_appear_retained() {
    let b = Broker::with_config(SYS);
    let want = expected_topics();
    let first = SysSub::start(b.port);
    let mut latest = HashMap::new();
    first.until(&mut latest, Duration::from_secs(10), |l| {
        want.iter().all(|t| l.contains_key(t))
    });
    assert!(latest["$SYS/broker/version"].starts_with("rmqtt version "));
    assert!(latest["$SYS/broker/uptime"].ends_with(" seconds"));
    assert!(num(&latest, "heap/current") > 0, "heap/current is the RSS");

    // A subscriber that comes later gets every topic at once, from the retained store.
    let second = SysSub::start(b.port);
    let mut latest2 = HashMap::new();
    let lines = second.until(&mut latest2, Duration::from_secs(10), |l| {
        want.iter().all(|t| l.contains_key(t))
    });
    for t in &want {
        let first_copy = lines.iter().find(|l| &l.1 == t).unwrap();
        assert!(
            first_copy.0,
            "{t} was not delivered as retained: {first_copy:?}"
        );
    }
}

#[test]
fn sys_values_follow_clients_and_publishes() {
    let b = Broker::with_config(SYS);
    let sys = SysSub::start(b.port);
    let mut latest = HashMap::new();
    sys.until(&mut latest, Duration::from_secs(10), |l| {
        num(l, "clients/connected") >= 1 && num(l, "subscriptions/count") >= 1
    });
    let connected = num(&latest, "clients/connected");
    let received = num(&latest, "publish/messages/received");
    let retained = num(&latest, "retained messages/count");
    let subs = num(&latest, "subscriptions/count");

    let mut a = b.client("sys-a");
    let mut c = b.client("sys-c");
    c.subscribe(1, &[("sys/t", 0)]);
    sys.until(&mut latest, Duration::from_secs(10), |l| {
        num(l, "clients/connected") == connected + 2
            && num(l, "subscriptions/count") == subs + 1
            && num(l, "clients/maximum") >= connected + 2
    });

    a.publish_q1(1, "sys/t", b"1");
    a.publish_q1(2, "sys/t", b"2");
    a.publish_retained(3, "sys/r", b"kept");
    for _ in 0..2 {
        c.expect_publish();
    }
    sys.until(&mut latest, Duration::from_secs(10), |l| {
        num(l, "publish/messages/received") == received + 3
            && num(l, "retained messages/count") == retained + 1
            && num(l, "publish/messages/sent") >= 2
    });

    a.disconnect();
    c.disconnect();
    sys.until(&mut latest, Duration::from_secs(10), |l| {
        num(l, "clients/connected") == connected && num(l, "subscriptions/count") == subs
    });
    assert!(num(&latest, "clients/maximum") >= connected + 2);
    println!(
        "connected {connected} -> {} -> {connected}, publish received {received} -> {}",
        connected + 2,
        num(&latest, "publish/messages/received")
    );
}

#[test]
fn unchanged_sys_values_are_not_republished() {
    let b = Broker::with_config(SYS);
    let sys = SysSub::start(b.port);
    let mut latest = HashMap::new();
    let mut lines = sys.until(&mut latest, Duration::from_secs(10), |l| {
        l.contains_key("$SYS/broker/version")
    });
    lines.extend(sys.during(&mut latest, Duration::from_millis(3500)));
    let count = |t: &str| {
        lines
            .iter()
            .filter(|l| l.1 == format!("$SYS/broker/{t}"))
            .count()
    };
    assert!(
        count("uptime") >= 3,
        "uptime changes every second and is republished: {}",
        count("uptime")
    );
    for t in ["version", "clients/expired", "publish/messages/dropped"] {
        assert_eq!(count(t), 1, "{t} did not change and must be published once");
    }
}
