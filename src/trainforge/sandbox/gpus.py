"""The host's NVIDIA GPUs, and what a sandboxed instance needs to use some of them.

What the NVIDIA container toolkit (libnvidia-container) gives a container with the ``utility`` and
``compute`` capabilities, found the same way, without NVML:

- **per-GPU device nodes**, by host index. The index is the one ``nvidia-smi`` and NVML use: GPUs
  in PCI bus order (``/proc/driver/nvidia/gpus/<bus id>/``, sorted); each one's node is
  ``/dev/nvidia<minor>`` with the ``Device Minor`` its ``information`` file names (the minor need
  not equal the index). Without that directory: the ``/dev/nvidia<N>`` nodes, by N.
- **control devices** that exist: ``/dev/nvidiactl``, ``/dev/nvidia-uvm``,
  ``/dev/nvidia-uvm-tools``, ``/dev/nvidia-modeset``;
- **driver libraries** from the dynamic linker's cache (``ldconfig -p``), the host architecture's
  entries only: the real files (``libcuda.so.<driver version>``; with a known driver version
  only files of that version, as the toolkit selects them) and, apart, the soname links to them
  (``libcuda.so.1 -> ...``) a container image's root filesystem must get too;
- **binaries** on PATH (``nvidia-smi``, ``nvidia-debugdump``, ``nvidia-persistenced``, the MPS
  control and server), the GSP **firmware** of the running driver
  (``/lib/firmware/nvidia/<version>/gsp*.bin``) and the **IPC sockets** of the persistence and
  fabric manager daemons when they run.

MIG devices (``/dev/nvidia-caps``) are not handed out: an index is a whole GPU.

**Numbering inside the sandbox.** An instance given host GPUs 2 and 3 gets only ``/dev/nvidia2``
and ``/dev/nvidia3`` (same major/minor as on the host, as the toolkit does). CUDA and NVML list
only the GPUs whose nodes the process can open, in PCI order, so inside they are devices 0 and
1: ``CUDA_VISIBLE_DEVICES`` and ``NVIDIA_VISIBLE_DEVICES`` are ``0,1`` (``2,3`` would name
devices CUDA cannot see, and it would find none). ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA's
order that of ``nvidia-smi``. Where the instance shares the host's ``/dev`` (isolation ``none``
or the plain ``namespace`` one, ``gpu_env.HOST_DEV_ISOLATIONS``) every GPU stays visible, so the
variables name the host indices, ``2,3``. An instance with no GPU gets both variables empty:
CUDA then sees no device, and the toolkit's reading of an empty ``NVIDIA_VISIBLE_DEVICES`` is
"no GPU" as well.

**Injected devices (tests, machines without GPUs).** ``TRAINFORGE_GPU_DEVICES`` set (a comma list
of paths, by index; empty = no GPUs) replaces the discovery entirely: the control devices,
libraries and binaries are then only what ``TRAINFORGE_GPU_CONTROL``, ``TRAINFORGE_GPU_LIBS`` and
``TRAINFORGE_GPU_BINS`` list. A path there that is not a device node (a plain file standing in for
one) is handed to the sandbox as a read-write bind mount at its own path instead of a
``linux.devices`` entry, and gets no device cgroup rule.

Standard library only. The environment variables are ``gpu_env.py``'s (the agent imports that one,
not this).
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from typing import Any, NamedTuple

from trainforge.sandbox.gpu_env import visible_devices

PROC_GPUS = "/proc/driver/nvidia/gpus"
PROC_VERSION = "/proc/driver/nvidia/version"
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
# The toolkit's "utility" and "compute" library sets (names up to ".so"; a cache entry matches by prefix).
DRIVER_LIBRARIES = (
    "libnvidia-ml.so", "libnvidia-cfg.so", "libnvidia-nscq.so",  # utility
    "libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so", "libnvidia-fatbinaryloader.so", "libnvidia-allocator.so",
    "libnvidia-compiler.so", "libnvidia-pkcs11.so", "libnvidia-pkcs11-openssl3.so", "libnvidia-nvvm.so",
)
DRIVER_BINARIES = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
                   "nvidia-cuda-mps-server")
IPC_SOCKETS = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket")
FIRMWARE_DIR = "/lib/firmware/nvidia"
# ldconfig's tag for the libraries of this machine's own ABI (32-bit ones carry none, or another).
LDCONFIG_ARCH = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "64bit"}
ENV_DEVICES = "TRAINFORGE_GPU_DEVICES"
ENV_CONTROL = "TRAINFORGE_GPU_CONTROL"
ENV_LIBS = "TRAINFORGE_GPU_LIBS"
ENV_BINS = "TRAINFORGE_GPU_BINS"

_ENTRY = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(.+?)\s*$")
_MINOR = re.compile(r"^Device Minor:\s*(\d+)\s*$", re.MULTILINE)
_VERSION = re.compile(r"^NVRM version:.*?\s(\d+\.\d+(?:\.\d+)*)\s", re.MULTILINE)
_NODE = re.compile(r"^nvidia(\d+)$")


class GpuError(RuntimeError):
    """A GPU asked for is not on this host, or its device node is gone."""


class GpuHost(NamedTuple):
    """What this host has to give; ``devices[i]`` is the node of host GPU ``i``. Tuples: the value
    is cached and shared."""

    devices: tuple[str, ...]
    control: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    binaries: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (soname link, the real file it names), e.g. libcuda.so.1
    firmware: tuple[str, ...] = ()
    ipcs: tuple[str, ...] = ()
    driver_version: str | None = None


NO_GPUS = GpuHost(())


# -- discovery -------------------------------------------------------------------------------------
def discover(env: Mapping[str, str] | None = None) -> GpuHost:
    """This host's GPUs (cached), or the injected ones (``TRAINFORGE_GPU_*`` in ``env``, by default
    the process's environment)."""
    env = os.environ if env is None else env
    return _discover(tuple(env.get(k) for k in (ENV_DEVICES, ENV_CONTROL, ENV_LIBS, ENV_BINS)))


@functools.lru_cache(maxsize=8)
def _discover(injected: tuple[str | None, ...]) -> GpuHost:
    devices, control, libs, bins = injected
    if devices is not None:
        return GpuHost(_paths(devices), _paths(control), _paths(libs), _paths(bins))
    nodes = gpu_nodes()
    if not nodes:
        return NO_GPUS
    version = driver_version()
    libraries, links = select_libraries(parse_ldconfig(_ldconfig_cache(), LDCONFIG_ARCH.get(os.uname().machine)),
                                        version)
    return GpuHost(tuple(nodes), tuple(p for p in CONTROL_DEVICES if os.path.exists(p)), tuple(libraries),
                   _binaries(), tuple(links), _firmware(version),
                   tuple(p for p in IPC_SOCKETS if os.path.exists(p)), version)


def _paths(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def gpu_nodes(proc_gpus: str = PROC_GPUS, dev: str = "/dev") -> list[str]:
    """The device node of every GPU, by host index (PCI bus order; see the module's docstring)."""
    try:
        buses = sorted(os.listdir(proc_gpus))
    except OSError:
        buses = []
    nodes = []
    for bus in buses:
        try:
            with open(os.path.join(proc_gpus, bus, "information"), encoding="utf-8", errors="replace") as f:
                found = _MINOR.search(f.read())
        except OSError:
            continue
        if found:
            nodes.append(os.path.join(dev, f"nvidia{found.group(1)}"))
    if nodes:
        return nodes
    try:
        numbered = [(int(m.group(1)), name) for name in os.listdir(dev) if (m := _NODE.match(name))]
    except OSError:
        return []
    return [os.path.join(dev, name) for _, name in sorted(numbered)]


def driver_version(path: str = PROC_VERSION) -> str | None:
    """The kernel module's version (``535.104.05``) from its ``NVRM version`` line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            found = _VERSION.search(f.read())
    except OSError:
        return None
    return found.group(1) if found else None


def _ldconfig_cache() -> str:
    import shutil
    import subprocess

    for candidate in (shutil.which("ldconfig"), "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if candidate and os.path.exists(candidate):
            try:
                return subprocess.run([candidate, "-p"], capture_output=True, text=True, timeout=30,
                                      check=False).stdout
            except (OSError, subprocess.SubprocessError):
                continue
    return ""


def parse_ldconfig(text: str, arch: str | None) -> list[tuple[str, str]]:
    """``(name, path)`` of every entry of ``ldconfig -p`` output; with ``arch`` (``x86-64``) only
    the entries tagged with it, e.g. ``libcuda.so.1 (libc6,x86-64) => /usr/lib/.../libcuda.so.1``."""
    entries = []
    for line in text.splitlines():
        found = _ENTRY.match(line)
        if not found:
            continue
        tags = [t.strip() for t in found.group(2).split(",")]
        if arch is None or arch in tags:
            entries.append((found.group(1), found.group(3)))
    return entries


def select_libraries(entries: list[tuple[str, str]], version: str | None,
                     names: tuple[str, ...] = DRIVER_LIBRARIES) -> tuple[list[str], list[tuple[str, str]]]:
    """The driver's real library files among the cache entries named like ``names``, and the links
    among them: ``(libraries, [(link, real file)])``. With ``version``, a file not of that driver
    version (a leftover of an older driver) is left out."""
    libraries: list[str] = []
    links: list[tuple[str, str]] = []
    for name, path in entries:
        if not name.startswith(names):
            continue
        real = os.path.realpath(path)
        if not os.path.isfile(real) or (version and not os.path.basename(real).endswith("." + version)):
            continue
        if real not in libraries:
            libraries.append(real)
        if real != path and (path, real) not in links:
            links.append((path, real))
    return libraries, links


def _binaries() -> tuple[str, ...]:
    import shutil

    path = os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return tuple(found for name in DRIVER_BINARIES if (found := shutil.which(name, path=path)))


def _firmware(version: str | None) -> tuple[str, ...]:
    if not version:
        return ()
    folder = os.path.join(FIRMWARE_DIR, version)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ()
    return tuple(os.path.join(folder, n) for n in names if n.startswith("gsp") and n.endswith(".bin"))


# -- what one instance gets ------------------------------------------------------------------------
def device_entry(path: str) -> dict[str, Any] | None:
    """The OCI ``linux.devices`` entry of a device node (same path, type, major/minor from
    ``st_rdev``, mode and owner as on the host); None for anything that is not one."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise GpuError(f"GPU device {path} is gone: {exc.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {"path": path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def bind_mount(path: str, read_only: bool = True) -> dict[str, Any]:
    """An OCI mount of a host path at the same path inside."""
    options = ["bind", "nosuid", "nodev"] + (["ro"] if read_only else [])
    return {"destination": path, "type": "bind", "source": path, "options": options}


def oci_parts(host: GpuHost, indices: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """What an OCI runtime config needs for an instance given host GPUs ``indices``:
    ``(linux.devices entries, mounts, environment)``. The devices are those GPUs' nodes and, when
    there is at least one, the control devices; the mounts the driver's libraries, binaries,
    firmware (read-only) and daemon sockets at their host paths, plus any stand-in that is not a
    device node (read-write). Without GPUs: nothing but the environment saying so."""
    env = visible_devices(indices)
    if not indices:
        return [], [], env
    missing = [i for i in indices if not 0 <= i < len(host.devices)]
    if missing:
        raise GpuError(f"GPU {missing[0]} is not on this host ({len(host.devices)} found)")
    devices: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for path in [*(host.devices[i] for i in indices), *host.control]:
        entry = device_entry(path)
        if entry is None:
            mounts.append(bind_mount(path, read_only=False))
        else:
            devices.append(entry)
    mounts += [bind_mount(p) for p in [*host.libraries, *host.binaries, *host.firmware]]
    mounts += [bind_mount(p, read_only=False) for p in host.ipcs]  # a client connects to a socket
    return devices, mounts, env


def device_cgroup_rules(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OCI ``linux.resources.devices`` allow rules for ``devices`` (entries of ``oci_parts``), to
    follow the config's deny-all rule."""
    return [{"allow": True, "type": d["type"], "major": d["major"], "minor": d["minor"], "access": "rwm"}
            for d in devices]
