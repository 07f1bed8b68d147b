"""
Budgets shared by many processes and machines, through Redis or Valkey.

One bandwidth budget for a whole site (the uplink, a backup repository's ingest, a NAS)
shared by agents on many hosts, and exact request quotas (a cloud API's) shared the same
way. Needs redis-py: ``pip install 'throttlekit[redis]'``.

* :class:`RedisSite`: one connection, membership and heartbeat per process.
* :meth:`RedisSite.rate_limiter`: a plain local :class:`~throttlekit.RateLimiter` whose
  rate is this member's max-min fair share of the site rate, refreshed every interval:
  no round trip per acquire.
* :meth:`RedisSite.request_limiter`: a :class:`RequestLimiter`, exact across machines,
  one atomic round trip per acquire.
* :meth:`RedisSite.operation_limits`: :class:`SiteOperationLimits`, the local
  :class:`~throttlekit.OperationLimits` across machines (slots with leases and fencing
  tokens, one fair line for every machine).

See the "Many machines" page of the documentation for the model and its failure
behaviour.
"""

from __future__ import annotations

try:
    import redis as _redis  # noqa: F401
except ImportError as _error:  # pragma: no cover - tested in a subprocess without it
    raise ImportError(
        "throttlekit.redis needs redis-py: pip install 'throttlekit[redis]'"
    ) from _error

from ._site._core import (
    RedisSite,
    RequestLimiter,
    RequestLimiterStatistics,
    SharedRateStatistics,
    SiteStatistics,
)
from ._site._slots import (
    SiteOperationLimits,
    SiteOperationLimitsStatistics,
    SlotGrant,
    SlotHolder,
    SlotWaiter,
)

__all__ = [
    "RedisSite",
    "RequestLimiter",
    "RequestLimiterStatistics",
    "SharedRateStatistics",
    "SiteOperationLimits",
    "SiteOperationLimitsStatistics",
    "SiteStatistics",
    "SlotGrant",
    "SlotHolder",
    "SlotWaiter",
]


def _publish() -> None:
    # As in throttlekit/__init__.py: reprs and the reference name throttlekit.redis, and
    # attrs annotations are resolved first, where the names they use are defined.
    import attrs

    for name in __all__:
        obj = globals()[name]
        if attrs.has(obj):
            attrs.resolve_types(obj)
        obj.__module__ = __name__


_publish()
