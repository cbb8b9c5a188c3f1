"""A sandbox made before its job: the instance an idle agent prepares while no job needs it.

Most of a sandboxed job's start is not the job's own work: the instance's volume, its network
namespace and ``runc``'s container (namespaces, mounts, cgroups, the user namespace) take tens of
milliseconds of a start that runc by hand does in one go (docs/INTERNALS.md "Prepared instances").
So, after the fork server started an agent for a job that can use one (:func:`shape` is not None),
and once no request came for a moment, it forks an idle agent with that job's spec as a template
(:func:`prepare`): the idle agent makes the volume, the network namespace (the user-mode network
started, no credentials endpoint yet) and the container, created by ``runc create`` and not started
(its PID 1 waits in runc's init), then waits for a job. When a job of the same shape comes, the
fork server hands its request to that agent instead of forking one, and the agent runs the job
with this :class:`Slot`: the volume is bind-mounted at the instance's ``opt`` (:meth:`Slot.adopt`),
the network gets the job's credentials endpoint, and the container is started
(:meth:`Slot.start`) once the job's command and environment are written into its launch file.
A job needing a mount the container lacks (FileSystemDataSource channels, LocalPaths outside
/opt/ml) or whose image resolved otherwise drops the container and gets its own, as without a
slot: the volume and the network still serve.

The container's process, fixed at ``runc create``: ``sh /dev/trainforge-launch`` with a minimal
environment. The launch file (the slot's ``launch``, bind-mounted read-only) is written in place
when the job starts: ``exec env -i K=V ... setpriv --pdeathsig KILL -- sh -c INIT trainforge-init
ARGV`` -- the job's exact environment and command, nothing of the template's (its token, its
Environment). The idle agent is a child subreaper: ``runc create`` exits and PID 1 becomes the
agent's child, so the agent waits for it itself (its exit status, no ``runc run`` teardown on the
way to the job's end) and ``setpriv --pdeathsig`` ties PID 1 to the agent as before.

Slots live under ``<roots>/warm/<name>``; ``owner`` names the agent (pid and start time). The
server's sweep removes a slot whose agent is gone (:func:`sweep`), the agent its own at its end.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shlex
import shutil
import subprocess
import time
from typing import Any

from trainforge.agent import container, image, isolation
from trainforge.agent.spec import CONTAINER_ML, Paths, network_isolated
from trainforge.sandbox import rootfs, runc

LAUNCH = "/dev/trainforge-launch"
EXEC_FIFO = "exec.fifo"  # runc's: its init blocks writing it until a reader opens it (runc start)
PR_SET_CHILD_SUBREAPER = 36
OWNERLESS_SECONDS = 60.0  # a slot without an owner file this old was left by an agent killed at its start
_SLOT: Slot | None = None


def current() -> Slot | None:
    """The slot this agent prepared before its job came, if any (taken once)."""
    global _SLOT
    slot, _SLOT = _SLOT, None
    return slot


def warm_dir(roots: str) -> str:
    return os.path.join(roots, "warm")


def _outside_ml(path: str | None) -> bool:
    if not path:
        return False
    norm = os.path.normpath(path)
    return not (norm == CONTAINER_ML or norm.startswith(CONTAINER_ML + "/"))


def shape(spec: dict[str, Any]) -> str | None:
    """What a prepared instance must match to serve this job (a string), or None when the job
    cannot use one: not sandboxed, prepared instances off (config ``prepared_instances``), several
    instances, no volume, GPUs, Slurm's node network, file-system channels, LocalPaths outside
    /opt/ml."""
    request = spec.get("request") or {}
    s = spec.get("sandbox") or {}
    hosts = spec.get("hosts") or []
    if (not isolation.sandboxed(spec) or not s.get("prepared") or len(hosts) != 1 or container.volume_gb(spec) <= 0
            or spec.get("gpus") or spec.get("gang") or s.get("network") == "nodes" or spec.get("network") == "nodes"
            or not s.get("roots")):
        return None
    if any((c.get("DataSource") or {}).get("FileSystemDataSource") for c in request.get("InputDataConfig") or []):
        return None
    if any(_outside_ml(p) for p in ((request.get("CheckpointConfig") or {}).get("LocalPath"),
                                    (request.get("TensorBoardOutputConfig") or {}).get("LocalPath"),
                                    (request.get("DebugHookConfig") or {}).get("LocalPath"))):
        return None
    runtime = spec.get("runtime") or {}
    key = {"sandbox": {k: v for k, v in s.items() if k not in ("netns", "dns")},
           "runtime": [runtime.get("kind"), runtime.get("python"), runtime.get("image")],
           "host": spec.get("host"), "hosts": hosts, "isolated": network_isolated(spec),
           "volume": container.volume_gb(spec), "s3": spec.get("s3_endpoint_url"),
           "allowed": spec.get("allowed_local_roots")}
    return json.dumps(key, sort_keys=True, default=str)


def shape_of_file(spec_path: str) -> str | None:
    try:
        with open(spec_path, encoding="utf-8") as f:
            return shape(json.load(f))
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _subreaper() -> None:
    from trainforge.sandbox.syscalls import checked, libc

    checked(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def _write_owner(directory: str) -> None:
    from trainforge.agent.forkserver import start_ticks

    path = os.path.join(directory, "owner")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"pid": os.getpid(), "start_ticks": start_ticks(os.getpid())}, f)
    os.replace(path + ".tmp", path)


class Adopted:
    """PID 1 of a container this agent created: ``Popen``'s interface over a child it adopted."""

    def __init__(self, pid: int, stdout: Any, stderr: Any) -> None:
        self.pid, self.stdout, self.stderr = pid, stdout, stderr
        self.returncode: int | None = None

    def _set(self, status: int) -> int:
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self._set(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status (``Popen.wait``); with ``timeout``, polled within that bound."""
        if timeout is not None:
            until = time.monotonic() + timeout
            while (code := self.poll()) is None:
                if time.monotonic() > until:
                    raise subprocess.TimeoutExpired("container", timeout)
                time.sleep(0.005)
            return code
        if self.returncode is None:
            try:
                _pid, status = os.waitpid(self.pid, 0)
                return self._set(status)
            except ChildProcessError:  # reaped by another thread's poll(), which is setting it
                until = time.monotonic() + 1.0
                while self.returncode is None and time.monotonic() < until:
                    time.sleep(0.001)
        return self.returncode if self.returncode is not None else 255


class Slot:
    """One prepared instance (see the module docstring)."""

    def __init__(self, directory: str, template: dict[str, Any]) -> None:
        self.dir = directory
        self.shape = shape(template)
        self.spec = template  # the template, rewritten to the slot's directories
        self.paths = Paths.of(template)
        self.network: Any = None
        self.cid: str | None = None  # the created container
        self.init_pid: int | None = None
        self.started = False
        self._out: tuple[int, int] | None = None  # read ends of the container's stdout / stderr
        self.image_bundle = (template.get("runtime") or {}).get("bundle")

    # -- made before the job ------------------------------------------------------------------
    def make(self) -> None:
        spec, paths = self.spec, self.paths
        if image.is_image(spec):
            image.pull(spec, lambda _line: None, cached_only=True)  # never a pull for a job that may not come
            self.image_bundle = spec["runtime"].get("bundle")
        self.network = container.prepare(spec, paths, credentials=False).ready()
        os.makedirs(paths.host("code"), exist_ok=True)  # the process's directory, made at create
        container.hand_over(spec, paths)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        launch = os.path.join(self.dir, "launch")
        with open(launch, "w", encoding="utf-8"):
            pass
        os.chmod(launch, 0o644)  # read by PID 1, whatever the image's User
        argv = [*container.shell(spec), LAUNCH]
        pid_file = os.path.join(self.dir, "init.pid")
        create = container.bundle(spec, paths, argv, env, paths.container("code"), [], [],
                                  isolation.which("runc") or "runc", launch=launch, pid_file=pid_file)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            with open(os.path.join(self.dir, "runc.log"), "wb") as log:
                proc = subprocess.run(create[:1] + ["--log", log.name] + create[1:], stdin=subprocess.DEVNULL,
                                      stdout=out_w, stderr=err_w, check=False, timeout=60)
        finally:
            os.close(out_w)
            os.close(err_w)
        if proc.returncode != 0:
            os.close(out_r)
            os.close(err_r)
            with open(os.path.join(self.dir, "runc.log"), encoding="utf-8", errors="replace") as f:
                raise OSError(f"runc create failed ({proc.returncode}): {f.read().strip()[-500:]}")
        with open(pid_file, encoding="utf-8") as f:
            self.init_pid = int(f.read().strip())
        self.cid = container.container_id(self.dir)
        self._out = (out_r, err_r)

    def mark_ready(self) -> None:
        """``ready`` in the slot's directory while it is offered, holding its shape (for the tests, the
        benches and the curious); removed when a job takes it."""
        with open(os.path.join(self.dir, "ready"), "w", encoding="utf-8") as f:
            f.write(self.shape or "")

    # -- when the job comes ---------------------------------------------------------------------
    def fits(self, spec: dict[str, Any]) -> bool:
        return self.shape is not None and shape(spec) == self.shape

    def adopt(self, spec: dict[str, Any], paths: Paths) -> Any:
        """The job's instance takes the slot's volume and network; returns the network."""
        from trainforge.sandbox.syscalls import MS_BIND, mount, umount

        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, "ready"))
        target = os.path.dirname(paths.host_ml)
        source = os.path.dirname(self.paths.host_ml)
        os.makedirs(target, exist_ok=True)
        mount(source, target, None, MS_BIND)  # the same filesystem the created container has at /opt/ml
        umount(source)
        os.replace(os.path.join(self.dir, "volume.img"), os.path.join(paths.instance_dir, "volume.img"))
        net = self.network
        s = spec.setdefault("sandbox", {})
        if getattr(net, "netns_path", None):
            s["netns"], s["dns"] = net.netns_path, net.nameserver
            spec["host_addresses"] = dict(net.addresses)
            spec["network"] = "job"
            if not network_isolated(spec):
                from trainforge.sandbox.network import serve_credentials_to

                serve_credentials_to(net, container.credentials_source(spec), str(spec["token"]))
        self.network = None
        return net

    def usable(self, spec: dict[str, Any], mounts: list[Any], local_paths: list[str]) -> bool:
        """Whether the created container serves this job as it is (else :meth:`drop`)."""
        if self.cid is None or self.init_pid is None or mounts:
            return False
        if any(_outside_ml(p) for p in local_paths):
            return False
        return (spec.get("runtime") or {}).get("bundle") == self.image_bundle

    def start(self, spec: dict[str, Any], inner: list[str], env: dict[str, str]) -> Adopted:
        """Write the job's launch file and start the container: PID 1, adopted."""
        env = {k: v for k, v in env.items() if k not in container.DROPPED_ENV}
        words = [*container.tool(spec, "/usr/bin/env"), "-i", *(f"{k}={v}" for k, v in env.items()), *inner]
        with open(os.path.join(self.dir, "launch"), "r+", encoding="utf-8") as f:
            f.truncate()
            f.write("exec " + " ".join(shlex.quote(w) for w in words) + "\n")
        assert self._out is not None and self.cid is not None and self.init_pid is not None
        stdout, stderr = (os.fdopen(fd, "rb") for fd in self._out)
        self._out = None
        adopted = Adopted(self.init_pid, stdout, stderr)
        spec.setdefault("sandbox", {})["container_dir"] = self.dir
        self.started = True
        state = rootfs.runc_state(self.spec["sandbox"]["roots"])
        if not _open_exec_fifo(os.path.join(state, self.cid, EXEC_FIFO)):
            done = subprocess.run([isolation.which("runc") or "runc", "--root", state, "start", self.cid],
                                  check=False, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            if done.returncode != 0:
                raise OSError(f"runc start: {done.stderr.decode(errors='replace').strip()[-300:]}")
        return adopted

    def drop(self) -> None:
        """The container goes (the job gets its own); the volume and network stay adopted."""
        if self._out is not None:
            for fd in self._out:
                os.close(fd)
            self._out = None
        if self.init_pid is not None:
            try:
                os.kill(self.init_pid, 9)
            except ProcessLookupError:
                pass
        if self.cid is not None:
            remove(self.spec["sandbox"]["roots"], self.dir)
        self.cid = self.init_pid = None

    def finish(self) -> None:
        """At the agent's end: the container, unless the job started it (``Instance.remove``), and
        the slot's directory."""
        if not self.started:
            self.drop()
        release(self.dir)

    def close(self) -> None:
        """Everything of an unused slot goes (the fork server closed the idle agent's pipe)."""
        self.drop()
        if self.network is not None:
            self.network.close()
            self.network = None
        release(self.dir)


def _open_exec_fifo(path: str) -> bool:
    """What ``runc start`` does to a created container, without its process (a Go program's start,
    ~6 ms here, on the job's way): open runc's exec FIFO, read the byte runc's init writes, remove the
    FIFO; PID 1 then runs. False when there is no FIFO (another runc): ``runc start`` then."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    try:
        import select

        os.set_blocking(fd, True)
        if not select.select([fd], [], [], 30)[0] or not os.read(fd, 16):
            raise OSError(f"the container's init did not answer on {path}")
    finally:
        os.close(fd)
    os.unlink(path)
    return True


def remove(roots: str, directory: str) -> None:
    """The slot's container (state, cgroup, root, an image's layer) and its directory."""
    cid = container.container_id(directory)
    runc.delete(rootfs.runc_state(roots), cid, isolation.which("runc") or "runc")
    rootfs.remove_root(roots, cid)
    image.remove_layer(directory)
    release(directory)


def release(directory: str) -> None:
    from trainforge.sandbox import volume

    volume.release_under(directory)
    shutil.rmtree(directory, ignore_errors=True)


def prepare(template_path: str) -> Slot | None:
    """In the idle agent: make a slot from the job spec at ``template_path``; None if it cannot
    (the reason on stderr: the slot's log)."""
    global _SLOT
    import secrets

    with open(template_path, encoding="utf-8") as f:
        template = json.load(f)
    if shape(template) is None:
        return None
    roots = template["sandbox"]["roots"]
    os.makedirs(warm_dir(roots), mode=0o700, exist_ok=True)
    directory = os.path.join(warm_dir(roots), "s" + secrets.token_hex(8))
    os.makedirs(directory, mode=0o700)
    _write_owner(directory)
    log = os.open(os.path.join(warm_dir(roots), "prepare.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    spec = copy.deepcopy(template)
    spec["instance_dir"] = spec["job_dir"] = directory
    spec["token"] = ""  # nothing of the template's job is kept beyond what the instance's shape needs
    spec["request"] = {k: v for k, v in spec["request"].items() if k not in ("Environment", "HyperParameters")}
    slot = Slot(directory, spec)
    _subreaper()
    try:
        slot.make()
    except Exception as exc:  # noqa: BLE001 - no slot: the job gets its own sandbox
        print(f"trainforge agent: no prepared instance: {exc!r}", flush=True)
        slot.close()
        return None
    _SLOT = slot
    return slot


def sweep(roots: str) -> set[str]:
    """Remove the slots whose agent is gone; returns the network keys of the slots still owned."""
    from trainforge.agent.forkserver import start_ticks
    from trainforge.sandbox.network import cleanup_job

    base = warm_dir(roots)
    try:
        names = os.listdir(base)
    except OSError:
        return set()
    alive: set[str] = set()
    for name in names:
        directory = os.path.join(base, name)
        if not os.path.isdir(directory):
            continue
        key = rootfs.job_key(directory)
        try:
            with open(os.path.join(directory, "owner"), encoding="utf-8") as f:
                owner = json.load(f)
            if start_ticks(int(owner["pid"])) == owner.get("start_ticks"):
                alive.add(key)
                continue
        except FileNotFoundError:
            try:
                if time.time() - os.stat(directory).st_mtime < OWNERLESS_SECONDS:
                    alive.add(key)  # its agent made it just now and is naming itself
                    continue
            except OSError:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        cleanup_job(rootfs.network_dir(roots), key)
        remove(roots, directory)
    return alive
