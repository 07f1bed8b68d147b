"""
throttlekit: how much work may run at once, and how fast it may go.

A library for backup and data-movement systems, in three pillars: a rule-matching
concurrency policy (Velero's node-agent ``loadConcurrency`` semantics, generalised), an
ItemBlock worker pool, and bandwidth/CPU throttles. Everything public is importable from
this module and listed in ``__all__``; submodules starting with ``_`` are private.
"""

import logging as _logging

import attrs as _attrs

from ._errors import (
    CallbackWarning,
    ConfigError,
    ConfigProblem,
    ItemBlockError,
    PolicyRejectedWarning,
    ProcessControlError,
    SelectorError,
    SiteUnavailable,
    ThrottlekitError,
    UnitError,
)
from ._execution._blocks import (
    BlockResult,
    BlockStatus,
    ItemBlock,
    ItemError,
    RunProgress,
    RunResult,
    build_item_blocks,
)
from ._execution._operation_limits import OperationLimits, OperationLimitsStatistics
from ._execution._pool import ItemBlockWorkerPool, ItemBlockWorkerPoolStatistics, PoolStatistics
from ._policy._nodes import read_node_labels
from ._policy._rules import (
    ConcurrencyPolicy,
    PolicyOrigin,
    Resolution,
    Rule,
    RuledPolicy,
    SkippedRule,
)
from ._policy._selectors import LabelSelector, SelectorRequirement
from ._policy._velero import VeleroNodeAgentConfig
from ._policy._watch import PolicyWatcher, PolicyWatcherStatistics
from ._throttle._cpu import (
    CpuGovernor,
    CpuGovernorStatistics,
    PrioritySettings,
    available_cpus,
    lower_priority,
    throttle_process,
)
from ._throttle._ratelimit import RateLimiter, RateLimiterStatistics
from ._throttle._schedule import Schedule
from ._throttle._streams import (
    ThrottledByteStream,
    ThrottledReader,
    ThrottledWriter,
    throttle_chunks,
)
from ._throttle._units import Rate

# Library-style logging: records go wherever the application sends them, and nowhere
# (not to the last-resort stderr handler) when it configured nothing.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "BlockResult",
    "BlockStatus",
    "CallbackWarning",
    "ConcurrencyPolicy",
    "ConfigError",
    "ConfigProblem",
    "CpuGovernor",
    "CpuGovernorStatistics",
    "ItemBlock",
    "ItemBlockError",
    "ItemBlockWorkerPool",
    "ItemBlockWorkerPoolStatistics",
    "ItemError",
    "LabelSelector",
    "OperationLimits",
    "OperationLimitsStatistics",
    "PolicyOrigin",
    "PolicyRejectedWarning",
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
    "SiteUnavailable",
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
    "read_node_labels",
    "throttle_chunks",
    "throttle_process",
]


def _publish() -> None:
    # Public names say where users import them from: tracebacks, reprs and the API
    # reference read ``throttlekit.UnitError``, not the private module that defines it
    # (as httpx and trio do). The defining modules keep their names for everything else.
    # Annotations are resolved first, in the defining module: attrs and cattrs would
    # otherwise look names up in this module's namespace and miss the private ones.
    for name in __all__:
        obj = globals()[name]
        if _attrs.has(obj):
            _attrs.resolve_types(obj)
        obj.__module__ = __name__


_publish()


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
