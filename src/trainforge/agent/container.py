"""The instance's sandbox, seen from the agent: its runc bundle, its volume, its files.

The spec's ``sandbox`` object (set by the launcher; docs/INTERNALS.md) says where things are:
``dir`` (the server's ``<data_dir>/sandbox``: the shared root filesystem, volume templates,
runc's state), ``uid`` (the host uid of the instance's root), ``memory_mb`` / ``cpus`` (the
instance type's shape: the cgroup limits) and ``cgroups`` (whether the host's cgroups can take
them). :func:`prepare_volume` runs before ``/opt/ml`` is laid out; :func:`hand_over` after the
inputs are staged (the instance's root owns its ``/opt/ml``); :func:`bundle` writes the bundle and
returns the command that runs it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainforge.agent import image
from trainforge.agent.spec import CONTAINER_ML, Paths, network_isolated
from trainforge.sandbox import gpus, rootfs, runc, volume

if TYPE_CHECKING:
    from trainforge.sandbox.relay import Listener

DROPPED_ENV = ("TMPDIR",)  # host paths that mean nothing inside
GATE = "/dev/trainforge-gate"  # a gang's instance: the FIFO its PID 1 reads "go" from (agent/isolation.py)


def settings(spec: dict[str, Any]) -> dict[str, Any]:
    return spec.get("sandbox") or {}


def uid(spec: dict[str, Any]) -> int:
    return int(settings(spec).get("uid") or runc.UID_BASE)


def owner(spec: dict[str, Any]) -> tuple[int, int]:
    """The host uid and gid that own the instance's /opt/ml: its root's, or, for a container image
    with a ``User``, that user's in the instance's user namespace (SageMaker runs a container as its
    image's user, with /opt/ml writable)."""
    base = uid(spec)
    if image.is_image(spec) and (spec.get("runtime") or {}).get("user"):
        inside_uid, inside_gid = spec["runtime"]["user"]
        return base + int(inside_uid), base + int(inside_gid)
    return base, base


def container_id(instance_dir: str) -> str:
    """A name runc accepts, the same for an instance directory whoever computes it (the reaper)."""
    digest = hashlib.sha256(os.path.abspath(instance_dir).encode()).hexdigest()[:24]
    return f"tf-{digest}"


def volume_gb(spec: dict[str, Any]) -> int:
    return int((spec["request"].get("ResourceConfig") or {}).get("VolumeSizeInGB") or 0)


def prepare_volume(spec: dict[str, Any], paths: Paths) -> None:
    """The instance's /opt/ml becomes a filesystem of VolumeSizeInGB (:mod:`trainforge.sandbox.volume`)."""
    size = volume_gb(spec)
    root = os.path.dirname(paths.host_ml)  # instance_dir/opt: /opt/ml and the LocalPaths outside it
    if size > 0:
        volume.mount(settings(spec)["dir"], paths.instance_dir, root, size, uid(spec))
    os.makedirs(paths.host_ml, exist_ok=True)
    os.chmod(root, 0o700)  # the volume's root is the instance's root's alone


class PendingNetwork:
    """The instance's network while a thread makes it (:func:`prepare`): the inputs are staged
    meanwhile (the agent stages them from the host's side: they need the volume, not the network)."""

    def __init__(self, thread: Any, box: list[Any]) -> None:
        self.thread, self.box = thread, box

    def result(self) -> Any:
        """The network once made (:func:`start_network`); raises what making it raised."""
        self.thread.join()
        if isinstance(self.box[0], BaseException):
            raise self.box[0]
        return self.box[0]

    def ready(self) -> Any:
        net = self.result()
        net.ready()
        return net

    def close(self) -> None:
        self.thread.join()
        if self.box and not isinstance(self.box[0], BaseException):
            self.box[0].close()


def prepare(spec: dict[str, Any], paths: Paths, credentials: bool = True) -> PendingNetwork:
    """The volume now, and the network in a thread at the same time (each waits on the kernel and on
    helper processes): the network is :meth:`PendingNetwork.result` (:func:`start_network`; without
    its credentials endpoint for a prepared instance, whose job is not known yet)."""
    import threading

    box: list[Any] = []

    def network() -> None:
        try:
            box.append(start_network(spec, paths, credentials))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            box.append(exc)

    thread = threading.Thread(target=network, name="network", daemon=True)
    thread.start()
    pending = PendingNetwork(thread, box)
    try:
        prepare_volume(spec, paths)
    except BaseException:
        pending.close()
        raise
    return pending


def volume_full_note(spec: dict[str, Any], paths: Paths) -> str:
    """A failure reason's note when the instance's volume is (all but) full: the likely cause."""
    size = volume_gb(spec)
    try:
        st = os.statvfs(os.path.dirname(paths.host_ml))
    except OSError:
        return ""
    if size <= 0 or st.f_bavail > max(1, st.f_blocks // 100):
        return ""
    return f" (the instance's ML storage volume is full: VolumeSizeInGB = {size})"


def hand_over(spec: dict[str, Any], paths: Paths) -> None:
    """Everything on the volume (/opt/ml, the instance's LocalPaths outside it) now belongs to the
    instance's root, or the image's user (:func:`owner`): the agent staged it as the host's root.
    Symlinks are not followed."""
    user, group = owner(spec)
    for top in [os.path.dirname(paths.host_ml)]:
        os.lchown(top, user, group)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                try:
                    os.lchown(os.path.join(dirpath, name), user, group)
                except OSError:
                    pass


def local_mounts(spec: dict[str, Any], paths: Paths, local_paths: list[str]) -> list[dict[str, Any]]:
    """LocalPaths outside /opt/ml (CheckpointConfig, TensorBoardOutputConfig): the instance's own
    directories under ``instance_dir/local``, bind-mounted where the training code looks."""
    out = []
    for path in local_paths:
        norm = os.path.normpath(path)
        if norm == CONTAINER_ML or norm.startswith(CONTAINER_ML + "/"):
            continue
        out.append(runc.bind(paths.to_host(norm), norm, read_only=False))
    return out


def hosts_file_content(spec: dict[str, Any]) -> str:
    """/etc/hosts for the instance: every host of the job resolves (spec ``host_addresses``)."""
    addresses = spec.get("host_addresses") or {}
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host in sorted(spec["hosts"]):
        lines.append(f"{addresses.get(host, '127.0.0.1')}\t{host}")
    return "\n".join(lines) + "\n"


def _etc_files(spec: dict[str, Any], paths: Paths) -> list[dict[str, Any]]:
    """The instance's own /etc/hosts, /etc/hostname and /etc/resolv.conf (private files, its root's)."""
    binds = []
    for name, text in (("hosts", hosts_file_content(spec)), ("hostname", spec["host"] + "\n"),
                       ("resolv.conf", resolv_conf(spec))):
        path = os.path.join(paths.instance_dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chown(path, uid(spec), uid(spec))
        os.chmod(path, 0o644)  # readable by an image's non-root User (the agent's umask is 077)
        binds.append(runc.bind(path, "/etc/" + name))
    return binds


def resolv_conf(spec: dict[str, Any]) -> str:
    if network_isolated(spec):
        return ""
    dns = settings(spec).get("dns")
    if dns:
        return f"nameserver {dns}\n"
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def network_mode(spec: dict[str, Any]) -> str | None:
    netns = settings(spec).get("netns")
    if netns:
        return str(netns)
    return "new" if network_isolated(spec) else None


def bundle(spec: dict[str, Any], paths: Paths, argv: list[str], env: dict[str, str], cwd: str,
           mounts: list[tuple[str, str, bool]],
           local_paths: list[str], runc_path: str, launch: str | None = None,
           pid_file: str | None = None) -> list[str]:
    """Write the instance's bundle (``instance_dir/bundle``) and return the argv of ``runc run``;
    for a prepared instance (agent/prepared.py), with its ``launch`` file, that of ``runc create``."""
    s = settings(spec)
    sandbox_dir = s["dir"]
    cid = container_id(paths.instance_dir)
    user = (0, 0)
    if image.is_image(spec):  # the image's root, its private layer, the host's tools for PID 1
        root = os.path.join(s["roots"], cid)
        image.mount_root(spec, root, paths.instance_dir)
        config = spec["runtime"]["config"]
        cwd, user = config.get("working_dir") or "/", tuple(spec["runtime"]["user"])  # type: ignore[assignment]
        binds = [runc.bind("/usr", image.HOST_TOOLS)]
    else:
        etc = rootfs.ensure(sandbox_dir, uid(spec))
        root = rootfs.instance_root(s["roots"], cid, uid(spec))
        python = (spec.get("runtime") or {}).get("python") or ""
        binds = [runc.bind("/usr", "/usr"), runc.bind(etc, "/etc")]
        binds += [runc.bind(p, p) for p in rootfs.read_only_paths(python, s.get("data_dir") or sandbox_dir)]
    binds += _etc_files(spec, paths)
    if gated(spec):
        make_gate(spec, paths)
        binds.append(runc.bind(gate_path(paths), GATE))
    if launch is not None:
        from trainforge.agent.prepared import LAUNCH

        binds.append(runc.bind(launch, LAUNCH))
    binds.append(runc.bind(paths.host_ml, CONTAINER_ML, read_only=False))
    binds += local_mounts(spec, paths, local_paths)
    binds += [runc.bind(src, dst, read_only=ro) for src, dst, ro in mounts]
    binds += [runc.bind(p, p, read_only=False) for p in s.get("mounts") or []]  # config sandbox_mounts
    devices, gpu_mounts = gpu_parts(spec)
    binds += gpu_mounts
    memory = int(float(s["memory_mb"]) * 1024 * 1024) if s.get("memory_mb") and s.get("cgroups") else None
    cpus = float(s["cpus"]) if s.get("cpus") and s.get("cgroups") else None
    env = {k: v for k, v in env.items() if k not in DROPPED_ENV}
    cfg = runc.config(argv=argv, env=env, cwd=cwd, hostname=spec["host"], rootfs=root, mounts=binds,
                      network=network_mode(spec), memory_bytes=memory, cpus=cpus,
                      cgroups_path=f"/trainforge/{cid}" if s.get("cgroups") else None, uid_base=uid(spec),
                      devices=devices, device_rules=gpus.device_cgroup_rules(devices) if devices else None,
                      writable_root=image.is_image(spec), user=user)
    bundle_dir = os.path.join(paths.instance_dir, "bundle")
    runc.write_bundle(bundle_dir, cfg)
    if pid_file is not None:
        return runc.create_argv(rootfs.runc_state(s["roots"]), bundle_dir, cid, pid_file, runc_path)
    return runc.run_argv(rootfs.runc_state(s["roots"]), bundle_dir, cid, runc_path)


def gated(spec: dict[str, Any]) -> bool:
    """Whether the container, started before the gang barrier, waits at its gate (agent/gang.py)."""
    return isinstance(spec.get("gang"), dict)


def gate_path(paths: Paths) -> str:
    return os.path.join(paths.instance_dir, "gate")


def make_gate(spec: dict[str, Any], paths: Paths) -> None:
    """The gate's FIFO, readable by the instance's processes whatever their uid."""
    path = gate_path(paths)
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path, 0o600)
    os.chown(path, uid(spec), uid(spec))
    os.chmod(path, 0o644)


def loopback_ports(spec: dict[str, Any]) -> list[int]:
    """The host-loopback services an instance may reach: the S3 endpoint when it listens there."""
    from urllib.parse import urlsplit

    url = spec.get("s3_endpoint_url")
    if not url:
        return []
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return []
    return [parts.port or (443 if parts.scheme == "https" else 80)]


def start_network(spec: dict[str, Any], paths: Paths, credentials: bool = True) -> Any:
    """The instance's network namespace on its job's link (:mod:`trainforge.sandbox.network`),
    started without waiting for the user-mode network (``ready()`` before the container starts).
    The spec learns the namespace, the addresses of every host and the name server. With the
    sandbox's ``network: nodes`` (a Slurm allocation of several machines), the node's namespace
    instead: :func:`node_network`."""
    from trainforge.sandbox import network

    isolated = network_isolated(spec)
    token = str(spec["token"])
    if settings(spec).get("network") == "nodes":
        return node_network(spec)
    net = network.setup_instance(rootfs.network_dir(settings(spec)["roots"]), rootfs.job_key(paths.job_dir),
                                 list(spec["hosts"]), spec["host"],
                                 isolated=isolated, loopback_endpoints=[] if isolated else loopback_ports(spec),
                                 credentials=None if isolated or not credentials else credentials_source(spec),
                                 credentials_token=None if isolated else token, wait=False)
    s = spec.setdefault("sandbox", {})
    s["netns"], s["dns"] = net.netns_path, net.nameserver
    spec["host_addresses"] = dict(net.addresses)
    spec["network"] = "job"
    return net


def credentials_source(spec: dict[str, Any]) -> Callable[[], bytes]:
    """What the agent's credentials endpoint serves: the job's credentials from the control plane."""
    from trainforge.agent.environment import credentials_uri

    def fetch() -> bytes:
        import urllib.request

        req = urllib.request.Request(credentials_uri(spec), headers={"Authorization": str(spec["token"])})
        with urllib.request.urlopen(req, timeout=10) as answer:
            return bytes(answer.read())

    return fetch


class NodeNetwork:
    """An instance in its node's network namespace (:func:`node_network`): the credentials endpoint
    the agent serves on the node's loopback is all there is to close."""

    def __init__(self, endpoint: Listener) -> None:
        self.endpoint = endpoint

    def ready(self) -> None:
        pass

    def close(self) -> None:
        self.endpoint.close()


def node_network(spec: dict[str, Any]) -> NodeNetwork:
    """The node's own network namespace (no namespace in the bundle, no link, no user-mode network):
    the host names resolve to the nodes' addresses the Slurm backend put into the spec
    (``host_addresses``), the S3 endpoint and the name servers are the node's. The container
    credentials come from an endpoint the agent serves on the node's loopback (an ephemeral port,
    the instance's token demanded): the SDKs take an ``http`` credentials URI only on a loopback
    address, and the control plane's may be any. EnableNetworkIsolation cannot be enforced here:
    the Slurm backend refuses it before (a job that got here with it is an error, never run)."""
    import socket

    from trainforge.sandbox.relay import CREDENTIALS_PATH, credentials_endpoint

    if network_isolated(spec):
        raise RuntimeError("EnableNetworkIsolation cannot be enforced in the node's network namespace")
    missing = [h for h in spec["hosts"] if h not in (spec.get("host_addresses") or {})]
    if missing:
        raise RuntimeError(f"the node network has no address for {', '.join(missing)}")
    sock = socket.create_server(("127.0.0.1", 0))
    endpoint = credentials_endpoint(sock, credentials_source(spec), str(spec["token"]))
    spec["credentials_url"] = f"http://127.0.0.1:{sock.getsockname()[1]}{CREDENTIALS_PATH}"
    spec["network"] = "nodes"
    return NodeNetwork(endpoint)


def gpu_parts(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The instance's GPUs (spec ``gpus``): their device nodes, the control devices, and the driver's
    libraries and programs bind-mounted read-only (:mod:`trainforge.sandbox.gpus`)."""
    indices = [int(i) for i in spec.get("gpus") or []]
    if not indices:
        return [], []
    try:
        devices, mounts, _env = gpus.oci_parts(gpus.discover(), indices)
    except gpus.GpuError as exc:
        raise OSError(f"GPUs {indices}: {exc}") from exc
    return devices, mounts


def home(spec: dict[str, Any], paths: Paths) -> str:
    """The directory the instance's container was made from: its own, or a prepared instance's."""
    return str(settings(spec).get("container_dir") or paths.instance_dir)


def remove(spec: dict[str, Any], paths: Paths, runc_path: str) -> None:
    """After the container's end: runc's state and cgroup go (idempotent); a prepared instance's
    directory too."""
    made_in = home(spec, paths)
    cid = container_id(made_in)
    runc.delete(rootfs.runc_state(settings(spec)["roots"]), cid, runc_path)
    rootfs.remove_root(settings(spec)["roots"], cid)
    if image.is_image(spec):
        image.remove_layer(made_in)
        image.release(spec)
    if made_in != paths.instance_dir:
        import shutil

        shutil.rmtree(made_in, ignore_errors=True)


def init_prefix(spec: dict[str, Any]) -> list[str]:
    """PID 1's wrapper up to its script: ``setpriv --pdeathsig KILL -- sh -c`` (:mod:`.isolation`)."""
    return [*tool(spec, image.SETPRIV), "--pdeathsig", "KILL", "--", *shell(spec), "-c"]


def tool(spec: dict[str, Any], path: str) -> list[str]:
    """How the instance runs one of the host's programs (``path``, under /usr): as it is in a catalog
    image's root, through the host's dynamic loader inside a container image (:func:`image.host_tool`)."""
    return image.host_tool(path) if image.is_image(spec) else [path]


def shell(spec: dict[str, Any]) -> list[str]:
    return tool(spec, image.SHELL) if image.is_image(spec) else ["/bin/sh"]
