"""The kinds of image runtime (images/catalog.py), apart: the agent needs them without the catalog
(which imports dataclasses, and with it inspect: a fifth of the agent's import time)."""

SCRIPT_MODE = "script-mode"
COMMAND = "command"
PULL = "pull"
