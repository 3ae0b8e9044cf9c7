#!/usr/bin/env python3
"""MQTT 5.0 semantics of a broker as seen by the paho-mqtt 2.x Python client.

Cases: user properties / content type / payload format forwarded; a request/response round
trip through Response Topic and Correlation Data; a session kept by Session Expiry Interval
across a clean_start=False reconnect (with the message queued meanwhile); a shared
subscription splitting messages between two members exactly once.

Prints a JSON summary on stdout. Exit status: 0 all good, 1 a mismatch, 2 setup problem
(paho-mqtt 2.x missing, broker unreachable).
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
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover - depends on the machine
    print(json.dumps({"ok": False, "error": f"paho-mqtt 2.x not importable: {e}"}))
    sys.exit(2)

# Bound for every wait; reaching it means something hung, not that it was slow.
TIMEOUT = 20.0


class Setup(Exception):
    pass


class Peer:
    """One paho client with its events collected under a lock."""

    def __init__(self, port, client_id, clean_start=True, session_expiry=None):
        self.port = port
        self.cond = threading.Condition()
        self.messages = []
        self.connacks = []
        self.subacks = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        try:
            self.client.connect(
                "127.0.0.1", port, keepalive=30, clean_start=clean_start, properties=props
            )
        except OSError as e:
            raise Setup(f"cannot connect: {e}")
        self.client.loop_start()
        self.wait(lambda: self.connacks, "CONNACK")
        rc = self.connacks[0][1]
        if rc.is_failure:
            raise AssertionError(f"{client_id}: CONNACK {rc}")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connacks.append((flags.session_present, reason_code))
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.subacks.append(reason_codes)
            self.cond.notify_all()

    def wait(self, pred, what):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.cond.wait(left)

    def subscribe(self, topic, qos=1):
        n = len(self.subacks)
        self.client.subscribe(topic, qos)
        self.wait(lambda: len(self.subacks) > n, f"SUBACK for {topic}")
        codes = self.subacks[n]
        if any(c.is_failure for c in codes):
            raise AssertionError(f"SUBACK {codes} for {topic}")

    def publish(self, topic, payload, qos=1, props=None):
        info = self.client.publish(topic, payload, qos=qos, properties=props)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            raise AssertionError(f"publish to {topic} not acknowledged")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def publish_props(**kw):
    p = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def case_user_properties(port):
    sub = Peer(port, "paho5-up-sub")
    sub.subscribe("paho5/up/#")
    pub = Peer(port, "paho5-up-pub")
    props = publish_props(
        UserProperty=[("a", "1"), ("b", "2"), ("a", "3")],
        ContentType="text/plain",
        PayloadFormatIndicator=1,
    )
    pub.publish("paho5/up/x", b"hi", props=props)
    sub.wait(lambda: sub.messages, "message with user properties")
    m = sub.messages[0]
    got = m.properties
    assert m.payload == b"hi", m.payload
    assert got.UserProperty == [("a", "1"), ("b", "2"), ("a", "3")], got.UserProperty
    assert got.ContentType == "text/plain", got
    assert got.PayloadFormatIndicator == 1, got
    sub.close()
    pub.close()


def case_request_response(port):
    responder = Peer(port, "paho5-responder")
    responder.subscribe("paho5/req")
    requester = Peer(port, "paho5-requester")
    requester.subscribe("paho5/resp/requester")
    for n in range(3):
        corr = f"corr-{n}".encode() + b"\x00\xff"
        requester.publish(
            "paho5/req",
            f"question {n}".encode(),
            props=publish_props(ResponseTopic="paho5/resp/requester", CorrelationData=corr),
        )
        responder.wait(lambda: len(responder.messages) > n, "request")
        req = responder.messages[n]
        assert req.properties.ResponseTopic == "paho5/resp/requester", req.properties
        assert req.properties.CorrelationData == corr, req.properties
        responder.publish(
            req.properties.ResponseTopic,
            b"answer " + req.payload,
            props=publish_props(CorrelationData=req.properties.CorrelationData),
        )
        requester.wait(lambda: len(requester.messages) > n, "response")
        resp = requester.messages[n]
        assert resp.properties.CorrelationData == corr, resp.properties
        assert resp.payload == f"answer question {n}".encode(), resp.payload
    responder.close()
    requester.close()


def case_session_expiry(port):
    s = Peer(port, "paho5-sess", clean_start=True, session_expiry=300)
    assert s.connacks[0][0] is False, "fresh session reported present"
    s.subscribe("paho5/sess/#")
    s.close()
    pub = Peer(port, "paho5-sess-pub")
    pub.publish("paho5/sess/a", b"queued", qos=1)
    pub.close()
    s = Peer(port, "paho5-sess", clean_start=False, session_expiry=300)
    assert s.connacks[0][0] is True, "session not present after reconnect"
    s.wait(lambda: s.messages, "queued message")
    assert s.messages[0].payload == b"queued", s.messages[0].payload
    s.close()
    # Session Expiry 0 (the default): nothing survives.
    t = Peer(port, "paho5-nosess", clean_start=True)
    t.subscribe("paho5/nosess/#")
    t.close()
    t = Peer(port, "paho5-nosess", clean_start=False)
    assert t.connacks[0][0] is False, "expiry 0 session reported present"
    t.close()


def case_shared(port):
    members = [Peer(port, f"paho5-share-{i}") for i in range(2)]
    for m in members:
        m.subscribe("$share/pg/paho5/share/#")
    pub = Peer(port, "paho5-share-pub")
    count = 20
    for i in range(count):
        pub.publish("paho5/share/t", str(i).encode(), qos=1)
    deadline = time.monotonic() + TIMEOUT
    while sum(len(m.messages) for m in members) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    got = sorted(int(msg.payload) for m in members for msg in m.messages)
    assert got == list(range(count)), f"shared deliveries {got}"
    per = [len(m.messages) for m in members]
    assert per == [count // 2, count // 2], f"round robin split {per}"
    for m in members:
        m.close()
    pub.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    if not paho.mqtt.__version__.startswith("2."):
        print(json.dumps({"ok": False, "error": f"paho-mqtt {paho.mqtt.__version__} is not 2.x"}))
        return 2
    results = {}
    failed = False
    for name, case in [
        ("user_properties", case_user_properties),
        ("request_response", case_request_response),
        ("session_expiry", case_session_expiry),
        ("shared_subscription", case_shared),
    ]:
        try:
            case(args.port)
            results[name] = "ok"
        except Setup as e:
            print(json.dumps({"ok": False, "error": str(e)}))
            return 2
        except AssertionError as e:
            results[name] = f"FAILED: {e}"
            failed = True
    print(json.dumps({"ok": not failed, "cases": results}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
