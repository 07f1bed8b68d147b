"""VeleroNodeAgentConfig: every section loads and round-trips without loss."""

from __future__ import annotations

import json
from typing import Any

import pytest

from throttlekit import ConfigError, VeleroNodeAgentConfig

# Velero's "complete configuration example", plus every other documented section.
FULL: dict[str, Any] = {
    "loadConcurrency": {
        "globalConfig": 2,
        "prepareQueueLength": 15,
        "perNodeConfig": [
            {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "node1"}}, "number": 3}
        ],
    },
    "loadAffinity": [
        {
            "nodeSelector": {
                "matchLabels": {"node-type": "backup"},
                "matchExpressions": [{"key": "critical-workload", "operator": "DoesNotExist"}],
            }
        },
        {"nodeSelector": {"matchLabels": {"environment": "staging"}}, "storageClass": "fast-ssd"},
    ],
    "backupPVC": {
        "fast-storage": {
            "storageClass": "backup-optimized-class",
            "readOnly": True,
            "spcNoRelabeling": True,
        },
        "slow-storage": {"storageClass": "backup-storage-2", "annotations": {"a": "b"}},
    },
    "restorePVC": {"ignoreDelayBinding": True},
    "podResources": {
        "cpuRequest": "1000m",
        "cpuLimit": "2000m",
        "memoryRequest": "1Gi",
        "memoryLimit": "4Gi",
        "ephemeralStorageRequest": "1Gi",
        "ephemeralStorageLimit": "2Gi",
    },
    "priorityClassName": "low-priority",
    "privilegedFsBackup": True,
    "cachePVC": {"thresholdInGB": 1, "storageClass": "cache-optimized-storage"},
    "podLabels": {"team": "backup"},
    "podAnnotations": {"example.com/owner": "ops"},
}


def test_every_section_loads_into_typed_fields() -> None:
    """Each documented section becomes a typed attribute."""
    cfg = VeleroNodeAgentConfig.from_json(FULL)
    assert cfg.load_concurrency is not None and cfg.load_concurrency.prepare_queue_length == 15
    assert cfg.load_affinity is not None and cfg.load_affinity[1].storage_class == "fast-ssd"
    assert cfg.backup_pvc is not None and cfg.backup_pvc["fast-storage"].spc_no_relabeling is True
    assert cfg.restore_pvc is not None and cfg.restore_pvc.ignore_delay_binding is True
    assert cfg.pod_resources is not None and cfg.pod_resources.memory_limit == "4Gi"
    assert cfg.cache_pvc is not None and cfg.cache_pvc.threshold_in_gb == 1
    assert (cfg.priority_class_name, cfg.privileged_fs_backup) == ("low-priority", True)
    assert cfg.pod_labels == {"team": "backup"}
    assert cfg.problems == ()


def test_round_trip_is_lossless() -> None:
    """to_dict() gives back exactly the document that was read."""
    assert VeleroNodeAgentConfig.from_json(FULL).to_dict() == FULL
    assert json.loads(VeleroNodeAgentConfig.from_json(json.dumps(FULL)).to_json()) == FULL


def test_unknown_keys_survive_the_round_trip_and_are_reported() -> None:
    """Keys the model does not know are kept in place and listed in problems."""
    doc = {
        "loadConcurrency": {"globalConfig": 1, "futureKnob": [1, 2]},
        "backupPVC": {"x": {"storageClass": "s", "newField": True}},
        "brandNewSection": {"a": 1},
    }
    cfg = VeleroNodeAgentConfig.from_json(doc)
    assert cfg.to_dict() == doc
    assert [p.path for p in cfg.problems] == [
        "loadConcurrency.futureKnob",
        'backupPVC["x"].newField',
        "brandNewSection",
    ]


def test_non_string_key_from_python_is_kept_and_reported() -> None:
    """A dict built in Python may carry a non-string key; it is an unknown key, not a crash."""
    cfg = VeleroNodeAgentConfig.from_json({"loadConcurrency": {"globalConfig": 1, 7: "x"}})
    assert [p.path for p in cfg.problems] == ["loadConcurrency[7]"]


def test_case_variant_keys_round_trip_with_their_spelling() -> None:
    """A key matched case-insensitively is written back as it was spelled."""
    doc = {"LoadConcurrency": {"GlobalConfig": 3}}
    cfg = VeleroNodeAgentConfig.from_json(doc)
    assert cfg.load_concurrency is not None and cfg.load_concurrency.global_config == 3
    assert cfg.to_dict() == doc
    assert [p.path for p in cfg.problems] == ["LoadConcurrency", "LoadConcurrency.GlobalConfig"]


def test_last_duplicate_spelling_wins_like_go() -> None:
    """With both spellings present, the later key in the document wins, as in Go."""
    cfg = VeleroNodeAgentConfig.from_json(
        '{"loadConcurrency": {"globalConfig": 1, "GLOBALCONFIG": 7}}'
    )
    assert cfg.load_concurrency is not None and cfg.load_concurrency.global_config == 7


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"loadAffinity": {"a": 1}}, "loadAffinity"),
        ({"loadAffinity": [{"storageClass": 5}]}, "loadAffinity[0].storageClass"),
        ({"backupPVC": {"x": {"readOnly": "true"}}}, 'backupPVC["x"].readOnly'),
        ({"podResources": {"cpuLimit": 2}}, "podResources.cpuLimit"),
        ({"cachePVC": {"thresholdInGB": "1"}}, "cachePVC.thresholdInGB"),
        ({"podLabels": ["a"]}, "podLabels"),
        ({"privilegedFsBackup": 1}, "privilegedFsBackup"),
    ],
)
def test_type_errors_in_other_sections_are_structural(doc: dict[str, Any], path: str) -> None:
    """A wrong type anywhere stops Velero from starting, so it is a ConfigError here too."""
    with pytest.raises(ConfigError) as info:
        VeleroNodeAgentConfig.from_json(doc)
    assert [p.path for p in info.value.problems] == [path]


def test_config_error_lists_problems_and_pickles() -> None:
    """ConfigError is a ValueError whose str lists every problem; it survives pickling."""
    import pickle

    with pytest.raises(ConfigError) as info:
        VeleroNodeAgentConfig.from_json({"podLabels": 1, "cachePVC": 2})
    err = info.value
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems
    assert str(again) == str(err)
