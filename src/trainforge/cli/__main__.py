"""``python -m trainforge.cli`` (how the embedded server is started in the background)."""

import sys

from .main import main

sys.exit(main())
