"""
throttlekit: how much work may run at once, and how fast it may go.

A library for backup and data-movement systems, in three pillars: a rule-matching
concurrency policy (Velero's node-agent ``loadConcurrency`` semantics, generalised), an
ItemBlock worker pool, and bandwidth/CPU throttles. Everything public is importable from
this module and listed in ``__all__``; submodules starting with ``_`` are private.
"""

import logging as _logging

from ._blocks import (
    BlockResult,
    BlockStatus,
    ItemBlock,
    ItemBlockError,
    ItemError,
    RunProgress,
    RunResult,
    build_item_blocks,
)
from ._cpu import (
    CpuGovernor,
    CpuGovernorStatistics,
    PrioritySettings,
    available_cpus,
    lower_priority,
    throttle_process,
)
from ._errors import (
    ConfigError,
    ConfigProblem,
    ProcessControlError,
    SelectorError,
    ThrottlekitError,
)
from ._limits import OperationLimits, OperationLimitsStatistics
from ._policy import ConcurrencyPolicy, Resolution, Rule, RuledPolicy, SkippedRule
from ._pool import ItemBlockWorkerPool, PoolStatistics
from ._ratelimit import RateLimiter, RateLimiterStatistics
from ._schedule import Schedule
from ._selectors import LabelSelector, SelectorRequirement
from ._streams import ThrottledByteStream, ThrottledReader, ThrottledWriter, throttle_chunks
from ._units import Rate, UnitError
from ._velero import VeleroNodeAgentConfig
from ._watch import PolicyWatcher, PolicyWatcherStatistics

# Library-style logging: records go wherever the application sends them, and nowhere
# (not to the last-resort stderr handler) when it configured nothing.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "BlockResult",
    "BlockStatus",
    "ConcurrencyPolicy",
    "ConfigError",
    "ConfigProblem",
    "CpuGovernor",
    "CpuGovernorStatistics",
    "ItemBlock",
    "ItemBlockError",
    "ItemBlockWorkerPool",
    "ItemError",
    "LabelSelector",
    "OperationLimits",
    "OperationLimitsStatistics",
    "PolicyWatcher",
    "PolicyWatcherStatistics",
    "PoolStatistics",
    "PrioritySettings",
    "ProcessControlError",
    "Rate",
    "RateLimiter",
    "RateLimiterStatistics",
    "Resolution",
    "Rule",
    "RuledPolicy",
    "RunProgress",
    "RunResult",
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
    "available_cpus",
    "build_item_blocks",
    "lower_priority",
    "throttle_chunks",
    "throttle_process",
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
