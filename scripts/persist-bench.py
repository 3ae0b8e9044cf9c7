#!/usr/bin/env python3
"""Persistence benchmark (issue 18). Not a test: prints tables, asserts nothing.

Two parts, each bounded in time:

bytes: N QoS 1 messages (20-byte payloads, a window of 64 unacknowledged) from a raw-socket
  publisher to a topic with one offline persistent subscriber. Reported: the time, the bytes
  the broker wrote to files (/proc/PID/io wchar; socket sends are not counted there), per
  acknowledged message, the files left; then kill -9, the time from the restart to the
  subscriber's CONNACK (the state is loaded first), and how many messages it is then given.
  A run that takes longer than --time-limit stops publishing (and draining) and reports
  what it did in that time.
  Variants: journal = `persistence true` alone; journal-off = `persistence_journal false`
  (durable only every autosave_interval); snapshot = rmqtt's old durable setting
  (`persistence_journal false`, `autosave_on_changes true`, `autosave_interval 1`);
  mosquitto = Mosquitto with `autosave_on_changes true`, `autosave_interval 1`.

latency: 100,000 retained messages (120-byte payloads), a paced QoS 0 stream (one message
  a millisecond, sender and receiver in their own processes, CLOCK_MONOTONIC timestamps in
  the payload) and a trickle of retained updates (5 a second). p50/p99/max latency while
  idle, then while compactions run (started with SIGUSR1; a compaction runs while
  `<db>.journal.next` exists, watched every 5 ms: a tighter watch takes CPU from the broker and the clients, and only while compacting).

Usage: scripts/persist-bench.py [--bin target/release/rmqtt] [--parts bytes,latency]
       [--counts 3000,12000,100000] [--variants journal,journal-off,snapshot,mosquitto]
       [--time-limit 60] [--retained 100000] [--compactions 10] [--idle 2] [--runs 1]
"""

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "journal": "",
    "journal-off": "persistence_journal false\n",
    "snapshot": "persistence_journal false\nautosave_on_changes true\nautosave_interval 1\n",
    # Started as root, Mosquitto would drop to the user "mosquitto", which cannot write the
    # scratch directory.
    "mosquitto": "autosave_on_changes true\nautosave_interval 1\nuser root\n",
}

# --- a minimal MQTT 3.1.1 client over a raw socket -------------------------------------


def rlen(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mstr(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    return bytes([first]) + rlen(len(body)) + body


def connect_pkt(client_id, clean):
    flags = 0x02 if clean else 0
    return packet(0x10, mstr("MQTT") + bytes([4, flags]) + struct.pack("!H", 600) + mstr(client_id))


def publish_pkt(topic, payload, qos=0, pid=0, retain=False):
    body = mstr(topic) + (struct.pack("!H", pid) if qos else b"") + payload
    return packet(0x30 | (qos << 1) | int(retain), body)


def subscribe_pkt(pid, topic, qos):
    return packet(0x82, struct.pack("!H", pid) + mstr(topic) + bytes([qos]))


class Conn:
    def __init__(self, port, client_id, clean=True, timeout=120.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.s.sendall(connect_pkt(client_id, clean))
        kind, body = self.read()
        if kind != 0x20 or len(body) < 2 or body[1] != 0:
            raise RuntimeError(f"no CONNACK: {kind:#x} {bytes(body)!r}")

    def read(self):
        """One packet: (first byte, body)."""
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    n += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + n:
                            first, body = self.buf[0], bytes(self.buf[i:i + n])
                            del self.buf[:i + n]
                            return first, body
                        break
            data = self.s.recv(65536)
            if not data:
                raise EOFError
            self.buf += data

    def close(self):
        try:
            self.s.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.s.close()


def publish_qos1(port, topic, n, payload_len, deadline, window=64):
    """Publishes n QoS 1 messages; returns how many were acknowledged before the deadline."""
    c = Conn(port, "bench-pub")
    acked, sent, pid_of = 0, 0, 0
    while acked < n and time.monotonic() < deadline:
        while sent < n and sent - acked < window:
            pid_of = pid_of % 65535 + 1
            c.s.sendall(publish_pkt(topic, f"{sent:0{payload_len}d}".encode(), 1, pid_of))
            sent += 1
        kind, _ = c.read()
        if kind & 0xF0 == 0x40:
            acked += 1
    c.close()
    return acked


def drain(port, client_id, n, deadline):
    """Reconnects a persistent session; returns (seconds to CONNACK, messages received)."""
    t0 = time.monotonic()
    c = None
    while c is None:
        try:
            c = Conn(port, client_id, clean=False)
        except (OSError, RuntimeError, EOFError):
            if time.monotonic() > deadline:
                return None, 0
            time.sleep(0.002)
    connack = time.monotonic() - t0
    got = 0
    c.s.settimeout(5.0)
    try:
        while got < n and time.monotonic() < deadline:
            kind, body = c.read()
            if kind & 0xF0 != 0x30:
                continue
            got += 1
            qos = (kind >> 1) & 3
            tlen = struct.unpack("!H", body[:2])[0]
            pid = body[2 + tlen:4 + tlen]
            if qos == 1:
                c.s.sendall(b"\x40\x02" + pid)
            elif qos == 2:
                c.s.sendall(b"\x50\x02" + pid)
    except (socket.timeout, EOFError, OSError):
        pass
    c.close()
    return connack, got


# --- brokers --------------------------------------------------------------------------


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
            return
        except OSError:
            time.sleep(0.002)
    raise RuntimeError("broker not listening")


def wchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def write_conf(d, port, extra):
    conf = os.path.join(d, "broker.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n")
        f.write(f"persistence_location {d}/\n")
        f.write("max_queued_messages 0\n")
        f.write(extra)
    return conf


def start(exe, conf, port):
    proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def run_bytes(binary, variant, n, payload_len, limit, sessions=1):
    d = tempfile.mkdtemp(prefix="rmqtt-pbench-")
    port = free_port()
    conf = write_conf(d, port, VARIANTS[variant])
    mosq = variant == "mosquitto"
    exe = (shutil.which("mosquitto") or "/usr/sbin/mosquitto") if mosq else binary
    proc = start(exe, conf, port)
    for i in range(sessions):
        s = Conn(port, "offline" if i == 0 else f"offline{i}", clean=False)
        s.s.sendall(subscribe_pkt(1, "bench/t", 1))
        s.read()
        s.close()
    time.sleep(0.2)
    w0 = wchar(proc.pid)
    t0 = time.monotonic()
    acked = publish_qos1(port, "bench/t", n, payload_len, t0 + limit)
    took = time.monotonic() - t0
    w1 = wchar(proc.pid)
    files = sum(
        os.path.getsize(os.path.join(d, x)) for x in os.listdir(d) if not x.endswith(".conf")
    )
    proc.kill()
    proc.wait()
    t1 = time.monotonic()
    proc = subprocess.Popen([exe, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connack, got = drain(port, "offline", acked, t1 + limit)
    drained = time.monotonic() - t1
    proc.kill()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)
    return took, acked, w1 - w0, files, connack, got, drained


# --- latency during compaction ---------------------------------------------------------


def sender(port, stop_at, q):
    c = Conn(port, "lat-pub")
    n = 0
    nxt = time.monotonic()
    retained_every = 200  # one retained update per 200 ms
    while True:
        now = time.monotonic()
        if now >= stop_at.value:
            break
        if now < nxt:
            time.sleep(max(0.0, nxt - now - 0.0002))
            while time.monotonic() < nxt:
                pass
        c.s.sendall(publish_pkt("lat/t", struct.pack("!d", time.monotonic())))
        n += 1
        if n % retained_every == 0:
            c.s.sendall(publish_pkt(f"ret/{n % 100000:06d}", b"u" * 120, 0, 0, True))
        nxt += 0.001
    c.close()
    q.put(n)


def receiver(port, ready, q):
    c = Conn(port, "lat-sub")
    c.s.sendall(subscribe_pkt(1, "lat/t", 0))
    c.read()
    ready.set()
    out = []
    c.s.settimeout(3.0)
    try:
        while True:
            kind, body = c.read()
            t = time.monotonic()
            if kind & 0xF0 != 0x30:
                continue
            tlen = struct.unpack("!H", body[:2])[0]
            sent = struct.unpack("!d", body[2 + tlen:10 + tlen])[0]
            out.append((sent, t - sent))
    except (socket.timeout, EOFError, OSError):
        pass
    q.put(out)


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def run_latency(binary, retained, compactions, idle_secs):
    d = tempfile.mkdtemp(prefix="rmqtt-lbench-")
    port = free_port()
    # The resource budget's defaults (10,000 retained topics, 4 MB) are for a router.
    conf = write_conf(d, port, "max_retained_messages 0\nmax_retained_bytes 0\n")
    proc = start(binary, conf, port)
    nxt = os.path.join(d, "rmqtt.db.journal.next")
    c = Conn(port, "loader")
    t0 = time.monotonic()
    batch = bytearray()
    for i in range(retained):
        batch += publish_pkt(f"ret/{i:06d}", f"{i:0120d}".encode(), 0, 0, True)
        if len(batch) > 65536:
            c.s.sendall(batch)
            batch = bytearray()
    c.s.sendall(batch)
    c.close()
    # Wait for the store to hold them all and for the compactions loading caused to end.
    while True:
        try:
            got = Conn(port, "probe", timeout=5.0)
            got.s.sendall(subscribe_pkt(1, "ret/099999" if retained >= 100000 else f"ret/{retained - 1:06d}", 0))
            kinds = [got.read()[0] & 0xF0 for _ in range(2)]
            got.close()
            if 0x30 in kinds and not os.path.exists(nxt):
                break
        except (OSError, EOFError, socket.timeout):
            pass
        if time.monotonic() - t0 > 300:
            raise RuntimeError("retained messages not loaded")
        time.sleep(0.5)
    loaded = time.monotonic() - t0
    snap = os.path.getsize(os.path.join(d, "rmqtt.db")) if os.path.exists(os.path.join(d, "rmqtt.db")) else 0
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ready = ctx.Event()
    stop_at = ctx.Value("d", time.monotonic() + 3600)
    rx = ctx.Process(target=receiver, args=(port, ready, q))
    rx.start()
    ready.wait(30)
    tx = ctx.Process(target=sender, args=(port, stop_at, q))
    tx.start()
    time.sleep(1.0)  # warm up
    # Idle windows and compactions alternate, so both see the same machine (other load on
    # it comes and goes).
    idles, windows = [], []
    for _ in range(compactions):
        idle_from = time.monotonic()
        time.sleep(idle_secs)
        idles.append((idle_from, time.monotonic()))
        os.kill(proc.pid, signal.SIGUSR1)
        t = time.monotonic()
        start_w, grown, size = None, None, -1
        while time.monotonic() - t < 60:
            if os.path.exists(nxt):
                now = time.monotonic()
                if start_w is None:
                    start_w = grown = now
                tmps = [x for x in os.listdir(d) if x.startswith("rmqtt.db.") and x.endswith(".tmp")]
                try:
                    sz = sum(os.path.getsize(os.path.join(d, x)) for x in tmps)
                except OSError:
                    sz = size
                if sz > size:
                    size, grown = sz, now
            elif start_w is not None:
                windows.append((start_w, grown, time.monotonic()))
                break
            time.sleep(0.005)
        # The replaced files are freed in slices after the snapshot is in place.
        time.sleep(0.3)
    stop_at.value = time.monotonic()
    tx.join(30)
    res = [q.get(timeout=30) for _ in range(2)]
    samples = next(r for r in res if isinstance(r, list))
    rx.join(30)
    proc.kill()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)
    idle = [lat for s, lat in samples if any(a <= s < b for a, b in idles)]
    during = [lat for s, lat in samples if any(a <= s < c for a, _, c in windows)]
    writing = [lat for s, lat in samples if any(a <= s < b + 0.001 for a, b, _ in windows)]
    lens = [c - a for a, _, c in windows]
    wlens = [b - a for a, b, _ in windows]
    return loaded, snap, idle, during, writing, lens, wlens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/rmqtt")
    ap.add_argument("--parts", default="bytes,latency")
    ap.add_argument("--counts", default="3000,12000,100000")
    ap.add_argument("--variants", default="journal,journal-off,snapshot,mosquitto")
    ap.add_argument("--payload", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=1,
                    help="offline persistent subscribers each message is queued for (bytes part)")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--retained", type=int, default=100000)
    ap.add_argument("--compactions", type=int, default=10)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    parts = a.parts.split(",")
    if "bytes" in parts:
        subs = "one offline persistent subscriber" if a.sessions == 1 else f"{a.sessions} offline persistent subscribers (the first one drained)"
        print(f"QoS 1, payload {a.payload} bytes, topic bench/t, {subs}; "
              f"each run bounded to {a.time_limit:.0f} s of publishing and {a.time_limit:.0f} s of draining")
        print("| variant | messages acknowledged | time | messages/s | wchar | bytes/message | files after | restart to CONNACK | delivered after kill -9 (drain time) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for v in a.variants.split(","):
            for n in [int(x) for x in a.counts.split(",")]:
                took, acked, w, files, connack, got, drained = run_bytes(
                    a.bin, v, n, a.payload, a.time_limit, a.sessions)
                ck = f"{connack * 1000:.0f} ms" if connack is not None else "none"
                print(
                    f"| {v} | {acked:,} of {n:,} | {took:.2f} s | {acked / max(took, 1e-9):,.0f} | {w:,} | "
                    f"{w / max(acked, 1):,.1f} | {files:,} | {ck} | {got:,} ({drained:.1f} s) |",
                    flush=True,
                )
    if "latency" in parts:
        ratios = []
        for run in range(a.runs):
            loaded, snap, idle, during, writing, lens, wlens = run_latency(
                a.bin, a.retained, a.compactions, a.idle)
            print()
            print(f"run {run + 1}: {a.retained:,} retained messages (120-byte payloads) loaded in {loaded:.1f} s; "
                  f"snapshot {snap:,} bytes; {len(lens)} compactions, "
                  f"{pct(lens, 0.5) * 1000:.0f} ms median from start to the snapshot in place "
                  f"(writing its slices: {pct(wlens, 0.5) * 1000:.0f} ms median, "
                  f"{max(wlens, default=0) * 1000:.0f} ms longest)")
            print("| paced QoS 0, 1 kHz | samples | p50 | p99 | max | p99 / idle p99 |")
            print("|---|---:|---:|---:|---:|---:|")
            base = pct(idle, 0.99)
            r = []
            for name, xs in (("idle", idle), ("during compaction (start to snapshot in place)", during),
                             ("while its slices are written", writing)):
                r.append(pct(xs, 0.99) / base)
                print(f"| {name} | {len(xs):,} | {pct(xs, 0.5) * 1e6:.0f} µs | {pct(xs, 0.99) * 1e6:.0f} µs | "
                      f"{max(xs, default=0) * 1e6:.0f} µs | {r[-1]:.2f}× |", flush=True)
            ratios.append((base, r[1], r[2]))
        if a.runs > 1:
            print()
            print(f"{a.runs} runs | median | range")
            print("|---|---:|---:|")
            for i, name in ((0, "idle p99"), (1, "p99 during compaction / idle p99"),
                            (2, "p99 while slices are written / idle p99")):
                xs = sorted(x[i] for x in ratios)
                med = xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
                if i == 0:
                    print(f"| {name} | {med * 1e6:.0f} µs | {xs[0] * 1e6:.0f}–{xs[-1] * 1e6:.0f} µs |")
                else:
                    print(f"| {name} | {med:.2f}× | {xs[0]:.2f}–{xs[-1]:.2f}× |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
