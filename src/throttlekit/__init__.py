"""
throttlekit: how much work may run at once, and how fast it may go.

A library for backup and data-movement systems, in three pillars: a rule-matching
concurrency policy (Velero's node-agent ``loadConcurrency`` semantics, generalised), an
ItemBlock worker pool, and bandwidth/CPU throttles. Everything public is importable from
this module and listed in ``__all__``; submodules starting with ``_`` are private.
"""

from ._errors import ConfigError, ConfigProblem, SelectorError, ThrottlekitError
from ._policy import ConcurrencyPolicy, Resolution, Rule, RuledPolicy, SkippedRule
from ._ratelimit import RateLimiter, RateLimiterStatistics
from ._schedule import Schedule
from ._selectors import LabelSelector, SelectorRequirement
from ._streams import ThrottledByteStream, ThrottledReader, ThrottledWriter, throttle_chunks
from ._units import Rate, UnitError
from ._velero import VeleroNodeAgentConfig
from ._watch import PolicyWatcher, PolicyWatcherStatistics

__all__ = [
    "ConcurrencyPolicy",
    "ConfigError",
    "ConfigProblem",
    "LabelSelector",
    "PolicyWatcher",
    "PolicyWatcherStatistics",
    "Rate",
    "RateLimiter",
    "RateLimiterStatistics",
    "Resolution",
    "Rule",
    "RuledPolicy",
    "Schedule",
    "SelectorError",
    "SelectorRequirement",
    "SkippedRule",
    "ThrottledByteStream",
    "ThrottledReader",
    "ThrottledWriter",
    "ThrottlekitError",
    "UnitError",
    "VeleroNodeAgentConfig",
    "throttle_chunks",
]


def __getattr__(name: str) -> str:
    # The version is looked up lazily: importing throttlekit stays cheap, and the value
    # always matches the installed distribution.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("throttlekit")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0+unknown"
    raise AttributeError(f"module 'throttlekit' has no attribute {name!r}")
