"""ItemBlocks, build_item_blocks, and the result records with their error tree."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import (
    BlockResult,
    BlockStatus,
    ItemBlock,
    ItemBlockError,
    ItemError,
    RunResult,
    ThrottlekitError,
    build_item_blocks,
)

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup


def test_block_is_a_named_tuple_of_items() -> None:
    """A block keeps its items in order, is named after its first item by default."""
    block = ItemBlock(iter(["pod/a", "pvc/a"]))
    assert block.items == ("pod/a", "pvc/a")
    assert str(block) == "pod/a"
    assert str(ItemBlock(["x"], name="web")) == "web"


@pytest.mark.parametrize(
    ("items", "error", "fragment"),
    [([], ValueError, "at least one item"), ("pod", TypeError, "iterable of items")],
)
def test_block_needs_items(items: object, error: type, fragment: str) -> None:
    """An empty block, or a string for items, is refused."""
    with pytest.raises(error, match=fragment):
        ItemBlock(items)  # type: ignore[arg-type]


def test_related_items_group_transitively_in_first_seen_order() -> None:
    """pod -> pvc -> pv, and a second pod on the same pvc, all land in one block."""
    mounts = {"pod/a": ["pvc/a"], "pvc/a": ["pv/1"], "pod/b": ["pvc/a"], "pod/c": ["pvc/c"]}
    blocks = build_item_blocks(
        ["pod/a", "deploy/x", "pod/b", "pvc/a", "pv/1", "pod/c"],
        related=lambda item: mounts.get(item, []),
    )
    assert [b.items for b in blocks] == [
        ("pod/a", "pvc/a", "pv/1", "pod/b"),
        ("deploy/x",),
        ("pod/c", "pvc/c"),
    ]


def test_relations_are_symmetric() -> None:
    """A later item that names an earlier one as related joins the earlier block."""
    blocks = build_item_blocks(
        ["pvc/a", "x", "pod/a"], related=lambda i: ["pvc/a"] if i == "pod/a" else []
    )
    assert [b.items for b in blocks] == [("pvc/a", "pod/a"), ("x",)]


def test_key_gives_identity_to_unhashable_items() -> None:
    """Dict items are grouped by key=, each in one block, and blocks can be named."""
    items = [{"uid": 1, "mounts": [2]}, {"uid": 2, "mounts": []}, {"uid": 1, "mounts": [2]}]
    by_uid = {item["uid"]: item for item in items}
    blocks = build_item_blocks(
        items,
        related=lambda item: [by_uid[u] for u in item["mounts"]],  # type: ignore[index, union-attr]
        key=lambda item: item["uid"],
        name=lambda item: f"uid-{item['uid']}",
    )
    assert len(blocks) == 1
    assert [i["uid"] for i in blocks[0].items] == [1, 2]
    assert str(blocks[0]) == "uid-1"
    with pytest.raises(TypeError, match="not hashable; pass key="):
        build_item_blocks(items)


@given(
    n=st.integers(1, 30),
    edges=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40),
)
def test_every_item_in_exactly_one_block_and_connected_items_together(
    n: int, edges: list[tuple[int, int]]
) -> None:
    """Blocks partition the items, and related items (either direction) share a block."""
    related: dict[int, list[int]] = {}
    for a, b in edges:
        if a < n and b < n:
            related.setdefault(a, []).append(b)
    blocks = build_item_blocks(range(n), related=lambda i: related.get(i, []))
    seen = [i for b in blocks for i in b.items]
    assert sorted(seen) == list(range(n))
    where = {i: k for k, b in enumerate(blocks) for i in b.items}
    for a, targets in related.items():
        for b in targets:
            assert where[a] == where[b]


def block_result(name: str, *errors: tuple[str, Exception, str | None]) -> BlockResult:
    block = ItemBlock([name])
    return BlockResult(
        block=block,
        status=BlockStatus.FAILED if errors else BlockStatus.SUCCEEDED,
        errors=tuple(
            ItemError(item=item, error=error, block=block, parent=parent)
            for item, error, parent in errors
        ),
    )


def test_raise_for_errors_nests_per_block_and_per_parent() -> None:
    """Every error appears once, under its block, and additional items under their parent."""
    result = RunResult(
        blocks=(
            block_result("ok"),
            block_result(
                "pod/a",
                ("pod/a", RuntimeError("quiesce"), None),
                ("snap/1", OSError("timeout"), "pvc/a"),
                ("snap/2", OSError("quota"), "pvc/a"),
            ),
            block_result("pod/b", ("pod/b", ValueError("bad"), None)),
        )
    )
    assert not result.ok
    assert (result.succeeded, result.failed) == (1, 2)
    with pytest.raises(ItemBlockError) as info:
        result.raise_for_errors()
    top = info.value
    assert isinstance(top, ThrottlekitError)
    assert isinstance(top, ExceptionGroup)
    assert str(top).startswith("2 of 3 blocks failed, 4 errors")
    block_a, block_b = top.exceptions
    assert isinstance(block_a, ItemBlockError)
    assert block_a.block == "pod/a"
    assert block_a.message.startswith("One or more items in block pod/a failed: pod/a:")
    nested = block_a.exceptions[1]
    assert isinstance(nested, ItemBlockError)
    assert nested.message == (
        "One or more additional items for pvc/a failed: snap/1: OSError: timeout; "
        "snap/2: OSError: quota"
    )
    assert [str(e) for e in nested.exceptions] == ["timeout", "quota"]
    # A single failure is still a group, never a bare exception.
    assert isinstance(block_b, ItemBlockError)
    assert [type(e) for e in block_b.exceptions] == [ValueError]


def test_splitting_keeps_the_class() -> None:
    """Splitting the group (what except* does) keeps ItemBlockError and its block name."""
    result = RunResult(blocks=(block_result("b", ("b", KeyError("k"), None)),))
    with pytest.raises(ItemBlockError) as info:
        result.raise_for_errors()
    match, rest = info.value.split(KeyError)
    assert rest is None
    assert isinstance(match, ItemBlockError)
    inner = match.exceptions[0]
    assert isinstance(inner, ItemBlockError)
    assert inner.block == "b"


def test_no_errors_no_raise() -> None:
    """A run without errors raises nothing."""
    RunResult(blocks=(block_result("a"),)).raise_for_errors()
    assert str(BlockStatus.SKIPPED) == "skipped"
