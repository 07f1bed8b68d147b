"""
Kubernetes label selectors, with the exact semantics of ``metav1.LabelSelector``.

Two spellings are accepted and produce the same value:

* the API object form, ``{"matchLabels": {...}, "matchExpressions": [...]}``, as found in
  Velero's node-agent ConfigMap and every Kubernetes manifest;
* kubectl's string form, ``"tier=db,zone in (a,b),!legacy"``.

The module is pure: no I/O, no clock. Matching is a function of the selector and a mapping
of labels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, cast

from attrs import field, frozen

from .._errors import SelectorError

__all__ = ["LabelSelector", "SelectorRequirement", "key_problem", "value_problem"]

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
_OPERATORS: Final[tuple[Operator, ...]] = ("In", "NotIn", "Exists", "DoesNotExist")
_OPERATOR_ORDER: Final = {op: i for i, op in enumerate(_OPERATORS)}

# Kubernetes validation (k8s.io/apimachinery/pkg/util/validation).
_NAME_MAX = 63
_PREFIX_MAX = 253
_NAME_RE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def _part_problem(
    key: str, what: str, part: str, limit: int, pattern: re.Pattern[str], rule: str
) -> str | None:
    if part == "":
        return f"label key {key!r}: the {what} must not be empty"
    if len(part) > limit:
        return f"label key {key!r}: the {what} must be at most {limit} characters"
    if not pattern.fullmatch(part):
        return f"label key {key!r}: the {what} {rule}"
    return None


def key_problem(key: object) -> str | None:
    """Why ``key`` is not a valid label key (a Kubernetes qualified name), or None."""
    if not isinstance(key, str):
        return f"label key must be a string, got {type(key).__name__}"
    if key == "":
        return "label key must not be empty"
    prefix, slash, name = key.rpartition("/")
    if slash:
        problem = _part_problem(
            key,
            "prefix before '/'",
            prefix,
            _PREFIX_MAX,
            _DNS1123_SUBDOMAIN_RE,
            f"{prefix!r} must be a lowercase DNS subdomain (such as 'example.com')",
        )
        if problem is not None:
            return problem
    return _part_problem(
        key,
        "name part",
        name,
        _NAME_MAX,
        _NAME_RE,
        "must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric",
    )


def value_problem(value: object) -> str | None:
    """Why ``value`` is not a valid label value, or None (the empty string is valid)."""
    if not isinstance(value, str):
        return f"label value must be a string, got {type(value).__name__}"
    if value == "":
        return None
    if len(value) > _NAME_MAX:
        return f"label value {value!r} must be at most {_NAME_MAX} characters"
    if not _NAME_RE.fullmatch(value):
        return (
            f"label value {value!r} must consist of alphanumerics, '-', '_' or '.', "
            "and start and end with an alphanumeric"
        )
    return None


# The one implementation of the matching semantics: requirements compiled to
# (opcode, key, values) so that matching a selector is a tight loop (it runs 5,000 nodes x
# 200 rules in the resolver's benchmark).
_IN, _NOT_IN, _EXISTS, _ABSENT = 0, 1, 2, 3
_OPCODES: Final = {"In": _IN, "NotIn": _NOT_IN, "Exists": _EXISTS, "DoesNotExist": _ABSENT}
_Check = tuple[int, str, frozenset[str]]


def _satisfies(checks: tuple[_Check, ...], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` meet every check; an absent key satisfies NotIn."""
    get = labels.get
    for op, key, values in checks:
        value = get(key)
        if op == _IN:
            if value is None or value not in values:
                return False
        elif op == _NOT_IN:
            if value is not None and value in values:
                return False
        elif op == _EXISTS:
            if value is None:
                return False
        elif value is not None:
            return False
    return True


def _sorted_values(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):  # tuple("abc") would quietly be three values
        raise TypeError(f"values must be a sequence of strings, not the string {values!r}")
    values = tuple(values)
    if all(isinstance(v, str) for v in values):
        return tuple(sorted(set(values)))
    return values  # left for the validation to name the value that is not a string


def _by_name(keys: Iterable[object]) -> list[object]:
    """Keys in a stable order even when some are not strings (a mapping built in Python)."""
    return sorted(keys, key=lambda key: (not isinstance(key, str), repr(key)))


@frozen(kw_only=True, order=False)
class SelectorRequirement:
    """
    One requirement of a :class:`LabelSelector`: ``key``, ``operator`` and ``values``.

    ``operator`` is one of ``"In"``, ``"NotIn"``, ``"Exists"``, ``"DoesNotExist"`` (the
    only operators ``metav1.LabelSelector`` has; there is no ``Gt``/``Lt``). ``key=value``
    is ``In`` with one value and ``key!=value`` is ``NotIn`` with one value. ``values`` is
    kept sorted and without duplicates, so equal requirements compare equal.

    Build requirements through :meth:`LabelSelector.parse` or
    :meth:`LabelSelector.from_dict`, which validate them; the constructor validates too.
    """

    #: The label key the requirement is about.
    key: str
    #: ``"In"``, ``"NotIn"``, ``"Exists"`` or ``"DoesNotExist"``.
    operator: Operator
    #: The values for ``In`` and ``NotIn`` (none for the others), kept sorted and
    #: without duplicates, so equal requirements compare equal.
    values: tuple[str, ...] = field(default=(), converter=_sorted_values)

    def __attrs_post_init__(self) -> None:
        problem = _requirement_problem(self.key, self.operator, self.values)
        if problem is not None:
            raise SelectorError(problem[1])

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement (an absent key satisfies ``NotIn``)."""
        return _satisfies((self._check(),), labels)

    def _check(self) -> _Check:
        return (_OPCODES[self.operator], self.key, frozenset(self.values))

    def _sort_key(self) -> tuple[str, int, tuple[str, ...]]:
        return (self.key, _OPERATOR_ORDER[self.operator], self.values)

    def __str__(self) -> str:
        op, key, values = self.operator, self.key, self.values
        if op == "Exists":
            return key
        if op == "DoesNotExist":
            return f"!{key}"
        if len(values) == 1:
            return f"{key}={values[0]}" if op == "In" else f"{key}!={values[0]}"
        word = "in" if op == "In" else "notin"
        return f"{key} {word} ({','.join(values)})"


def _requirement_problem(
    key: object, operator: object, values: Iterable[object]
) -> tuple[str, str] | None:
    """``(field, message)`` for the first problem of a requirement, or None."""
    problem = key_problem(key)
    if problem is not None:
        return "key", problem
    if operator not in _OPERATORS:
        return "operator", (
            f"{operator!r} is not a valid label selector operator "
            "(use In, NotIn, Exists or DoesNotExist)"
        )
    values = list(values)
    if operator in ("In", "NotIn"):
        if not values:
            return "values", f"operator {operator} needs at least one value (key {key!r})"
    elif values:
        return "values", f"operator {operator} takes no values (key {key!r})"
    for i, value in enumerate(values):
        problem = value_problem(value)
        if problem is not None:
            return f"values[{i}]", problem
    return None


def _canonical(requirements: Iterable[SelectorRequirement]) -> tuple[SelectorRequirement, ...]:
    unique = {(r.key, r.operator, r.values): r for r in requirements}
    return tuple(sorted(unique.values(), key=SelectorRequirement._sort_key))


@frozen(kw_only=True)
class LabelSelector:
    """
    A Kubernetes label selector: a set of requirements that must *all* hold.

    Semantics are exactly those of ``metav1.LabelSelector`` as Kubernetes (and therefore
    Velero) evaluates it:

    * the empty selector matches every set of labels;
    * ``In`` matches when the key is present with one of the values;
    * ``NotIn`` (and ``!=``) match when the key is absent *or* has another value;
    * ``Exists`` / ``DoesNotExist`` test only the key;
    * keys are qualified names (optional DNS-subdomain prefix and ``/``), values are label
      values (at most 63 characters, may be empty); anything else is a
      :class:`SelectorError`.

    Selectors are values: two selectors that mean the same thing compare equal and print
    the same (``str()`` gives the canonical kubectl form, :meth:`to_dict` the canonical API
    form), and both forms round-trip.

    >>> sel = LabelSelector.parse("zone in (eu-1,eu-2), !maintenance")
    >>> sel.matches({"zone": "eu-2"})
    True
    >>> sel.matches({"zone": "eu-2", "maintenance": "true"})
    False
    >>> str(sel)
    '!maintenance,zone in (eu-1,eu-2)'
    >>> LabelSelector.from_dict({"matchLabels": {"kubernetes.io/hostname": "node1"}})
    LabelSelector('kubernetes.io/hostname=node1')

    It is not a field selector and has no numeric comparisons (kubectl's ``>``/``<`` only
    exist for set-based *string* selectors of some APIs, not for ``metav1.LabelSelector``).
    """

    #: The requirements, all of which must hold, in canonical order; none matches every
    #: set of labels.
    requirements: tuple[SelectorRequirement, ...] = field(default=(), converter=_canonical)
    _checks: tuple[_Check, ...] = field(init=False, repr=False, eq=False)

    @_checks.default
    def _compile(self) -> tuple[_Check, ...]:
        return tuple(r._check() for r in self.requirements)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def everything(cls) -> LabelSelector:
        """The empty selector, which matches every set of labels."""
        return cls()

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> LabelSelector:
        """A selector requiring exactly these key/value pairs (like ``matchLabels``)."""
        return cls.from_dict({"matchLabels": dict(labels)})

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | None) -> LabelSelector:
        """
        Build a selector from its API object form.

        ``spec`` is a mapping with optional ``matchLabels`` (key to value) and
        ``matchExpressions`` (a list of ``{"key", "operator", "values"}``); ``None`` or an
        empty mapping is the selector that matches everything. Raises
        :class:`SelectorError` naming the offending part, such as
        ``matchExpressions[1].values``.
        """
        if spec is None:
            return cls()
        if not isinstance(spec, Mapping):
            raise SelectorError(f"a label selector must be an object, got {type(spec).__name__}")
        unknown = _by_name(set(spec) - {"matchLabels", "matchExpressions"})
        if unknown:
            raise SelectorError(
                f"unknown key {unknown[0]!r} (a label selector has matchLabels and "
                "matchExpressions)",
                path=str(unknown[0]),
            )
        requirements: list[SelectorRequirement] = []
        labels = spec.get("matchLabels")
        labels = {} if labels is None else labels
        if not isinstance(labels, Mapping):
            raise SelectorError("must be an object of key: value", path="matchLabels")
        for key, value in labels.items():
            label_problem = key_problem(key) or value_problem(value)
            if label_problem is not None:
                raise SelectorError(label_problem, path=f"matchLabels[{json.dumps(key)}]")
            requirements.append(SelectorRequirement(key=key, operator="In", values=(value,)))
        expressions = spec.get("matchExpressions")
        expressions = [] if expressions is None else expressions
        if not isinstance(expressions, list | tuple):
            raise SelectorError("must be a list", path="matchExpressions")
        for i, expr in enumerate(expressions):
            path = f"matchExpressions[{i}]"
            if not isinstance(expr, Mapping):
                raise SelectorError("must be an object with key, operator, values", path=path)
            extra = _by_name(set(expr) - {"key", "operator", "values"})
            if extra:
                raise SelectorError(
                    f"unknown key {extra[0]!r} (an expression has key, operator and values)",
                    path=path,
                )
            values = expr.get("values")
            values = [] if values is None else values
            if not isinstance(values, list | tuple):
                raise SelectorError("must be a list of strings", path=f"{path}.values")
            problem = _requirement_problem(expr.get("key"), expr.get("operator"), values)
            if problem is not None:
                field_name, message = problem
                raise SelectorError(message, path=f"{path}.{field_name}")
            requirements.append(
                SelectorRequirement(
                    key=expr["key"], operator=cast("Operator", expr["operator"]), values=values
                )
            )
        return cls(requirements=requirements)

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """
        Parse kubectl's selector syntax (``kubectl get nodes -l TEXT``).

        Accepted forms, comma-separated and all ANDed: ``key=value``, ``key==value``,
        ``key!=value``, ``key in (v1,v2)``, ``key notin (v1,v2)``, ``key`` (exists),
        ``!key`` (does not exist). The empty string matches everything. Raises
        :class:`SelectorError` quoting the offending part.
        """
        if not isinstance(text, str):
            raise TypeError(f"LabelSelector.parse() needs a str, got {type(text).__name__}")
        return cls(requirements=_Parser(text).parse())

    # -- use ------------------------------------------------------------------------

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every requirement (always true when empty)."""
        return _satisfies(self._checks, labels)

    def is_empty(self) -> bool:
        """Whether this is the match-everything selector."""
        return not self.requirements

    def to_dict(self) -> dict[str, Any]:
        """
        The canonical API object form.

        Single-value ``In`` requirements go to ``matchLabels`` (one per key), everything
        else to ``matchExpressions``; ``values`` is omitted for ``Exists`` and
        ``DoesNotExist`` as Kubernetes does. The empty selector gives ``{}``.
        """
        match_labels: dict[str, str] = {}
        expressions: list[dict[str, Any]] = []
        for r in self.requirements:
            if r.operator == "In" and len(r.values) == 1 and r.key not in match_labels:
                match_labels[r.key] = r.values[0]
                continue
            expr: dict[str, Any] = {"key": r.key, "operator": r.operator}
            if r.values:
                expr["values"] = list(r.values)
            expressions.append(expr)
        out: dict[str, Any] = {}
        if match_labels:
            out["matchLabels"] = match_labels
        if expressions:
            out["matchExpressions"] = expressions
        return out

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({str(self)!r})"


# -- the string syntax ---------------------------------------------------------------

_TOKEN_RE: Final = re.compile(
    r"""
    \s*(?:
      (?P<op>==|!=|=|!|\(|\)|,|>|<)
    | (?P<ident>[^\s,=!()<>]+)
    )""",
    re.VERBOSE,
)
_BLANK_RE: Final = re.compile(r"\s*\Z")


class _Parser:
    """A small recursive-descent parser for kubectl's selector grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, position)
        pos = 0
        while pos < len(text):
            if _BLANK_RE.match(text, pos):  # only spaces left (matched in place: no copy)
                break
            m = _TOKEN_RE.match(text, pos)
            if m is None:  # pragma: no cover - the pattern accepts every non-space run
                raise self.error(f"unexpected character {text[pos]!r}", pos)
            kind = "op" if m.group("op") else "ident"
            tok = m.group(kind)
            self.tokens.append((kind, tok, m.start(kind)))
            pos = m.end()
        self.i = 0

    def error(self, message: str, pos: int | None = None) -> SelectorError:
        where = f" at position {pos}" if pos is not None else ""
        return SelectorError(f"invalid selector {self.text!r}{where}: {message}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end")
        self.i += 1
        return tok

    def parse(self) -> list[SelectorRequirement]:
        requirements: list[SelectorRequirement] = []
        if not self.tokens:
            return requirements
        while True:
            requirements.append(self.requirement())
            tok = self.peek()
            if tok is None:
                return requirements
            if tok[1] != ",":
                raise self.error(f"expected ',' before {tok[1]!r}", tok[2])
            self.i += 1

    def ident(self, what: str) -> tuple[str, int]:
        kind, tok, pos = self.take()
        if kind != "ident":
            raise self.error(f"expected {what}, found {tok!r}", pos)
        return tok, pos

    def build(self, key: str, op: Operator, values: Iterable[str], pos: int) -> SelectorRequirement:
        values = list(values)
        problem = _requirement_problem(key, op, values)
        if problem is not None:
            raise self.error(problem[1], pos)
        return SelectorRequirement(key=key, operator=op, values=values)

    def requirement(self) -> SelectorRequirement:
        tok = self.peek()
        if tok is not None and tok[1] == "!":
            self.i += 1
            key, pos = self.ident("a label key after '!'")
            return self.build(key, "DoesNotExist", (), pos)
        key, pos = self.ident("a label key")
        nxt = self.peek()
        if nxt is None or nxt[1] == ",":
            return self.build(key, "Exists", (), pos)
        kind, op, op_pos = self.take()
        if op in ("=", "==", "!="):
            value = ""
            after = self.peek()
            if after is not None and after[0] == "ident":
                value = self.take()[1]
            return self.build(key, "In" if op != "!=" else "NotIn", (value,), pos)
        if kind == "ident" and op in ("in", "notin"):
            return self.build(key, "In" if op == "in" else "NotIn", self.value_set(), pos)
        if op in (">", "<"):
            raise self.error(
                f"numeric comparison {op!r} is not supported by label selectors "
                "(metav1.LabelSelector has only In, NotIn, Exists, DoesNotExist)",
                op_pos,
            )
        raise self.error(f"expected '=', '!=', 'in' or 'notin' after {key!r}, found {op!r}", op_pos)

    def value_set(self) -> list[str]:
        kind, tok, pos = self.take()
        if tok != "(":
            raise self.error(f"expected '(' to open the value set, found {tok!r}", pos)
        values: list[str] = []
        expect_value = True
        while True:
            kind, tok, pos = self.take()
            if tok == ")":
                if expect_value and values:  # trailing comma: an empty value
                    values.append("")
                return values
            if tok == ",":
                if expect_value:  # leading or doubled comma: an empty value
                    values.append("")
                expect_value = True
                continue
            if kind != "ident" or not expect_value:
                raise self.error(f"unexpected {tok!r} in the value set", pos)
            values.append(tok)
            expect_value = False
