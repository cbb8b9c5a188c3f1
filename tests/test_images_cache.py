"""The image cache (images/pull.py, store.py, unpack.py) against a real registry on loopback: hostile
layers unpacked safely, concurrent pulls made once, least-recently-used eviction, ``trainforge images``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.oci_registry import (
    Entry,
    Registry,
    busybox_layer,
    file,
    start_registry,
    tar_layer,
    tools_missing,
    write_layout,
)

if os.name != "posix" or os.geteuid() != 0:
    pytest.skip("unpacking onto the instances' uids needs root", allow_module_level=True)
if tools_missing():
    pytest.skip(f"missing: {', '.join(tools_missing())}", allow_module_level=True)

from trainforge.images import pull, store

UID = 100000
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("registry-cache"))
    yield reg
    reg.stop()


def push(registry: Registry, tmp_path: Path, name: str, layers: list[bytes], config: dict | None = None) -> str:
    layout = write_layout(tmp_path / f"layout-{name.replace('/', '-')}", layers, config or {"Entrypoint": ["/bin/sh"]})
    return registry.push(layout, name, "1")


def test_hostile_layers_are_confined_and_defused(registry: Registry, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = tar_layer([
        file("../escape-dotdot", "x"), file("../../../../../../escape-deep", "x"), file("/abs-escape", "x"),
        Entry("link", kind=tarfile.SYMTYPE, linkname=str(outside)), file("link/pwned", "x"),
        Entry("rel", kind=tarfile.SYMTYPE, linkname="../../../../../../../" + str(outside).lstrip("/")),
        file("rel/pwned-too", "x"),
        Entry("dev", kind=tarfile.DIRTYPE, mode=0o755),
        Entry("dev/evil-null", kind=tarfile.CHRTYPE, mode=0o666), Entry("dev/evil-disk", kind=tarfile.BLKTYPE),
        file("bin/suid", "#!/bin/sh\n", 0o4755), file("bin/sgid", "#!/bin/sh\n", 0o2755),
        file("etc/old", "gone"), file("opq/a", "a"),
    ])
    later = tar_layer([file("etc/.wh.old", ""), file("opq/.wh..wh..opq", ""), file("opq/b", "b")])
    ref = push(registry, tmp_path, "evil/layers", [busybox_layer(), hostile, later])
    data = tmp_path / "data"
    messages: list[str] = []
    image = pull.ensure(str(data), ref, UID, log=messages.append)
    root = Path(image.rootfs)
    assert list(outside.iterdir()) == []  # nothing written through the links
    for escaped in ("/escape-dotdot", "/escape-deep", "/abs-escape", str(data / "escape-dotdot"),
                    str(data / "images" / "escape-dotdot"), str(root.parent / "escape-dotdot")):
        assert not os.path.lexists(escaped), escaped
    assert (root / "escape-dotdot").read_text() == "x" and (root / "abs-escape").read_text() == "x"
    assert not (root / "dev" / "evil-null").exists() and not (root / "dev" / "evil-disk").exists()
    for name in ("suid", "sgid"):
        mode = os.lstat(root / "bin" / name).st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID) and mode & 0o755 == 0o755, oct(mode)
    assert not (root / "etc" / "old").exists()  # whiteout honoured
    assert sorted(os.listdir(root / "opq")) == ["b"]  # opaque directory honoured
    assert os.lstat(root / "bin" / "busybox").st_uid == UID  # the image's root is the instance's root
    assert any("dropped 2 device node(s)" in m for m in messages), messages


def test_a_hard_link_out_of_the_root_is_refused_or_stays_inside(registry: Registry, tmp_path: Path) -> None:
    target = Path("/etc/hostname") if Path("/etc/hostname").exists() else Path("/etc/passwd")
    layer = tar_layer([Entry("hl", kind=tarfile.LNKTYPE, linkname=str(target)),
                       Entry("hl2", kind=tarfile.LNKTYPE, linkname="../../../../../.." + str(target))])
    ref = push(registry, tmp_path, "evil/hardlink", [busybox_layer(), layer])
    try:
        image = pull.ensure(str(tmp_path / "data"), ref, UID)
    except pull.PullError as exc:
        assert "Cannot unpack the training image" in str(exc)
        assert os.listdir(tmp_path / "data" / "images" / "rootfs") == []
        return
    host_inode = os.stat(target).st_ino, os.stat(target).st_dev
    for dirpath, _dirs, files in os.walk(image.rootfs):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            assert (st.st_ino, st.st_dev) != host_inode, name


def test_concurrent_pulls_of_one_image_pull_it_once(registry: Registry, tmp_path: Path) -> None:
    ref = push(registry, tmp_path, "team/shared", [busybox_layer()])
    before = registry.manifest_gets()
    with ThreadPoolExecutor(6) as pool:
        images = list(pool.map(lambda _: pull.ensure(str(tmp_path / "data"), ref, UID), range(6)))
    assert sum(i.pulled for i in images) == 1
    assert len({i.bundle for i in images}) == 1
    assert registry.manifest_gets() - before == 1


def test_least_recently_used_images_are_evicted_first(registry: Registry, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    refs = [push(registry, tmp_path, f"team/lru{i}", [busybox_layer([file(f"marker{i}", str(i))])]) for i in range(3)]
    first = pull.ensure(data, refs[0], UID)
    second = pull.ensure(data, refs[1], UID)
    pull.ensure(data, refs[0], UID)  # the first is used again: the second is now the oldest
    os.utime(second.bundle, (1, 1))
    st = store.Store.of(data)
    one = st.total_bytes()
    held = st.hold(os.path.basename(first.bundle))  # an instance uses the first
    try:
        pull.ensure(data, refs[2], UID, settings={"image_cache_gb": (one + 1) / 1024 ** 3})
    finally:
        os.close(held)
    cached = {r["reference"] for r in st.records()}
    assert refs[1].split("/", 1)[1] not in " ".join(cached) and refs[0] in cached and refs[2] in cached, cached
    assert not os.path.exists(second.bundle) and os.path.isdir(first.bundle)


def test_eviction_skips_an_image_being_unpacked_for_another_uid(registry: Registry, tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    busy, free, recent = (push(registry, tmp_path, f"team/evict-{n}", [busybox_layer([file(n, n)])])
                          for n in ("busy", "free", "recent"))
    other_uid = UID + 2 * 65536
    oldest = pull.ensure(data, busy, other_uid)  # unpacked for another instance uid, the oldest of all
    spare = pull.ensure(data, free, UID)
    kept = pull.ensure(data, recent, UID)
    for age, image in enumerate((oldest, spare, kept), start=1):
        os.utime(image.bundle, (age, age))
    st = store.Store.of(data)
    layout = Path(st.ref_dir(busy))
    # a job unpacking `busy` for UID holds its reference's lock and reads its layout meanwhile
    with st.locked(st.ref_lock(busy)) as held:
        assert held
        evicted = st.evict(st.total_bytes() - 1)  # over the limit: the least recently used free one goes
    assert evicted == [free]
    assert os.path.isdir(oldest.bundle) and (layout / "index.json").is_file() and st.record(busy) is not None
    assert not os.path.exists(spare.bundle) and os.path.isdir(kept.bundle)  # one eviction was enough
    again = pull.ensure(data, busy, UID)  # the unpack that was under way finds its layout whole
    assert not again.pulled and os.path.isfile(Path(again.rootfs) / "busy")


def test_images_command_pulls_lists_and_removes(registry: Registry, tmp_path: Path) -> None:
    ref = push(registry, tmp_path, "team/cli", [busybox_layer()])
    data = tmp_path / "data"

    def images(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        return subprocess.run([sys.executable, "-m", "trainforge.cli", "images", "--data-dir", str(data), *args],
                              capture_output=True, text=True, timeout=300, env=env, check=False)

    pulled = images("pull", ref, "--output", "json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["Pulled"] is True
    listed = images("list", "--output", "json")
    rows = json.loads(listed.stdout)["Images"]
    assert [r["Reference"] for r in rows] == [ref] and rows[0]["Digest"].startswith("sha256:")
    assert rows[0]["SizeBytes"] > 1_000_000  # busybox
    table = images("list")
    assert ref.split("/", 1)[1].split(":")[0] in table.stdout
    removed = images("rm", ref)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(images("list", "--output", "json").stdout)["Images"] == []
    assert os.listdir(data / "images" / "blobs" / "sha256") == []
    missing = images("rm", ref)
    assert missing.returncode != 0 and "not in the image cache" in missing.stderr
