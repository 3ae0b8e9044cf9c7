//! Interoperability with the paho-mqtt 2.x Python client: `tests/paho_client.py` publishes and
//! subscribes at QoS 0, 1 and 2 over MQTT 3.1, 3.1.1 and 5.0 against rmqtt and checks that every
//! message arrives exactly once, in order, at the right QoS. This file starts the broker, runs
//! the script and fails unless it reports success.
//!
//! Without python3 or paho-mqtt 2.x the test is skipped unless `RMQTT_REQUIRE_INTEROP` is set.

mod common_interop;

use common_interop::{run, skip_or_fail, start_under_test, tools_or_skip};
use std::process::Command;
use std::time::Duration;

/// The script runs 15 cases, each bounded by its own 30 s waits; this only catches a hang.
const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

#[test]
fn paho_mqtt_clients_exchange_messages_at_every_qos_and_version() {
    let test = "paho_mqtt_clients_exchange_messages_at_every_qos_and_version";
    let Some(tools) = tools_or_skip(test, &["python3"]) else {
        return;
    };
    let python = &tools[0];
    let probe = run(
        Command::new(python).args([
            "-c",
            "import paho.mqtt, sys\n\
             from paho.mqtt.enums import CallbackAPIVersion\n\
             sys.exit(0 if paho.mqtt.__version__.split('.')[0] == '2' else 1)",
        ]),
        None,
        Duration::from_secs(60),
    );
    if !probe.status.is_some_and(|s| s.success()) {
        skip_or_fail(test, "python3 cannot import paho-mqtt 2.x");
        return;
    }

    let broker = start_under_test("allow_anonymous true\n");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
    let out = run(
        Command::new(python).args([script, "--port", &broker.port.to_string()]),
        None,
        SCRIPT_LIMIT,
    );
    assert!(
        out.status.is_some_and(|s| s.success()),
        "paho_client.py failed (status {:?})\nsummary:\n{}\nstderr:\n{}\nbroker log:\n{}",
        out.status,
        out.stdout,
        out.stderr,
        broker.log()
    );
    assert!(
        out.stdout.contains("\"ok\": true"),
        "no success in the summary:\n{}",
        out.stdout
    );
}
