"""The data plane's one exception type."""

from __future__ import annotations


class DataError(Exception):
    """Staging or syncing failed; ``str(exc)`` is what the job's FailureReason should say.

    ``user`` is True when the request or its data caused it (bad key, missing object, quota),
    False when it is the platform's fault (disk, network). The agent decides how to report it.
    """

    def __init__(self, message: str, *, user: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.user = user
