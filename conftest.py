"""Collection rules for the whole tree (tests, docstring examples, docs)."""

from __future__ import annotations

import importlib.util

# The optional integrations' modules import their extra at the top, as users' code does:
# without it, their docstring examples cannot even be collected. The README's test command
# installs both (the `test` extra); anyone running a bare pytest still gets a green run.
collect_ignore: list[str] = []
if importlib.util.find_spec("redis") is None:
    collect_ignore += ["src/throttlekit/redis.py", "src/throttlekit/_site/_core.py"]
if importlib.util.find_spec("prometheus_client") is None:
    collect_ignore += ["src/throttlekit/prometheus.py", "docs/metrics.md"]
