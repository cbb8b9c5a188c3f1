"""A network per job: each instance its own network namespace on a link private to its job.

Interface (the agent's side; Linux, as root in the host's namespaces)::

    net = setup_instance(base_dir, job_key, hosts, host, isolated=..., loopback_endpoints=[9000],
                         credentials=fetch, credentials_token=token)
    net.netns_path   # the instance's namespace, bind-mounted on a file: hand it to the OCI runtime
    net.addresses    # every host of the job -> its address (the instance's /etc/hosts)
    net.nameserver   # the DNS address for the instance's /etc/resolv.conf, or None (isolated)
    net.ready()      # only with setup_instance(..., wait=False): waits for the user-mode network
    net.close()      # idempotent; the last instance of the job also removes the job's link
    cleanup_job(base_dir, job_key)   # idempotent: whatever an agent killed with -9 left behind

Layout: per job, ``base_dir/<job_key>/link`` is a network namespace made here holding a bridge;
per instance, ``base_dir/<job_key>/<host>.net`` is its namespace, with ``lo`` up and ``eth0``, a
veth whose peer is a port of that bridge, addressed ``SUBNET`` + 11 + the host's index
(algo-1 = 10.200.0.11). Each job has its own link namespace, so every job uses the same addresses
and ports without meeting another, and nothing is added to the host's own namespace. The first
instance of a job makes the link under an flock on ``base_dir/<job_key>/lock``; instances register
by their ``.net`` file, and the last to close removes the link and the directory. A job of one
instance has no link: its ``eth0``'s peer stays in its own namespace, down (a namespace less to
make, ~10 ms).

Not isolated, the instance also gets: a user-mode network to the outside (slirp4netns on a
``tap0``, 10.0.2.100, default route and DNS 10.0.2.3; ``--disable-host-loopback`` so the host's
loopback is not reachable through it; it ends when the agent does, through ``--exit-fd``; its pid
in ``<host>.slirp`` for :func:`cleanup_job`); each port of ``loopback_endpoints`` relayed from
``127.0.0.1:PORT`` inside to the host's ``127.0.0.1:PORT`` (:func:`.relay.relay`), no other port
of the host's loopback; a prohibit route for each of the host's own other addresses (a server
listening on 0.0.0.0 would be reachable through the user-mode network otherwise); and the container-credentials endpoint at ``169.254.170.2:80``
(:func:`.relay.credentials_endpoint`). Isolated: the job link only.

Namespaces are made and configured from the agent's own threads (:mod:`.netns`, :mod:`.netlink`):
no process is started for an isolated instance, one (slirp4netns) otherwise.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from trainforge.sandbox import netns
from trainforge.sandbox.netlink import Netlink
from trainforge.sandbox.relay import CREDENTIALS_ADDRESS, Listener, credentials_endpoint, relay

SUBNET = ipaddress.IPv4Network("10.200.0.0/16")
FIRST_HOST = 11
MTU = 65520
BRIDGE = "br0"
INSTANCE_LINK = "eth0"
SLIRP_NAMESERVER = "10.0.2.3"
SLIRP_READY_S = 10.0
STOP_S = 2.0
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class NetworkError(RuntimeError):
    """The instance's network could not be set up."""


def address(index: int) -> str:
    """The address of the job's ``index``-th host (0-based) on its link."""
    return socket.inet_ntoa((int(SUBNET.network_address) + FIRST_HOST + index).to_bytes(4, "big"))


def _checked_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain file name")
    return value


@contextmanager
def _job_lock(job_dir: str) -> Iterator[None]:
    """Hold the job's flock, on the lock file that is still in place (a closer may remove it)."""
    lock = os.path.join(job_dir, "lock")
    while True:
        os.makedirs(job_dir, mode=0o700, exist_ok=True)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            continue  # the directory went away between the two calls
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _no_ipv6_on_new_links() -> None:
    """In the calling thread's (new) namespace: links made from now on get no IPv6 (the job's
    addresses are IPv4; a veth is made 3-4 times faster without it). ``lo`` keeps ``::1``."""
    with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
        f.write("1")


def _host_addresses() -> list[str]:
    """The host's own IPv4 addresses but loopback and the job subnet's (read in the host's namespace):
    through the user-mode network they would reach the host's services listening on them."""
    found, last = [], ""
    with open("/proc/thread-self/net/fib_trie") as f:
        for line in f:
            text = line.strip()
            if text.startswith("|--"):
                last = text[3:].strip()
            elif (text == "/32 host LOCAL" and last not in found and not last.startswith("127.")
                  and ipaddress.IPv4Address(last) not in SUBNET):
                found.append(last)
    return found


def _make_link(path: str) -> None:
    netns.unbind(path)  # a plain file left by a crash between create and mount
    with netns.inside(None):
        _no_ipv6_on_new_links()
        netns.bind_here(path)
        nl = Netlink()
        try:
            nl.set_up("lo")
            nl.add_bridge(BRIDGE, MTU)
        finally:
            nl.close()


def _remove_job_if_unused(job_dir: str) -> None:
    """Under the job's lock: no instance left, so the link, the lock and the directory go."""
    if any(name.endswith(".net") for name in os.listdir(job_dir)):
        return
    netns.unbind(os.path.join(job_dir, "link"))
    for name in os.listdir(job_dir):
        os.unlink(os.path.join(job_dir, name))
    os.rmdir(job_dir)


def _start_slirp(netns_path: str, pid_file: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """slirp4netns on ``netns_path``; returns it, the fd whose closing ends it and the fd it writes
    to once the namespace is configured (:meth:`InstanceNetwork.ready` waits on that)."""
    exit_r, exit_w = os.pipe()
    ready_r, ready_w = os.pipe()
    try:
        with open(pid_file + ".log", "wb") as err:
            proc = subprocess.Popen(
                ["slirp4netns", "--configure", f"--mtu={MTU}", "--disable-host-loopback",
                 "--enable-sandbox", "--enable-seccomp", f"--exit-fd={exit_r}", f"--ready-fd={ready_w}",
                 "--netns-type=path", netns_path, "tap0"],
                pass_fds=(exit_r, ready_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
        with open(pid_file, "w") as f:
            f.write(f"{proc.pid}\n")
    except BaseException:
        for fd in (exit_w, ready_r):
            os.close(fd)
        raise
    finally:
        os.close(exit_r)
        os.close(ready_w)
    return proc, exit_w, ready_r


def _end_slirp(pid_file: str) -> None:
    """End a slirp4netns left by a dead agent (only if the pid is still that slirp4netns)."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, ValueError):
        return
    if not argv[0].endswith(b"slirp4netns") or os.fsencode(pid_file[:-len(".slirp")] + ".net") not in argv:
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_S
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.005)


def _remove_leftover(netns_path: str) -> None:
    """This instance's namespace left by a dead agent: its address leaves the link now, not when
    the kernel reaps the namespace (it would still answer ARP for it), then the mount goes."""
    if netns.is_bound(netns_path):
        with netns.inside(netns_path):
            nl = Netlink()
            try:
                nl.delete(INSTANCE_LINK)
            except OSError:
                pass
            finally:
                nl.close()
    netns.unbind(netns_path)


class InstanceNetwork:
    """One instance's network namespace and what the agent runs for it; :meth:`close` undoes it."""

    def __init__(self, job_dir: str, host: str, addresses: dict[str, str]) -> None:
        self.job_dir = job_dir
        self.netns_path = os.path.join(job_dir, host + ".net")
        self.addresses = addresses
        self.nameserver: str | None = None
        self.listeners: list[Listener] = []
        self.netlink: Netlink | None = None
        self.slirp: subprocess.Popen[bytes] | None = None
        self.slirp_exit_fd = -1
        self.slirp_ready_fd = -1
        self.closed = False

    def ready(self) -> None:
        """Wait (bounded) until the user-mode network is configured; at once when it is, or isolated.
        Raises :class:`NetworkError` (with slirp4netns's words) if it does not come up."""
        if self.slirp_ready_fd < 0:
            return
        fd, self.slirp_ready_fd = self.slirp_ready_fd, -1
        try:
            if select.select([fd], [], [], SLIRP_READY_S)[0] and os.read(fd, 1):
                return
        finally:
            os.close(fd)
        log = self.netns_path[:-len(".net")] + ".slirp.log"
        with open(log, errors="replace") as f:
            raise NetworkError(f"slirp4netns did not start: {f.read().strip()[-500:]}")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for listener in self.listeners:
            listener.close()
        if self.slirp_ready_fd >= 0:
            os.close(self.slirp_ready_fd)
            self.slirp_ready_fd = -1
        if self.slirp is not None:
            # it keeps no state; its exit (the kernel removing its tap) takes tens of ms: not waited here
            self.slirp.kill()
            threading.Thread(target=self.slirp.wait, name="slirp-reaper", daemon=True).start()
            os.close(self.slirp_exit_fd)
        if self.netlink is not None:
            # the veth pair goes with the namespace, when the kernel reaps it: deleting it here
            # would cost 15-30 ms (an RCU grace period) and the peer's name is never reused
            self.netlink.close()
        with _job_lock(self.job_dir):
            pid_file = self.netns_path[:-len(".net")] + ".slirp"
            for leftover in (pid_file, pid_file + ".log"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            netns.unbind(self.netns_path)
            _remove_job_if_unused(self.job_dir)


def setup_instance(base_dir: str, job_key: str, hosts: list[str], host: str, *, isolated: bool,
                   loopback_endpoints: list[int], credentials: Callable[[], bytes] | None,
                   credentials_token: str | None, wait: bool = True) -> InstanceNetwork:
    """Make ``host``'s network namespace on its job's link (see the module's docstring). With
    ``wait=False`` it returns while slirp4netns is still starting: call ``ready()`` before the
    training code runs (its start then overlaps the runtime's own)."""
    job_dir = os.path.join(base_dir, _checked_name(job_key, "job key"))
    index = hosts.index(_checked_name(host, "host"))
    if FIRST_HOST + len(hosts) >= SUBNET.num_addresses - 1:
        raise ValueError(f"{len(hosts)} hosts do not fit in {SUBNET}")
    net = InstanceNetwork(job_dir, host, {h: address(i) for i, h in enumerate(hosts)})
    serve_credentials = not isolated and credentials is not None and credentials_token is not None
    try:
        with _job_lock(job_dir):
            # one instance: no link to share, and no network namespace to make for it (~10 ms)
            link = os.path.join(job_dir, "link") if len(hosts) > 1 else None
            if link is not None and not netns.is_bound(link):
                _make_link(link)
            _remove_leftover(net.netns_path)
            peer = f"v{index}-{secrets.token_hex(3)}"  # unique: an old peer may linger until reaped
            blocked = [] if isolated else _host_addresses()
            link_fd = os.open(link, os.O_RDONLY | os.O_CLOEXEC) if link is not None else -1
            try:
                with netns.inside(None):
                    _no_ipv6_on_new_links()
                    netns.bind_here(net.netns_path)
                    net.netlink = nl = Netlink()
                    nl.set_up("lo")
                    if link is None:  # the peer stays here, down: eth0 carries algo-1's address
                        link_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                    nl.add_veth(INSTANCE_LINK, peer, link_fd, MTU)
                    nl.add_address(INSTANCE_LINK, f"{net.addresses[host]}/{SUBNET.prefixlen}")
                    nl.set_up(INSTANCE_LINK)
                    for host_address in blocked:
                        nl.prohibit(f"{host_address}/32")
                    # sockets made in here, their threads started back home (threads inherit it)
                    relayed = [(socket.create_server(("127.0.0.1", port)), port)
                               for port in ([] if isolated else loopback_endpoints)]
            finally:
                if link_fd >= 0:
                    os.close(link_fd)
            if link is not None:
                with netns.inside(link):
                    link_nl = Netlink()
                    try:
                        link_nl.set_up(peer, master=socket.if_nametoindex(BRIDGE))
                    finally:
                        link_nl.close()
        net.listeners.extend(relay(sock, port) for sock, port in relayed)
        if serve_credentials:
            assert credentials is not None and credentials_token is not None
            serve_credentials_to(net, credentials, credentials_token)
        if not isolated:
            pid_file = net.netns_path[:-len(".net")] + ".slirp"
            net.slirp, net.slirp_exit_fd, net.slirp_ready_fd = _start_slirp(net.netns_path, pid_file)
            net.nameserver = SLIRP_NAMESERVER
            if wait:
                net.ready()
    except BaseException:
        net.close()
        raise
    return net


def serve_credentials_to(net: InstanceNetwork, credentials: Callable[[], bytes], token: str) -> None:
    """The container-credentials endpoint at ``169.254.170.2:80`` inside the instance's namespace,
    answering only ``token`` (a prepared instance's network gets its job's when the job comes)."""
    with netns.inside(net.netns_path):
        nl = Netlink()
        try:
            nl.add_address("lo", CREDENTIALS_ADDRESS + "/32")
        finally:
            nl.close()
        endpoint = socket.create_server((CREDENTIALS_ADDRESS, 80))
    net.listeners.append(credentials_endpoint(endpoint, credentials, token))


def cleanup_job(base_dir: str, job_key: str) -> None:
    """Remove everything of the job's network that is left (agents killed with -9); idempotent."""
    job_dir = os.path.join(base_dir, _checked_name(job_key, "job key"))
    if not os.path.isdir(job_dir):
        return
    with _job_lock(job_dir):
        for name in os.listdir(job_dir):
            if name.endswith(".slirp"):
                _end_slirp(os.path.join(job_dir, name))
        for name in os.listdir(job_dir):
            if name.endswith(".net"):
                netns.unbind(os.path.join(job_dir, name))
        _remove_job_if_unused(job_dir)
