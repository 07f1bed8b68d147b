"""
Prometheus metrics for throttlekit's primitives: ``pip install 'throttlekit[prometheus]'``.

An agent that embeds throttlekit is usually scraped by Prometheus already (Velero and most
backup agents are). :class:`ThrottlekitCollector` is a *custom collector* for the
``prometheus_client`` package: register it once, hand it the primitives you want to see
under a name each, and every scrape reads their ``statistics()`` at that moment. There is
no polling thread and nothing is stored between scrapes, so the figures are never stale
and an idle agent costs nothing.

    >>> import prometheus_client
    >>> from throttlekit import RateLimiter
    >>> from throttlekit.prometheus import ThrottlekitCollector
    >>> registry = prometheus_client.CollectorRegistry()   # or prometheus_client.REGISTRY
    >>> collector = ThrottlekitCollector()
    >>> registry.register(collector)
    >>> uplink = RateLimiter("40MiB/s")
    >>> collector.add("uplink", uplink)
    >>> registry.get_sample_value(
    ...     "throttlekit_rate_limiter_rate_per_second", {"name": "uplink", "kind": "bytes"}
    ... )
    41943040.0

What it is not: a metrics system of its own. It exports what ``statistics()`` returns,
with stable names (the table in the docs, "Metrics"); rates of change (grants per
second, CPU seconds per second) are for PromQL's ``rate()`` over the counters.

Every metric has the label ``name`` (what you passed to :meth:`ThrottlekitCollector.add`);
mappings such as slots in use per kind add a ``kind`` label. Counters end in ``_total``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, NamedTuple, final

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "throttlekit.prometheus needs the prometheus_client package: "
        "pip install 'throttlekit[prometheus]'"
    ) from error

from ._execution._operation_limits import OperationLimits
from ._execution._pool import ItemBlockWorkerPool
from ._policy._watch import PolicyWatcher
from ._throttle._cpu import CpuGovernor
from ._throttle._ratelimit import RateLimiter
from ._throttle._units import Rate

__all__ = ["ThrottlekitCollector"]

_NAME = re.compile(r"^[^\x00-\x1f]{1,200}$")


class _Spec(NamedTuple):
    """How one field of a primitive's ``statistics()`` becomes a metric."""

    field: str
    metric: str
    type: Literal["gauge", "counter"]
    help: str
    read: Literal["number", "per_kind", "rate", "present"] = "number"


def _specs(prefix: str, *rows: tuple[Any, ...]) -> tuple[_Spec, ...]:
    return tuple(_Spec(row[0], f"throttlekit_{prefix}_{row[1]}", *row[2:]) for row in rows)


# The metrics exported per kind of primitive, keyed by the primitive's class name. The
# docs' table is this mapping; a test checks that every field of every statistics record
# is exported here or deliberately left out.
_METRICS: Mapping[str, tuple[_Spec, ...]] = {
    "RateLimiter": _specs(
        "rate_limiter",
        ("rate", "rate_per_second", "gauge", "The limiter's rate now, per second.", "rate"),
        ("burst", "burst", "gauge", "The most the limiter grants at once after idling."),
        ("tokens", "tokens", "gauge", "Credit now; negative while waiters are in line."),
        ("tasks_waiting", "tasks_waiting", "gauge", "Tasks and threads waiting in line."),
        ("total_granted", "granted", "counter", "Amount granted, net of refunds."),
        (
            "total_waited",
            "waited_seconds",
            "counter",
            "Seconds in line, summed over waiters.",
        ),
    ),
    "ItemBlockWorkerPool": _specs(
        "pool",
        ("workers", "workers", "gauge", "How many blocks may run at once."),
        ("in_use", "in_use", "gauge", "Workers running a block now."),
        ("queued_blocks", "queued_blocks", "gauge", "Blocks waiting for a worker."),
        ("runs", "runs", "gauge", "Runs in progress."),
    ),
    "OperationLimits": _specs(
        "operation_limits",
        ("total", "limit", "gauge", "The limit on operations at once (absent: unlimited)."),
        ("in_use", "in_use", "gauge", "Slots held now."),
        ("in_use_per_kind", "in_use_per_kind", "gauge", "Slots held now, per kind.", "per_kind"),
        ("per_kind", "limit_per_kind", "gauge", "The limit per kind of operation.", "per_kind"),
        ("per_key", "limit_per_key", "gauge", "The limit per key (absent: unlimited)."),
        ("tasks_waiting", "tasks_waiting", "gauge", "Operations waiting for a slot."),
    ),
    "CpuGovernor": _specs(
        "cpu_governor",
        ("percent", "target_percent", "gauge", "The CPU cap, in percent of one CPU."),
        ("window", "window_seconds", "gauge", "The window the average is taken over."),
        ("checkpoints", "checkpoints", "counter", "Checkpoints passed."),
        ("slept", "slept_seconds", "counter", "Seconds slept to keep under the cap."),
        ("cpu_seconds", "cpu_seconds", "counter", "CPU seconds measured."),
        ("wall_seconds", "wall_seconds", "counter", "Wall-clock seconds measured."),
    ),
    "PolicyWatcher": _specs(
        "policy_watcher",
        ("checks", "checks", "counter", "Times the watched file was read."),
        ("reloads", "reloads", "counter", "New policies swapped in, the first load included."),
        (
            "rejections",
            "rejections",
            "counter",
            "Changed documents rejected.",
        ),
        (
            "last_error",
            "rejected",
            "gauge",
            "1 while the latest change is rejected.",
            "present",
        ),
    ),
}

# Fields of statistics records that are deliberately not exported, and why.
_UNEXPORTED: Mapping[str, Mapping[str, str]] = {
    "PolicyWatcher": {"path": "a label-worthy string, not a number; it is in the logs"},
}

_KINDS: tuple[tuple[type[Any], str], ...] = (
    (RateLimiter, "RateLimiter"),
    (ItemBlockWorkerPool, "ItemBlockWorkerPool"),
    (OperationLimits, "OperationLimits"),
    (CpuGovernor, "CpuGovernor"),
    (PolicyWatcher, "PolicyWatcher"),
)


def _kind_of(primitive: object) -> str | None:
    for cls, kind in _KINDS:
        if isinstance(primitive, cls):
            return kind
    return None


@final
class ThrottlekitCollector(Collector):
    """
    A ``prometheus_client`` collector over named throttlekit primitives.

    :meth:`add` a :class:`~throttlekit.RateLimiter`, :class:`~throttlekit.ItemBlockWorkerPool`,
    :class:`~throttlekit.OperationLimits`, :class:`~throttlekit.CpuGovernor` or
    :class:`~throttlekit.PolicyWatcher` under a name; each scrape calls its
    ``statistics()`` (a read that changes nothing) and yields one sample per field. The
    collector holds its primitives until :meth:`remove`: drop them there when a job ends,
    or the job's last figures stay on ``/metrics``.

    Scrapes run in the exporter's thread: reading statistics is safe from any thread for
    the rate limiter and the CPU governor; for the pool, the operation limits and the
    watcher it is a plain read of counters, which the exporter may see a moment apart.

    A primitive whose ``statistics()`` raises is left out of that scrape (the others are
    still exported) and the error is counted in ``throttlekit_collector_errors_total``,
    so a bug there shows on the dashboard rather than as a failed scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._primitives: dict[str, tuple[str, Any]] = {}
        self._errors = 0

    def add(self, name: str, primitive: object) -> None:
        """
        Export ``primitive`` under the label ``name``. A name is unique per collector:
        adding a second primitive under a taken name raises :class:`ValueError` (remove the
        first one, or use another name).
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not _NAME.match(name):
            raise ValueError(f"name must be 1 to 200 printable characters, got {name!r}")
        kind = _kind_of(primitive)
        if kind is None:
            known = ", ".join(k for _, k in _KINDS)
            raise TypeError(f"primitive must be one of {known}; got {type(primitive).__name__}")
        with self._lock:
            if name in self._primitives:
                raise ValueError(f"name {name!r} is taken in this collector; remove() it first")
            self._primitives[name] = (kind, primitive)

    def remove(self, name: str) -> None:
        """Stop exporting what was added under ``name``; :class:`KeyError` if nothing was."""
        with self._lock:
            if name not in self._primitives:
                raise KeyError(name)
            del self._primitives[name]

    def names(self) -> list[str]:
        """The names exported now, sorted."""
        with self._lock:
            return sorted(self._primitives)

    def describe(self) -> list[Metric]:
        """Every metric family this collector can yield, empty, for the registry's checks."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """Read every primitive's statistics once and yield the metric families."""
        with self._lock:
            primitives = list(self._primitives.items())
        families = self._families()
        for name, (kind, primitive) in primitives:
            try:
                stats = primitive.statistics()
            except Exception:
                with self._lock:  # scrapes may run in several exporter threads at once
                    self._errors += 1
                continue
            for spec in _METRICS[kind]:
                _add_samples(families[spec.metric], spec, name, getattr(stats, spec.field))
        errors = CounterMetricFamily(
            "throttlekit_collector_errors",
            "Primitives whose statistics() raised during a scrape.",
        )
        with self._lock:
            errors.add_metric([], self._errors)
        yield from families.values()
        yield errors

    def _families(self) -> dict[str, Metric]:
        families: dict[str, Metric] = {}
        for specs in _METRICS.values():
            for spec in specs:
                labels = ["name"]
                if spec.read in ("per_kind", "rate"):
                    labels.append("kind")
                family: Callable[..., Metric] = (
                    GaugeMetricFamily if spec.type == "gauge" else CounterMetricFamily
                )
                families[spec.metric] = family(spec.metric, spec.help, labels=labels)
        return families


def _add_samples(family: Metric, spec: _Spec, name: str, value: Any) -> None:
    add = family.add_metric  # type: ignore[attr-defined]
    if spec.read == "present":
        add([name], 0.0 if value is None else 1.0)
    elif spec.read == "rate":
        assert isinstance(value, Rate)
        add([name, value.kind], value.per_second)
    elif spec.read == "per_kind":
        for kind, number in sorted(value.items()):
            add([name, str(kind)], float(number))
    elif value is not None and not (isinstance(value, float) and math.isnan(value)):
        add([name], float(value))
