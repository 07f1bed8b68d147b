"""read_node_labels: node name -> labels from `kubectl get nodes -o json` output."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import ConcurrencyPolicy, ConfigError, Rule, read_node_labels

SAMPLE = files("throttlekit._cli").joinpath("data/sample-nodes.json").read_bytes()


def node(name: Any, labels: Any = None, **extra: Any) -> dict[str, Any]:
    """A Node object as kubectl prints it (labels left out when None)."""
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, **extra}


A = node("a", {"zone": "eu"})
B = node("b")
EXPECTED = {"a": {"zone": "eu"}, "b": {}}


def test_the_sample_cluster_reads_as_the_command_line_reads_it() -> None:
    """The packaged sample (kubectl's List) gives every node, in order, with its labels,
    the same as the command line's own reader."""
    from throttlekit._cli._main import read_nodes

    nodes = read_node_labels(SAMPLE)
    assert list(nodes.items()) == read_nodes(SAMPLE, "sample-nodes.json")
    assert nodes["node1"]["kubernetes.io/hostname"] == "node1"


@pytest.mark.parametrize(
    "given_as",
    [
        pytest.param(json.dumps({"kind": "List", "items": [A, B]}), id="List text"),
        pytest.param(json.dumps({"kind": "List", "items": [A, B]}).encode(), id="List bytes"),
        pytest.param(
            b"\xef\xbb\xbf" + json.dumps({"kind": "List", "items": [A, B]}).encode(),
            id="bytes with a BOM",
        ),
        pytest.param(
            bytearray(json.dumps({"kind": "List", "items": [A, B]}).encode()), id="bytearray"
        ),
        pytest.param(
            {
                "kind": "NodeList",
                "items": [{"metadata": A["metadata"]}, {"metadata": B["metadata"]}],
            },
            id="NodeList (items without kind)",
        ),
        pytest.param([A, B], id="a list of Nodes"),
        pytest.param((A, B), id="a tuple of Nodes"),
        pytest.param(
            {"kind": "List", "items": [A, node("b", labels={})]}, id="empty labels object"
        ),
    ],
)
def test_every_shape_of_kubectl_output(given_as: Any) -> None:
    """A List or NodeList (text, bytes or parsed), a list of Nodes: the same mapping."""
    assert read_node_labels(given_as) == EXPECTED


def test_a_single_node_and_null_or_absent_parts() -> None:
    """`kubectl get node NAME -o json` is one Node; null labels and null items are empty,
    as Go writes them."""
    assert read_node_labels(json.dumps(A)) == {"a": {"zone": "eu"}}
    assert read_node_labels({"metadata": {"name": "x", "labels": None}}) == {"x": {}}
    assert read_node_labels({"kind": "List", "items": None}) == {}
    assert read_node_labels({"kind": "List", "items": []}) == {}


def test_the_result_feeds_resolve_many() -> None:
    """The mapping is what resolve_many takes: a whole cluster in one call."""
    policy = ConcurrencyPolicy(global_number=2, rules=[Rule("zone=eu", 5)])
    resolved = policy.resolve_many(read_node_labels([A, B]))
    assert {name: r.value for name, r in resolved.items()} == {"a": 5, "b": 2}


BAD: list[tuple[str, Any, list[tuple[str, str]]]] = [
    ("not JSON", '{"items": [', [("", "not valid JSON: Expecting value (line 1, column 12)")]),
    ("not UTF-8", b'{"items": ["\xff"]}', [("", "not UTF-8 text")]),
    ("NaN", '{"items": [NaN]}', [("items[0]", "NaN is not valid JSON")]),
    ("a number", "3", [("", "expected `kubectl get nodes -o json` output")]),
    ("a ConfigMap", {"kind": "ConfigMap", "data": {}}, [("", "got an object of kind 'ConfigMap'")]),
    ("an empty object", {}, [("", "got an object without items")]),
    (
        "items not a list",
        {"items": {"a": A}},
        [("items", "expected a list of Nodes, got an object")],
    ),
    (
        "an item not an object",
        {"items": [A, "b"]},
        [("items[1]", "expected a Node object, got the string 'b'")],
    ),
    (
        "a Pod among the Nodes",
        {"items": [{"kind": "Pod", "metadata": {"name": "p"}}]},
        [("items[0].kind", "expected a Node, got the string 'Pod'")],
    ),
    (
        "no metadata",
        [{"kind": "Node"}],
        [("[0].metadata", "expected the node's metadata object, got null")],
    ),
    ("no name", [{"metadata": {}}], [("[0].metadata.name", "expected the node's name, got null")]),
    (
        "an empty name",
        [node("")],
        [("[0].metadata.name", "expected the node's name, got the string ''")],
    ),
    ("a number for a name", [node(7)], [("[0].metadata.name", "got the integer 7")]),
    (
        "labels a list",
        [node("a", ["zone=eu"])],
        [("[0].metadata.labels", "expected an object of labels, got a list")],
    ),
    (
        "a label value not a string",
        [node("a", {"kubernetes.io/hostname": 1, "ok": "x", "z": None})],
        [
            (
                '[0].metadata.labels["kubernetes.io/hostname"]',
                "expected a label value (a string), got the integer 1",
            ),
            ("[0].metadata.labels.z", "got null"),
        ],
    ),
    (
        "a label key not a string",
        [node("a", {3: "x"})],
        [("[0].metadata.labels[3]", "a label key must be a string")],
    ),
    (
        "a node twice",
        [A, B, node("a")],
        [("[2].metadata.name", "node 'a' appears twice (also at [0].metadata.name)")],
    ),
    (
        "every problem at once",
        {"items": [node(""), "x", node("c", {"k": 1})]},
        [
            ("items[0].metadata.name", "expected the node's name"),
            ("items[1]", "expected a Node object"),
            ("items[2].metadata.labels.k", "expected a label value"),
        ],
    ),
]


@pytest.mark.parametrize(("doc", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_input_is_a_config_error_with_paths(
    doc: Any, expected: list[tuple[str, str]]
) -> None:
    """Whatever is wrong is one ConfigError listing every problem at its path."""
    with pytest.raises(ConfigError) as caught:
        read_node_labels(doc)
    got = [(p.path, p.message) for p in caught.value.problems]
    assert [path for path, _ in got] == [path for path, _ in expected]
    for (_, message), (_, fragment) in zip(got, expected, strict=True):
        assert fragment in message


def test_a_huge_bad_file_lists_a_hundred_problems_and_counts_the_rest() -> None:
    """5,000 nameless nodes: the first 100 problems are listed, the rest counted."""
    with pytest.raises(ConfigError) as caught:
        read_node_labels([{"metadata": {}}] * 5000)
    problems = caught.value.problems
    assert len(problems) == 101
    assert problems[-1].message == "and 4900 more problems like these"


@pytest.mark.parametrize("nodes", [None, 3, 2.5, {"a"}, object()], ids=repr)
def test_what_is_no_document_is_a_type_error_naming_the_argument(nodes: Any) -> None:
    """Only a value that is no kind of document is a TypeError, naming ``nodes``."""
    with pytest.raises(TypeError, match="nodes must be `kubectl get nodes -o json` output"):
        read_node_labels(nodes)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["kind", "items", "metadata", "name", "labels", "Node", "a"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
NODEISH = st.builds(
    lambda name, labels: {"kind": "Node", "metadata": {"name": name, "labels": labels}},
    st.one_of(st.text(max_size=3), JSON),
    st.one_of(st.dictionaries(st.text(max_size=3), st.text(max_size=3)), JSON),
)


@given(st.one_of(JSON, st.lists(NODEISH), st.builds(lambda i: {"items": i}, st.lists(NODEISH))))
def test_any_json_is_nodes_or_a_config_error(doc: Any) -> None:
    """For any JSON value, parsed or as text, the outcome is a mapping of str to a
    mapping of str to str, or a ConfigError; never another exception."""
    for given_as in (doc, json.dumps(doc)):
        if not isinstance(given_as, str | dict | list):
            with pytest.raises((TypeError, ConfigError)):
                read_node_labels(given_as)
            continue
        outcome: Any
        try:
            outcome = read_node_labels(given_as)
        except ConfigError as exc:
            outcome = exc
        if isinstance(outcome, ConfigError):
            assert outcome.problems
            continue
        for name, labels in outcome.items():
            assert isinstance(name, str) and name
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
