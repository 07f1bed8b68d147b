"""LabelSelector: Kubernetes semantics, both syntaxes, validation and canonical forms."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import LabelSelector, SelectorError, SelectorRequirement


def test_empty_selector_matches_everything() -> None:
    """The empty selector matches any labels, including none."""
    for sel in (
        LabelSelector(),
        LabelSelector.parse(""),
        LabelSelector.from_dict({}),
        LabelSelector.from_dict(None),
        LabelSelector.everything(),
    ):
        assert sel.matches({})
        assert sel.matches({"a": "b"})
        assert sel.is_empty()
        assert str(sel) == ""
        assert sel.to_dict() == {}


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a==b", {"a": "b"}, True),
        ("a!=b", {}, True),  # != matches when the key is absent
        ("a!=b", {"a": "c"}, True),
        ("a!=b", {"a": "b"}, False),
        ("a in (x,y)", {"a": "y"}, True),
        ("a in (x,y)", {"a": "z"}, False),
        ("a in (x,y)", {}, False),
        ("a notin (x,y)", {}, True),  # NotIn matches when the key is absent
        ("a notin (x,y)", {"a": "x"}, False),
        ("a notin (x,y)", {"a": "z"}, True),
        ("a", {"a": ""}, True),
        ("a", {}, False),
        ("!a", {}, True),
        ("!a", {"a": "x"}, False),
        ("a=", {"a": ""}, True),  # the empty value is a valid label value
        ("a=b,c=d", {"a": "b", "c": "d"}, True),  # requirements are ANDed
        ("a=b,c=d", {"a": "b"}, False),
    ],
)
def test_string_syntax_matches_like_kubernetes(
    text: str, labels: dict[str, str], expected: bool
) -> None:
    """Each kubectl operator matches exactly as Kubernetes evaluates it."""
    assert LabelSelector.parse(text).matches(labels) is expected


def test_dict_form_and_string_form_agree() -> None:
    """The API object form and kubectl syntax build equal selectors."""
    from_dict = LabelSelector.from_dict(
        {
            "matchLabels": {"tier": "db"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b", "a"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "ssd", "operator": "Exists", "values": []},
            ],
        }
    )
    from_text = LabelSelector.parse("zone in (a, b), tier=db, !legacy, env!=dev, ssd")
    assert from_dict == from_text
    assert str(from_dict) == "env!=dev,!legacy,ssd,tier=db,zone in (a,b)"


def test_to_dict_is_canonical_api_form() -> None:
    """Single-value In goes to matchLabels; Exists/DoesNotExist omit values."""
    sel = LabelSelector.parse("tier=db,zone in (a,b),!legacy,env!=dev")
    assert sel.to_dict() == {
        "matchLabels": {"tier": "db"},
        "matchExpressions": [
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
        ],
    }
    assert LabelSelector.from_dict(sel.to_dict()) == sel


def test_two_in_requirements_on_one_key_survive_to_dict() -> None:
    """A key with two In requirements keeps both (only one fits in matchLabels)."""
    sel = LabelSelector(
        requirements=[
            SelectorRequirement(key="a", operator="In", values=["x"]),
            SelectorRequirement(key="a", operator="In", values=["y"]),
        ]
    )
    assert LabelSelector.from_dict(sel.to_dict()) == sel
    assert not sel.matches({"a": "x"})


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]},
            "matchExpressions[0].operator",
            "'Like' is not a valid label selector operator",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
            "matchExpressions[0].operator",
            "'in' is not a valid",
        ),  # operators are case-sensitive
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "matchExpressions[0].values",
            "needs at least one value",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn"}]},
            "matchExpressions[0].values",
            "needs at least one value",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0].values",
            "takes no values",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
            "matchExpressions[0].operator",
            "'Gt' is not a valid",
        ),
        ({"matchLabels": {"inva/lid": "inva/lid"}}, 'matchLabels["inva/lid"]', "label value"),
        ({"matchLabels": {"-bad": "x"}}, 'matchLabels["-bad"]', "label key"),
        ({"matchLabels": {"Example.com/a": "x"}}, 'matchLabels["Example.com/a"]', "lowercase DNS"),
        ({"matchLabels": {"a": "x" * 64}}, 'matchLabels["a"]', "at most 63"),
        ({"matchLabels": {"/a": "x"}}, 'matchLabels["/a"]', "prefix before '/' must not be empty"),
        ({"matchLabels": {"a/": "x"}}, 'matchLabels["a/"]', "name part must not be empty"),
        ({"matchLabels": []}, "matchLabels", "must be an object"),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "b/c"]}]},
            "matchExpressions[0].values[1]",
            "label value 'b/c'",
        ),
        (
            {"matchExpressions": [{"key": "-a", "operator": "Exists"}]},
            "matchExpressions[0].key",
            "label key '-a'",
        ),
        ({"matchLabelz": {}}, "matchLabelz", "unknown key"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "valuez": []}]},
            "matchExpressions[0]",
            "unknown key 'valuez'",
        ),
    ],
)
def test_from_dict_rejects_invalid_selectors_with_a_path(
    spec: dict, path: str, fragment: str
) -> None:  # type: ignore[type-arg]
    """Every invalid selector is a SelectorError that says where and why."""
    with pytest.raises(SelectorError) as info:
        LabelSelector.from_dict(spec)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a in ()", "needs at least one value"),
        ("a in (x", "unexpected end"),
        ("a=b c", "expected ','"),
        ("a>1", "numeric comparison"),
        ("a<1", "numeric comparison"),
        ("=b", "expected a label key"),
        ("a=b,", "unexpected end"),
        ("!", "unexpected end"),
        ("a in x", "expected '('"),
        ("a=b/c", "label value"),
        ("UPPER.example.com/a=b", "lowercase DNS"),
        ("a foo b", "expected '=', '!=', 'in' or 'notin'"),
    ],
)
def test_parse_rejects_bad_text_and_quotes_it(text: str, fragment: str) -> None:
    """A malformed kubectl selector is a SelectorError quoting the input."""
    with pytest.raises(SelectorError) as info:
        LabelSelector.parse(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_parse_accepts_empty_values_in_sets() -> None:
    """Kubernetes allows the empty value inside a set: 'a in (,x)'."""
    assert LabelSelector.parse("a in (,x)").matches({"a": ""})
    assert LabelSelector.parse("a in (x,)").matches({"a": ""})


def test_qualified_keys_and_limits() -> None:
    """Prefixed keys up to 253+63 characters are valid; the name part is limited to 63."""
    prefix = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters
    assert len(prefix) == 253
    key = f"{prefix}/{'n' * 63}"
    assert LabelSelector.parse(f"{key}=v").matches({key: "v"})
    with pytest.raises(SelectorError):
        LabelSelector.parse(f"{prefix}x/n=v")
    with pytest.raises(SelectorError):
        LabelSelector.parse(f"{'n' * 64}=v")


def test_parse_rejects_non_strings() -> None:
    """parse() needs text; anything else is a TypeError naming the type."""
    with pytest.raises(TypeError, match="needs a str"):
        LabelSelector.parse(3)  # type: ignore[arg-type]


def test_repr_and_from_labels() -> None:
    """repr shows the canonical text; from_labels is matchLabels."""
    sel = LabelSelector.from_labels({"b": "2", "a": "1"})
    assert repr(sel) == "LabelSelector('a=1,b=2')"


def test_requirement_constructor_validates() -> None:
    """Requirements built directly are validated like parsed ones."""
    with pytest.raises(SelectorError, match="needs at least one value"):
        SelectorRequirement(key="a", operator="In", values=())


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({1: "x", "zz": 2}, "zz", "unknown key 'zz'"),
        ({None: 1}, "None", "unknown key None"),
        ({"matchExpressions": [{"key": "a", 7: 1, "x": 2}]}, "matchExpressions[0]", "'x'"),
    ],
)
def test_from_dict_with_keys_that_are_not_strings(spec: Any, path: str, fragment: str) -> None:
    """A mapping built in Python may mix key types: still a SelectorError, not a TypeError."""
    with pytest.raises(SelectorError) as info:
        LabelSelector.from_dict(spec)
    assert info.value.path == path
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("values", "error", "fragment"),
    [
        ("abc", TypeError, "values must be a sequence of strings, not the string 'abc'"),
        ([1, "a"], SelectorError, "label value must be a string, got int"),
        ([["x"]], SelectorError, "label value must be a string, got list"),
    ],
)
def test_requirement_values_of_the_wrong_type(
    values: Any, error: type[Exception], fragment: str
) -> None:
    """Values that are not strings are named, never a '<' or 'unhashable' TypeError."""
    with pytest.raises(error, match=fragment):
        SelectorRequirement(key="a", operator="In", values=values)


# -- properties -------------------------------------------------------------------------

_ALNUM = "abcXYZ019"
_names = st.builds(
    lambda a, mid, z: a + mid + z if mid or z else a,
    st.sampled_from(_ALNUM),
    st.text(_ALNUM + "-_.", max_size=6),
    st.sampled_from(["", *_ALNUM]),
).filter(lambda n: n[-1] in _ALNUM)
_prefixes = st.lists(st.text("abc019", min_size=1, max_size=4), min_size=1, max_size=3).map(
    ".".join
)
_keys = st.one_of(_names, st.builds(lambda p, n: f"{p}/{n}", _prefixes, _names))
_values = st.one_of(st.just(""), _names)


@st.composite
def requirements(draw: st.DrawFn) -> SelectorRequirement:
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    values = draw(st.lists(_values, min_size=1, max_size=3)) if op in ("In", "NotIn") else []
    return SelectorRequirement(key=draw(_keys), operator=op, values=values)


selectors = st.builds(
    lambda rs: LabelSelector(requirements=rs), st.lists(requirements(), max_size=5)
)
label_sets = st.dictionaries(_keys, _values, max_size=6)


@given(selectors)
def test_str_round_trips(sel: LabelSelector) -> None:
    """parse(str(s)) == s for every valid selector."""
    assert LabelSelector.parse(str(sel)) == sel


@given(selectors)
def test_to_dict_round_trips(sel: LabelSelector) -> None:
    """from_dict(to_dict(s)) == s for every valid selector."""
    assert LabelSelector.from_dict(sel.to_dict()) == sel


@given(selectors, label_sets)
def test_matches_is_the_and_of_requirements(sel: LabelSelector, labels: dict[str, str]) -> None:
    """A selector matches exactly when every requirement does, as defined by Kubernetes."""

    def k8s(req: SelectorRequirement) -> bool:
        present = req.key in labels
        if req.operator == "In":
            return present and labels[req.key] in req.values
        if req.operator == "NotIn":
            return not present or labels[req.key] not in req.values
        if req.operator == "Exists":
            return present
        return not present

    assert sel.matches(labels) == all(k8s(r) for r in sel.requirements)
