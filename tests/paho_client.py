#!/usr/bin/env python3
"""Interoperability check of an MQTT broker with the paho-mqtt 2.x Python client.

For MQTT 3.1, 3.1.1 and 5.0, a subscriber and a publisher connect; the publisher sends
--count messages at QoS 0, 1 and 2 and the subscriber must receive each exactly once, in
order, with the delivered QoS equal to min(publish QoS, subscription QoS) and the retain flag
clear. MQTT 5 also checks that user properties and the content type are forwarded.

Prints a JSON summary on stdout. Exit status: 0 all good, 1 a mismatch, 2 setup problem
(paho-mqtt missing or too old, broker unreachable).
"""

import argparse
import json
import sys
import threading
import time

try:
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.properties import Properties
    from paho.mqtt.packettypes import PacketTypes
except ImportError as e:  # pragma: no cover - depends on the machine
    print(json.dumps({"ok": False, "error": f"paho-mqtt 2.x not importable: {e}"}))
    sys.exit(2)

# Bound for every wait; reaching it means something hung, not that it was slow.
TIMEOUT = 30.0

PROTOCOLS = {
    "MQTTv31": mqtt.MQTTv31,
    "MQTTv311": mqtt.MQTTv311,
    "MQTTv5": mqtt.MQTTv5,
}


class SetupError(Exception):
    pass


class Peer:
    """One paho client running its network loop in a background thread."""

    def __init__(self, name, protocol, host, port):
        self.name = name
        self.protocol = protocol
        self.connected = threading.Event()
        self.connect_rc = None
        self.subscribed = threading.Event()
        self.granted = None
        self.lock = threading.Lock()
        self.received = []
        self.arrived = threading.Condition(self.lock)
        kwargs = {"client_id": name, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = True
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        try:
            if protocol == mqtt.MQTTv5:
                self.client.connect(host, port, keepalive=60, clean_start=True)
            else:
                self.client.connect(host, port, keepalive=60)
        except OSError as e:
            raise SetupError(f"{name}: connect to {host}:{port} failed: {e}") from e
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            self.close()
            raise SetupError(f"{name}: no CONNACK within {TIMEOUT}s")
        if self.connect_rc.is_failure:
            self.close()
            raise SetupError(f"{name}: connection refused: {self.connect_rc}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        self.granted = [rc.value for rc in reason_code_list]
        self.subscribed.set()

    def _on_message(self, client, userdata, msg):
        props = {}
        if msg.properties is not None:
            props["user"] = list(getattr(msg.properties, "UserProperty", []) or [])
            props["content_type"] = getattr(msg.properties, "ContentType", None)
        with self.arrived:
            self.received.append((msg.topic, bytes(msg.payload), msg.qos, msg.retain, props))
            self.arrived.notify_all()

    def subscribe(self, topic, qos):
        self.subscribed.clear()
        rc, _ = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise SetupError(f"{self.name}: subscribe returned {rc}")
        if not self.subscribed.wait(TIMEOUT):
            raise SetupError(f"{self.name}: no SUBACK within {TIMEOUT}s")
        return self.granted

    def wait_for(self, count):
        """Waits until `count` messages have arrived (or the timeout); returns all so far."""
        deadline = time.monotonic() + TIMEOUT
        with self.arrived:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.arrived.wait(left)
            return list(self.received)

    def settle(self):
        """Gives the broker a round trip to deliver anything extra (duplicates) that is in flight.

        A QoS 1 ping on a private topic is acknowledged only after the broker has handled every
        earlier packet on this connection, so late duplicates would have been queued by then.
        """
        info = self.client.publish(f"settle/{self.name}", b"", qos=1)
        info.wait_for_publish(TIMEOUT)

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def run_case(host, port, proto_name, pub_qos, sub_qos, count):
    """One subscriber, one publisher, `count` messages; returns a result dict."""
    protocol = PROTOCOLS[proto_name]
    short = {"MQTTv31": "31", "MQTTv311": "311", "MQTTv5": "5"}[proto_name]
    # MQTT 3.1 limits client ids to 23 characters.
    tag = f"p{short}q{pub_qos}s{sub_qos}"
    topic = f"paho/{proto_name}/{pub_qos}/{sub_qos}"
    expected_qos = min(pub_qos, sub_qos)
    errors = []
    result = {
        "protocol": proto_name,
        "publish_qos": pub_qos,
        "subscribe_qos": sub_qos,
        "sent": count,
    }
    sub = pub = None
    try:
        sub = Peer(f"{tag}-sub", protocol, host, port)
        pub = Peer(f"{tag}-pub", protocol, host, port)
        granted = sub.subscribe(topic, sub_qos)
        if granted != [sub_qos]:
            errors.append(f"SUBACK granted {granted}, asked for {sub_qos}")

        props = None
        if protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("origin", "paho"), ("case", tag)]
            props.ContentType = "text/plain"
        infos = []
        for i in range(count):
            infos.append(pub.client.publish(topic, f"{i}".encode(), qos=pub_qos, properties=props))
        for i, info in enumerate(infos):
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                errors.append(f"publish {i} returned {info.rc}")
                break
            if pub_qos > 0:
                info.wait_for_publish(TIMEOUT)
                if not info.is_published():
                    errors.append(f"publish {i} not acknowledged within {TIMEOUT}s")
                    break

        received = sub.wait_for(count)
        sub.settle()
        received = sub.wait_for(count)
        payloads = [int(p) for (_, p, _, _, _) in received if p.isdigit()]
        result["received"] = len(received)
        if payloads != list(range(count)):
            dups = len(payloads) - len(set(payloads))
            missing = sorted(set(range(count)) - set(payloads))
            errors.append(
                f"payloads not exactly 0..{count - 1} in order: got {len(payloads)}, "
                f"{dups} duplicates, missing {missing[:10]}, first {payloads[:10]}"
            )
        if len(received) != len(payloads):
            errors.append(f"{len(received) - len(payloads)} messages with unexpected payloads")
        for (t, p, q, r, mprops) in received:
            if t != topic:
                errors.append(f"message {p!r} on topic {t!r}, expected {topic!r}")
                break
            if q != expected_qos:
                errors.append(f"message {p!r} delivered at QoS {q}, expected {expected_qos}")
                break
            if r:
                errors.append(f"message {p!r} has the retain flag set")
                break
            if protocol == mqtt.MQTTv5:
                if mprops.get("user") != [("origin", "paho"), ("case", tag)]:
                    errors.append(f"message {p!r} user properties {mprops.get('user')}")
                    break
                if mprops.get("content_type") != "text/plain":
                    errors.append(f"message {p!r} content type {mprops.get('content_type')!r}")
                    break
    except SetupError as e:
        errors.append(f"setup: {e}")
    finally:
        for peer in (pub, sub):
            if peer is not None:
                peer.close()
    result["ok"] = not errors
    result["errors"] = errors
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument(
        "--protocols",
        default="MQTTv31,MQTTv311,MQTTv5",
        help="comma-separated subset of MQTTv31, MQTTv311, MQTTv5",
    )
    args = parser.parse_args()

    version = paho.mqtt.__version__
    if version.split(".")[0] != "2":
        print(json.dumps({"ok": False, "error": f"paho-mqtt {version} is not 2.x"}))
        return 2

    cases = []
    for proto in args.protocols.split(","):
        if proto not in PROTOCOLS:
            parser.error(f"unknown protocol {proto}")
        for qos in (0, 1, 2):
            cases.append((proto, qos, qos))
        # Delivered QoS is the minimum of publish and subscription QoS, both ways round.
        cases.append((proto, 2, 1))
        cases.append((proto, 1, 0))

    results = [run_case(args.host, args.port, p, pq, sq, args.count) for (p, pq, sq) in cases]
    setup_failed = all(
        r["errors"] and all(e.startswith("setup:") for e in r["errors"]) for r in results
    )
    summary = {
        "paho_version": version,
        "host": args.host,
        "port": args.port,
        "count": args.count,
        "ok": all(r["ok"] for r in results),
        "results": results,
    }
    print(json.dumps(summary, indent=1))
    if summary["ok"]:
        return 0
    return 2 if setup_failed else 1


if __name__ == "__main__":
    sys.exit(main())
