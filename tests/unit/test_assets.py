"""Which contract a lake table's asset is described from (its class, tenant and description)."""

from __future__ import annotations

import pytest

from fieldloop.assets import governing
from fieldloop.contracts import load_contracts


@pytest.mark.parametrize(
    ("layer", "name", "contract"),
    [
        ("bronze", "vehicle_frames_public", "vehicle-frames-public"),
        ("silver", "vehicle_frames_public", "vehicle-frames-public"),
        ("silver", "vehicle_frames_public_anon", "vehicle-frames-public"),
        ("silver", "vehicle_frames_acme_mobility", "vehicle-frames-acme-mobility"),
        ("gold", "vehicle_longitudinal_acme_mobility", "vehicle-frames-acme-mobility"),
        ("gold", "fleet_telemetry_dp_daily", "fleet-telemetry"),
    ],
)
def test_a_table_is_described_by_the_contract_whose_data_it_holds(layer: str, name: str, contract: str) -> None:
    found = governing(layer, name, load_contracts())
    assert found is not None and found.id == contract


def test_a_table_no_contract_governs_has_no_description_rather_than_a_wrong_one() -> None:
    assert governing("silver", "somebody_elses_table", load_contracts()) is None
    assert governing("gold", "vehicle_frames_public", load_contracts()) is None  # a stream's name is no gold dataset
