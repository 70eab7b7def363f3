"""The demo's iteration clock: loop closure from the first field record to the canary, and where it went."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fieldloop.cli.demo_loop import FIELD, Iteration, first_hard_case, hard_case_gain, print_times


def iteration(began: float, canary_at: float | None) -> Iteration:
    it = Iteration(2, began=began, canary_at=canary_at)
    for name, start, seconds in (("bronze", 100.0, 20.0), ("train and judge", 120.0, 60.0), ("rollout", 180.0, 90.0)):
        it.starts[name], it.stages[name] = start, seconds
    return it


def test_closure_runs_from_the_first_field_record_to_the_canary_and_its_stages_add_up() -> None:
    it = iteration(began=40.0, canary_at=210.0)  # the rollout's canary acted 30 s into its 90
    assert it.closure_s == 170.0
    assert it.closure_stages() == {FIELD: 60.0, "bronze": 20.0, "train and judge": 60.0, "rollout": 30.0}
    assert sum(it.closure_stages().values()) == pytest.approx(it.closure_s)
    assert it.as_dict()["loop_closure_s"] == 170.0


def test_no_canary_means_no_closure_and_the_screen_says_so() -> None:
    it = iteration(began=40.0, canary_at=None)
    assert it.closure_s is None and it.closure_stages() == {}
    out = io.StringIO()
    print_times(Console(file=out, width=200), it, 600.0)
    assert "no approved version reached a canary car" in out.getvalue()


def test_the_screen_names_the_largest_stage_and_the_target() -> None:
    out = io.StringIO()
    print_times(Console(file=out, width=500), iteration(began=40.0, canary_at=210.0), 600.0)
    text = out.getvalue()
    assert "loop closure, iteration 2: 2.8 min" in text and "target 10 min" in text
    assert f"the largest stage: {FIELD} (60 s)" in text


def test_the_first_hard_case_is_the_earliest_any_car_spooled() -> None:
    agents = {"devices": {"car-1": {"campaigns": {"first_sent_at": 30.0}}, "car-2": {"error": "failed"}}}
    rollouts = {"good": {"hard_cases": {"first_sent_at": 20.0}}, "drill": None}
    assert first_hard_case(agents, rollouts) == 20.0
    assert first_hard_case({}, {"good": {"hard_cases": {"sent": 0, "first_sent_at": None}}}) is None


def test_the_gain_on_hard_cases_is_against_the_champion_that_met_them() -> None:
    out = io.StringIO()
    tuned = {
        "version": 7,
        "metrics": {
            "hard_cases_rmse_student": 0.9,
            "hard_cases_rmse_champion": 1.0,
            "hard_cases_rmse_persistence": 1.2,
            "hard_cases_rows": 300.0,
        },
        "rows": {"hard_cases_holdout_devices": 12},
    }
    gain = hard_case_gain(Console(file=out, width=200), tuned, 3)
    assert gain is not None and gain["gain"] == pytest.approx(0.1) and (gain["rows"], gain["devices"]) == (300, 12)
    assert "v7 RMSE 0.900 m/s² against the champion v3's 1.000 (10.0% lower)" in out.getvalue()
    assert hard_case_gain(Console(file=io.StringIO()), {"version": 8, "metrics": {}}, 7) is None
