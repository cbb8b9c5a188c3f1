"""The per-job network (trainforge.sandbox.network) on real namespaces, as root.

Programs run inside an instance's namespace with ``nsenter --net=<netns_path>``; where the
instance's unprivileged root matters, also through ``setpriv`` as uid 100000 (the host uid the
OCI runtime maps the container's root to).
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import wait_until

if os.name != "posix" or os.geteuid() != 0:
    pytest.skip("the job network needs root (network namespaces, bind mounts)", allow_module_level=True)
for tool in ("ip", "nsenter", "setpriv", "slirp4netns"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed", allow_module_level=True)

from trainforge.sandbox import network

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_UID = "100000"
# connect, read what the server says, if anything; prints "ok [<data>]" or "error <errno>"
PROBE = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
except OSError as e:
    print("error", e.errno)
    sys.exit()
s.settimeout(2)  # an HTTP server says nothing first: connected is what counts
try:
    print("ok", s.recv(64).decode())
except TimeoutError:
    print("ok")
"""
# listen on 0.0.0.0:PORT, answer every connection with TAG
SERVER = """
import socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    c.sendall(sys.argv[2].encode())
    c.close()
"""
# GET a URL (optional Authorization header): prints the body, "status <code>" or "error ..."
GET = """
import sys, urllib.request as u, urllib.error as e
r = u.Request(sys.argv[1], headers={"Authorization": sys.argv[2]} if len(sys.argv) > 2 else {})
try:
    print(u.urlopen(r, timeout=10).read().decode())
except e.HTTPError as x:
    print("status", x.code)
except OSError as x:
    print("error", x)
"""
CREDENTIALS = {"AccessKeyId": "AKIDSANDBOX", "SecretAccessKey": "secret", "Token": "session",
               "Expiration": "2099-01-01T00:00:00Z"}


def inside(netns_path: str, *argv: str, uid: bool = False, env: dict[str, str] | None = None,
           timeout: float = 60) -> str:
    prefix = ["nsenter", f"--net={netns_path}"]
    if uid:
        prefix += ["setpriv", "--reuid", CONTAINER_UID, "--regid", CONTAINER_UID, "--clear-groups"]
    done = subprocess.run([*prefix, *argv], check=False, capture_output=True, text=True, timeout=timeout, env=env)
    return (done.stdout + done.stderr).strip()


def probe(netns_path: str, host: str, port: int, timeout: float = 2.0) -> str:
    return inside(netns_path, sys.executable, "-c", PROBE, host, str(port), str(timeout))


def serve_inside(netns_path: str, port: int, tag: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["nsenter", f"--net={netns_path}", sys.executable, "-c", SERVER, str(port), tag],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def host_http_server(body: bytes) -> tuple[int, http.server.ThreadingHTTPServer]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1], srv


def mounts_under(base: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if base in line]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def base() -> Iterator[str]:
    path = os.path.realpath(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"tf-net-{os.getpid()}"))
    os.makedirs(path, exist_ok=True)
    yield path
    for job in os.listdir(path):
        network.cleanup_job(path, job)
    shutil.rmtree(path, ignore_errors=True)


def setup(base: str, job: str, hosts: list[str], host: str, isolated: bool, **kw: object) -> network.InstanceNetwork:
    args: dict[str, object] = {"loopback_endpoints": [], "credentials": None, "credentials_token": None}
    args.update(kw)
    return network.setup_instance(base, job, hosts, host, isolated=isolated, **args)  # type: ignore[arg-type]


def test_two_jobs_use_the_same_addresses_and_port_without_meeting(base: str) -> None:
    with open("/proc/sys/net/ipv6/conf/default/disable_ipv6") as f:
        host_ipv6_default = f.read().strip()
    jobs = {"job-a": ["algo-1", "algo-2"], "job-b": ["algo-1", "algo-2", "algo-3"]}
    wanted = [(job, host, job == "job-b") for job, hosts in jobs.items() for host in hosts]
    with ThreadPoolExecutor(len(wanted)) as pool:  # every agent of both jobs at the same instant
        futures = [pool.submit(setup, base, job, jobs[job], host, isolated) for job, host, isolated in wanted]
        nets = {(job, host): f.result() for (job, host, _), f in zip(wanted, futures, strict=True)}
    a1, a2, b1, b2, b3 = (nets[k] for k in [("job-a", "algo-1"), ("job-a", "algo-2"), ("job-b", "algo-1"),
                                            ("job-b", "algo-2"), ("job-b", "algo-3")])
    assert a1.addresses == {"algo-1": "10.200.0.11", "algo-2": "10.200.0.12"}
    assert "::1/128" in inside(a1.netns_path, "ip", "-br", "addr", "show", "lo")
    with open("/proc/sys/net/ipv6/conf/default/disable_ipv6") as f:
        assert f.read().strip() == host_ipv6_default  # the host's own namespace untouched
    assert b1.addresses["algo-2"] == a1.addresses["algo-2"]
    servers = [serve_inside(a2.netns_path, 7777, "peer-of-a"), serve_inside(b2.netns_path, 7777, "peer-of-b"),
               serve_inside(b3.netns_path, 7777, "b3"), serve_inside(a1.netns_path, 7777, "a1-itself")]
    try:
        assert probe(a1.netns_path, "10.200.0.12", 7777) == "ok peer-of-a"
        assert probe(b1.netns_path, "10.200.0.12", 7777) == "ok peer-of-b"
        assert probe(a2.netns_path, "10.200.0.11", 7777) == "ok a1-itself"  # the other way round
        assert probe(b1.netns_path, "127.0.0.1", 7777).startswith("error")  # a1's server is a1's alone
        # job B's third instance exists only on job B's link
        assert probe(b1.netns_path, "10.200.0.13", 7777) == "ok b3"
        assert probe(a1.netns_path, "10.200.0.13", 7777, timeout=1).startswith("error")
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        for net in nets.values():
            net.close()
    assert not os.listdir(base) and not mounts_under(base)


def test_single_instance_job_has_eth0_with_its_address_and_no_link(base: str) -> None:
    net = setup(base, "solo", ["algo-1"], "algo-1", True)
    server = serve_inside(net.netns_path, 7777, "itself")
    try:
        assert net.addresses == {"algo-1": "10.200.0.11"}
        assert "10.200.0.11/16" in inside(net.netns_path, "ip", "-br", "addr", "show", "eth0")
        assert probe(net.netns_path, "10.200.0.11", 7777) == "ok itself"
        assert sorted(os.listdir(os.path.join(base, "solo"))) == ["algo-1.net", "lock"]  # no link namespace
        assert "default" not in inside(net.netns_path, "ip", "route")
    finally:
        server.kill()
        server.wait()
        net.close()
    assert not os.listdir(base) and not mounts_under(base)


def test_isolated_instance_reaches_its_peer_and_nothing_else(base: str) -> None:
    s3_port, s3 = host_http_server(b"s3")
    hosts = ["algo-1", "algo-2"]
    nets = [setup(base, "iso", hosts, h, True, loopback_endpoints=[s3_port], credentials=lambda: b"{}",
                  credentials_token="tok") for h in hosts]
    server = serve_inside(nets[1].netns_path, 7777, "peer")
    try:
        assert nets[0].nameserver is None
        assert probe(nets[0].netns_path, "10.200.0.12", 7777) == "ok peer"
        assert probe(nets[0].netns_path, "127.0.0.1", s3_port).startswith("error")
        assert probe(nets[0].netns_path, "169.254.170.2", 80).startswith("error")
        assert probe(nets[0].netns_path, "10.0.2.2", s3_port).startswith("error")
        assert "default" not in inside(nets[0].netns_path, "ip", "route")
        assert "lo" in inside(nets[0].netns_path, "ip", "-br", "link", "show", "up")
    finally:
        server.kill()
        server.wait()
        for net in nets:
            net.close()
        s3.shutdown()


def test_not_isolated_instance_gets_listed_loopback_ports_and_credentials_only(base: str) -> None:
    s3_port, s3 = host_http_server(b"from-the-s3-endpoint")
    server_port, api = host_http_server(b"from-the-server-api")
    everywhere = socket.create_server(("0.0.0.0", 0))
    net = setup(base, "open", ["algo-1"], "algo-1", False, loopback_endpoints=[s3_port],
                credentials=lambda: json.dumps(CREDENTIALS).encode(), credentials_token="the-token")
    try:
        assert net.nameserver == "10.0.2.3"
        assert "default via 10.0.2.2 dev tap0" in inside(net.netns_path, "ip", "route")
        assert inside(net.netns_path, sys.executable, "-c", GET, f"http://127.0.0.1:{s3_port}/x") == \
            "from-the-s3-endpoint"
        assert probe(net.netns_path, "127.0.0.1", server_port).startswith("error")
        assert probe(net.netns_path, "10.0.2.2", server_port).startswith("error")  # --disable-host-loopback
        # nor a host service listening on all addresses, through the host's other addresses
        own = [a for a in network._host_addresses() if not a.startswith("10.200.")]
        for address in own:
            assert probe(net.netns_path, address, everywhere.getsockname()[1]) == f"error {errno.EACCES}"
        url = "http://169.254.170.2/v2/credentials"
        assert json.loads(inside(net.netns_path, sys.executable, "-c", GET, url, "the-token")) == CREDENTIALS
        assert inside(net.netns_path, sys.executable, "-c", GET, url, "the-tokem") == "status 403"
        assert inside(net.netns_path, sys.executable, "-c", GET, url) == "status 403"
        assert inside(net.netns_path, sys.executable, "-c", GET, url + "x", "the-token") == "status 404"
        # botocore takes them from there, as a training script would
        env = {"PATH": os.environ["PATH"], "AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
               "AWS_CONTAINER_AUTHORIZATION_TOKEN": "the-token", "HOME": "/nonexistent"}
        boto = "import botocore.session as s; print(s.get_session().get_credentials().access_key)"
        assert inside(net.netns_path, sys.executable, "-c", boto, env=env) == "AKIDSANDBOX"
        # the instance's root is an unprivileged uid: it cannot change the namespace's network
        for cmd in (["ip", "link", "add", "x0", "type", "dummy"],
                    ["ip", "addr", "add", "10.200.0.99/16", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "down"]):
            assert "Operation not permitted" in inside(net.netns_path, *cmd, uid=True)
        assert "10.200.0.99" not in inside(net.netns_path, "ip", "-br", "addr")
    finally:
        net.close()
        s3.shutdown()
        api.shutdown()
        everywhere.close()


def test_close_ends_relayed_connections(base: str) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts and never says anything
    port = silent.getsockname()[1]
    net = setup(base, "ends", ["algo-1"], "algo-1", False, loopback_endpoints=[port])
    client = subprocess.Popen(
        ["nsenter", f"--net={net.netns_path}", sys.executable, "-c",
         ("import socket, sys\ns = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\ns.sendall(b'x')\n"
         "print('connected', flush=True)\ntry:\n    print('end', s.recv(1))\nexcept OSError as e:\n"
         "    print('end', e.errno)\n"), str(port)], stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None and client.stdout.readline().strip() == "connected"
    silent.settimeout(10)
    upstream, _ = silent.accept()
    upstream.settimeout(10)
    assert upstream.recv(1) == b"x"  # the relay is copying
    net.close()
    out, _ = client.communicate(timeout=10)
    assert out.startswith("end")
    assert upstream.recv(1) == b""  # the host's side of the relay was ended too
    upstream.close()
    silent.close()


def test_user_mode_network_ready_later_and_failing(base: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    net = setup(base, "later", ["algo-1"], "algo-1", False, wait=False)
    net.ready()
    net.ready()
    assert "default via 10.0.2.2 dev tap0" in inside(net.netns_path, "ip", "route")
    net.close()
    # a slirp4netns that cannot start: its words in the error, nothing left behind
    fake = tmp_path / "slirp4netns"
    fake.write_text("#!/bin/sh\necho 'cannot open /dev/net/tun' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(network.NetworkError, match="cannot open /dev/net/tun"):
        setup(base, "broken", ["algo-1"], "algo-1", False)
    assert not os.listdir(base) and not mounts_under(base)


def test_close_and_cleanup_leave_nothing(base: str) -> None:
    port, srv = host_http_server(b"x")
    nets = [setup(base, "tidy", ["algo-1", "algo-2"], h, False, loopback_endpoints=[port],
                  credentials=lambda: b"{}", credentials_token="t") for h in ("algo-1", "algo-2")]
    slirps = [n.slirp.pid for n in nets if n.slirp is not None]
    assert len(slirps) == 2 and all(alive(p) for p in slirps)
    nets[0].close()
    nets[0].close()
    wait_until(lambda: not alive(slirps[0]), timeout=10, message="algo-1's slirp4netns to end")
    assert alive(slirps[1]) and os.path.isdir(os.path.join(base, "tidy"))  # algo-2 still uses the link
    assert inside(nets[1].netns_path, sys.executable, "-c", GET, f"http://127.0.0.1:{port}/") == "x"
    nets[1].close()
    wait_until(lambda: not alive(slirps[1]), timeout=10, message="algo-2's slirp4netns to end")
    assert not os.path.exists(os.path.join(base, "tidy")) and not mounts_under(base)
    network.cleanup_job(base, "tidy")  # nothing left: nothing to do

    # an agent killed with -9: its slirp4netns ends with it (exit fd), cleanup_job removes the rest
    crash = (f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
             "from trainforge.sandbox import network\n"
             f"n = network.setup_instance({base!r}, 'crash', ['algo-1'], 'algo-1', isolated=False,\n"
             f"    loopback_endpoints=[{port}], credentials=None, credentials_token=None)\n"
             "print(n.slirp.pid, flush=True)\n"
             "sys.stdin.read()\n")
    agent = subprocess.Popen([sys.executable, "-c", crash], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert agent.stdout is not None
    slirp = int(agent.stdout.readline())
    assert alive(slirp) and mounts_under(base)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    wait_until(lambda: not alive(slirp), timeout=10, message="slirp4netns to end with its agent")
    assert mounts_under(base)
    again = setup(base, "crash", ["algo-1"], "algo-1", True)  # the same instance set up anew over the leftover
    assert "10.200.0.11" in inside(again.netns_path, "ip", "-br", "addr")
    network.cleanup_job(base, "crash")
    network.cleanup_job(base, "crash")
    assert not os.path.exists(os.path.join(base, "crash")) and not mounts_under(base)
    again.close()  # after cleanup_job: nothing left to do, no error
    srv.shutdown()


def test_credentials_uri_on_the_job_network() -> None:
    from trainforge.agent.environment import aws_variables

    spec = {"region": "us-east-1", "control_url": "http://127.0.0.1:8080", "token": "tok",
            "request": {}, "hosts": ["algo-1"], "host": "algo-1"}
    assert aws_variables(spec)["AWS_CONTAINER_CREDENTIALS_FULL_URI"].startswith("http://127.0.0.1:8080/")
    sandboxed = aws_variables({**spec, "network": "job"})
    assert sandboxed["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == "http://169.254.170.2/v2/credentials"
    assert sandboxed["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == "tok"
