"""
Node labels from ``kubectl get nodes -o json`` output: the subjects a policy resolves.

Resolving a policy for a cluster needs each node's name and labels. Everyone who does it
by hand writes the same few lines over ``kubectl`` output, and each copy trips on a
different shape (a ``List``, a ``NodeList`` from the API, a single ``Node`` from ``kubectl
get node NAME``) or on a malformed file. :func:`read_node_labels` reads all of them, and
reports what is wrong with a path into the document, like the policy loader does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import ConfigError, ConfigProblem
from ._gojson import MAX_LISTED, describe, key_path, parse_json_text

__all__ = ["read_node_labels"]

_EXPECTED = "`kubectl get nodes -o json` output (a List or NodeList of Nodes, or one Node)"


def read_node_labels(
    nodes: str | bytes | bytearray | memoryview | Mapping[str, Any] | Sequence[Any],
) -> dict[str, dict[str, str]]:
    """
    Node name -> labels, from what ``kubectl get nodes -o json`` prints.

    ``nodes`` is that output as text or bytes, or already parsed: a ``List`` or
    ``NodeList`` (an object whose ``items`` are Nodes), a single ``Node`` (``kubectl get
    node NAME -o json``), or a plain list of Nodes. A node without labels maps to ``{}``.
    The result keeps the document's order and is exactly what
    :meth:`ConcurrencyPolicy.resolve_many` and :meth:`RuledPolicy.resolve_many` take:

    >>> text = '''{"apiVersion": "v1", "kind": "List", "items": [
    ...   {"kind": "Node", "metadata": {"name": "node1",
    ...                                 "labels": {"kubernetes.io/hostname": "node1"}}},
    ...   {"kind": "Node", "metadata": {"name": "node2"}}]}'''
    >>> nodes = read_node_labels(text)
    >>> nodes
    {'node1': {'kubernetes.io/hostname': 'node1'}, 'node2': {}}
    >>> from throttlekit import ConcurrencyPolicy, Rule
    >>> policy = ConcurrencyPolicy(global_number=2, rules=[Rule("kubernetes.io/hostname=node1", 3)])
    >>> {name: r.value for name, r in policy.resolve_many(nodes).items()}
    {'node1': 3, 'node2': 2}

    Anything malformed is one :class:`ConfigError` listing every problem with its path
    (text that is not JSON: with its line and column), never another exception:

    >>> from throttlekit import ConfigError
    >>> try:
    ...     read_node_labels({"items": [{"metadata": {"labels": {"zone": 3}}}]})
    ... except ConfigError as e:
    ...     print(e)
    2 problems:
      - items[0].metadata.name: expected the node's name, got null
      - items[0].metadata.labels.zone: expected a label value (a string), got the integer 3

    It reads documents only: it does not run ``kubectl`` or talk to a cluster, and it
    does not check that labels are valid Kubernetes labels (the API server did). Only a
    ``nodes`` that is no kind of document (a number, a set) is a :class:`TypeError`.
    """
    if isinstance(nodes, str | bytes | bytearray | memoryview):
        doc: object = parse_json_text(nodes)
    elif isinstance(nodes, Mapping | list | tuple):
        doc = nodes
    else:
        raise TypeError(
            "nodes must be `kubectl get nodes -o json` output as text or bytes, or the "
            f"parsed object (a mapping or a list), got {type(nodes).__name__}"
        )
    items, where = _node_items(doc)
    reader = _Reader()
    for i, item in enumerate(items):
        reader.node(item, f"{where}[{i}]" if where is not None else "")
    return reader.result()


def _node_items(doc: object) -> tuple[Sequence[object], str | None]:
    """The node objects in ``doc`` and the path of the list holding them (``None``: one node)."""
    if isinstance(doc, list | tuple):
        return doc, ""
    if not isinstance(doc, Mapping):
        raise ConfigError(
            [ConfigProblem(path="", message=f"expected {_EXPECTED}, got {describe(doc)}")]
        )
    if "items" in doc:
        items = doc["items"]
        if items is None:  # an empty list as Go may write it
            return (), "items"
        if not isinstance(items, list | tuple):
            message = f"expected a list of Nodes, got {describe(items)}"
            raise ConfigError([ConfigProblem(path="items", message=message)])
        return items, "items"
    kind = doc.get("kind")
    if kind == "Node" or (kind is None and "metadata" in doc):
        return (doc,), None
    what = f"an object of kind {kind!r}" if isinstance(kind, str) else "an object without items"
    raise ConfigError([ConfigProblem(path="", message=f"expected {_EXPECTED}, got {what}")])


def _name_path(node_path: str) -> str:
    return key_path(key_path(node_path, "metadata"), "name")


def _labels_path(node_path: str) -> str:
    return key_path(key_path(node_path, "metadata"), "labels")


class _Reader:
    """Collects nodes and every problem found on the way (the first MAX_LISTED listed)."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, str]] = {}
        self.first_seen: dict[str, str] = {}
        self.problems: list[ConfigProblem] = []
        self.unlisted = 0

    def problem(self, path: str, message: str) -> None:
        if len(self.problems) < MAX_LISTED:
            self.problems.append(ConfigProblem(path=path, message=message))
        else:
            self.unlisted += 1

    def node(self, item: object, path: str) -> None:
        # Paths are built only for problems: a clean cluster of thousands of nodes pays
        # for the checks, not for strings nobody reads.
        if not isinstance(item, Mapping):
            self.problem(path, f"expected a Node object, got {describe(item)}")
            return
        kind = item.get("kind")
        if kind is not None and kind != "Node":
            self.problem(key_path(path, "kind"), f"expected a Node, got {describe(kind)}")
            return
        meta = item.get("metadata")
        if not isinstance(meta, Mapping):
            message = f"expected the node's metadata object, got {describe(meta)}"
            self.problem(key_path(path, "metadata"), message)
            return
        name = meta.get("name")
        named = isinstance(name, str) and name != ""
        if not named:
            self.problem(_name_path(path), f"expected the node's name, got {describe(name)}")
        labels = self.node_labels(meta.get("labels"), path)
        if not named or labels is None:
            return
        assert isinstance(name, str)
        if name in self.first_seen:
            also = _name_path(self.first_seen[name])
            self.problem(_name_path(path), f"node {name!r} appears twice (also at {also})")
            return
        self.first_seen[name] = path
        self.labels[name] = labels

    def node_labels(self, labels: object, node_path: str) -> dict[str, str] | None:
        if labels is None:
            return {}
        if not isinstance(labels, Mapping):
            message = f"expected an object of labels, got {describe(labels)}"
            self.problem(_labels_path(node_path), message)
            return None
        out = dict(labels)
        if all(isinstance(k, str) and isinstance(v, str) for k, v in out.items()):
            return out
        for key, value in out.items():
            if not isinstance(key, str):
                self.problem(key_path(_labels_path(node_path), key), "a label key must be a string")
            elif not isinstance(value, str):
                message = f"expected a label value (a string), got {describe(value)}"
                self.problem(key_path(_labels_path(node_path), key), message)
        return None

    def result(self) -> dict[str, dict[str, str]]:
        if self.unlisted:
            more = f"and {self.unlisted} more problems like these"
            self.problems.append(ConfigProblem(path="", message=more))
        if self.problems:
            raise ConfigError(self.problems)
        return self.labels
