"""ConcurrencyPolicy (Velero loadConcurrency semantics) and the generic RuledPolicy."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import ConcurrencyPolicy, ConfigError, LabelSelector, Rule, RuledPolicy

# The sample from Velero's node-agent concurrency documentation.
VELERO_SAMPLE: dict[str, Any] = {
    "loadConcurrency": {
        "globalConfig": 2,
        "perNodeConfig": [
            {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "node1"}}, "number": 3},
            {
                "nodeSelector": {
                    "matchLabels": {"beta.kubernetes.io/instance-type": "Standard_B4ms"}
                },
                "number": 5,
            },
        ],
    }
}
NODE1 = {"kubernetes.io/hostname": "node1"}
B4MS = {"beta.kubernetes.io/instance-type": "Standard_B4ms"}


def lc(global_config: Any = 2, *rules: tuple[Any, Any]) -> dict[str, Any]:
    """A node-agent document with the given global number and (selector, number) rules."""
    section: dict[str, Any] = {
        "perNodeConfig": [{"nodeSelector": s, "number": n} for s, n in rules]
    }
    if global_config is not None:
        section["globalConfig"] = global_config
    return {"loadConcurrency": section}


# -- the Velero docs' sample ------------------------------------------------------------


def test_sample_node1_gets_3() -> None:
    """A node matched only by hostname gets that rule's number."""
    assert ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve(NODE1).value == 3


def test_sample_b4ms_node_gets_5() -> None:
    """A node matched only by instance type gets 5."""
    assert ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve(B4MS).value == 5


def test_sample_node_matching_both_rules_gets_the_smallest() -> None:
    """node1 with the B4ms label matches both rules; the smallest number (3) wins."""
    r = ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve({**NODE1, **B4MS})
    assert (r.value, r.source, r.matched, r.winner) == (3, "rule", (0, 1), 0)


def test_sample_other_node_gets_the_global_number() -> None:
    """A node no rule matches gets the global number."""
    r = ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve({"kubernetes.io/hostname": "node9"})
    assert (r.value, r.source, r.matched, r.winner) == (2, "global", (), None)


def test_sample_accepted_as_json_text_bytes_and_configmap() -> None:
    """The same document as text, bytes or a whole ConfigMap resolves the same."""
    text = json.dumps(VELERO_SAMPLE)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "node-agent-config", "namespace": "velero"},
        "data": {"node-agent-config.json": text},
    }
    for doc in (text, text.encode(), configmap, json.dumps(configmap)):
        assert ConcurrencyPolicy.from_velero(doc).resolve({**NODE1, **B4MS}).value == 3


# -- rule 1: no config ------------------------------------------------------------------


def test_no_load_concurrency_section_gives_the_default_without_warning() -> None:
    """No loadConcurrency: the default (1), quietly, as Velero does."""
    policy = ConcurrencyPolicy.from_velero({"podResources": {"cpuRequest": "1"}})
    r = policy.resolve(NODE1)
    assert (r.value, r.source, r.warnings) == (1, "default", ())
    assert policy.warnings == ()


def test_default_is_configurable() -> None:
    """from_velero(default=N) changes the hard default."""
    assert ConcurrencyPolicy.from_velero({}, default=4).resolve({}).value == 4


# -- rule 2: bad global number ----------------------------------------------------------


@pytest.mark.parametrize("number", [0, -1, -(2**63)])
def test_non_positive_global_number_falls_back_to_default_with_warning(number: int) -> None:
    """globalConfig <= 0: the default, and a warning naming the number."""
    policy = ConcurrencyPolicy.from_velero(lc(number))
    r = policy.resolve({})
    assert (r.value, r.source) == (1, "default")
    assert r.warnings == (
        f"global number {number} is invalid (must be at least 1); used the default 1",
    )
    assert [w.path for w in policy.warnings] == ["loadConcurrency.globalConfig"]


def test_missing_global_number_falls_back_to_default_with_warning() -> None:
    """A loadConcurrency without globalConfig: the default, with a warning."""
    policy = ConcurrencyPolicy.from_velero(lc(None))
    assert policy.resolve({}).value == 1
    assert policy.warnings[0].path == "loadConcurrency.globalConfig"
    assert "not set" in policy.warnings[0].message


def test_invalid_global_number_still_lets_rules_win() -> None:
    """With an invalid global number, matching rules still apply; the fallback is the default."""
    policy = ConcurrencyPolicy.from_velero(lc(0, ({"matchLabels": {"a": "b"}}, 7)))
    assert policy.resolve({"a": "b"}).value == 7
    assert policy.resolve({"a": "c"}).value == 1


# -- rule 3 and 4 -------------------------------------------------------------------------


def test_no_rules_gives_the_global_number() -> None:
    """Without rules every node gets the global number."""
    r = ConcurrencyPolicy.from_velero(lc(6)).resolve(NODE1)
    assert (r.value, r.source) == (6, "global")


def test_unknown_labels_give_the_global_number_with_a_warning() -> None:
    """resolve(None): the node's labels could not be read, so the global number applies."""
    r = ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve(None)
    assert (r.value, r.source, r.matched) == (2, "global", ())
    assert r.warnings == ("node labels unavailable; used the global number 2",)


def test_unknown_labels_without_rules_give_no_warning() -> None:
    """Velero only reads the node's labels when there are rules, so no warning without them."""
    assert ConcurrencyPolicy.from_velero(lc(3)).resolve(None).warnings == ()


# -- rule 5: invalid rules skipped --------------------------------------------------------


@pytest.mark.parametrize("number", [0, -3])
def test_rule_with_non_positive_number_is_skipped_with_warning(number: int) -> None:
    """A rule whose number is below 1 takes no part, and says so."""
    policy = ConcurrencyPolicy.from_velero(lc(2, ({"matchLabels": {"a": "b"}}, number)))
    r = policy.resolve({"a": "b"})
    assert (r.value, r.source, r.matched) == (2, "global", ())
    assert [(s.index, s.path) for s in r.skipped] == [
        (0, "loadConcurrency.perNodeConfig[0].number")
    ]
    assert f"number {number} is invalid" in r.skipped[0].reason


def test_missing_number_counts_as_zero() -> None:
    """A rule without a number reads as 0 (Go's zero value), so it is skipped."""
    policy = ConcurrencyPolicy.from_velero(
        {"loadConcurrency": {"globalConfig": 2, "perNodeConfig": [{}]}}
    )
    assert policy.resolve({}).value == 2
    assert len(policy.skipped) == 1


@pytest.mark.parametrize(
    ("selector", "path_tail", "fragment"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["b"]}]},
            "nodeSelector.matchExpressions[0].operator",
            "not a valid label selector operator",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "nodeSelector.matchExpressions[0].values",
            "needs at least one value",
        ),
        (
            {"matchLabels": {"inva/lid": "inva/lid"}},
            'nodeSelector.matchLabels["inva/lid"]',
            "label value",
        ),
    ],
)
def test_rule_with_bad_selector_is_skipped_with_warning(
    selector: Any, path_tail: str, fragment: str
) -> None:
    """A selector that does not parse makes its rule skipped, with the precise path."""
    policy = ConcurrencyPolicy.from_velero(lc(2, (selector, 1), ({"matchLabels": {"a": "b"}}, 4)))
    r = policy.resolve({"a": "b"})
    assert (r.value, r.matched) == (4, (1,))  # indices refer to the document
    (skip,) = r.skipped
    assert skip.index == 0
    assert skip.path == f"loadConcurrency.perNodeConfig[0].{path_tail}"
    assert fragment in skip.reason


def test_rule_indices_tie_rules_to_document_positions() -> None:
    """With a rule skipped for its selector, rule_indices numbers rules as the document does."""
    bad = {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["b"]}]}
    policy = ConcurrencyPolicy.from_velero(lc(2, (bad, 1), ({"matchLabels": {"a": "b"}}, 4)))
    assert [(i, r.value) for i, r in zip(policy.rule_indices, policy.rules, strict=True)] == [
        (1, 4)
    ]
    assert ConcurrencyPolicy(rules=[Rule("", 1), Rule("", 2)]).rule_indices == (0, 1)


def test_origin_records_where_a_policy_came_from() -> None:
    """One field says where a policy came from: None in code, the document's positions,
    skips and paths when read with from_velero; a policy rebuilt from it is equal."""
    bad = {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["b"]}]}
    policy = ConcurrencyPolicy.from_velero(lc(2, (bad, 1), ({"matchLabels": {"a": "b"}}, 0)))
    origin = policy.origin
    assert origin is not None and origin.document is policy.config
    assert (origin.rule_indices, [s.index for s in origin.skipped]) == ((1,), [0])
    assert [s.path for s in policy.skipped] == [
        "loadConcurrency.perNodeConfig[0].nodeSelector.matchExpressions[0].operator",
        "loadConcurrency.perNodeConfig[1].number",
    ]
    again = ConcurrencyPolicy(global_number=2, rules=policy.rules, origin=origin)
    assert again == policy and again.warnings == policy.warnings
    assert ConcurrencyPolicy(rules=[Rule("", 1)]).origin is None


@pytest.mark.parametrize(
    ("origin", "error", "fragment"),
    [
        ("doc", TypeError, "origin must be a PolicyOrigin or None, got str"),
        ("two indices", ValueError, "one index per rule: 1 rules, 2 indices"),
    ],
)
def test_origin_is_checked(origin: str, error: type[Exception], fragment: str) -> None:
    """An origin that is not one, or that numbers a different set of rules, is refused."""
    from throttlekit._policy._rules import PolicyOrigin

    value: Any = "doc" if origin == "doc" else PolicyOrigin(rule_indices=(0, 1))
    with pytest.raises(error, match=fragment):
        ConcurrencyPolicy(rules=[Rule("", 1)], origin=value)


def test_expression_without_key_or_operator_reads_as_empty_like_go() -> None:
    """A missing key or operator is Go's empty string, reported at the exact field."""
    policy = ConcurrencyPolicy.from_velero(
        lc(
            2,
            ({"matchExpressions": [{"operator": "Exists"}]}, 1),
            ({"matchExpressions": [{"key": "a"}]}, 1),
        )
    )
    assert [(s.path.rsplit(".", 1)[1], s.reason) for s in policy.skipped] == [
        ("key", "its selector does not parse: label key must not be empty"),
        (
            "operator",
            "its selector does not parse: '' is not a valid label selector operator "
            "(use In, NotIn, Exists or DoesNotExist)",
        ),
    ]


def test_bad_selector_is_checked_before_bad_number() -> None:
    """When both selector and number are bad, the selector is what is reported (Velero's order)."""
    policy = ConcurrencyPolicy.from_velero(
        lc(2, ({"matchExpressions": [{"key": "a", "operator": "X"}]}, 0))
    )
    (skip,) = policy.skipped
    assert "selector does not parse" in skip.reason


def test_empty_selector_matches_every_node() -> None:
    """A rule with an empty (or missing) nodeSelector applies to all nodes."""
    assert ConcurrencyPolicy.from_velero(lc(5, ({}, 3))).resolve({"x": "y"}).value == 3
    doc = {"loadConcurrency": {"globalConfig": 5, "perNodeConfig": [{"number": 4}]}}
    assert ConcurrencyPolicy.from_velero(doc).resolve({}).value == 4


def test_notin_matches_an_absent_key() -> None:
    """A NotIn rule applies to nodes that lack the key entirely."""
    sel = {"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["true"]}]}
    policy = ConcurrencyPolicy.from_velero(lc(5, (sel, 2)))
    assert policy.resolve({}).value == 2
    assert policy.resolve({"gpu": "true"}).value == 5


# -- rule 6: smallest wins --------------------------------------------------------------


def test_smallest_wins_regardless_of_order() -> None:
    """Rule order does not change which matching number wins."""
    rules = [({"matchLabels": {"a": "1"}}, 9), ({}, 4), ({"matchLabels": {"b": "2"}}, 6)]
    for ordering in (rules, rules[::-1]):
        assert (
            ConcurrencyPolicy.from_velero(lc(2, *ordering)).resolve({"a": "1", "b": "2"}).value == 4
        )


def test_equal_numbers_pick_the_first_matching_rule_as_winner() -> None:
    """Two matching rules with the same number: that number, credited to the earlier rule."""
    r = ConcurrencyPolicy.from_velero(lc(2, ({}, 3), ({}, 3))).resolve({})
    assert (r.value, r.matched, r.winner) == (3, (0, 1), 0)


def test_rule_may_exceed_the_global_number() -> None:
    """There is no upper bound: a rule may raise a node above the global number."""
    assert ConcurrencyPolicy.from_velero(lc(2, ({}, 64))).resolve({}).value == 64


def test_huge_global_number_is_used() -> None:
    """A very large global number is used as is (no ceiling)."""
    assert ConcurrencyPolicy.from_velero(lc(2**40)).resolve({}).value == 2**40


@pytest.mark.parametrize("number", [2**31 - 1, 2**31, 2**62])
def test_rule_number_at_velero_ceiling_is_skipped(number: int) -> None:
    """Velero starts its search at MaxInt32, so such rules never win; we skip and say so."""
    policy = ConcurrencyPolicy.from_velero(lc(2, ({}, number)))
    r = policy.resolve({})
    assert (r.value, r.source) == (2, "global")
    assert "never picks" in r.skipped[0].reason
    assert ConcurrencyPolicy.from_velero(lc(2, ({}, 2**31 - 2))).resolve({}).value == 2**31 - 2


# -- rule 7: structure and strictness ---------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "path", "fragment"),
    [
        ("{not json", "", "not valid JSON"),
        ("[1, 2]", "", "must be a JSON object"),
        (lc("3"), "loadConcurrency.globalConfig", "expected an integer, got the string '3'"),
        (lc(2, ({}, "3")), "loadConcurrency.perNodeConfig[0].number", "got the string '3'"),
        (lc(2.5), "loadConcurrency.globalConfig", "got the number 2.5"),
        (lc(3.0), "loadConcurrency.globalConfig", "got the number 3.0"),
        (lc(True), "loadConcurrency.globalConfig", "got the boolean true"),
        (lc(2**63), "loadConcurrency.globalConfig", "does not fit in 64 bits"),
        (
            {"loadConcurrency": {"perNodeConfig": {"a": 1}}},
            "loadConcurrency.perNodeConfig",
            "expected a list",
        ),
        ({"loadConcurrency": []}, "loadConcurrency", "expected an object"),
        (
            lc(2, ({"matchLabels": {"a": 1}}, 1)),
            'loadConcurrency.perNodeConfig[0].nodeSelector.matchLabels["a"]',
            "expected a string",
        ),
        (
            {"kind": "ConfigMap", "apiVersion": "v1", "data": {"a.json": "{}", "b.json": "{}"}},
            "data",
            "has 2 keys (a.json, b.json); Velero expects exactly one",
        ),
        ({"kind": "ConfigMap", "apiVersion": "v1"}, "data", "no data"),
        (
            {"kind": "ConfigMap", "apiVersion": "v1", "data": {"a.json": "{"}},
            'data["a.json"]',
            "not valid JSON",
        ),
        (b"\xff\xfe", "", "not UTF-8"),
        (
            '{"loadConcurrency": {"globalConfig": NaN}}',
            "loadConcurrency.globalConfig",
            "NaN is not valid JSON",
        ),
    ],
)
def test_structural_problems_raise_in_both_modes(doc: Any, path: str, fragment: str) -> None:
    """Not JSON, wrong types and bad ConfigMaps are ConfigErrors, lenient or strict."""
    for strict in (False, True):
        with pytest.raises(ConfigError) as info:
            ConcurrencyPolicy.from_velero(doc, strict=strict)
        (problem,) = info.value.problems
        assert problem.path == path
        assert fragment in problem.message


def test_all_structural_problems_are_reported_at_once() -> None:
    """Several type errors give one ConfigError listing each with its path."""
    doc = {
        "loadConcurrency": {"globalConfig": "2", "perNodeConfig": [{"number": 1}, {"number": "x"}]},
        "privilegedFsBackup": "yes",
    }
    with pytest.raises(ConfigError) as info:
        ConcurrencyPolicy.from_velero(doc)
    assert [p.path for p in info.value.problems] == [
        "loadConcurrency.globalConfig",
        "loadConcurrency.perNodeConfig[1].number",
        "privilegedFsBackup",
    ]
    text = str(info.value)
    assert text.startswith("3 problems:")
    assert "loadConcurrency.perNodeConfig[1].number: expected an integer" in text


def test_null_means_not_set() -> None:
    """JSON null reads as absent, as Go does: null global -> default, null rule -> skipped."""
    doc = {
        "loadConcurrency": {
            "globalConfig": None,
            "perNodeConfig": [None, {"nodeSelector": None, "number": 4}],
        }
    }
    policy = ConcurrencyPolicy.from_velero(doc)
    r = policy.resolve({})
    assert (r.value, r.matched, [s.index for s in r.skipped]) == (4, (1,), [0])


def test_unknown_key_warns_with_suggestion_and_is_ignored() -> None:
    """A typo'd key is ignored (as Velero does) with a warning naming it and the likely key."""
    policy = ConcurrencyPolicy.from_velero({"loadConcurrency": {"globalConfg": 5}})
    assert policy.resolve({}).value == 1
    problems = {w.path: w.message for w in policy.warnings}
    assert "did you mean globalConfig?" in problems["loadConcurrency.globalConfg"]


def test_case_insensitive_key_is_used_like_velero_and_warned() -> None:
    """Go's decoder matches 'globalconfig' to globalConfig, so its value is used; we warn."""
    policy = ConcurrencyPolicy.from_velero({"loadConcurrency": {"globalconfig": 5}})
    assert policy.resolve({}).value == 5
    (warning,) = policy.warnings
    assert warning.path == "loadConcurrency.globalconfig"
    assert "did you mean globalConfig?" in warning.message


def test_strict_mode_reports_every_semantic_problem_at_once() -> None:
    """strict=True: unknown keys, a bad global number and skipped rules, all in one error."""
    doc = {
        "loadConcurrency": {
            "globalConfig": 0,
            "perNodeConfig": [
                {"nodeSelector": {"matchLabels": {"a": "b"}}, "number": 2},
                {"nodeSelector": {"matchLabels": {"a": "b"}}, "number": 0},
                {
                    "nodeSelector": {"matchExpressions": [{"key": "a", "operator": "Bad"}]},
                    "number": 1,
                },
            ],
        },
        "podResourcez": {},
    }
    lenient = ConcurrencyPolicy.from_velero(doc)
    assert lenient.resolve({"a": "b"}).value == 2
    with pytest.raises(ConfigError) as info:
        ConcurrencyPolicy.from_velero(doc, strict=True)
    assert [p.path for p in info.value.problems] == [
        "podResourcez",
        "loadConcurrency.globalConfig",
        "loadConcurrency.perNodeConfig[1].number",
        "loadConcurrency.perNodeConfig[2].nodeSelector.matchExpressions[0].operator",
    ]
    assert info.value.problems == lenient.warnings


def test_lenient_warnings_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Lenient loading logs each warning on the throttlekit.policy logger."""
    with caplog.at_level(logging.WARNING, logger="throttlekit.policy"):
        ConcurrencyPolicy.from_velero(lc(0))
    assert "global number 0 is invalid" in caplog.text


def test_other_sections_are_kept_on_the_policy() -> None:
    """The policy keeps the whole document, so other sections stay available."""
    doc = {**VELERO_SAMPLE, "priorityClassName": "low", "podLabels": {"team": "backup"}}
    policy = ConcurrencyPolicy.from_velero(doc)
    assert policy.config is not None
    assert policy.config.to_dict() == doc
    assert policy.resolve(NODE1).value == 3


# -- code-built policies ----------------------------------------------------------------


def test_code_built_policy_uses_the_same_semantics() -> None:
    """ConcurrencyPolicy(...) resolves like the equivalent document."""
    policy = ConcurrencyPolicy(
        global_number=2,
        rules=[Rule("kubernetes.io/hostname=node1", 3), Rule({"matchLabels": B4MS}, 5)],
    )
    assert policy.resolve({**NODE1, **B4MS}).value == 3
    assert policy.resolve({}).value == 2


def test_code_built_invalid_rule_is_skipped_with_code_path() -> None:
    """A rule built in code with value 0 is skipped; its path names the argument."""
    policy = ConcurrencyPolicy(global_number=2, rules=[Rule("", 0)])
    assert policy.skipped[0].path == "rules[0].value"
    assert policy.resolve({}).value == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"default": 0}, ValueError, "default must be at least 1, got 0"),
        ({"default": True}, TypeError, "default must be an int"),
        ({"global_number": "2"}, TypeError, "global_number must be an int"),
        ({"rules": [Rule("", "3")]}, TypeError, r"rules\[0\].value must be an int"),
        ({"rules": [("a=b", 3)]}, TypeError, r"rules\[0\] must be a Rule"),
    ],
)
def test_constructor_validates_arguments(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    """Bad constructor arguments are errors that name the argument."""
    with pytest.raises(error, match=fragment):
        ConcurrencyPolicy(**kwargs)


def test_resolve_rejects_non_mapping_labels() -> None:
    """resolve() needs a mapping (or None)."""
    with pytest.raises(TypeError, match="labels must be a mapping"):
        ConcurrencyPolicy().resolve(["a"])  # type: ignore[arg-type]


def test_resolve_many_by_name() -> None:
    """resolve_many maps each name to its resolution."""
    policy = ConcurrencyPolicy.from_velero(VELERO_SAMPLE)
    out = policy.resolve_many({"node1": NODE1, "x": None, "y": {}})
    assert {name: r.value for name, r in out.items()} == {"node1": 3, "x": 2, "y": 2}


BOTH_POLICIES = pytest.mark.parametrize(
    "policy",
    [
        ConcurrencyPolicy(global_number=2, rules=[Rule("kubernetes.io/hostname=node1", 3)]),
        RuledPolicy(default=2, rules=[Rule("kubernetes.io/hostname=node1", 3)]),
    ],
    ids=["ConcurrencyPolicy", "RuledPolicy"],
)


@BOTH_POLICIES
def test_resolve_many_is_resolve_for_each_subject(policy: Any) -> None:
    """Both policies resolve named subjects at once, from a mapping or from pairs, in the
    order given, each exactly as resolve() would (unreadable labels included)."""
    subjects = {"y": {}, "node1": NODE1, "x": None}
    for form in (subjects, list(subjects.items()), iter(subjects.items())):
        out = policy.resolve_many(form)
        assert list(out) == ["y", "node1", "x"]
        assert out == {name: policy.resolve(labels) for name, labels in subjects.items()}
    assert policy.resolve_many([("a", NODE1), ("a", {})])["a"].value == 2  # the last one
    assert policy.resolve_many({}) == {}


@BOTH_POLICIES
@pytest.mark.parametrize("subjects", ["node1", b"node1", 3, None])
def test_resolve_many_refuses_what_is_not_subjects(policy: Any, subjects: Any) -> None:
    """A string, bytes or a non-iterable is a TypeError naming the argument."""
    with pytest.raises(TypeError, match="subjects must be a mapping"):
        policy.resolve_many(subjects)


@BOTH_POLICIES
def test_resolve_many_checks_each_subjects_labels(policy: Any) -> None:
    """Labels that are not a mapping are refused as resolve() refuses them."""
    with pytest.raises(TypeError, match="labels must be a mapping"):
        policy.resolve_many({"node1": ["a=b"]})


# -- explain -------------------------------------------------------------------------------


def test_explain_names_matches_skips_and_winner() -> None:
    """explain() says which rules matched, which were skipped and why, and what won."""
    doc = lc(2, ({"matchLabels": {"a": "b"}}, 5), ({}, 0), ({"matchLabels": {"c": "d"}}, 3))
    text = ConcurrencyPolicy.from_velero(doc).resolve({"a": "b", "c": "d"}).explain()
    assert text.splitlines() == [
        "The value is 3 from rule 2 (c=d): the smallest of 2 valid matching rules; "
        "rule 1 matched but was skipped: number 0 is invalid (must be at least 1).",
        "  matched: rule 0 (a=b -> 5), rule 2 (c=d -> 3)",
        "  skipped: rule 1 (it matched): number 0 is invalid (must be at least 1)",
    ]


def test_explain_shows_the_empty_selector_as_all() -> None:
    """A rule that matches every node is shown as (all), not as an empty string."""
    policy = ConcurrencyPolicy(global_number=2, rules=[Rule("", 3)])
    assert str(policy.rules[0]) == "(all) -> 3"
    assert policy.resolve({}).explain().splitlines() == [
        "The value is 3 from rule 0 ((all)): the only matching rule.",
        "  matched: rule 0 ((all) -> 3)",
    ]


def test_explain_for_fallbacks() -> None:
    """explain() says why the global number or the default applied."""
    assert ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve({}).explain() == (
        "The value is 2, the global number: no rule matches."
    )
    assert ConcurrencyPolicy.from_velero(lc(-1)).resolve({}).explain() == (
        "The value is 1, the default: the global number -1 is invalid.\n"
        "  warning: global number -1 is invalid (must be at least 1); used the default 1"
    )
    assert (
        "labels are unavailable"
        in ConcurrencyPolicy.from_velero(VELERO_SAMPLE).resolve(None).explain()
    )


REASONS: list[tuple[str, Any, Any, str]] = [
    # (case, policy, labels, reason): every kind of result, as one sentence
    (
        "one rule",
        VELERO_SAMPLE,
        NODE1,
        "The value is 3 from rule 0 (kubernetes.io/hostname=node1): the only matching rule.",
    ),
    (
        "two rules",
        VELERO_SAMPLE,
        {**NODE1, **B4MS},
        "The value is 3 from rule 0 (kubernetes.io/hostname=node1): the smallest of 2 "
        "matching rules.",
    ),
    ("no match", VELERO_SAMPLE, {}, "The value is 2, the global number: no rule matches."),
    (
        "no labels",
        VELERO_SAMPLE,
        None,
        "The value is 2, the global number: the node's labels are unavailable.",
    ),
    ("no rules", lc(4), {}, "The value is 4, the global number: there are no rules."),
    ("no section", {}, {}, "The value is 1, the default: no global number is set."),
    (
        "no global",
        lc(None, ({"matchLabels": {"a": "b"}}, 3)),
        {},
        "The value is 1, the default: no global number is set and no rule matches.",
    ),
    (
        "bad global",
        lc(0, ({"matchLabels": {"a": "b"}}, 3)),
        None,
        "The value is 1, the default: the global number 0 is invalid and the node's labels "
        "are unavailable.",
    ),
    (
        "only a skipped rule matches",
        lc(2, ({"matchLabels": {"a": "b"}}, 4), ({}, 0)),
        {},
        "The value is 2, the global number: no valid rule matches; rule 1 matched but was "
        "skipped: number 0 is invalid (must be at least 1).",
    ),
    (
        "two skipped rules match",
        lc(0, ({"matchLabels": {"a": "b"}}, 0), ({}, 2**31 - 1), ({"matchLabels": {"c": "d"}}, 1)),
        {"a": "b"},
        "The value is 1, the default: the global number 0 is invalid and no valid rule "
        "matches; rule 0 matched but was skipped: number 0 is invalid (must be at least 1); "
        "rule 1 matched but was skipped: number 2147483647 is at or above 2147483647, which "
        "Velero's node agent never picks (its search starts from that value).",
    ),
    (
        "a skipped rule matches beside a valid one",
        lc(2, ({}, 0), ({"matchLabels": {"a": "b"}}, 5)),
        {"a": "b"},
        "The value is 5 from rule 1 (a=b): the only valid matching rule; rule 0 matched but "
        "was skipped: number 0 is invalid (must be at least 1).",
    ),
    (
        "a bad selector matches nothing",
        lc(2, ({"matchExpressions": [{"key": "a", "operator": "Like"}]}, 1)),
        {"a": "b"},
        "The value is 2, the global number: no rule matches.",
    ),
]


@pytest.mark.parametrize(
    ("doc", "labels", "reason"), [r[1:] for r in REASONS], ids=[r[0] for r in REASONS]
)
def test_reason_is_one_sentence_that_names_skipped_matches(
    doc: Any, labels: Any, reason: str
) -> None:
    """reason is one sentence (a capital, a full stop, no line break) for every kind of
    result; a subject matched by a skipped rule is told so, not "no rule matches", and
    skipped_matched lists those rules. explain() starts with the same sentence."""
    r = ConcurrencyPolicy.from_velero(doc).resolve(labels)
    assert r.reason == reason
    assert r.reason[0].isupper() and r.reason.endswith(".") and "\n" not in r.reason
    assert r.explain().splitlines()[0] == r.reason
    matched_but_skipped = [int(w.split()[1]) for w in reason.split("; ")[1:]]
    assert list(r.skipped_matched) == matched_but_skipped


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"zone": "eu"}, "The value is 200 from rule 1 (zone=eu): the only matching rule."),
        (
            {"tier": "gold", "zone": "eu"},
            "The value is 400 from rule 0 (tier=gold): the largest of 2 matching rules.",
        ),
        ({}, "The value is 100, the default: no rule matches."),
        (None, "The value is 100, the default: the labels are unavailable."),
    ],
)
def test_ruled_policy_reason_is_one_sentence(labels: Any, reason: str) -> None:
    """RuledPolicy's reasons are sentences too."""
    policy = RuledPolicy(
        default=100, rules=[Rule("tier=gold", 400), Rule("zone=eu", 200)], combine="max"
    )
    assert policy.resolve(labels).reason == reason
    assert RuledPolicy(default=1).resolve({}).reason == (
        "The value is 1, the default: there are no rules."
    )


# -- RuledPolicy ----------------------------------------------------------------------------


def test_ruled_policy_combine_modes() -> None:
    """min, max and first pick different matching rules."""
    rules = [Rule("a=1", 20), Rule("", 10), Rule("b=2", 30)]
    labels = {"a": "1", "b": "2"}
    assert RuledPolicy(default=0, rules=rules).resolve(labels).value == 10
    assert RuledPolicy(default=0, rules=rules, combine="max").resolve(labels).value == 30
    first = RuledPolicy(default=0, rules=rules, combine="first").resolve(labels)
    assert (first.value, first.winner, first.matched) == (20, 0, (0, 1, 2))


def test_ruled_policy_default_and_unknown_labels() -> None:
    """No match or unknown labels give the default, with the source 'default'."""
    policy = RuledPolicy(default="slow", rules=[Rule("tier=gold", "fast")], combine="first")
    assert policy.resolve({}).source == "default"
    assert policy.resolve(None).warnings == ("labels unavailable; used the default",)
    assert policy.resolve({"tier": "gold"}).value == "fast"


def test_ruled_policy_works_with_any_comparable_value() -> None:
    """Values only need an order: tuples, floats, strings."""
    policy = RuledPolicy(default=(9, 9), rules=[Rule("", (1, 5)), Rule("", (1, 2))])
    assert policy.resolve({}).value == (1, 2)


def test_ruled_policy_rejects_incomparable_values_for_min() -> None:
    """min/max over values without an order is refused up front, pointing at 'first'."""
    with pytest.raises(TypeError, match="combine='first'"):
        RuledPolicy(default=None, rules=[Rule("", {"a": 1}), Rule("", {"b": 2})])
    RuledPolicy(default=None, rules=[Rule("", {"a": 1}), Rule("", {"b": 2})], combine="first")


def test_ruled_policy_validates_combine() -> None:
    """An unknown combine mode is a ValueError naming it."""
    with pytest.raises(ValueError, match="combine"):
        RuledPolicy(default=1, combine="avg")  # type: ignore[arg-type]


def test_rule_accepts_selector_spellings() -> None:
    """A Rule's selector may be a LabelSelector, kubectl text or the API mapping."""
    a = Rule(LabelSelector.parse("a=b"), 1)
    assert a == Rule("a=b", 1) == Rule({"matchLabels": {"a": "b"}}, 1)
    assert Rule(None, 1).selector.is_empty()
    with pytest.raises(TypeError, match="selector must be"):
        Rule(3, 1)  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "zone", "example.com/tier"])
_vals = st.sampled_from(["", "x", "y", "z"])


@st.composite
def selector_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    labels = draw(st.dictionaries(_keys, _vals, max_size=2))
    if labels:
        spec["matchLabels"] = labels
    exprs = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "Bogus"]))
        values = draw(st.lists(_vals, min_size=0 if op == "Bogus" else 1, max_size=3))
        exprs.append(
            {
                "key": draw(_keys),
                "operator": op,
                "values": [] if op in ("Exists", "DoesNotExist") else values,
            }
        )
    if exprs:
        spec["matchExpressions"] = exprs
    return spec


@given(
    global_number=st.integers(-3, 50),
    rules=st.lists(st.tuples(selector_specs(), st.integers(-2, 40)), max_size=12),
    labels=st.dictionaries(_keys, _vals, max_size=5),
)
def test_result_is_min_over_matching_valid_rules_or_the_fallback(
    global_number: int, rules: list[tuple[dict[str, Any], int]], labels: dict[str, str]
) -> None:
    """The indexed resolver equals a naive evaluation of Velero's algorithm."""
    policy = ConcurrencyPolicy.from_velero(lc(global_number, *rules))
    expected_global = global_number if global_number > 0 else 1
    matching = []
    for i, (spec, number) in enumerate(rules):
        try:
            selector = LabelSelector.from_dict(spec)
        except ValueError:
            continue
        if number > 0 and selector.matches(labels):
            matching.append((number, i))
    r = policy.resolve(labels)
    if matching:
        assert (r.value, r.winner) == min(matching)
        assert r.source == "rule"
    else:
        assert r.value == expected_global
        assert r.source == ("global" if global_number > 0 else "default")
    assert r.matched == tuple(sorted(i for _, i in matching))


@given(
    rules=st.lists(
        st.tuples(
            selector_specs().filter(lambda s: "Bogus" not in json.dumps(s)), st.integers(0, 9)
        ),
        max_size=10,
    ),
    labels=st.dictionaries(_keys, _vals, max_size=5),
    combine=st.sampled_from(["min", "max", "first"]),
)
def test_ruled_policy_index_agrees_with_a_linear_scan(
    rules: list[tuple[dict[str, Any], int]], labels: dict[str, str], combine: Any
) -> None:
    """The rule index finds exactly the rules a linear scan finds."""
    built = [Rule(spec, n) for spec, n in rules]
    r = RuledPolicy(default=-1, rules=built, combine=combine).resolve(labels)
    linear = [i for i, rule in enumerate(built) if rule.selector.matches(labels)]
    assert r.matched == tuple(linear)
    if linear:
        values = [built[i].value for i in linear]
        pick = {"min": min(values), "max": max(values), "first": values[0]}[combine]
        assert r.value == pick
    else:
        assert r.value == -1
