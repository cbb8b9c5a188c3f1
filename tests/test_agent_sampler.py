"""The instance sampler's process tree: what it counts, and that it reads only the tree's processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import wait_until

from trainforge.agent.sampler import ProcessTree

# A grandchild that uses 0.4 s of CPU, then stays (its time is its own, not yet its parent's cutime).
BUSY = "import time\nwhile time.process_time() < 0.4: pass\ntime.sleep(120)"
PARENT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY!r}])"


@pytest.fixture
def tree_root() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT], start_new_session=True)
    try:
        yield proc.pid
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        proc.wait(10)


def test_process_tree_counts_its_descendants_walking_from_its_root(tree_root: int,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ProcessTree(tree_root)
    assert tree._walk, "this kernel has /proc/<pid>/task/<tid>/children"

    def every_process(self: ProcessTree) -> None:
        raise AssertionError("every host process was read")

    monkeypatch.setattr(ProcessTree, "_every_process", every_process)
    _cpu, rss = wait_until(tree.read, timeout=60, message="the grandchild's CPU time counted",
                          until=lambda got: got[0] >= 0.4)
    assert rss > 0


def test_process_tree_without_children_files_reads_every_process(tree_root: int) -> None:
    walked = ProcessTree(tree_root)
    scanned = ProcessTree(tree_root)
    scanned._walk = False
    wait_until(walked.read, timeout=60, message="the grandchild's CPU time", until=lambda got: got[0] >= 0.4)
    assert scanned.read()[0] >= 0.4
