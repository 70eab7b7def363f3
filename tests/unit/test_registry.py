"""The registry's vocabulary: model names, aliases and the edge manifest both sides read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fieldloop.registry import ALIASES, EdgeManifest, model_name

BUILD = {
    "file": "student.int8.onnx",
    "bytes": 4096,
    "sha256": "ab" * 32,
    "p50_us": 20.0,
    "p99_us": 41.5,
    "max_abs_diff": 0.01,
    "max_abs_diff_per_output": [0.01, 0.002],
    "self_test_outputs": [[0.1, 0.2], [0.3, 0.4]],
}
MANIFEST = {
    "task": "vehicle-longitudinal",
    "model": "fieldloop.vehicle-longitudinal",
    "input_name": "features",
    "input_dim": 3,
    "outputs": ["accel_mps2", "ood_score"],
    "latency": "batch 1, one thread",
    "self_test_inputs": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
    "self_test_tolerance": 1e-4,
    "builds": {"int8": BUILD},
}


def test_model_names_and_aliases() -> None:
    assert model_name("plant-anomaly") == "fieldloop.plant-anomaly"
    assert model_name("plant-anomaly", "acme-steel") == "fieldloop.plant-anomaly.acme-steel"
    assert ALIASES == ("candidate", "approved", "champion")


def test_the_manifest_round_trips_through_json() -> None:
    manifest = EdgeManifest.model_validate(MANIFEST)
    assert EdgeManifest.from_json(manifest.to_json()) == manifest
    assert manifest.builds["int8"].sha256 == "ab" * 32


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"self_test_inputs": [[0.0, 1.0]]}, "a row of 2 values, the input takes 3"),
        ({"builds": {"int8": {**BUILD, "self_test_outputs": [[0.1, 0.2]]}}}, "1 self-test outputs for 2 inputs"),
        ({"builds": {"int8": {**BUILD, "sha256": "not-hex"}}}, "sha256"),
        ({"builds": {"int8": {**BUILD, "bytes": 0}}}, "bytes"),
        ({"format": 2}, "format"),
        ({"signed_by": "me"}, "signed_by"),
    ],
)
def test_a_manifest_that_does_not_add_up_is_refused(change: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        EdgeManifest.model_validate({**MANIFEST, **change})
