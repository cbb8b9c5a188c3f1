"""The instance's volume (trainforge.sandbox.volume) on a real loop device, as root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import wait_until

if os.name != "posix" or os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
    pytest.skip("the volume needs root and mkfs.ext4", allow_module_level=True)
if not os.path.exists("/dev/loop-control"):
    pytest.skip("no loop devices here", allow_module_level=True)

from trainforge.sandbox import volume

UID = 100000


def backing_files() -> list[str]:
    """The files the host's loop devices are attached to."""
    found = []
    for dev in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{dev}/loop/backing_file") as f:
                found.append(f.read().strip())
        except OSError:
            continue
    return found


def test_volume_is_its_own_sized_filesystem_and_leaves_nothing_attached(tmp_path: Path) -> None:
    instance = tmp_path / "algo-1"
    target = instance / "opt"
    instance.mkdir()
    volume.mount(str(tmp_path / "sandbox"), str(instance), str(target), 1, UID)
    image = volume.image_path(str(instance))
    try:
        st = os.statvfs(target)
        assert 0.9 * volume.GIB < st.f_blocks * st.f_frsize <= volume.GIB
        assert os.stat(target).st_dev != os.stat(instance).st_dev
        assert os.stat(target).st_uid == UID and os.listdir(target) == []  # lost+found removed
        assert os.stat(image).st_blocks * 512 < 64 * 1024 * 1024  # sparse: only the metadata is on disk
        assert image in backing_files()
        assert str(target) in volume.mounted_under(str(tmp_path))
    finally:
        volume.release_under(str(tmp_path))
    assert volume.mounted_under(str(tmp_path)) == [] and not os.path.exists(image)
    # the loop device went with the last unmount (autoclear): nothing stays attached to the (deleted) image
    wait_until(lambda: not any(f.startswith(image) for f in backing_files()), timeout=10,
               message="the loop device to be released")
