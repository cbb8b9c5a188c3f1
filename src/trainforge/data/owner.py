"""Who owns what the data plane writes into an instance's /opt/ml while it trains.

In the sandbox the instance's root is an unprivileged host uid, and the agent writes with the
server's private umask (077): a file the agent makes there after the instance started (a FastFile
file, a Pipe FIFO) is handed to the instance's root (:func:`give`), as everything staged before it
was (``agent.container.hand_over``). Set once per agent process (one instance each)."""

from __future__ import annotations

import os

_UID: list[int] = []


def set_owner(uid: int) -> None:
    _UID[:] = [uid]


def give(path: str | os.PathLike[str]) -> None:
    """``path`` (not a link it names) becomes the instance's root's, when there is one."""
    if _UID:
        try:
            os.lchown(path, _UID[0], _UID[0])
        except OSError:
            pass
