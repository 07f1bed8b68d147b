"""
The Velero node-agent configuration document, as attrs models, and the adapter that turns
it into a :class:`ConcurrencyPolicy`.

These mirror Velero's Go types (``NodeAgentConfigs`` and friends) field for field, with
the JSON (camelCase) names kept in field metadata and snake_case attribute names for
Python. Every field is optional (``None`` = not set), unknown keys are kept in ``extra``,
and :meth:`VeleroNodeAgentConfig.to_dict` writes back what was read, so a document that
also carries ``loadAffinity``, ``backupPVC``, ``podResources``... survives a round trip.

:func:`concurrency_policy_from_velero` (behind :meth:`ConcurrencyPolicy.from_velero`) is the
only place that knows how a ``loadConcurrency`` section maps to a policy: it walks the
document, parses the selectors, and records where every rule came from in the policy's
one :class:`PolicyOrigin`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from attrs import evolve, frozen

from .._errors import ConfigError, ConfigProblem, SelectorError
from ._gojson import (
    JsonModel,
    internal_field,
    json_field,
    key_problems,
    load_json_document,
    structure,
    unstructure,
)
from ._rules import ConcurrencyPolicy, PolicyOrigin, Rule, SkippedRule
from ._selectors import LabelSelector

__all__ = [
    "BackupPVCConfig",
    "CachePVCConfig",
    "LoadAffinity",
    "LoadConcurrency",
    "PodResources",
    "RestorePVCConfig",
    "RuledConfig",
    "SelectorExpression",
    "SelectorSpec",
    "VeleroNodeAgentConfig",
    "concurrency_policy_from_velero",
]

logger: Final = logging.getLogger("throttlekit.policy")


@frozen(kw_only=True)
class SelectorExpression(JsonModel):
    """One ``matchExpressions`` entry, as written (validated later, by the resolver)."""

    key: str | None = json_field("key")
    operator: str | None = json_field("operator")
    values: tuple[str, ...] | None = json_field("values")


@frozen(kw_only=True)
class SelectorSpec(JsonModel):
    """A ``metav1.LabelSelector`` as written: structure only, not yet validated."""

    match_labels: dict[str, str] | None = json_field("matchLabels")
    match_expressions: tuple[SelectorExpression, ...] | None = json_field("matchExpressions")

    def as_api_dict(self) -> dict[str, Any]:
        """
        The selector in ``metav1.LabelSelector`` form, unknown keys left out and missing
        strings read as ``""``, as Go does (so a missing operator is reported as invalid).
        """
        out: dict[str, Any] = {}
        if self.match_labels:
            out["matchLabels"] = dict(self.match_labels)
        if self.match_expressions:
            out["matchExpressions"] = [
                {"key": e.key or "", "operator": e.operator or "", "values": list(e.values or ())}
                for e in self.match_expressions
            ]
        return out


@frozen(kw_only=True)
class RuledConfig(JsonModel):
    """One ``perNodeConfig`` rule: a node selector and the number for matching nodes."""

    node_selector: SelectorSpec | None = json_field("nodeSelector")
    number: int | None = json_field("number")


@frozen(kw_only=True)
class LoadConcurrency(JsonModel):
    """The ``loadConcurrency`` section."""

    global_config: int | None = json_field("globalConfig")
    per_node_config: tuple[RuledConfig, ...] | None = json_field("perNodeConfig")
    prepare_queue_length: int | None = json_field("prepareQueueLength")


@frozen(kw_only=True)
class LoadAffinity(JsonModel):
    """One ``loadAffinity`` entry: where data-mover pods may run."""

    node_selector: SelectorSpec | None = json_field("nodeSelector")
    storage_class: str | None = json_field("storageClass")


@frozen(kw_only=True)
class BackupPVCConfig(JsonModel):
    """One ``backupPVC`` entry (keyed by the source storage class)."""

    storage_class: str | None = json_field("storageClass")
    read_only: bool | None = json_field("readOnly")
    spc_no_relabeling: bool | None = json_field("spcNoRelabeling")
    annotations: dict[str, str] | None = json_field("annotations")


@frozen(kw_only=True)
class RestorePVCConfig(JsonModel):
    """The ``restorePVC`` section."""

    ignore_delay_binding: bool | None = json_field("ignoreDelayBinding")


@frozen(kw_only=True)
class PodResources(JsonModel):
    """The ``podResources`` section (Kubernetes quantities, kept as text)."""

    cpu_request: str | None = json_field("cpuRequest")
    cpu_limit: str | None = json_field("cpuLimit")
    memory_request: str | None = json_field("memoryRequest")
    memory_limit: str | None = json_field("memoryLimit")
    ephemeral_storage_request: str | None = json_field("ephemeralStorageRequest")
    ephemeral_storage_limit: str | None = json_field("ephemeralStorageLimit")


@frozen(kw_only=True)
class CachePVCConfig(JsonModel):
    """The ``cachePVC`` section."""

    threshold_in_gb: int | None = json_field("thresholdInGB")
    storage_class: str | None = json_field("storageClass")


@frozen(kw_only=True)
class VeleroNodeAgentConfig(JsonModel):
    """
    A whole Velero node-agent configuration document (``--node-agent-configmap``).

    Read it with :meth:`from_json` (a mapping, JSON text or bytes, or a whole ConfigMap
    object) and write it back with :meth:`to_dict` / :meth:`to_json`. Structural problems
    (not JSON, a string where a number belongs, a ConfigMap with two data keys) raise
    :class:`ConfigError` listing every problem, because they stop Velero's node agent
    from starting too; so does anything that is not JSON data at all (nesting deeper than
    100 levels, ``NaN``, ``1e400``, invalid UTF-8): whatever the input, loading either
    succeeds or raises :class:`ConfigError`. Unknown or oddly spelled keys and duplicate
    keys (the last one wins, as in Go) are not errors; they are listed in :attr:`problems`
    and kept.

    >>> cfg = VeleroNodeAgentConfig.from_json('{"loadConcurrency": {"globalConfig": 2}, '
    ...                                       '"priorityClassName": "low"}')
    >>> cfg.load_concurrency.global_config, cfg.priority_class_name
    (2, 'low')
    >>> cfg.to_dict()
    {'loadConcurrency': {'globalConfig': 2}, 'priorityClassName': 'low'}

    This is a faithful model of the document, not a policy: use
    :meth:`ConcurrencyPolicy.from_velero` to resolve per-node concurrency from it.
    """

    #: The ``loadConcurrency`` section: how many loads may run at once on each node.
    load_concurrency: LoadConcurrency | None = json_field("loadConcurrency")
    #: The ``loadAffinity`` entries: where data-mover pods may run.
    load_affinity: tuple[LoadAffinity, ...] | None = json_field("loadAffinity")
    #: The ``backupPVC`` entries, keyed by the source storage class.
    backup_pvc: dict[str, BackupPVCConfig] | None = json_field("backupPVC")
    #: The ``restorePVC`` section.
    restore_pvc: RestorePVCConfig | None = json_field("restorePVC")
    #: The ``podResources`` section (Kubernetes quantities, kept as text).
    pod_resources: PodResources | None = json_field("podResources")
    #: ``priorityClassName``.
    priority_class_name: str | None = json_field("priorityClassName")
    #: ``privilegedFsBackup``.
    privileged_fs_backup: bool | None = json_field("privilegedFsBackup")
    #: The ``cachePVC`` section.
    cache_pvc: CachePVCConfig | None = json_field("cachePVC")
    #: ``podLabels``.
    pod_labels: dict[str, str] | None = json_field("podLabels")
    #: ``podAnnotations``.
    pod_annotations: dict[str, str] | None = json_field("podAnnotations")
    #: Problems the JSON text showed that the model cannot (duplicate keys).
    decode_notes: tuple[ConfigProblem, ...] = internal_field(default=())

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | str | bytes) -> VeleroNodeAgentConfig:
        """Read a node-agent configuration; see the class docstring for what ``doc`` may be."""
        data, notes = load_json_document(doc)
        config = structure(data, cls)
        return evolve(config, decode_notes=notes) if notes else config

    @property
    def problems(self) -> tuple[ConfigProblem, ...]:
        """
        Duplicate keys, unknown keys and keys that matched only case-insensitively, with
        their paths.
        """
        return (*self.decode_notes, *key_problems(self))

    def to_dict(self) -> dict[str, Any]:
        """The document as plain JSON data: what was read, unknown keys included."""
        out: dict[str, Any] = unstructure(self)
        return out

    def to_json(self, *, indent: int | None = 2) -> str:
        """The document as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)


# -- the adapter: a document to a policy ----------------------------------------------------

_SECTION: Final = "loadConcurrency"


def concurrency_policy_from_velero(doc: Any, *, strict: bool, default: int) -> ConcurrencyPolicy:
    """
    The policy a node-agent document gives; :meth:`ConcurrencyPolicy.from_velero` documents
    the arguments and the outcome.
    """
    config = doc if isinstance(doc, VeleroNodeAgentConfig) else VeleroNodeAgentConfig.from_json(doc)
    policy = _policy_from_config(config, default=default)
    if strict and policy.warnings:
        raise ConfigError(policy.warnings)
    for warning in policy.warnings:
        logger.warning("node-agent config: %s", warning)
    return policy


def _policy_from_config(config: VeleroNodeAgentConfig, *, default: int) -> ConcurrencyPolicy:
    problems = list(config.problems)
    section = config.load_concurrency
    if section is None:
        origin = PolicyOrigin(document=config, problems=tuple(problems))
        return ConcurrencyPolicy(default=default, origin=origin)
    global_number = section.global_config
    if global_number is None:
        problems.append(
            ConfigProblem(
                path=f"{_SECTION}.globalConfig",
                message=(
                    "global number is not set (Velero reads it as 0, which is invalid); "
                    f"used the default {default}"
                ),
            )
        )
    rules: list[Rule[int]] = []
    indices: list[int] = []
    skipped: list[SkippedRule] = []
    for i, entry in enumerate(section.per_node_config or ()):
        path = f"{_SECTION}.perNodeConfig[{i}]"
        spec = entry.node_selector
        try:
            selector = LabelSelector.from_dict(spec.as_api_dict() if spec is not None else None)
        except SelectorError as exc:
            where = f"{path}.nodeSelector" + (f".{exc.path}" if exc.path else "")
            reason = f"its selector does not parse: {exc.message}"
            skipped.append(SkippedRule(index=i, path=where, reason=reason))
            problems.append(ConfigProblem(path=where, message=f"rule skipped: {reason}"))
            continue
        rules.append(Rule(selector, entry.number or 0))  # a missing number is Go's 0
        indices.append(i)
    origin = PolicyOrigin(
        document=config,
        rule_indices=tuple(indices),
        skipped=tuple(skipped),
        problems=tuple(problems),
        global_path=f"{_SECTION}.globalConfig",
        number_path=f"{_SECTION}.perNodeConfig[{{index}}].number",
    )
    return ConcurrencyPolicy(
        global_number=global_number, rules=rules, default=default, origin=origin
    )
