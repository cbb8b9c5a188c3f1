"""The agent starts with ``python -S`` (no site-packages, no .pth processing) because it needs
only the standard library to start user code fast. The few places that need third-party packages
(boto3 for S3) call :func:`ensure_site_packages` first, which loads them on demand."""

from __future__ import annotations

import sys

_done = False


def ensure_site_packages() -> None:
    global _done
    if sys.flags.no_site and not _done:
        import site

        site.main()
        _done = True
