"""
Rule-matching policies: "a global value, plus rules that select subjects by label".

:class:`RuledPolicy` is the generic shape, for any value (a concurrency number, a
:class:`Rate`, anything comparable). :class:`ConcurrencyPolicy` is Velero's node-agent
``loadConcurrency`` semantics, exactly. Both are pure: resolving is a function of the
policy and a mapping of labels, with no I/O, so it can be called from any thread or task
and tested without an event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar, cast, final

from attrs import field, frozen
from attrs.validators import in_

from .._errors import ConfigProblem
from ._selectors import LabelSelector

if TYPE_CHECKING:
    from ._velero import VeleroNodeAgentConfig

__all__ = [
    "ConcurrencyPolicy",
    "PolicyOrigin",
    "Resolution",
    "Rule",
    "RuledPolicy",
    "SkippedRule",
]

V = TypeVar("V")
Combine = Literal["min", "max", "first"]
Source = Literal["default", "global", "rule"]

#: Velero's resolver starts its search from MaxInt32, so a rule whose number is at or
#: above it can never be chosen.
VELERO_NUMBER_CEILING: Final = 2**31 - 1


def _to_selector(value: LabelSelector | str | Mapping[str, Any] | None) -> LabelSelector:
    if isinstance(value, LabelSelector):
        return value
    if value is None:
        return LabelSelector()
    if isinstance(value, str):
        return LabelSelector.parse(value)
    if isinstance(value, Mapping):
        return LabelSelector.from_dict(value)
    raise TypeError(
        "selector must be a LabelSelector, a kubectl selector string or a "
        f"matchLabels/matchExpressions mapping, got {type(value).__name__}"
    )


def _shown(selector: LabelSelector) -> str:
    """A selector for people: the empty one (which matches everything) as ``(all)``."""
    return str(selector) or "(all)"


def _rule_tuple(rules: Iterable[Rule[Any]]) -> tuple[Rule[Any], ...]:
    return tuple(rules)


@frozen
class Rule(Generic[V]):
    """
    "Subjects whose labels match ``selector`` get ``value``."

    ``selector`` may be given as a :class:`LabelSelector`, kubectl syntax
    (``"zone in (eu-1,eu-2)"``) or the API mapping form; it is stored as a
    :class:`LabelSelector`.

    >>> Rule("kubernetes.io/hostname=node1", 3)
    Rule(selector=LabelSelector('kubernetes.io/hostname=node1'), value=3)
    """

    #: The subjects the rule is for; given as a :class:`LabelSelector`, kubectl syntax
    #: or the API mapping form, stored as a :class:`LabelSelector`.
    selector: LabelSelector = field(converter=_to_selector)
    #: What matching subjects get.
    value: V

    def __str__(self) -> str:
        return f"{_shown(self.selector)} -> {self.value}"


@frozen(kw_only=True)
class SkippedRule:
    """
    A rule that takes no part in resolution, and why, with where to find it in the
    document so it can be fixed.
    """

    #: The rule's position in the document (or in the ``rules`` given to the
    #: constructor).
    index: int
    #: The rule's location in the document, so it can be found and fixed.
    path: str
    #: Why it takes no part, in words.
    reason: str

    def __str__(self) -> str:
        return f"rule {self.index} skipped: {self.reason}"


@frozen(kw_only=True)
class Resolution(Generic[V]):
    """
    The value a policy gives one subject, and the reasons for it.

    Besides the value it says where the value came from (a rule, the global value or
    the hard default), which rules matched and which won, which rules were skipped and
    whether they would have counted, and any problem that affected the result.

    Use :meth:`explain` for a human-readable account.
    """

    #: The resolved value.
    value: V
    #: ``"rule"`` (a rule won), ``"global"`` (no rule matched; the global value applies)
    #: or ``"default"`` (no usable global value; the hard default applies).
    source: Source
    #: One sentence, for people, on why ``value`` is what it is, such as ``"The value is
    #: 2, the global number: no valid rule matches; rule 1 matched but was skipped:
    #: number 0 is invalid (must be at least 1)."``
    reason: str
    #: Indices of the valid rules that matched, in rule order.
    matched: tuple[int, ...] = ()
    #: Those rules, aligned with ``matched``.
    matched_rules: tuple[Rule[V], ...] = ()
    #: The index of the rule that gave ``value``, or ``None``.
    winner: int | None = None
    #: How matching rules were combined (``"min"``, ``"max"``, ``"first"``).
    combine: Combine = "min"
    #: The policy's rules that were not considered, and why.
    skipped: tuple[SkippedRule, ...] = ()
    #: Indices of the skipped rules whose selector matches this subject (rules skipped
    #: for their number; a selector that does not parse matches nothing): they would
    #: have counted had they been valid.
    skipped_matched: tuple[int, ...] = ()
    #: Problems that affected this result, one sentence each (an invalid global value,
    #: labels that could not be read); empty when there were none. Print them beside the
    #: value: they are why a result may not be the one the document's author meant.
    warnings: tuple[str, ...] = ()

    def explain(self) -> str:
        """
        Say in plain words what matched, what was skipped and why, and what won: the
        :attr:`reason`, then one line per matched rule, skipped rule and warning.

        >>> policy = ConcurrencyPolicy(global_number=2, rules=[Rule("zone=a", 4),
        ...                                                    Rule("zone=a", 0)])
        >>> print(policy.resolve({"zone": "a"}).explain())  # doctest: +NORMALIZE_WHITESPACE
        The value is 4 from rule 0 (zone=a): the only valid matching rule; rule 1 matched
        but was skipped: number 0 is invalid (must be at least 1).
          matched: rule 0 (zone=a -> 4)
          skipped: rule 1 (it matched): number 0 is invalid (must be at least 1)
        """
        lines = [self.reason]
        if self.matched:
            shown = ", ".join(
                f"rule {i} ({rule})"
                for i, rule in zip(self.matched, self.matched_rules, strict=True)
            )
            lines.append(f"  matched: {shown}")
        for s in self.skipped:
            matched = " (it matched)" if s.index in self.skipped_matched else ""
            lines.append(f"  skipped: rule {s.index}{matched}: {s.reason}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


# -- the compiled matcher ----------------------------------------------------------------


class _RuleIndex:
    """
    Finds the rules whose selectors match a set of labels without testing every rule.

    Each selector with an ``In`` requirement is filed under that requirement's
    (key, value) pairs; a subject can only match it if it carries one of those pairs, so
    a handful of dictionary lookups per label narrows 200 rules to the few worth testing.
    Selectors without ``In`` (``NotIn``, ``Exists``...) are always tested.
    """

    __slots__ = ("_always", "_by_label", "_matchers")

    def __init__(self, selectors: Sequence[LabelSelector]) -> None:
        self._matchers = [selector.matches for selector in selectors]
        self._always: list[int] = []
        self._by_label: dict[str, dict[str, list[int]]] = {}
        for pos, selector in enumerate(selectors):
            reqs = selector.requirements
            anchors = [r for r in reqs if r.operator == "In"]
            if not anchors:
                self._always.append(pos)
                continue
            anchor = min(anchors, key=lambda r: len(r.values))
            by_value = self._by_label.setdefault(anchor.key, {})
            for value in anchor.values:
                by_value.setdefault(value, []).append(pos)

    def matching(self, labels: Mapping[str, str]) -> list[int]:
        """Positions (ascending) of the selectors that match ``labels``."""
        candidates = self._always
        by_label = self._by_label
        if by_label:
            candidates = list(candidates)
            for key, value in labels.items():
                by_value = by_label.get(key)
                if by_value is not None:
                    hits = by_value.get(value)
                    if hits:
                        candidates.extend(hits)
            candidates.sort()
        matchers = self._matchers
        return [pos for pos in candidates if matchers[pos](labels)]


def _pick(values: Sequence[Any], combine: Combine) -> int:
    """Position of the winning value; ties go to the earliest rule."""
    best = 0
    if combine == "first":
        return best
    for pos in range(1, len(values)):
        if (combine == "min" and values[pos] < values[best]) or (
            combine == "max" and values[pos] > values[best]
        ):
            best = pos
    return best


def _check_labels(labels: object) -> None:
    if labels is not None and not isinstance(labels, Mapping):
        raise TypeError(
            f"labels must be a mapping of str to str or None, got {type(labels).__name__}"
        )


#: Named subjects to resolve: name -> labels, or (name, labels) pairs.
Subjects = Mapping[str, Mapping[str, str] | None] | Iterable[tuple[str, Mapping[str, str] | None]]


def _resolve_each(
    resolve: Callable[[Mapping[str, str] | None], Resolution[V]], subjects: Subjects
) -> dict[str, Resolution[V]]:
    """``resolve`` applied to each named subject: the one ``resolve_many`` of both policies."""
    given: object = subjects  # checked as what a caller may pass, not as the type says
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise TypeError(
            "subjects must be a mapping of names to labels or an iterable of (name, labels) "
            f"pairs, got {type(subjects).__name__}"
        )
    items = subjects.items() if isinstance(subjects, Mapping) else subjects
    return {name: resolve(labels) for name, labels in items}


_COMBINE_WORDS: Final = {"min": "smallest", "max": "largest", "first": "first"}


def _skipped_matches(skipped: Sequence[SkippedRule]) -> str:
    """The part of a reason about skipped rules that matched the subject."""
    return "; ".join(f"rule {s.index} matched but was skipped: {s.reason}" for s in skipped)


def _rule_reason(
    value: object,
    index: int,
    rule: Rule[Any],
    n_matched: int,
    combine: Combine,
    skipped_matches: Sequence[SkippedRule] = (),
) -> str:
    valid = "valid " if skipped_matches else ""
    if n_matched == 1:
        why = f"the only {valid}matching rule"
    else:
        why = f"the {_COMBINE_WORDS[combine]} of {n_matched} {valid}matching rules"
    reason = f"The value is {value} from rule {index} ({_shown(rule.selector)}): {why}"
    if skipped_matches:
        reason += f"; {_skipped_matches(skipped_matches)}"
    return reason + "."


def _fallback_reason(
    value: object,
    source: Source,
    whys: Sequence[str],
    skipped_matches: Sequence[SkippedRule] = (),
) -> str:
    """``The value is 2, the global number: no rule matches.`` and the like."""
    what = "the global number" if source == "global" else "the default"
    reason = f"The value is {value}, {what}"
    if skipped_matches:
        whys = [*whys, "no valid rule matches"]
    if whys:
        reason += ": " + " and ".join(whys)
    if skipped_matches:
        reason += f"; {_skipped_matches(skipped_matches)}"
    return reason + "."


def _rule_resolution(
    hits: Sequence[tuple[int, Rule[V]]],
    combine: Combine,
    skipped: tuple[SkippedRule, ...] = (),
    warnings: tuple[str, ...] = (),
    skipped_matches: tuple[SkippedRule, ...] = (),
) -> Resolution[V]:
    """The resolution when rules matched: ``hits`` are (index, rule) in rule order."""
    best = _pick([rule.value for _, rule in hits], combine)
    index, rule = hits[best]
    return Resolution(
        value=rule.value,
        source="rule",
        reason=_rule_reason(rule.value, index, rule, len(hits), combine, skipped_matches),
        matched=tuple(i for i, _ in hits),
        matched_rules=tuple(r for _, r in hits),
        winner=index,
        combine=combine,
        skipped=skipped,
        skipped_matched=tuple(s.index for s in skipped_matches),
        warnings=warnings,
    )


# -- the generic policy ----------------------------------------------------------------


@final
@frozen(kw_only=True)
class RuledPolicy(Generic[V]):
    """
    A default value plus rules that override it for subjects whose labels match.

    When several rules match, ``combine`` decides: ``"min"`` (the smallest value, the
    safe choice for limits and Velero's rule), ``"max"`` or ``"first"`` (the earliest
    rule, like a routing table). Ties go to the earliest rule. Values can be anything
    comparable (``"first"`` needs no ordering at all).

    >>> policy = RuledPolicy(default=100, rules=[Rule("tier=gold", 400), Rule("zone=eu", 200)])
    >>> policy.resolve({"tier": "gold", "zone": "eu"}).value
    200
    >>> policy.resolve({"tier": "bronze"}).source
    'default'

    Resolution is indexed: each rule is filed under a label it requires, so resolving a
    subject tests only the few rules that could match it.

    This is the generic tool; for Velero's ``loadConcurrency`` document use
    :class:`ConcurrencyPolicy`, which adds its validation and fallbacks.
    """

    #: The value of subjects that no rule matches.
    default: V
    #: The rules, in order; earlier rules win ties.
    rules: tuple[Rule[V], ...] = field(default=(), converter=_rule_tuple)
    #: What several matching rules give: ``"min"`` (the smallest value), ``"max"`` or
    #: ``"first"`` (the earliest rule).
    combine: Combine = field(default="min", validator=in_(("min", "max", "first")))
    _index: _RuleIndex = field(init=False, repr=False, eq=False)

    @_index.default
    def _build_index(self) -> _RuleIndex:
        for i, rule in enumerate(self.rules):
            if not isinstance(rule, Rule):
                raise TypeError(f"rules[{i}] must be a Rule, got {type(rule).__name__}")
        if self.combine != "first" and len(self.rules) > 1:
            try:
                sorted([rule.value for rule in self.rules])  # type: ignore[type-var]
            except TypeError:
                raise TypeError(
                    f"combine={self.combine!r} needs rule values that can be compared with "
                    "each other; use combine='first' for values without an order"
                ) from None
        return _RuleIndex([rule.selector for rule in self.rules])

    def resolve(self, labels: Mapping[str, str] | None) -> Resolution[V]:
        """
        The value for a subject with these labels.

        ``None`` means the subject's labels are unknown: no rule can be evaluated, so the
        default applies, with a warning when there are rules.
        """
        _check_labels(labels)
        if labels is None:
            warnings = ("labels unavailable; used the default",) if self.rules else ()
            return Resolution(
                value=self.default,
                source="default",
                reason=_fallback_reason(self.default, "default", ["the labels are unavailable"]),
                combine=self.combine,
                warnings=warnings,
            )
        matched = self._index.matching(labels)
        if not matched:
            why = "no rule matches" if self.rules else "there are no rules"
            return Resolution(
                value=self.default,
                source="default",
                reason=_fallback_reason(self.default, "default", [why]),
                combine=self.combine,
            )
        return _rule_resolution([(i, self.rules[i]) for i in matched], self.combine)

    def resolve_many(self, subjects: Subjects) -> dict[str, Resolution[V]]:
        """
        Resolve several named subjects at once: name -> resolution, in the order given.

        ``subjects`` maps names to labels (``None`` for labels that could not be read), or
        is an iterable of ``(name, labels)`` pairs; a name given twice keeps its last labels.

        >>> policy = RuledPolicy(default="standard", rules=[Rule("tier=gold", "fast")],
        ...                      combine="first")
        >>> {name: r.value for name, r in policy.resolve_many(
        ...     {"a": {"tier": "gold"}, "b": {}, "c": None}).items()}
        {'a': 'fast', 'b': 'standard', 'c': 'standard'}
        """
        return _resolve_each(self.resolve, subjects)


# -- Velero's loadConcurrency -------------------------------------------------------------


def _check_number(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")


def _skip_reason(number: int) -> str | None:
    if number <= 0:
        return f"number {number} is invalid (must be at least 1)"
    if number >= VELERO_NUMBER_CEILING:
        return (
            f"number {number} is at or above {VELERO_NUMBER_CEILING}, which Velero's node "
            "agent never picks (its search starts from that value)"
        )
    return None


@frozen(kw_only=True)
class PolicyOrigin:
    """
    Where a :class:`ConcurrencyPolicy` was read from, so its problems point into the source.

    :meth:`ConcurrencyPolicy.from_velero` sets it (the Velero adapter fills it in); a
    policy built in code has none, and then its rules are numbered by position and paths
    name the constructor's arguments (``rules[2].value``, ``global_number``).

    Only ``rule_indices`` and ``skipped`` take part in equality: two policies with the
    same rules, numbered the same way, are equal whatever document spelled them.
    """

    #: The document the policy was read from (a :class:`VeleroNodeAgentConfig`).
    document: object = field(default=None, eq=False)
    #: Each rule's position in the document, aligned with the policy's ``rules``.
    rule_indices: tuple[int, ...] = ()
    #: Rules the loader could not turn into a :class:`Rule` (a selector that does not
    #: parse), with their reasons.
    skipped: tuple[SkippedRule, ...] = ()
    #: Problems the loader found (unknown keys, a missing global number), in document order.
    problems: tuple[ConfigProblem, ...] = field(default=(), eq=False)
    #: The path of the global number in the document.
    global_path: str = field(default="global_number", eq=False)
    #: The path of a rule's number, with ``{index}`` for the rule's position.
    number_path: str = field(default="rules[{index}].value", eq=False)


@final
@frozen(kw_only=True)
class ConcurrencyPolicy:
    """
    How many loads may run at once on each node: Velero's node-agent ``loadConcurrency``.

    The semantics are Velero's, exactly:

    1. no ``loadConcurrency`` section: the ``default`` (1 unless told otherwise);
    2. a missing or non-positive ``globalConfig``: the default, with a warning;
    3. no rules: the global number;
    4. labels unavailable (``None``): the global number, with a warning;
    5. rules are checked in order: a selector that does not parse is skipped with a
       warning (checked first), then a number below 1 is skipped with a warning;
    6. among the matching valid rules the *smallest* number wins; if none matches, the
       global number. There is no upper bound (but Velero never picks a rule whose
       number is 2**31-1 or more, so neither do we, and we say so).

    Read Velero's document with :meth:`from_velero`, or build a policy in code from
    ``global_number`` (``None`` = not set), ``rules`` whose values are concurrency
    numbers, and the hard ``default`` (at least 1):

    >>> policy = ConcurrencyPolicy(
    ...     global_number=2,
    ...     rules=[Rule("kubernetes.io/hostname=node1", 3),
    ...            Rule("beta.kubernetes.io/instance-type=Standard_B4ms", 5)],
    ... )
    >>> policy.resolve({"kubernetes.io/hostname": "node1",
    ...                 "beta.kubernetes.io/instance-type": "Standard_B4ms"}).value
    3
    >>> policy.resolve({"kubernetes.io/hostname": "node7"}).value
    2

    ``origin`` records where a policy was read from (a :class:`PolicyOrigin`);
    :meth:`from_velero` sets it and code leaves it out.

    Unlike Velero, which reads its ConfigMap once at start, a policy is a cheap immutable
    value: reload it whenever the document changes (see :class:`PolicyWatcher`).
    """

    #: The number for nodes that no valid rule matches (``globalConfig``); ``None``: not
    #: set.
    global_number: int | None = None
    #: The rules, in order, whose values are concurrency numbers (``perNodeConfig``).
    rules: tuple[Rule[int], ...] = field(default=(), converter=_rule_tuple)
    #: The hard default (at least 1), used when no valid global number is set.
    default: int = 1
    #: Where the policy was read from; ``None`` for a policy built in code.
    origin: PolicyOrigin | None = field(default=None, repr=False)
    _compiled: _Compiled = field(init=False, repr=False, eq=False)

    @_compiled.default
    def _compile(self) -> _Compiled:
        _check_number(self.default, "default")
        if self.default < 1:
            raise ValueError(f"default must be at least 1, got {self.default}")
        if self.global_number is not None:
            _check_number(self.global_number, "global_number")
        origin = self.origin
        if origin is None:
            origin = _CODE_ORIGIN
        elif not isinstance(origin, PolicyOrigin):
            raise TypeError(f"origin must be a PolicyOrigin or None, got {type(origin).__name__}")
        elif len(origin.rule_indices) != len(self.rules):
            raise ValueError(
                f"origin.rule_indices must give one index per rule: {len(self.rules)} rules, "
                f"{len(origin.rule_indices)} indices"
            )
        skipped = list(origin.skipped)
        rule_warnings: list[ConfigProblem] = []
        valid: list[tuple[int, Rule[int]]] = []
        unusable: list[tuple[SkippedRule, LabelSelector]] = []  # skipped for their number
        for index, rule in zip(self.rule_indices, self.rules, strict=True):
            if not isinstance(rule, Rule):
                raise TypeError(f"rules[{index}] must be a Rule, got {type(rule).__name__}")
            _check_number(rule.value, f"rules[{index}].value")
            reason = _skip_reason(rule.value)
            if reason is None:
                valid.append((index, rule))
                continue
            path = origin.number_path.format(index=index)
            skipped.append(SkippedRule(index=index, path=path, reason=reason))
            unusable.append((skipped[-1], rule.selector))
            rule_warnings.append(ConfigProblem(path=path, message=f"rule skipped: {reason}"))
        skipped.sort(key=lambda s: s.index)

        global_warning: str | None = None
        fallback: int = self.default
        source: Source = "default"
        fallback_whys: tuple[str, ...] = ()
        if self.global_number is None:
            fallback_whys = ("no global number is set",)
        elif self.global_number <= 0:
            global_warning = (
                f"global number {self.global_number} is invalid (must be at least 1); "
                f"used the default {self.default}"
            )
            fallback_whys = (f"the global number {self.global_number} is invalid",)
        else:
            fallback, source = self.global_number, "global"
        # Document order: key problems, the global number, then the rules by index.
        warnings = list(origin.problems)
        if global_warning is not None:
            warnings.append(ConfigProblem(path=origin.global_path, message=global_warning))
        by_index = {s.path: s.index for s in skipped}
        warnings.extend(rule_warnings)
        warnings.sort(key=lambda w: by_index.get(w.path, -1))
        return _Compiled(
            fallback=fallback,
            fallback_source=source,
            fallback_whys=fallback_whys,
            global_warning=global_warning,
            has_rules=bool(self.rules) or bool(origin.skipped),
            valid=tuple(valid),
            index=_RuleIndex([rule.selector for _, rule in valid]),
            unusable=tuple(s for s, _ in unusable),
            unusable_index=_RuleIndex([selector for _, selector in unusable]),
            skipped=tuple(skipped),
            warnings=tuple(warnings),
        )

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_velero(cls, doc: Any, *, strict: bool = False, default: int = 1) -> ConcurrencyPolicy:
        """
        Read Velero's node-agent configuration, unchanged.

        ``doc`` is the node-agent config (a mapping, JSON text or bytes), a whole
        ConfigMap object as ``kubectl get cm NAME -o json`` prints it (its ``data`` must
        hold exactly one key), or a :class:`VeleroNodeAgentConfig`.

        Lenient mode (the default) behaves like Velero: semantic problems (an invalid
        global number, a rule with a bad selector or number) are skipped and recorded in
        :attr:`warnings` (and logged to the ``throttlekit.policy`` logger); unknown keys
        are warned about too, with a suggestion. Structural problems (not JSON, wrong
        types such as ``"number": "3"``, a bad ConfigMap) raise :class:`ConfigError` in
        both modes, since they stop Velero's node agent from starting.

        ``strict=True`` turns every warning into a problem and raises one
        :class:`ConfigError` listing them all.

        Whatever the document, the outcome is a policy or a :class:`ConfigError`, never
        another exception: invalid UTF-8, nesting deeper than 100 levels, ``NaN``, numbers
        out of range, non-JSON values and duplicate keys (a warning) are all reported
        with their location. Only a ``doc`` that is no kind of document (a ``set``, a
        path) is a :class:`TypeError`.
        """
        # The Velero adapter builds policies, so it imports this module, not the reverse.
        from ._velero import concurrency_policy_from_velero

        return concurrency_policy_from_velero(doc, strict=strict, default=default)

    @property
    def config(self) -> VeleroNodeAgentConfig | None:
        """The document this policy was read from, when it came from :meth:`from_velero`."""
        if self.origin is None:
            return None
        return cast("VeleroNodeAgentConfig | None", self.origin.document)

    # -- use ----------------------------------------------------------------------------

    @property
    def rule_indices(self) -> tuple[int, ...]:
        """
        Each rule's position in the document, aligned with :attr:`rules`.

        A rule whose selector does not parse cannot be a :class:`Rule`, so for a policy
        read with :meth:`from_velero`, ``rules`` may be shorter than ``perNodeConfig``;
        pair them with ``zip(policy.rule_indices, policy.rules)`` to number rules the way
        :class:`Resolution` and the warnings do.
        """
        if self.origin is None:
            return tuple(range(len(self.rules)))
        return self.origin.rule_indices

    @property
    def warnings(self) -> tuple[ConfigProblem, ...]:
        """Every problem found while building this policy, in document order."""
        return self._compiled.warnings

    @property
    def skipped(self) -> tuple[SkippedRule, ...]:
        """The rules that take no part in resolution, and why."""
        return self._compiled.skipped

    def resolve(self, labels: Mapping[str, str] | None) -> Resolution[int]:
        """
        The concurrency for a node with these labels.

        ``labels`` is the node's label mapping; ``None`` means "the node's labels could not
        be read", which yields the global number (with a warning when there are rules),
        as in Velero.
        """
        _check_labels(labels)
        c = self._compiled
        warnings: list[str] = [c.global_warning] if c.global_warning else []

        def fallback(*whys: str, skipped_matches: tuple[SkippedRule, ...] = ()) -> Resolution[int]:
            return Resolution(
                value=c.fallback,
                source=c.fallback_source,
                reason=_fallback_reason(
                    c.fallback, c.fallback_source, [*c.fallback_whys, *whys], skipped_matches
                ),
                skipped=c.skipped,
                skipped_matched=tuple(s.index for s in skipped_matches),
                warnings=tuple(warnings),
            )

        if not c.has_rules:
            return fallback() if c.fallback_source == "default" else fallback("there are no rules")
        if labels is None:
            warnings.append(f"node labels unavailable; used the global number {c.fallback}")
            return fallback("the node's labels are unavailable")
        skipped_matches = tuple(c.unusable[p] for p in c.unusable_index.matching(labels))
        positions = c.index.matching(labels)
        if not positions:
            if skipped_matches:
                return fallback(skipped_matches=skipped_matches)
            return fallback("no rule matches")
        hits = [c.valid[p] for p in positions]
        return _rule_resolution(hits, "min", c.skipped, tuple(warnings), skipped_matches)

    def resolve_many(self, subjects: Subjects) -> dict[str, Resolution[int]]:
        """
        Resolve several named subjects (such as nodes) at once: name -> resolution.

        ``subjects`` maps names to labels (``None`` for labels that could not be read), as
        :func:`read_node_labels` returns them for a cluster, or is an iterable of ``(name,
        labels)`` pairs; a name given twice keeps its last labels.
        """
        return _resolve_each(self.resolve, subjects)


#: The origin of a policy built in code: rules numbered by position, paths that name
#: the constructor's arguments.
_CODE_ORIGIN: Final = PolicyOrigin()


@frozen(kw_only=True)
class _Compiled:
    fallback: int
    fallback_source: Source
    fallback_whys: tuple[str, ...]  # why the fallback is what it is ("no global number...")
    global_warning: str | None
    has_rules: bool
    valid: tuple[tuple[int, Rule[int]], ...]
    index: _RuleIndex
    unusable: tuple[SkippedRule, ...]  # rules skipped for their number: they can still match
    unusable_index: _RuleIndex
    skipped: tuple[SkippedRule, ...]
    warnings: tuple[ConfigProblem, ...]
