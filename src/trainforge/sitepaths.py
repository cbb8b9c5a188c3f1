"""The agent starts with ``python -S`` (no site-packages, no .pth processing) because it needs
only the standard library to start user code fast. Third-party packages are loaded on demand by
:func:`ensure_site_packages`, which the one place that builds S3 clients and transfer managers
(``trainforge.objectstore.s3``) calls before importing boto3: callers never need to."""

from __future__ import annotations

import sys

_done = False


def ensure_site_packages() -> None:
    global _done
    if sys.flags.no_site and not _done:
        import site

        site.main()
        _done = True
