"""The training rule: which inputs may train which model."""

from __future__ import annotations

import pytest

from fieldloop.classes import DataClass, ModelTarget, TrainingInput, Use, enforce_training_rule, training_violations
from fieldloop.errors import ContaminationError

ALL_TRAINING = frozenset({Use.BASE_TRAINING, Use.TENANT_FINETUNE, Use.EVALUATION})
TENANT_ONLY = frozenset({Use.TENANT_FINETUNE, Use.EVALUATION})
BASE = ModelTarget("vehicle-longitudinal")
ACME = ModelTarget("vehicle-longitudinal", "acme")


def public(table: str = "gold/public_frames") -> TrainingInput:
    return TrainingInput(table, DataClass.PUBLIC, None, "frames-public", ALL_TRAINING)


def restricted(tenant: str, table: str = "gold/acme_frames") -> TrainingInput:
    return TrainingInput(table, DataClass.RESTRICTED, tenant, f"frames-{tenant}", TENANT_ONLY)


def rules(inputs: list[TrainingInput], target: ModelTarget) -> list[tuple[str, str]]:
    return [(v.table, v.rule) for v in training_violations(inputs, target)]


def test_model_names_follow_the_design() -> None:
    assert BASE.name == "fieldloop.vehicle-longitudinal"
    assert ACME.name == "fieldloop.vehicle-longitudinal.acme"


def test_public_data_trains_base_and_tenant_models() -> None:
    assert rules([public()], BASE) == []
    assert rules([public()], ACME) == []


def test_restricted_data_trains_only_its_own_tenant() -> None:
    assert rules([public(), restricted("acme")], ACME) == []
    assert rules([public(), restricted("acme")], BASE) == [
        ("gold/acme_frames", "restricted-not-in-base"),
        ("gold/acme_frames", "contract-use"),  # its contract does not allow base_training either
    ]
    assert rules([restricted("other")], ACME) == [("gold/acme_frames", "tenant-isolation")]


def test_restricted_without_tenant_is_refused_everywhere() -> None:
    orphan = TrainingInput("gold/orphan", DataClass.RESTRICTED, None, "c", TENANT_ONLY)
    assert ("gold/orphan", "restricted-needs-tenant") in rules([orphan], ACME)


def test_raw_secret_data_trains_nothing() -> None:
    secret = TrainingInput("silver/worker_audio", DataClass.SECRET, "acme", "audio", ALL_TRAINING)
    assert rules([secret], BASE) == [("silver/worker_audio", "secret-never-trains")]
    assert rules([secret], ACME) == [("silver/worker_audio", "secret-never-trains")]


def test_derived_data_follows_its_contract_and_tenant() -> None:
    dp = TrainingInput("gold/audio_dp", DataClass.DERIVED, "acme", "audio-dp", TENANT_ONLY)
    assert rules([dp], ACME) == []
    assert rules([dp], BASE) == [("gold/audio_dp", "restricted-not-in-base"), ("gold/audio_dp", "contract-use")]
    open_dp = TrainingInput("gold/open_dp", DataClass.DERIVED, None, "open-dp", ALL_TRAINING)
    assert rules([open_dp], BASE) == []


def test_contract_must_allow_the_use() -> None:
    eval_only = TrainingInput("gold/bench", DataClass.PUBLIC, None, "bench", frozenset({Use.EVALUATION}))
    assert rules([eval_only], BASE) == [("gold/bench", "contract-use")]
    assert rules([eval_only], ACME) == [("gold/bench", "contract-use")]


def test_enforce_names_every_table_and_rule() -> None:
    with pytest.raises(ContaminationError) as excinfo:
        enforce_training_rule([public(), restricted("acme", "gold/a"), restricted("beta", "gold/b")], BASE)
    message = str(excinfo.value)
    assert "refused to train fieldloop.vehicle-longitudinal; nothing was registered" in message
    assert "gold/a" in message and "gold/b" in message and "restricted-not-in-base" in message
    assert "gold/public_frames" not in message
    enforce_training_rule([public()], BASE)  # allowed: no error
