"""
ItemBlocks and the records of running them: what happened to every block and item.

An ItemBlock is Velero's unit of parallel backup: items that must be handled together,
in order, by one worker (a pod and the PVCs it mounts, so that pre/post hooks quiesce the
pod around its volumes' snapshots). Each item belongs to exactly one block.

The results never drop an error: every failure is an :class:`ItemError` with its item,
block and (for an additional item) the parent item it was returned by, and
:meth:`RunResult.raise_for_errors` turns them into one :class:`ItemBlockError` tree.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, Literal, TypeVar

from attrs import field, frozen

from .._checks import check_callable
from .._errors import ItemBlockError

__all__ = [
    "BlockResult",
    "BlockStatus",
    "ItemBlock",
    "ItemError",
    "Phase",
    "RunProgress",
    "RunResult",
    "build_item_blocks",
    "describe",
]

T = TypeVar("T")

Phase = Literal["item", "pre_hook", "post_hook"]


def describe(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _to_items(value: Iterable[T]) -> tuple[T, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"items must be an iterable of items, got {type(value).__name__}")
    return tuple(value)


@frozen
class ItemBlock(Generic[T]):
    """
    Items that one worker handles together, in order: an ItemBlock.

    >>> block = ItemBlock(["pod/web-0", "pvc/data-web-0", "pv/pvc-123"], name="web-0")
    >>> len(block), block.items[0], str(block)
    (3, 'pod/web-0', 'web-0')

    The pool runs blocks in parallel but the items of one block one after another, with
    the block's pre hook before them and its post hook after. Build blocks from related
    items with :func:`build_item_blocks`. ``name`` (default: the first item) appears in
    errors and logs. A block is a value; it holds no state of its own.
    """

    #: The items, in the order the worker handles them.
    items: tuple[T, ...] = field(converter=_to_items)
    #: The name shown in errors and logs; ``None`` shows the first item.
    name: str | None = field(default=None, kw_only=True)

    @items.validator
    def _check_items(self, _: object, value: tuple[T, ...]) -> None:
        if not value:
            raise ValueError("items: an ItemBlock needs at least one item")

    def __len__(self) -> int:
        return len(self.items)

    def __str__(self) -> str:
        return self.name if self.name is not None else describe(self.items[0])


def build_item_blocks(
    items: Iterable[T],
    related: Callable[[T], Iterable[T]] | None = None,
    key: Callable[[T], Hashable] | None = None,
    *,
    name: Callable[[T], str] | None = None,
) -> list[ItemBlock[T]]:
    """
    Group items into blocks: each item with everything ``related(item)`` returns,
    transitively and in both directions, each item in exactly one block.

    >>> mounts = {"pod/a": ["pvc/a"], "pvc/a": ["pv/1"], "pod/b": ["pvc/a"]}
    >>> blocks = build_item_blocks(
    ...     ["pod/a", "pod/b", "pvc/a", "pv/1", "deploy/c"],
    ...     related=lambda item: mounts.get(item, []),
    ... )
    >>> [list(b.items) for b in blocks]
    [['pod/a', 'pvc/a', 'pv/1', 'pod/b'], ['deploy/c']]

    Order is first-seen: items in input order, each followed by the related items it
    brings in (depth first). Related items not in ``items`` join the block too, as
    Velero's related items do. ``key`` gives an item's identity (default: the item
    itself, which must then be hashable); ``name`` names a block after its first item
    (default ``str``).
    """
    check_callable(related, "related", optional=True)
    check_callable(key, "key", optional=True)
    ident: Callable[[T], Hashable] = key if key is not None else (lambda item: item)

    def key_of(item: T) -> Hashable:
        k = ident(item)
        try:
            hash(k)
        except TypeError as e:
            raise TypeError(
                f"key: the identity of {describe(item)} is not hashable; pass key= "
                "returning something hashable (a name, a UID)"
            ) from e
        return k

    order: list[Hashable] = []  # first-seen order of keys
    first: dict[Hashable, T] = {}
    parent: dict[Hashable, Hashable] = {}

    def find(k: Hashable) -> Hashable:
        root = k
        while parent[root] != root:
            root = parent[root]
        while parent[k] != root:  # path compression
            parent[k], k = root, parent[k]
        return root

    def see(item: T) -> Hashable:
        k = key_of(item)
        if k not in first:
            first[k] = item
            parent[k] = k
            order.append(k)
        return k

    expanded: set[Hashable] = set()
    for item in items:
        pending: deque[T] = deque([item])
        see(item)
        while pending:  # depth first: what an item brings in comes right after it
            current = pending.popleft()
            k = key_of(current)
            if k in expanded or related is None:
                continue
            expanded.add(k)
            brought = []
            for other in related(current):
                new = key_of(other) not in first
                ok = see(other)
                a, b = find(k), find(ok)
                if a != b:
                    parent[b] = a
                if new:
                    brought.append(other)
            pending.extendleft(reversed(brought))

    groups: dict[Hashable, list[T]] = {}
    for k in order:
        groups.setdefault(find(k), []).append(first[k])
    return [
        ItemBlock(members, name=None if name is None else name(members[0]))
        for members in groups.values()
    ]


class BlockStatus(str, enum.Enum):
    """What became of a block: exactly one of these, for every block of a run."""

    SUCCEEDED = "succeeded"
    """Every item (and additional item) and both hooks succeeded."""
    FAILED = "failed"
    """An item, an additional item or a hook failed; the rest of the block still ran."""
    CANCELLED = "cancelled"
    """
    The block was cancelled or interrupted (a BaseException raised by a callable), or
    never started (fail-fast, a cancelled run, the pool stopping).
    """
    SKIPPED = "skipped"
    """Nothing to do: every item had already been processed in this run (``key=``)."""

    def __str__(self) -> str:
        return self.value


@frozen(kw_only=True)
class ItemError:
    """
    One failure, with where it happened: the item (or hook) that failed, the block it
    belongs to, and the exception it raised.

    :class:`BlockResult` lists them per block and :attr:`RunResult.errors` for the whole
    run; ``str()`` is one line naming the item and the exception.
    """

    #: The item that failed; ``None`` for a hook.
    item: Any
    #: The exception it raised.
    error: Exception
    #: The block it belongs to.
    block: ItemBlock[Any]
    #: The item whose additional item it was; ``None`` for a block's own items.
    parent: Any = None
    #: Where it failed: ``"item"``, ``"pre_hook"`` or ``"post_hook"``.
    phase: Phase = "item"

    def __str__(self) -> str:
        what = f"{self.phase} of block {self.block}" if self.item is None else describe(self.item)
        return f"{what}: {type(self.error).__name__}: {self.error}"


@frozen(kw_only=True)
class BlockResult:
    """What became of one block: its status, every error, and how long it took (seconds)."""

    #: The block.
    block: ItemBlock[Any]
    #: What became of it.
    status: BlockStatus
    #: Every failure in it, in the order they happened.
    errors: tuple[ItemError, ...] = ()
    #: Seconds it took.
    duration: float = 0.0
    #: Its items and additional items processed successfully (the sum of the two below).
    items_done: int = 0
    #: The block's own items processed successfully.
    block_items_done: int = 0
    #: Additional items (returned by ``process``) processed successfully.
    additional_items_done: int = 0

    @property
    def ok(self) -> bool:
        """Whether the block succeeded or had nothing to do."""
        return self.status in (BlockStatus.SUCCEEDED, BlockStatus.SKIPPED)


@frozen(kw_only=True)
class RunProgress:
    """
    A progress report, given to ``on_progress`` every ``progress_interval`` seconds while
    a run goes (also while a long block is in flight) and once at its end.

    It counts blocks, the items the blocks hold and the additional items ``process``
    returned, apart; errors; time; and bytes, when ``process`` reports them. The final
    report has ``finished`` set and is sent exactly once.
    """

    #: Blocks reported so far, whatever their status.
    blocks_done: int
    #: Blocks in the run.
    blocks_total: int
    #: ``block_items_done + additional_items_done``, as before these were counted apart
    #: (it keeps this meaning; prefer the two separate counts).
    items_done: int
    #: Errors recorded so far.
    errors: int
    #: Seconds since the run started.
    elapsed: float
    #: True in the final report, which is sent exactly once.
    finished: bool = False
    #: Items of the blocks processed successfully.
    block_items_done: int = 0
    #: How many items the blocks hold.
    block_items_total: int = 0
    #: Additional items (returned by ``process``) processed successfully; their total
    #: cannot be known in advance.
    additional_items_done: int = 0
    #: Estimated seconds left, from the block items handled so far (processed, failed,
    #: or left out because already done or because their pre hook failed) at the average
    #: pace so far; ``None`` while the pace is unknown (no item handled yet, or no time
    #: passed), ``0.0`` in the final report.
    #: Additional items are not foreseen, so a run whose items return many is estimated
    #: low.
    eta: float | None = None
    #: Bytes reported by ``process`` with :meth:`ItemBlockWorkerPool.report_bytes`;
    #: ``None`` when it reports none.
    bytes_done: int | None = None
    #: The average of ``bytes_done`` since the start; ``None`` when ``process`` reports
    #: no bytes.
    bytes_per_second: float | None = None


def _group_for_block(result: BlockResult) -> ItemBlockError:
    own: list[Exception] = []
    by_parent: dict[int, tuple[Any, list[ItemError]]] = {}
    for e in result.errors:
        if e.parent is None:
            own.append(e.error)
        else:
            by_parent.setdefault(id(e.parent), (e.parent, []))[1].append(e)
    for parent, errors in by_parent.values():
        summary = "; ".join(str(e) for e in errors)
        own.append(
            ItemBlockError(
                f"One or more additional items for {describe(parent)} failed: {summary}",
                [e.error for e in errors],
                block=str(result.block),
            )
        )
    summary = "; ".join(str(e) for e in result.errors if e.parent is None)
    if by_parent:
        extra = "; ".join(f"additional items for {describe(p)}" for p, _ in by_parent.values())
        summary = f"{summary}; {extra}" if summary else extra
    return ItemBlockError(
        f"One or more items in block {result.block} failed: {summary}",
        own,
        block=str(result.block),
    )


@frozen(kw_only=True)
class RunResult:
    """
    Everything a run did: one :class:`BlockResult` per block in submission order.

    ``errors`` lists every :class:`ItemError`; ``ok`` is true when none happened and
    nothing was cancelled. :meth:`raise_for_errors` turns failures into an exception.
    """

    #: One :class:`BlockResult` per block, in submission order.
    blocks: tuple[BlockResult, ...]
    #: Seconds the run took.
    duration: float = 0.0

    @property
    def errors(self) -> tuple[ItemError, ...]:
        """Every error of the run, block by block."""
        return tuple(e for b in self.blocks for e in b.errors)

    @property
    def ok(self) -> bool:
        """No errors and no cancelled blocks."""
        return all(b.ok for b in self.blocks)

    def count(self, status: BlockStatus | str) -> int:
        """How many blocks ended with ``status``."""
        wanted = BlockStatus(status)
        return sum(1 for b in self.blocks if b.status is wanted)

    @property
    def succeeded(self) -> int:
        """Blocks that succeeded."""
        return self.count(BlockStatus.SUCCEEDED)

    @property
    def failed(self) -> int:
        """Blocks that failed."""
        return self.count(BlockStatus.FAILED)

    @property
    def cancelled(self) -> int:
        """Blocks cancelled or never started."""
        return self.count(BlockStatus.CANCELLED)

    @property
    def skipped(self) -> int:
        """Blocks with nothing left to do."""
        return self.count(BlockStatus.SKIPPED)

    def raise_for_errors(self) -> None:
        """
        Raise an :class:`ItemBlockError` if any item or hook failed: one nested group per
        failed block, even for a single failure, and within a block one group per item
        whose additional items failed. Cancelled blocks without errors raise nothing.
        """
        failed = [b for b in self.blocks if b.errors]
        if not failed:
            return
        groups = [_group_for_block(b) for b in failed]
        raise ItemBlockError(
            f"{len(failed)} of {len(self.blocks)} blocks failed, {len(self.errors)} errors",
            groups,
        )
