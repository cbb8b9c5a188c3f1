"""The control plane's paths an agent calls (docs/INTERNALS.md), under the spec's ``control_url``.

Served by ``api/agent_api.py`` and named by ``api/prometheus.py``; called by ``agent/reporter.py``,
``agent/gang.py`` and (through the training process's container-credentials URI)
``agent/environment.py``. Constants only, so that the agent's start imports nothing for them.
"""

REPORT_PATH = "/_trainforge/agent/v1/report"
CREDENTIALS_PATH = "/_trainforge/agent/v1/credentials"
GANG_PATH = "/_trainforge/agent/v1/gang"
