//! Interoperability with Mosquitto's own command-line clients (`mosquitto_pub`/`mosquitto_sub`,
//! Debian 12's 2.0.11) against rmqtt: QoS levels, retained messages, protocol versions,
//! wildcards, persistent sessions, wills, `-d` output and the not-authorised refusal, the last two
//! compared line by line with a real Mosquitto broker started by the test.
//!
//! Subscribers run with `-d` so a test publishes only after the SUBACK line, never after a sleep.
//! Without the tools the tests are skipped unless `RMQTT_REQUIRE_INTEROP` is set.

mod common_interop;

use common_interop::{
    find_tool, run, skip_or_fail, start_mosquitto, start_under_test, tools_or_skip, Broker, Output,
    Running, STEP,
};
use std::path::PathBuf;
use std::process::Command;

const ANONYMOUS: &str = "allow_anonymous true\n";

struct Clients {
    publisher: PathBuf,
    subscriber: PathBuf,
    stdbuf: Option<PathBuf>,
}

fn clients(test: &str) -> Option<Clients> {
    let mut t = tools_or_skip(test, &["mosquitto_pub", "mosquitto_sub"])?;
    let subscriber = t.pop()?;
    let publisher = t.pop()?;
    Some(Clients {
        publisher,
        subscriber,
        stdbuf: find_tool("stdbuf"),
    })
}

impl Clients {
    fn sub(&self, port: u16, id: &str, args: &[&str]) -> Command {
        // mosquitto_sub's `-d` lines are block-buffered on a pipe; the tests need each line as
        // soon as it is printed, so stdout is made line-buffered when coreutils' stdbuf exists.
        let mut cmd = match &self.stdbuf {
            Some(stdbuf) => {
                let mut cmd = Command::new(stdbuf);
                cmd.arg("-oL").arg(&self.subscriber);
                cmd
            }
            None => Command::new(&self.subscriber),
        };
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id])
            .args(args);
        cmd
    }

    fn publish_cmd(&self, port: u16, id: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.publisher);
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id])
            .args(args);
        cmd
    }

    /// Publishes and waits for mosquitto_pub to finish; with QoS > 0 that means the broker has
    /// acknowledged, so the next publish cannot overtake this one.
    fn publish(&self, broker: &Broker, id: &str, args: &[&str]) -> Output {
        let out = run(&mut self.publish_cmd(broker.port, id, args), None, STEP);
        out.assert_success(&format!(
            "mosquitto_pub {args:?}\nbroker log:\n{}",
            broker.log()
        ));
        out
    }

    /// A subscriber with `-d`, returned once its SUBACK has been printed.
    fn start_sub(&self, port: u16, id: &str, args: &[&str]) -> Running {
        let mut sub = Running::spawn(self.sub(port, id, args).arg("-d"));
        sub.wait_line("SUBACK", |l| l.starts_with("Subscribed (mid: "));
        sub
    }
}

/// The message lines of a `-d` subscriber's output: everything but its debug lines.
fn messages(lines: &[String], id: &str) -> Vec<String> {
    let debug = format!("Client {id} ");
    lines
        .iter()
        .filter(|l| !l.starts_with(&debug) && !l.starts_with("Subscribed (mid: "))
        .cloned()
        .collect()
}

fn finish(sub: &mut Running, broker: &Broker, what: &str) {
    let status = sub.wait_exit(what);
    assert!(
        status.success(),
        "{what} exited with {status}: stdout:\n{}\nstderr:\n{}\nbroker log:\n{}",
        sub.lines.join("\n"),
        sub.stderr_text(),
        broker.log()
    );
}

#[test]
fn qos_0_1_2_messages_arrive_in_order_with_their_qos() {
    let Some(c) = clients("qos_0_1_2_messages_arrive_in_order_with_their_qos") else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    for qos in 0..=2 {
        let q = qos.to_string();
        let topic = format!("qos/{qos}");
        let id = format!("sub-q{qos}");
        let mut sub = c.start_sub(
            broker.port,
            &id,
            &["-v", "-q", &q, "-t", &topic, "-C", "10"],
        );
        let input: String = (0..10).map(|i| format!("message {i} at {qos}\n")).collect();
        // One publisher connection for all ten, so even QoS 0 has a defined order.
        let out = run(
            &mut c.publish_cmd(
                broker.port,
                &format!("pub-q{qos}"),
                &["-q", &q, "-t", &topic, "-l"],
            ),
            Some(&input),
            STEP,
        );
        out.assert_success("mosquitto_pub -l");
        finish(&mut sub, &broker, "mosquitto_sub");

        let expected: Vec<String> = (0..10)
            .map(|i| format!("{topic} message {i} at {qos}"))
            .collect();
        assert_eq!(
            messages(&sub.lines, &id),
            expected,
            "broker log:\n{}",
            broker.log()
        );
        let header = format!("Client {id} received PUBLISH (d0, q{qos}, r0, ");
        let publishes = sub.lines.iter().filter(|l| l.starts_with(&header)).count();
        assert_eq!(publishes, 10, "output:\n{}", sub.lines.join("\n"));
        if qos == 2 {
            let pubrels = sub
                .lines
                .iter()
                .filter(|l| l.starts_with(&format!("Client {id} received PUBREL (Mid: ")))
                .count();
            assert_eq!(pubrels, 10, "output:\n{}", sub.lines.join("\n"));
        }
    }

    // Delivered QoS is the lower of the publish and the subscription QoS.
    for (sub_qos, pub_qos, delivered) in [("0", "2", 0), ("1", "2", 1), ("2", "1", 1)] {
        let id = format!("min-{sub_qos}{pub_qos}");
        let topic = format!("min/{sub_qos}{pub_qos}");
        let mut sub = c.start_sub(
            broker.port,
            &id,
            &["-q", sub_qos, "-t", &topic, "-C", "1", "-F", "%q %t %p"],
        );
        c.publish(
            &broker,
            "min-pub",
            &["-q", pub_qos, "-t", &topic, "-m", "m"],
        );
        finish(&mut sub, &broker, "mosquitto_sub");
        assert_eq!(
            messages(&sub.lines, &id),
            vec![format!("{delivered} {topic} m")]
        );
    }
}

#[test]
fn retained_message_is_kept_delivered_and_cleared() {
    let Some(c) = clients("retained_message_is_kept_delivered_and_cleared") else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    c.publish(
        &broker,
        "ret-pub",
        &["-r", "-q", "1", "-t", "ret/t", "-m", "kept"],
    );

    let out = run(
        &mut c.sub(broker.port, "ret-sub1", &["-t", "ret/t", "-C", "1", "-v"]),
        None,
        STEP,
    );
    out.assert_success("mosquitto_sub -C 1");
    assert_eq!(out.stdout, "ret/t kept\n");

    // A retained delivery carries the retain flag; a live one to an existing subscriber does not.
    let mut sub = c.start_sub(
        broker.port,
        "ret-sub2",
        &["-q", "1", "-t", "ret/#", "-C", "2", "-F", "%r %q %t %p"],
    );
    c.publish(
        &broker,
        "ret-pub",
        &["-r", "-q", "1", "-t", "ret/u", "-m", "live"],
    );
    finish(&mut sub, &broker, "mosquitto_sub");
    assert_eq!(
        messages(&sub.lines, "ret-sub2"),
        vec!["1 1 ret/t kept", "0 1 ret/u live"]
    );

    // An empty retained publish deletes it: a new subscriber's first message is then a live one.
    c.publish(
        &broker,
        "ret-clear",
        &["-r", "-n", "-q", "1", "-t", "ret/t"],
    );
    let mut sub = c.start_sub(
        broker.port,
        "ret-sub3",
        &["-q", "1", "-t", "ret/t", "-C", "1", "-v"],
    );
    c.publish(
        &broker,
        "ret-pub",
        &["-q", "1", "-t", "ret/t", "-m", "after"],
    );
    finish(&mut sub, &broker, "mosquitto_sub");
    assert_eq!(messages(&sub.lines, "ret-sub3"), vec!["ret/t after"]);

    // And the other retained topic is untouched.
    let out = run(
        &mut c.sub(broker.port, "ret-sub4", &["-t", "ret/u", "-C", "1", "-v"]),
        None,
        STEP,
    );
    out.assert_success("mosquitto_sub -C 1");
    assert_eq!(out.stdout, "ret/u live\n");
}

#[test]
fn mqtt_31_311_and_5_clients_connect_and_deliver_to_each_other() {
    let Some(c) = clients("mqtt_31_311_and_5_clients_connect_and_deliver_to_each_other") else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    let versions = ["mqttv31", "mqttv311", "mqttv5"];
    let mut subs: Vec<(String, Running)> = versions
        .iter()
        .map(|v| {
            let id = format!("sub-{v}");
            let sub = c.start_sub(
                broker.port,
                &id,
                &["-V", v, "-v", "-q", "2", "-t", "ver/all", "-C", "5"],
            );
            (id, sub)
        })
        .collect();
    for (id, sub) in &subs {
        let connack = format!("Client {id} received CONNACK (0)");
        assert!(
            sub.lines.contains(&connack),
            "no '{connack}' in:\n{}",
            sub.lines.join("\n")
        );
    }
    // Each publish is acknowledged before the next starts, so the broker routes them in this
    // order; QoS 0 goes last because nothing acknowledges it.
    let sends = [
        ("mqttv31", "2"),
        ("mqttv311", "1"),
        ("mqttv5", "2"),
        ("mqttv31", "1"),
        ("mqttv5", "0"),
    ];
    for (v, q) in sends {
        let payload = format!("from {v} at qos {q}");
        c.publish(
            &broker,
            &format!("pub-{v}"),
            &["-V", v, "-q", q, "-t", "ver/all", "-m", &payload],
        );
    }
    // Compared as sets: libmosquitto hands a QoS 2 message to the program only after the
    // PUBREL, so it may print a later QoS 1 message first (Mosquitto's broker does this too).
    let mut expected: Vec<String> = sends
        .iter()
        .map(|(v, q)| format!("ver/all from {v} at qos {q}"))
        .collect();
    expected.sort();
    for (id, sub) in &mut subs {
        finish(sub, &broker, id);
        let mut got = messages(&sub.lines, id);
        got.sort();
        assert_eq!(got, expected, "subscriber {id}");
    }
}

#[test]
fn wildcards_match_per_spec_and_skip_dollar_topics() {
    let Some(c) = clients("wildcards_match_per_spec_and_skip_dollar_topics") else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    let mut filters = c.start_sub(
        broker.port,
        "wild-a",
        &[
            "-v",
            "-q",
            "1",
            "-t",
            "home/+/temperature",
            "-t",
            "sensors/#",
            "-C",
            "3",
        ],
    );
    let mut all = c.start_sub(
        broker.port,
        "wild-b",
        &["-v", "-q", "1", "-t", "#", "-C", "5"],
    );
    let mut plus = c.start_sub(
        broker.port,
        "wild-c",
        &["-v", "-q", "1", "-t", "+/kitchen/temperature", "-C", "1"],
    );
    // The `$` topic goes first, so a wrong delivery would show up ahead of the right ones.
    let sends = [
        ("$test/kitchen/temperature", "hidden"),
        ("home/kitchen/temperature", "21.5"),
        ("home/kitchen/humidity", "40"),
        ("home/kitchen/temperature/raw", "x"),
        ("sensors", "root"),
        ("sensors/a/b", "deep"),
    ];
    for (topic, payload) in sends {
        c.publish(
            &broker,
            "wild-pub",
            &["-q", "1", "-t", topic, "-m", payload],
        );
    }
    finish(&mut filters, &broker, "home/+/temperature + sensors/#");
    finish(&mut all, &broker, "#");
    finish(&mut plus, &broker, "+/kitchen/temperature");
    assert_eq!(
        messages(&filters.lines, "wild-a"),
        vec![
            "home/kitchen/temperature 21.5",
            "sensors root",
            "sensors/a/b deep"
        ]
    );
    assert_eq!(
        messages(&all.lines, "wild-b"),
        vec![
            "home/kitchen/temperature 21.5",
            "home/kitchen/humidity 40",
            "home/kitchen/temperature/raw x",
            "sensors root",
            "sensors/a/b deep"
        ]
    );
    assert_eq!(
        messages(&plus.lines, "wild-c"),
        vec!["home/kitchen/temperature 21.5"]
    );
}

#[test]
fn persistent_session_receives_messages_published_while_away() {
    let Some(c) = clients("persistent_session_receives_messages_published_while_away") else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    let cases: [(&str, &[&str]); 2] = [
        ("away311", &["-V", "mqttv311"]),
        ("away5", &["-V", "mqttv5", "-x", "600"]),
    ];
    for (id, version) in cases {
        let topic = format!("away/{id}");
        let session = |extra: &[&str]| {
            let mut cmd = c.sub(broker.port, id, version);
            cmd.args(["-c", "-q", "1", "-t", &topic]).args(extra);
            cmd
        };
        // -E: subscribe, then disconnect cleanly, leaving the session behind.
        run(&mut session(&["-E"]), None, STEP).assert_success("mosquitto_sub -c -E");
        for i in 0..3 {
            c.publish(
                &broker,
                "away-pub",
                &["-q", "1", "-t", &topic, "-m", &format!("queued {i}")],
            );
        }
        let out = run(&mut session(&["-v", "-C", "3"]), None, STEP);
        out.assert_success(&format!(
            "mosquitto_sub -c (return)\nbroker log:\n{}",
            broker.log()
        ));
        assert_eq!(
            out.stdout,
            format!("{topic} queued 0\n{topic} queued 1\n{topic} queued 2\n"),
            "client {id}"
        );
    }
}

#[test]
fn will_is_published_when_client_is_killed_but_not_on_clean_disconnect() {
    let Some(c) = clients("will_is_published_when_client_is_killed_but_not_on_clean_disconnect")
    else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    let mut watcher = c.start_sub(
        broker.port,
        "will-watch",
        &["-v", "-q", "1", "-t", "wills/#", "-C", "1"],
    );
    let will = |name: &'static str, payload: &'static str| {
        [
            "--will-topic",
            name,
            "--will-payload",
            payload,
            "--will-qos",
            "1",
            "-t",
            "will/x",
        ]
    };
    run(
        &mut c.sub(
            broker.port,
            "will-clean",
            &[&will("wills/clean", "wrong")[..], &["-E"]].concat(),
        ),
        None,
        STEP,
    )
    .assert_success("mosquitto_sub -E");
    let mut doomed = c.start_sub(broker.port, "will-doomed", &will("wills/doomed", "gone"));
    doomed.kill();
    finish(&mut watcher, &broker, "will watcher");
    assert_eq!(
        messages(&watcher.lines, "will-watch"),
        vec!["wills/doomed gone"]
    );
}

/// One subscriber and one publisher, both with `-d`; returns their complete outputs.
fn debug_session(c: &Clients, broker: &Broker) -> (Vec<String>, String) {
    let mut sub = c.start_sub(
        broker.port,
        "dbg-sub",
        &["-q", "1", "-t", "dbg/t", "-C", "1", "-v"],
    );
    let out = c.publish(
        broker,
        "dbg-pub",
        &["-d", "-q", "1", "-t", "dbg/t", "-m", "hello"],
    );
    finish(&mut sub, broker, "mosquitto_sub -d");
    (sub.lines.clone(), out.stdout)
}

#[test]
fn debug_output_shows_connack_and_suback_like_mosquitto() {
    let test = "debug_output_shows_connack_and_suback_like_mosquitto";
    let Some(c) = clients(test) else {
        return;
    };
    let broker = start_under_test(ANONYMOUS);
    let (sub_lines, pub_out) = debug_session(&c, &broker);
    let expected_sub = [
        "Client dbg-sub sending CONNECT",
        "Client dbg-sub received CONNACK (0)",
        "Client dbg-sub sending SUBSCRIBE (Mid: 1, Topic: dbg/t, QoS: 1, Options: 0x00)",
        "Client dbg-sub received SUBACK",
        "Subscribed (mid: 1): 1",
    ];
    assert_eq!(
        &sub_lines[..expected_sub.len().min(sub_lines.len())],
        &expected_sub[..],
        "subscriber output:\n{}",
        sub_lines.join("\n")
    );
    assert!(
        sub_lines.contains(&"dbg/t hello".to_string()),
        "subscriber output:\n{}",
        sub_lines.join("\n")
    );
    assert!(
        pub_out.contains("Client dbg-pub received CONNACK (0)\n")
            && pub_out.contains("Client dbg-pub received PUBACK (Mid: 1, RC:0)\n"),
        "publisher output:\n{pub_out}"
    );

    let Some(mosquitto) = find_tool("mosquitto") else {
        skip_or_fail(test, "no mosquitto broker to compare with");
        return;
    };
    let reference = start_mosquitto(&mosquitto, ANONYMOUS);
    let (ref_sub, ref_pub) = debug_session(&c, &reference);
    assert_eq!(
        sub_lines, ref_sub,
        "mosquitto_sub -d output differs (left rmqtt, right mosquitto)"
    );
    assert_eq!(
        pub_out, ref_pub,
        "mosquitto_pub -d output differs (left rmqtt, right mosquitto)"
    );
}

/// Exit code, stdout and stderr of a subscribe and a publish attempt per protocol version.
fn refused_outputs(c: &Clients, broker: &Broker) -> Vec<(String, Option<i32>, String, String)> {
    let mut all = Vec::new();
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        let sub = run(
            &mut c.sub(broker.port, "anon-sub", &["-V", v, "-t", "x"]),
            None,
            STEP,
        );
        let publ = run(
            &mut c.publish_cmd(broker.port, "anon-pub", &["-V", v, "-t", "x", "-m", "m"]),
            None,
            STEP,
        );
        for (what, out) in [("sub", sub), ("pub", publ)] {
            assert!(
                out.status.is_some(),
                "mosquitto_{what} -V {v} hung: {out:?}"
            );
            all.push((format!("{what} {v}"), out.code(), out.stdout, out.stderr));
        }
    }
    all
}

#[test]
fn anonymous_client_is_refused_as_not_authorised_like_mosquitto() {
    let test = "anonymous_client_is_refused_as_not_authorised_like_mosquitto";
    let Some(c) = clients(test) else {
        return;
    };
    let broker = start_under_test("allow_anonymous false\n");
    let got = refused_outputs(&c, &broker);
    let Some((_, code, stdout, stderr)) = got.iter().find(|g| g.0 == "sub mqttv311") else {
        panic!("no mosquitto_sub -V mqttv311 run in {got:?}");
    };
    assert_ne!(*code, Some(0), "mosquitto_sub -V mqttv311 must fail");
    assert!(
        format!("{stdout}{stderr}")
            .lines()
            .any(|l| l == "Connection error: Connection Refused: not authorised."),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let Some(mosquitto) = find_tool("mosquitto") else {
        skip_or_fail(test, "no mosquitto broker to compare with");
        return;
    };
    let reference = start_mosquitto(&mosquitto, "allow_anonymous false\n");
    let want = refused_outputs(&c, &reference);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "left rmqtt, right mosquitto");
    }
}
