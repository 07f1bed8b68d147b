"""
Loading a policy from any document, however deep, large or odd: a policy or a ConfigError.

The fault class is "the document is not usable JSON data", in every form it takes: nesting
(in text and in already-decoded mappings, cycles included), numbers no 64-bit value holds,
NaN/Infinity tokens, invalid UTF-8, byte-order marks, top levels that are not objects,
duplicate keys, Python values that are not JSON. Hypothesis then throws arbitrary text,
bytes and structures at the loader and accepts only two outcomes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttlekit import ConcurrencyPolicy, ConfigError, VeleroNodeAgentConfig
from throttlekit._cli._main import main
from throttlekit._policy._gojson import parse_json_text

MAX_DEPTH = 100  # documented in docs/policy.md


def load(doc: Any, *, strict: bool = False) -> ConcurrencyPolicy:
    return ConcurrencyPolicy.from_velero(doc, strict=strict)


def problem_of(doc: Any, *, strict: bool = False) -> tuple[str, str]:
    """The single problem ``doc`` gives, as (path, message)."""
    with pytest.raises(ConfigError) as info:
        load(doc, strict=strict)
    (problem,) = info.value.problems
    return problem.path, problem.message


def nested(depth: int, leaf: str = "1") -> str:
    """``{"loadConcurrency": {"x": [[...leaf...]]}}`` nested ``depth`` levels in total."""
    inner = "[" * (depth - 2) + leaf + "]" * (depth - 2)
    return '{"loadConcurrency": {"x": ' + inner + "}}"


# -- nesting -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_json_text_is_a_config_error(depth: int, opener: str) -> None:
    """The issue's case: deeply nested text is a ConfigError with a position, not RecursionError."""
    closer = "]" if opener == "[" else "}"
    text = opener * depth + ("" if opener == "[" else "1") + closer * depth
    for strict in (False, True):
        path, message = problem_of(text, strict=strict)
        column = len(opener) * MAX_DEPTH + 1
        assert (path, message) == ("", f"nested deeper than 100 levels (line 1, column {column})")


def test_the_depth_limit_is_exact_and_strings_do_not_count() -> None:
    """MAX_DEPTH levels load; one more does not; brackets inside strings are not nesting."""
    from throttlekit._policy._gojson import MAX_DEPTH as limit

    assert limit == MAX_DEPTH
    assert load(nested(MAX_DEPTH)).config is not None
    path, message = problem_of(nested(MAX_DEPTH + 1))
    assert path == ""
    assert message.startswith("nested deeper than 100 levels (line 1, column ")
    brackets = '"' + "[{" * 5000 + '\\"' + "]}" * 5000 + '"'
    policy = load('{"x": ' + brackets + ', "loadConcurrency": {"globalConfig": 2}}')
    assert policy.global_number == 2


def test_deep_text_in_a_configmap_names_its_data_key() -> None:
    """The JSON inside a ConfigMap's data is checked the same way, and located by key."""
    cm = {"kind": "ConfigMap", "apiVersion": "v1", "data": {"cfg.json": "[" * 5000}}
    path, message = problem_of(cm)
    assert path == 'data["cfg.json"]'
    assert message.startswith("nested deeper than 100 levels")


def test_deep_decoded_mapping_is_a_config_error_with_its_path() -> None:
    """A mapping built in Python, 5,000 levels deep, is refused where it gets too deep."""
    root: dict[str, Any] = {}
    node = root
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    path, message = problem_of({"loadConcurrency": {"globalConfig": 1, "extra": root}})
    assert path == "loadConcurrency.extra" + ".a" * (MAX_DEPTH - 2)
    assert message == "nested deeper than 100 levels"


@pytest.mark.parametrize("kind", ["dict", "list"])
def test_a_document_that_contains_itself_is_a_config_error(kind: str) -> None:
    """Cycles cannot be JSON; they end at the depth limit instead of looping or recursing."""
    doc: dict[str, Any] = {"loadConcurrency": {"globalConfig": 1}}
    if kind == "dict":
        doc["self"] = doc
    else:
        loop: list[Any] = []
        loop.append(loop)
        doc["self"] = loop
    with pytest.raises(ConfigError, match="nested deeper than 100 levels"):
        load(doc)


# -- numbers -----------------------------------------------------------------------------

GC = "loadConcurrency.globalConfig"
EXTRA = "loadConcurrency.futureKnob"


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("1e400", "the number 1e400 is out of range"),
        ("-1e400", "the number -1e400 is out of range"),
        ("9" * 5000, "an integer of 5000 digits is out of range"),
        ("-" + "9" * 5000, "an integer of 5000 digits is out of range"),
        ("1" + "0" * 350, "an integer of about 351 digits is out of range"),
        ("NaN", "NaN is not valid JSON"),
        ("Infinity", "Infinity is not valid JSON"),
        ("-Infinity", "-Infinity is not valid JSON"),
    ],
)
@pytest.mark.parametrize("where", [GC, EXTRA])
def test_numbers_that_are_not_json_numbers_are_located(
    token: str, fragment: str, where: str
) -> None:
    """Out-of-range numbers and NaN/Infinity tokens are a ConfigError at their own path."""
    key = where.rsplit(".", 1)[1]
    text = f'{{"loadConcurrency": {{"{key}": {token}}}}}'
    for strict in (False, True):
        path, message = problem_of(text, strict=strict)
        assert path == where
        assert fragment in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (10**5000, "an integer of about 5001 digits is out of range"),
        (math.nan, "the number nan is not valid JSON"),
        (-math.inf, "the number -inf is not valid JSON"),
    ],
    ids=["10**5000", "nan", "-inf"],
)
def test_numbers_in_a_decoded_mapping_are_checked_too(value: object, fragment: str) -> None:
    """The same numbers in a mapping built in Python, in a typed field or an unknown key."""
    for where in (GC, EXTRA):
        key = where.rsplit(".", 1)[1]
        path, message = problem_of({"loadConcurrency": {key: value}})
        assert (path, fragment in message) == (where, True)


def test_big_numbers_that_fit_a_float_are_kept() -> None:
    """1e300 and a 300-digit integer are JSON numbers: kept under an unknown key."""
    policy = load('{"a": 1e300, "b": 1' + "0" * 299 + "}")
    assert policy.config is not None
    assert policy.config.extra == {"a": 1e300, "b": 10**299}


# -- encodings, top levels, duplicates, Python values ----------------------------------


def test_invalid_utf8_after_a_bom_names_the_byte_in_the_file() -> None:
    """The byte offset counts the byte-order mark, so it points into the file as read."""
    assert problem_of(b'\xef\xbb\xbf{"a": "\xff"}') == (
        "",
        "not UTF-8 text (invalid start byte at byte 10)",
    )


@pytest.mark.parametrize("doc", ['\ufeff{"loadConcurrency": {"globalConfig": 4}}'])
def test_a_byte_order_mark_is_skipped_in_text_and_bytes(doc: str) -> None:
    """The same file loads the same whether it was read as text or as bytes."""
    assert load(doc).global_number == 4
    assert load(doc.encode()).global_number == 4


@pytest.mark.parametrize(
    ("doc", "shown"),
    [
        ("[]", "a list"),
        ('"text"', "the string 'text'"),
        ("7", "the integer 7"),
        ("null", "null"),
        ("true", "the boolean true"),
        ("", None),
        ("   ", None),
    ],
)
def test_a_top_level_that_is_not_an_object(doc: str, shown: str | None) -> None:
    """Every other top level is a ConfigError for the whole document (path '')."""
    path, message = problem_of(doc)
    assert path == ""
    if shown is None:
        assert message.startswith("not valid JSON: Expecting value (line 1, column ")
    else:
        assert message == f"the configuration must be a JSON object, got {shown}"


def test_duplicate_keys_warn_lenient_and_fail_strict() -> None:
    """The last value wins, as in Go; the duplicate is a warning, and a problem when strict."""
    text = (
        '{"loadConcurrency": {"globalConfig": 2, "globalConfig": 3,'
        ' "perNodeConfig": [{"number": 1, "number": 5, "number": 6}]}}'
    )
    policy = load(text)
    assert policy.global_number == 3
    assert policy.rules[0].value == 6
    dupes = [(w.path, w.message) for w in policy.warnings if "duplicate" in w.message]
    assert dupes == [
        (GC, "duplicate key; the last value is used, as Velero does"),
        ("loadConcurrency.perNodeConfig[0].number", dupes[0][1]),
    ]
    with pytest.raises(ConfigError) as info:
        load(text, strict=True)
    assert [p.path for p in info.value.problems] == [GC, "loadConcurrency.perNodeConfig[0].number"]


def test_duplicates_inside_a_configmap_payload_are_reported_there() -> None:
    """Paths of duplicates inside the data text are relative to that document."""
    cm = {"apiVersion": "v1", "data": {"c.json": '{"podLabels": {"a": "1", "a": "2"}}'}}
    config = VeleroNodeAgentConfig.from_json(cm)
    assert config.pod_labels == {"a": "2"}
    assert [p.path for p in config.problems] == ["podLabels.a"]


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"podLabels": {(1, 2): "a"}}, "podLabels[(1, 2)]", "a key must be a string, got tuple"),
        ({"x": {None: 1}}, "x[None]", "a key must be a string, got NoneType"),
        ({"x": {1, 2}}, "x", "a value of type set is not JSON data"),
        ({"x": [b"raw"]}, "x[0]", "a value of type bytes is not JSON data"),
        ({"x": object()}, "x", "a value of type object is not JSON data"),
    ],
)
def test_python_values_that_are_not_json(doc: Any, path: str, message: str) -> None:
    """A mapping built in Python is checked for JSON data, every problem with its path."""
    assert problem_of(doc) == (path, message)


def test_every_non_json_value_is_listed_up_to_a_hundred() -> None:
    """All problems at once, but a million of them are summarised, not listed."""
    with pytest.raises(ConfigError) as info:
        load({"x": [math.nan] * 1000})
    problems = info.value.problems
    assert len(problems) == 101
    assert problems[0].path == "x[0]" and problems[99].path == "x[99]"
    assert problems[100].message == "and 900 more problems like these"


@pytest.mark.parametrize("doc", [object(), {1, 2}, 3j, Path("cfg.json")])
def test_an_argument_that_is_no_document_is_a_type_error(doc: object) -> None:
    """Not a mapping, text, bytes or JSON value at all: a TypeError naming doc."""
    with pytest.raises(TypeError, match="doc must be a mapping, JSON text or bytes"):
        load(doc)


def test_parse_json_text_gives_the_same_checks_to_other_readers() -> None:
    """The node list reader of the CLI uses parse_json_text: deep text is a ConfigError there."""
    with pytest.raises(ConfigError, match="nested deeper"):
        parse_json_text("[" * 10_000)
    assert parse_json_text(b'\xef\xbb\xbf{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[" * 1000 + "]" * 1000,
        '{"loadConcurrency": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
        '{"loadConcurrency": {"globalConfig": 1e400}}',
        '{"loadConcurrency": {"globalConfig": ' + "9" * 5000 + "}}",
    ],
)
@pytest.mark.parametrize("command", ["validate", "resolve"])
def test_the_cli_reports_odd_files_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, command: str
) -> None:
    """throttlekit validate / resolve exit 1 with the problem on such files."""
    config = tmp_path / "cfg.json"
    config.write_text(text)
    extra = ["--labels", "a=b"] if command == "resolve" else []
    assert main([command, str(config), *extra]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "not usable" in out + err


# -- fuzzing: only a policy or a ConfigError ----------------------------------------------

_TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    " ",
    "\n",
    '"loadConcurrency"',
    '"globalConfig"',
    '"perNodeConfig"',
    '"nodeSelector"',
    '"matchLabels"',
    '"matchExpressions"',
    '"number"',
    '"key"',
    '"operator"',
    '"values"',
    '"In"',
    '"kind"',
    '"ConfigMap"',
    '"apiVersion"',
    '"data"',
    '"a"',
    '"\\ud800"',
    '"\\u0000"',
    '"\\"',
    "0",
    "-1",
    "3",
    "2.5",
    "1e400",
    "1" + "0" * 400,
    "9" * 4400,
    "NaN",
    "-Infinity",
    "true",
    "null",
    "\ufeff",
    "[" * 150,
    "]" * 150,
    "[" * 700,
    '{"a": ' * 700,
]

json_ish_text = st.lists(st.sampled_from(_TOKENS), max_size=60).map("".join)

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**1000, max_value=2**1100),
    st.floats(),
    st.text(max_size=10),
    st.builds(pow, st.just(10), st.just(5000)),  # built, as its repr is refused
    st.sampled_from([b"x", {1}, 1j, (1,)]),
)
_KEY_WORDS = [
    "loadConcurrency",
    "globalConfig",
    "perNodeConfig",
    "nodeSelector",
    "number",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "podLabels",
    "backupPVC",
    "loadAffinity",
    "kind",
    "apiVersion",
    "data",
    "GLOBALCONFIG",
]
_keys = st.one_of(
    st.sampled_from(_KEY_WORDS),
    st.text(max_size=5),
    st.integers(),
    st.sampled_from([None, (1, 2), 1.5, True]),
)
json_ish_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_keys, inner, max_size=4),
    ),
    max_leaves=30,
)


_SLOTS = ["top", "section", "global", "rule", "selector", "labels", "extra"]


def _document(value: Any, depth: int, slot: str) -> Any:
    """``value`` wrapped in ``depth`` lists, put at one place of a Velero document."""
    for _ in range(depth):
        value = [value]
    return {
        "top": value,
        "section": {"loadConcurrency": value},
        "global": {"loadConcurrency": {"globalConfig": value}},
        "rule": {"loadConcurrency": {"perNodeConfig": [{"number": value}]}},
        "selector": {"loadConcurrency": {"perNodeConfig": [{"nodeSelector": value}]}},
        "labels": {
            "loadConcurrency": {"perNodeConfig": [{"nodeSelector": {"matchLabels": value}}]}
        },
        "extra": {"loadConcurrency": {"globalConfig": 2, "futureKnob": value}},
    }[slot]


documents = st.builds(
    _document,
    json_ish_values,
    st.sampled_from([0, 1, 50, 98, 99, 100, 3000]),
    st.sampled_from(_SLOTS),
)


def _as_text(doc: Any) -> str | None:
    """JSON text for ``doc`` (NaN and infinities written as tokens), or None if it has none."""
    try:
        return json.dumps(doc)
    except (TypeError, ValueError, RecursionError):
        return None


def _assert_policy_or_config_error(doc: Any, strict: bool) -> None:
    error: ConfigError | None = None
    try:
        policy = load(doc, strict=strict)
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert error.problems
        assert all(isinstance(p.path, str) and p.message for p in error.problems)
        assert str(error)
        return
    assert policy.config is not None
    json.loads(policy.config.to_json())  # what loaded can be written back as JSON
    policy.resolve({"a": "b"})
    policy.resolve(None)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(text=json_ish_text, strict=st.booleans(), as_bytes=st.booleans())
def test_fuzz_token_soup(text: str, strict: bool, as_bytes: bool) -> None:
    """Text made of JSON tokens (and bad ones) gives a policy or a ConfigError, nothing else."""
    doc = text.encode("utf-8", "surrogatepass") if as_bytes else text
    _assert_policy_or_config_error(doc, strict)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    doc=documents,
    splices=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_TOKENS)), max_size=3),
    strict=st.booleans(),
    as_bytes=st.booleans(),
)
def test_fuzz_spliced_documents(
    doc: Any, splices: list[tuple[int, str]], strict: bool, as_bytes: bool
) -> None:
    """Velero-shaped JSON text, with tokens spliced in at random places."""
    text = _as_text(doc)
    if text is None:
        return  # not expressible as text; the mapping itself is fuzzed below
    for where, token in splices:
        at = where % (len(text) + 1)
        text = text[:at] + token + text[at:]
    _assert_policy_or_config_error(
        text.encode("utf-8", "surrogatepass") if as_bytes else text, strict
    )


@settings(deadline=None)
@given(data=st.binary(max_size=200), strict=st.booleans())
def test_fuzz_bytes(data: bytes, strict: bool) -> None:
    """Arbitrary bytes give a policy or a ConfigError."""
    _assert_policy_or_config_error(data, strict)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(doc=documents, strict=st.booleans())
def test_fuzz_nested_structures(doc: Any, strict: bool) -> None:
    """Odd values, nested to any depth, at every place of a decoded Velero document."""
    _assert_policy_or_config_error(doc, strict)
