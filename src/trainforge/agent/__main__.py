"""``python -m trainforge.agent SPEC.json``: run one training instance (see ``main.py``)."""

import sys

from trainforge.agent.main import main

sys.exit(main(sys.argv[1:]))
