"""Who owns what the data plane writes into an instance's /opt/ml while it trains.

In the sandbox the instance's root is an unprivileged host uid, and the agent writes with the
server's private umask (077): a file the agent makes there after the instance started (a FastFile
file, a Pipe FIFO) is handed to the instance's root, or the image's user (:func:`give`), as everything staged before it
was (``agent.container.hand_over``). Set once per agent process (one instance each)."""

from __future__ import annotations

import os

_OWNER: list[int] = []


def set_owner(uid: int, gid: int | None = None) -> None:
    _OWNER[:] = [uid, uid if gid is None else gid]


def give(path: str | os.PathLike[str]) -> None:
    """``path`` (not a link it names) becomes the instance's root's, when there is one."""
    if _OWNER:
        try:
            os.lchown(path, _OWNER[0], _OWNER[1])
        except OSError:
            pass
