"""A network per job (issue 10, part 2): set-up cost, user-mode network, loopback relay.

    python bench/network.py [--instances 8] [--repeat 5] [--mib 512]

Run as root. In one run, medians of ``--repeat``:

- ``setup_instance``/``close`` per instance, isolated (job link only) and not isolated (with
  slirp4netns, one relay and the credentials endpoint), for a job of ``--instances`` instances,
  and not isolated with ``wait=False`` (what stays on the critical path when slirp4netns's
  start overlaps the runtime's), beside one ``ip -batch`` process doing nothing (the floor of any design that runs ``ip``);
- the user-mode network's start (until it is ready, host loopback blocked as used) and the
  throughput of one connection through it to the host (through the tool's gateway mapping to
  the host's loopback, turned on for that one measurement): slirp4netns as used
  (``--enable-sandbox --enable-seccomp``), slirp4netns bare, and pasta (when installed) with
  every port forward off;
- the loopback relay (``trainforge.sandbox.relay``) beside a direct connection on the host's
  loopback and beside a socat pair (when installed: one socat listening inside the namespace
  to a unix socket, one outside from it to the port — the usual hand-made way), in MiB/s
  for one connection sending ``--mib`` MiB.

Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from trainforge.sandbox import network

MiB = 1 << 20
CLIENT = """
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = bytes(1 << 20)
s = socket.create_connection((host, port))
t = time.perf_counter()
sent = 0
while sent < total:
    s.sendall(buf)
    sent += len(buf)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(time.perf_counter() - t)
"""


def sink(host: str) -> int:
    """A server on ``host`` that reads each connection to its end, then answers one byte."""
    srv = socket.create_server((host, 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            buf = bytearray(1 << 20)
            while conn.recv_into(buf):
                pass
            conn.sendall(b"k")

    def accept() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(srv.getsockname()[1])


def send_rate(netns_path: str | None, host: str, port: int, mib: int) -> float:
    """MiB/s of one connection from ``netns_path`` (None: the host) to ``host:port``."""
    argv = [sys.executable, "-c", CLIENT, host, str(port), str(mib * MiB)]
    if netns_path:
        argv = ["nsenter", f"--net={netns_path}", *argv]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout
    return mib / float(out)


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def job_setup(base: str, n: int, isolated: bool, port: int, repeat: int, wait: bool = True) -> tuple[float, float]:
    """Median ms per instance of setup_instance and of close, for a job of ``n`` instances."""
    hosts = [f"algo-{i + 1}" for i in range(n)]
    setups, closes = [], []
    for r in range(repeat):
        t = time.perf_counter()
        nets = [network.setup_instance(base, f"bench-{r}", hosts, h, isolated=isolated,
                                       loopback_endpoints=[port], credentials=lambda: b"{}",
                                       credentials_token="t", wait=wait) for h in hosts]
        t1 = time.perf_counter()
        for net in nets:
            net.ready()
        for net in nets:
            net.close()
        setups.append((t1 - t) * 1000 / n)
        closes.append((time.perf_counter() - t1) * 1000 / n)
    return statistics.median(setups), statistics.median(closes)


def wait_ready(argv: list[str]) -> tuple[subprocess.Popen[bytes], float]:
    """Start a slirp4netns (``--ready-fd`` appended) and the ms until it says it is ready."""
    r, w = os.pipe()
    t = time.perf_counter()
    proc = subprocess.Popen([*argv[:-2], f"--ready-fd={w}", *argv[-2:]], pass_fds=(w,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return proc, (time.perf_counter() - t) * 1000


Starter = Callable[[str, bool], tuple[Callable[[], None], float]]


def slirp_variant(extra: list[str]) -> Starter:
    def start(path: str, to_host: bool) -> tuple[Callable[[], None], float]:
        block = [] if to_host else ["--disable-host-loopback"]
        proc, ms = wait_ready(["slirp4netns", "--configure", f"--mtu={network.MTU}", *block, *extra,
                               "--netns-type=path", path, "tap0"])

        def stop() -> None:
            proc.kill()
            proc.wait()
        return stop, ms
    return start


def pasta(path: str, to_host: bool) -> tuple[Callable[[], None], float]:
    pid_file = path + ".pasta"
    block = [] if to_host else ["--no-map-gw"]
    t = time.perf_counter()  # pasta forks into the background once the namespace is configured
    subprocess.run(["pasta", "-q", "--runas", "0", "-I", "tap0", "--config-net", *block, "-t", "none",
                    "-u", "none", "-T", "none", "-U", "none", "-P", pid_file, "--netns", path],
                   check=True, stderr=subprocess.DEVNULL)
    ms = (time.perf_counter() - t) * 1000
    pid = int(Path(pid_file).read_text())
    return lambda: os.kill(pid, 9), ms


def user_mode(base: str, port: int, mib: int, repeat: int) -> list[list[str]]:
    """Start (host loopback blocked, as used) and throughput to the host's loopback through the
    tool's gateway (that mapping on, for the measurement only: both tools reach the host that way)."""
    variants: list[tuple[str, Starter, str]] = [
        ("slirp4netns --enable-sandbox --enable-seccomp (used)",
         slirp_variant(["--enable-sandbox", "--enable-seccomp"]), "10.0.2.2"),
        ("slirp4netns, no sandbox/seccomp", slirp_variant([]), "10.0.2.2"),
    ]
    gateway = subprocess.run(["ip", "-4", "route", "show", "default"], check=False, capture_output=True, text=True).stdout.split()
    if shutil.which("pasta") and len(gateway) > 2:
        variants.append(("pasta, port forwarding off", pasta, gateway[2]))
    rows = []
    for name, start, target in variants:
        starts = []
        for r in range(repeat + 1):
            net = network.setup_instance(base, "bench-um", ["algo-1"], "algo-1", isolated=True,
                                         loopback_endpoints=[], credentials=None, credentials_token=None)
            try:
                stop, ms = start(net.netns_path, r == repeat)
                if r == repeat:
                    rate = send_rate(net.netns_path, target, port, mib)
                else:
                    starts.append(ms)
                stop()
            finally:
                net.close()
        rows.append([f"user-mode network: {name}", f"start {statistics.median(starts):.1f} ms",
                     f"{rate:.0f} MiB/s to host 127.0.0.1 via {target}"])
    return rows


def relays(base: str, port: int, mib: int) -> list[list[str]]:
    rows = [["direct, host 127.0.0.1", "", f"{send_rate(None, '127.0.0.1', port, mib):.0f} MiB/s"]]
    t = time.perf_counter()
    net = network.setup_instance(base, "bench-relay", ["algo-1"], "algo-1", isolated=False,
                                 loopback_endpoints=[port], credentials=None, credentials_token=None)
    ms = (time.perf_counter() - t) * 1000
    try:
        rows.append(["trainforge relay (inside -> host 127.0.0.1)", f"setup {ms:.0f} ms incl. slirp",
                     f"{send_rate(net.netns_path, '127.0.0.1', port, mib):.0f} MiB/s"])
    finally:
        net.close()
    if shutil.which("socat"):
        net = network.setup_instance(base, "bench-socat", ["algo-1"], "algo-1", isolated=True,
                                     loopback_endpoints=[], credentials=None, credentials_token=None)
        unix = os.path.join(base, "socat.sock")
        t = time.perf_counter()
        outside = subprocess.Popen(["socat", f"UNIX-LISTEN:{unix},fork", f"TCP:127.0.0.1:{port}"])
        while not os.path.exists(unix) and time.monotonic() < t + 30:
            time.sleep(0.001)
        inside = subprocess.Popen(["nsenter", f"--net={net.netns_path}", "socat",
                                   f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{unix}"])
        probe = ["nsenter", f"--net={net.netns_path}", sys.executable, "-c",
                 f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"]
        deadline = time.monotonic() + 30
        while subprocess.run(probe, check=False, capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("the socat pair did not start")
        ms = (time.perf_counter() - t) * 1000
        try:
            rows.append(["socat pair (TCP -> unix socket -> TCP)", f"start {ms:.0f} ms (2 processes)",
                         f"{send_rate(net.netns_path, '127.0.0.1', port, mib):.0f} MiB/s"])
        finally:
            for proc in (inside, outside):
                proc.kill()
                proc.wait()
            net.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="tf-bench-net-")
    try:
        rows = measure(base, args)
    finally:
        for job in os.listdir(base):
            if os.path.isdir(os.path.join(base, job)):
                network.cleanup_job(base, job)
        shutil.rmtree(base, ignore_errors=True)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"network benchmark: median of {args.repeat}, {os.cpu_count()} CPUs, {args.mib} MiB per transfer")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def measure(base: str, args: argparse.Namespace) -> list[list[str]]:
    port = sink("127.0.0.1")
    ip_ms = median_ms(lambda: subprocess.run(["ip", "-batch", "-"], input=b"", check=True), args.repeat)
    iso = job_setup(base, args.instances, True, port, args.repeat)
    full = job_setup(base, args.instances, False, port, args.repeat)
    later = job_setup(base, args.instances, False, port, args.repeat, wait=False)
    rows = [
        ["one `ip -batch` process (floor of an ip-based design)", f"{ip_ms:.1f} ms", ""],
        [f"setup_instance isolated (job of {args.instances})", f"{iso[0]:.1f} ms/instance", f"close {iso[1]:.1f} ms"],
        [f"setup_instance not isolated (job of {args.instances})", f"{full[0]:.1f} ms/instance",
         f"close {full[1]:.1f} ms"],
        ["  the same, wait=False (slirp4netns's start left to overlap)", f"{later[0]:.1f} ms/instance", ""],
    ]
    rows += user_mode(base, port, args.mib, args.repeat)
    return rows + relays(base, port, args.mib)


if __name__ == "__main__":
    main()
