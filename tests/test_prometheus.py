"""throttlekit.prometheus: every statistic of every primitive reaches a scrape, by a stable name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from throttlekit import (  # noqa: E402
    CpuGovernor,
    ItemBlockWorkerPool,
    OperationLimits,
    PolicyWatcher,
    RateLimiter,
    prometheus,
)
from throttlekit.prometheus import ThrottlekitCollector  # noqa: E402


def scrape(collector: ThrottlekitCollector) -> tuple[Any, Any]:
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector)
    return registry, prometheus_client.generate_latest(registry).decode()


def sample_primitives(tmp_path: Path) -> dict[str, object]:
    policy = tmp_path / "policy.json"
    policy.write_text('{"loadConcurrency": {"globalConfig": 2}}')
    return {
        "RateLimiter": RateLimiter("10MiB/s"),
        "ItemBlockWorkerPool": ItemBlockWorkerPool(2),
        "OperationLimits": OperationLimits(total=4, per_kind={"restore": 1}, per_key=1),
        "CpuGovernor": CpuGovernor(50),
        "PolicyWatcher": PolicyWatcher(policy),
    }


def test_every_statistics_field_is_exported_or_deliberately_left_out(tmp_path: Path) -> None:
    """A field added to or renamed in a statistics record fails here until it has a metric."""
    for kind, primitive in sample_primitives(tmp_path).items():
        fields = {f.name for f in attrs.fields(type(primitive.statistics()))}  # type: ignore[attr-defined]
        exported = {spec.field for spec in prometheus._METRICS[kind]}
        skipped = set(prometheus._UNEXPORTED.get(kind, {}))
        assert fields == exported | skipped, kind
        assert not exported & skipped, kind


def test_metric_names_are_unique_and_prefixed() -> None:
    """Every metric name is throttlekit_-prefixed and used by one field only."""
    names = [spec.metric for specs in prometheus._METRICS.values() for spec in specs]
    assert len(names) == len(set(names))
    assert all(name.startswith("throttlekit_") for name in names)


def test_docs_list_every_metric() -> None:
    """The metrics table in the docs names every exported metric (and no other)."""
    text = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text()
    for specs in prometheus._METRICS.values():
        for spec in specs:
            shown = spec.metric + ("_total" if spec.type == "counter" else "")
            assert f"`{shown}`" in text, shown


@pytest.mark.anyio
async def test_a_scrape_reads_the_limiter_at_that_moment() -> None:
    """Waiters in line show as tasks_waiting and a negative credit; grants as a counter."""
    limiter = RateLimiter(10, burst=10)
    collector = ThrottlekitCollector()
    collector.add("disk", limiter)
    registry, _ = scrape(collector)
    async with anyio.create_task_group() as tg:
        await limiter.acquire(10)
        tg.start_soon(limiter.acquire, 5)
        tg.start_soon(limiter.acquire, 5)
        with anyio.fail_after(1):  # until both are in line (trio may start them later)
            while limiter.statistics().tasks_waiting < 2:
                await anyio.sleep(0)
        value = registry.get_sample_value
        assert value("throttlekit_rate_limiter_tasks_waiting", {"name": "disk"}) == 2
        assert value("throttlekit_rate_limiter_tokens", {"name": "disk"}) < 0
        assert value("throttlekit_rate_limiter_granted_total", {"name": "disk"}) >= 10
        rate = value("throttlekit_rate_limiter_rate_per_second", {"name": "disk", "kind": "units"})
        assert rate == 10
    assert (
        registry.get_sample_value("throttlekit_rate_limiter_tasks_waiting", {"name": "disk"}) == 0
    )


@pytest.mark.anyio
async def test_operation_limits_are_labelled_per_kind() -> None:
    """Slots held per kind and the per-kind limits carry a kind label."""
    limits = OperationLimits(total=3, per_kind={"restore": 1, "backup": 2})
    collector = ThrottlekitCollector()
    collector.add("nas", limits)
    registry, text = scrape(collector)
    async with limits.slot("backup"):
        labels = {"name": "nas", "kind": "backup"}
        assert (
            registry.get_sample_value("throttlekit_operation_limits_in_use_per_kind", labels) == 1
        )
        assert (
            registry.get_sample_value("throttlekit_operation_limits_in_use", {"name": "nas"}) == 1
        )
        assert (
            registry.get_sample_value(
                "throttlekit_operation_limits_limit_per_kind", {"name": "nas", "kind": "restore"}
            )
            == 1
        )
    # per_key is unlimited (None): no sample rather than a made-up number.
    assert "throttlekit_operation_limits_limit_per_key{" not in text


def test_pool_governor_and_watcher_are_exported(tmp_path: Path) -> None:
    """Each kind of primitive yields its samples under its own name label."""
    collector = ThrottlekitCollector()
    for kind, primitive in sample_primitives(tmp_path).items():
        collector.add(kind.lower(), primitive)
    registry, _ = scrape(collector)
    value = registry.get_sample_value
    assert value("throttlekit_pool_workers", {"name": "itemblockworkerpool"}) == 2
    assert value("throttlekit_cpu_governor_target_percent", {"name": "cpugovernor"}) == 50
    assert value("throttlekit_policy_watcher_rejected", {"name": "policywatcher"}) == 0
    assert value("throttlekit_policy_watcher_checks_total", {"name": "policywatcher"}) == 0


def test_a_failing_primitive_is_skipped_and_counted() -> None:
    """A statistics() that raises leaves that primitive out and counts the error; the rest shows."""

    class Broken(RateLimiter):  # type: ignore[misc]
        def statistics(self) -> Any:
            raise RuntimeError("boom")

    collector = ThrottlekitCollector()
    collector.add("broken", Broken(1))
    collector.add("fine", RateLimiter(2))
    registry, _ = scrape(collector)
    value = registry.get_sample_value
    assert value("throttlekit_rate_limiter_burst", {"name": "broken"}) is None
    assert value("throttlekit_rate_limiter_burst", {"name": "fine"}) is not None
    assert value("throttlekit_collector_errors_total") >= 1


def test_add_and_remove() -> None:
    """Names are unique; remove() stops the export; a removed name can be reused."""
    collector = ThrottlekitCollector()
    collector.add("a", RateLimiter(1))
    with pytest.raises(ValueError, match="taken"):
        collector.add("a", RateLimiter(1))
    assert collector.names() == ["a"]
    collector.remove("a")
    assert collector.names() == []
    with pytest.raises(KeyError):
        collector.remove("a")
    collector.add("a", RateLimiter(1))


@pytest.mark.parametrize(
    ("name", "primitive", "error", "match"),
    [
        (3, None, TypeError, "name must be a str"),
        ("", None, ValueError, "name must be"),
        ("a\nb", None, ValueError, "name must be"),
        ("x", object(), TypeError, "primitive must be one of"),
        ("x", "10MiB/s", TypeError, "primitive must be one of"),
    ],
)
def test_bad_arguments(name: Any, primitive: Any, error: type[Exception], match: str) -> None:
    """add() names the wrong argument and says why."""
    if primitive is None:
        primitive = RateLimiter(1)
    with pytest.raises(error, match=match):
        ThrottlekitCollector().add(name, primitive)
