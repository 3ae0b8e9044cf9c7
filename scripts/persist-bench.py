#!/usr/bin/env python3
"""Persistence benchmark (issue 18): N QoS 1 messages from `mosquitto_pub -l` to a topic with
one offline persistent subscriber; bytes the broker wrote (/proc/PID/io wchar, which also
counts the PUBACKs it sent: 4 bytes a message), the time taken, then kill -9, the time the
restart takes to be serving, and how many messages the subscriber gets.

Usage: scripts/persist-bench.py [--bin target/release/rmqtt] [--counts 3000,12000,100000]
       [--variants journal,snapshot]

Variants: journal = `persistence true` alone; snapshot = the old durable setting
(`persistence_journal false`, `autosave_on_changes true`, `autosave_interval 1`);
mosquitto = Mosquitto with `autosave_on_changes true`, `autosave_interval 1`.
Not a test: prints a table, asserts nothing.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "journal": "",
    "journal-off": "persistence_journal false\n",
    "snapshot": "persistence_journal false\nautosave_on_changes true\nautosave_interval 1\n",
    "mosquitto": "autosave_on_changes true\nautosave_interval 1\n",
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, proc, limit=120.0):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if proc.poll() is not None:
            raise RuntimeError("broker exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return time.monotonic() - start
        except OSError:
            time.sleep(0.002)
    raise RuntimeError("broker not listening")


def wchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def received(port):
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(port), "-C", "1", "-W", "5",
         "-t", "$SYS/broker/publish/messages/received"],
        capture_output=True, check=False,
    ).stdout.strip()
    try:
        return int(out)
    except ValueError:
        return 0


def start(binary, conf, port, mosq):
    args = [binary, "-c", conf]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, wait_port(port, proc)


def run(binary, variant, n, payload_len):
    d = tempfile.mkdtemp(prefix="rmqtt-pbench-")
    port = free_port()
    conf = os.path.join(d, "broker.conf")
    mosq = variant == "mosquitto"
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n")
        f.write(f"persistence_location {d}/\n")
        f.write("max_queued_messages 0\nsys_interval 1\n")
        f.write(VARIANTS[variant])
    exe = (shutil.which("mosquitto") or "/usr/sbin/mosquitto") if mosq else binary
    proc, _ = start(exe, conf, port, mosq)
    sub = ["mosquitto_sub", "-p", str(port), "-c", "-i", "offline", "-q", "1", "-t", "bench/t"]
    subprocess.run(sub + ["-E"], check=True)
    lines = "".join(f"{i:0{payload_len}d}\n" for i in range(n)).encode()
    w0 = wchar(proc.pid)
    t0 = time.monotonic()
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", "bench/t", "-l"],
        input=lines,
        check=True,
    )
    # mosquitto_pub -l may leave its last messages in the socket: wait until the broker has
    # taken them all.
    # mosquitto_pub -l may also exit before its queue is out: count what arrived.
    last, got_in = -1, received(port)
    while got_in < n and got_in != last:
        time.sleep(1.5)
        last, got_in = got_in, received(port)
    took = time.monotonic() - t0
    w1 = wchar(proc.pid)
    files = sum(
        os.path.getsize(os.path.join(d, x)) for x in os.listdir(d) if not x.endswith(".conf")
    )
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    proc, _ = start(exe, conf, port, mosq)
    # The CONNACK comes from the loop, after the state is loaded: the first message marks
    # the end of recovery.
    got = subprocess.run(
        sub + ["-C", "1", "-W", "120"], capture_output=True, check=False
    ).stdout.count(b"\n")
    recovery = time.monotonic() - t0
    if n > 1:
        got += subprocess.run(
            sub + ["-C", str(n - 1), "-W", "120"], capture_output=True, check=False
        ).stdout.count(b"\n")
    proc.kill()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)
    return took, w1 - w0, files, recovery, got, got_in


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/rmqtt")
    ap.add_argument("--counts", default="3000,12000,100000")
    ap.add_argument("--variants", default="journal,snapshot")
    ap.add_argument("--payload", type=int, default=20)
    a = ap.parse_args()
    print(f"payload {a.payload} bytes + newline stripped; topic bench/t (7 bytes)")
    print("| variant | messages | time | wchar | bytes/message received | files after | restart to first message | delivered after kill -9 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in a.variants.split(","):
        for n in [int(x) for x in a.counts.split(",")]:
            took, w, files, rec, got, got_in = run(a.bin, v, n, a.payload)
            print(
                f"| {v} | {n:,} ({got_in:,} received) | {took:.2f} s | {w:,} | {w / max(got_in, 1):.1f} | {files:,} | {rec * 1000:.0f} ms | {got:,} |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
