"""An instance whose root is a pulled container image (runtime kind ``pull``), seen from the agent.

:func:`pull` runs before the instance's volume and network are made: the image comes from the cache
(:mod:`trainforge.images.pull`, pulled once whoever asks), its configuration goes into the spec's
``runtime`` (``bundle``, ``config``, ``user``). :func:`mount_root` gives the instance a private
writable layer over the shared read-only root: an overlay mount where the kernel allows it, a copy
otherwise; ``sandbox.rootfs.remove_root`` unmounts it and :func:`remove_layer` throws the layer away. The container's PID 1 is the same ``setpriv`` +
``sh`` wrapper a catalog instance has (:func:`.container.init_prefix`), run from the host's ``/usr`` (mounted
read-only at ``/.trainforge/usr``) through the host's dynamic loader: an image need not have either
program, and its own libraries are never loaded by them.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from typing import Any

from trainforge.images.kinds import PULL

DOWNLOADING = "Downloading the training image"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # an image's without its own
HOST_TOOLS = "/.trainforge/usr"
SETPRIV, SHELL = "/usr/bin/setpriv", "/usr/bin/dash"


class ImageError(RuntimeError):
    """The training image cannot be run (a ClientError: the message names the image and the cause)."""


def is_image(spec: dict[str, Any]) -> bool:
    return (spec.get("runtime") or {}).get("kind") == PULL


def provider_arn(request: dict[str, Any]) -> str | None:
    config = (request.get("AlgorithmSpecification") or {}).get("TrainingImageConfig") or {}
    auth = config.get("TrainingRepositoryAuthConfig") or {}
    return auth.get("TrainingRepositoryCredentialsProviderArn") or None


def pull(spec: dict[str, Any], log: Callable[[str], None], cached_only: bool = False) -> None:
    """The image into the cache and its configuration into ``spec["runtime"]`` (raises :class:`ImageError`;
    ``cached_only``: when it is not in the cache, unpacked, already)."""
    from trainforge.agent.container import uid as instance_uid
    from trainforge.images import pull as pulling
    from trainforge.images import unpack

    runtime = spec["runtime"]
    shown = runtime["image"]
    s = spec.get("sandbox") or {}
    if spec.get("isolation") != "sandbox" or not s.get("data_dir"):
        raise ImageError(f"the training image '{shown}' is a container image, which needs the trainforge "
                         "sandbox (this server runs training code with isolation: none)")
    try:  # unpacked for the instance's root (the same uid its volume and container get)
        image = pulling.ensure(s["data_dir"], shown, instance_uid(spec), s, provider_arn(spec["request"]), log=log,
                               hold=True, cached_only=cached_only)
    except pulling.PullError as exc:
        raise ImageError(str(exc)) from None
    runtime["lock_fd"] = image.lock_fd  # never evicted while it runs
    runtime["pulled"] = "pulled" if image.pulled else "cached"  # for the image_pull report (/metrics)
    if image.pulled:
        log(f"pulled the training image {shown} ({image.digest}) in {image.seconds:.2f} s")
    else:
        log(f"the training image {shown} ({image.digest}) is cached: nothing pulled ({image.seconds * 1000:.0f} ms)")
    try:
        user = unpack.resolve_user(image.rootfs, image.config.user)
    except unpack.UnpackError as exc:
        raise ImageError(f"Cannot run the training image '{shown}': {exc}") from None
    runtime.update(bundle=image.bundle, digest=image.digest, config=image.config.as_dict(), user=list(user))
    algo = spec["request"].get("AlgorithmSpecification") or {}
    if not algo.get("ContainerEntrypoint") and not image.config.entrypoint:
        program = (algo.get("ContainerArguments") or ["train"])[0]
        if not _on_path(image.rootfs, program, env_of(image.config.env).get("PATH", DEFAULT_PATH)):
            raise ImageError(f"Cannot run the training image '{shown}': it has no ENTRYPOINT and no "
                             f"'{program}' program on its PATH")


def env_of(items: list[str]) -> dict[str, str]:
    """An image's ``Env`` (``KEY=value`` items) as a mapping."""
    out: dict[str, str] = {}
    for item in items:
        key, _, value = str(item).partition("=")
        if key:
            out[key] = value
    return out


def _on_path(rootfs: str, program: str, path: str) -> bool:
    """Whether ``program`` names something in the image (looked up inside its root, links not followed out)."""
    candidates = [program] if "/" in program else [os.path.join(d, program) for d in path.split(":") if d]
    # normalised as from the instance's / (a request's "../" never looks at the host's files)
    return any(os.path.lexists(os.path.join(rootfs, os.path.normpath("/" + c).lstrip("/"))) for c in candidates)


def release(spec: dict[str, Any]) -> None:
    fd = (spec.get("runtime") or {}).pop("lock_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# -- the instance's root ----------------------------------------------------------------------------
ROOT_MODE = 0o755  # a container's / (umoci leaves the unpacked root 0700: an image's User could not enter)


def layer_dir(instance_dir: str) -> str:
    return os.path.join(instance_dir, "layer")


def mount_root(spec: dict[str, Any], target: str, instance_dir: str) -> str:
    """The image's root with a private writable layer at ``target``: ``overlay`` or ``copy``."""
    lower = os.path.join(spec["runtime"]["bundle"], "rootfs")
    os.makedirs(target, mode=0o755, exist_ok=True)
    layer = layer_dir(instance_dir)
    upper, work = os.path.join(layer, "upper"), os.path.join(layer, "work")
    for d in (upper, work):
        os.makedirs(d, mode=0o755, exist_ok=True)
    st = os.stat(lower)
    os.chown(upper, st.st_uid, st.st_gid)  # the merged root is the upper directory's
    os.chmod(upper, ROOT_MODE)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    from trainforge.sandbox import syscalls

    try:  # the system call: a mount(8) process cost 10-20 ms of the start
        syscalls.mount("overlay", target, "overlay", 0, options)
        return "overlay"
    except OSError:
        pass
    subprocess.run(["cp", "-a", "--reflink=auto", lower + "/.", target], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=3600)
    os.chmod(target, ROOT_MODE)
    return "copy"


def remove_layer(instance_dir: str) -> None:
    """The instance's writable layer, once its root is unmounted (``sandbox.rootfs.remove_root``)."""
    shutil.rmtree(layer_dir(instance_dir), ignore_errors=True)


# -- PID 1 from the host's /usr ---------------------------------------------------------------------
def host_tool(path: str) -> list[str]:
    """One of the host's programs (``path``, under /usr) as run inside an image: the host's programs
    and their libraries under :data:`HOST_TOOLS`, started by the host's dynamic loader."""
    loader = os.path.realpath(elf_interpreter(SETPRIV) or "")
    if not loader.startswith("/usr/"):
        raise ImageError("the host's dynamic loader is not under /usr: container images cannot be run here")
    inside = HOST_TOOLS + loader[len("/usr"):]
    return [inside, "--library-path", os.path.dirname(inside), HOST_TOOLS + os.path.realpath(path)[len("/usr"):]]


def elf_interpreter(path: str) -> str | None:
    """The PT_INTERP of an ELF executable (its dynamic loader), or None."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if data[:4] != b"\x7fELF":
        return None
    end = "<" if data[5] == 1 else ">"
    if data[4] == 2:
        phoff, = struct.unpack_from(end + "Q", data, 32)
        size, count = struct.unpack_from(end + "HH", data, 54)
        fmt, offs = end + "IIQQQQ", (2, 5)
    else:
        phoff, = struct.unpack_from(end + "I", data, 28)
        size, count = struct.unpack_from(end + "HH", data, 42)
        fmt, offs = end + "IIIIII", (1, 4)
    for i in range(count):
        fields = struct.unpack_from(fmt, data, phoff + i * size)
        if fields[0] == 3:  # PT_INTERP
            start, length = fields[offs[0]], fields[offs[1]]
            return data[start:start + length].rstrip(b"\0").decode()
    return None
