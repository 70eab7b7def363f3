"""DP aggregates: contribution bounds and clamping hold, scales and ε follow OpenDP, noise has its distribution.

OpenDP's noise cannot be seeded, so the noise is tested by its distribution over many
draws, with tolerances of six standard errors (a false failure is rarer than 1 in 10^8);
bounding, clamping, scales and accounting are deterministic and tested exactly. Where a
test needs the exact statistic through the public API it uses ε = 10^6, where the noise
is below 10^-3 except with probability e^-100.
"""

from __future__ import annotations

import math
import statistics

import pytest

from refinement.dp import DpQuery, bound_contributions, dp_count, dp_mean, dp_sum

HUGE_EPS = 1e6


def rows_of(per_unit: dict[str, list[float]]) -> list[tuple[str, float]]:
    return [(unit, v) for unit, values in per_unit.items() for v in values]


# -- contribution bounding -------------------------------------------------------------
def test_bound_keeps_at_most_bound_rows_per_unit_evenly_spread() -> None:
    batch = bound_contributions(rows_of({"a": [float(i) for i in range(10)], "b": [100.0, 101.0]}), 3)

    assert sorted(batch.values) == [0.0, 3.0, 6.0, 100.0, 101.0]  # a: positions 0, 10//3, 20//3
    assert batch.rows_dropped == 7
    assert batch.rows_invalid == 0


def test_bound_is_deterministic_and_depends_only_on_the_units_own_rows() -> None:
    a_rows = [("a", float(i)) for i in range(50)]
    alone = bound_contributions(a_rows, 4)
    interleaved = [r for pair in zip(a_rows, [("b", -1.0)] * 50, strict=True) for r in pair]
    mixed = bound_contributions(interleaved, 4)

    assert bound_contributions(a_rows, 4) == alone
    assert sorted(v for v in mixed.values if v >= 0) == sorted(alone.values)


def test_bound_drops_and_counts_non_finite_values() -> None:
    batch = bound_contributions([("a", math.nan), ("a", 1.0), ("b", math.inf)], 5)

    assert batch.values == (1.0,)
    assert batch.rows_invalid == 2


def test_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bound_contributions([("a", 1.0)], 0)


# -- contribution bounds and clamping hold in releases ---------------------------------
def test_count_counts_each_unit_at_most_bound_times() -> None:
    per_unit = {"greedy": [1.0] * 1000, "w1": [1.0] * 2, "w2": [1.0] * 7}

    release = dp_count(rows_of(per_unit), epsilon=HUGE_EPS, contribution_bound=3)

    assert release.value == 3 + 2 + 3
    assert release.rows_dropped == 997 + 4


def test_count_of_distinct_units_with_bound_one() -> None:
    release = dp_count(rows_of({f"w{i}": [0.0] * (i + 1) for i in range(12)}), epsilon=HUGE_EPS)

    assert release.value == 12


def test_sum_clamps_values_to_bounds_and_bounds_contributions() -> None:
    per_unit = {"loud": [1e9] * 100, "quiet": [-1e9], "mid": [50.0, 60.0]}

    release = dp_sum(rows_of(per_unit), bounds=(0.0, 100.0), epsilon=HUGE_EPS, contribution_bound=2)

    # loud: 2 rows clamped to 100; quiet: clamped to 0; mid: as is
    assert release.value == pytest.approx(2 * 100.0 + 0.0 + 110.0, abs=0.1)
    assert release.rows_clamped == 3
    assert release.rows_dropped == 98


def test_mean_weights_each_unit_by_at_most_bound_readings() -> None:
    per_unit = {"greedy": [130.0] * 10_000, **{f"w{i}": [60.0] * 4 for i in range(9)}}

    release = dp_mean(rows_of(per_unit), bounds=(30.0, 130.0), epsilon=HUGE_EPS, contribution_bound=4)

    assert release.value == pytest.approx((4 * 130.0 + 36 * 60.0) / 40, abs=0.01)


def test_mean_stays_within_bounds_even_when_noise_dominates() -> None:
    query = DpQuery("mean", 0.01, 5, (30.0, 130.0), privacy_unit="worker_id")

    values = [query.release([("w", 80.0)]).value for _ in range(300)]

    assert all(30.0 <= v <= 130.0 for v in values)


# -- calibration and accounting ---------------------------------------------------------
def test_laplace_count_scale_is_bound_over_epsilon_and_costs_exactly_epsilon() -> None:
    cal = DpQuery("count", 0.5, contribution_bound=4).calibration

    assert cal.sensitivity == 4.0
    assert cal.scale == pytest.approx(8.0)
    assert cal.epsilon == 0.5
    assert cal.delta == 0.0


def test_laplace_sum_sensitivity_is_bound_times_largest_magnitude() -> None:
    cal = DpQuery("sum", 1.0, contribution_bound=3, bounds=(30.0, 130.0)).calibration

    # OpenDP adds a few ulps for float rounding in the sum; never less than the textbook value
    assert 390.0 <= cal.sensitivity < 390.0 * (1 + 1e-6)
    assert cal.scale == pytest.approx(cal.sensitivity / 1.0)
    assert cal.epsilon <= 1.0


def test_laplace_mean_splits_epsilon_between_sum_and_count() -> None:
    cal = DpQuery("mean", 1.0, contribution_bound=2, bounds=(30.0, 130.0)).calibration

    # shifted to [0, 100]: sum sensitivity 2 * 100 at ε/2, count sensitivity 2 at ε/2
    assert cal.scale == pytest.approx(2 * 100.0 / 0.5, rel=1e-6)
    assert cal.count_scale == pytest.approx(2 / 0.5)
    assert cal.epsilon <= 1.0


@pytest.mark.parametrize("statistic,bounds", [("count", None), ("sum", (0.0, 10.0)), ("mean", (0.0, 10.0))])
def test_gaussian_costs_at_most_target_epsilon_and_delta(statistic, bounds) -> None:
    cal = DpQuery(statistic, 1.0, 3, bounds, mechanism="gaussian", delta=1e-7).calibration

    assert 0.99 <= cal.epsilon <= 1.0  # tight: the scale is bisected against OpenDP's own map
    assert cal.delta == 1e-7


def test_release_reports_its_accounting() -> None:
    release = dp_mean([("a", 1.0)], bounds=(0.0, 2.0), epsilon=0.3, contribution_bound=2, privacy_unit="device_id")

    assert (release.statistic, release.mechanism, release.privacy_unit) == ("mean", "laplace", "device_id")
    assert release.epsilon <= 0.3 and release.delta == 0.0
    assert release.contribution_bound == 2 and release.bounds == (0.0, 2.0)
    assert release.scale > 0 and release.count_scale is not None
    public = release.public()
    assert "value" in public and "epsilon" in public
    assert not {"rows_dropped", "rows_clamped", "rows_invalid"} & public.keys()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"statistic": "median", "epsilon": 1.0}, "statistic"),
        ({"statistic": "count", "epsilon": 0.0}, "epsilon"),
        ({"statistic": "count", "epsilon": math.inf}, "epsilon"),
        ({"statistic": "count", "epsilon": 1.0, "contribution_bound": 0}, "contribution_bound"),
        ({"statistic": "sum", "epsilon": 1.0}, "needs bounds"),
        ({"statistic": "mean", "epsilon": 1.0, "bounds": (5.0, 5.0)}, "lower < upper"),
        ({"statistic": "count", "epsilon": 1.0, "delta": 1e-6}, "pure"),
        ({"statistic": "count", "epsilon": 1.0, "mechanism": "gaussian"}, "0 < delta"),
    ],
)
def test_invalid_queries_are_refused(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        DpQuery(**kwargs)


# -- the noise, by its distribution -----------------------------------------------------
DRAWS = 4000


def test_laplace_count_noise_is_unbiased_with_laplace_variance() -> None:
    query = DpQuery("count", 0.1, contribution_bound=1)  # scale 10, far from 0: no rounding at 0
    rows = [(f"w{i}", 0.0) for i in range(500)]
    scale = query.calibration.scale

    draws = [query.release(rows).value for _ in range(DRAWS)]

    variance = 2 * scale**2
    assert statistics.fmean(draws) == pytest.approx(500, abs=6 * math.sqrt(variance / DRAWS))
    # the sample variance of Laplace noise has a relative standard error of sqrt(5 / n)
    assert statistics.variance(draws) == pytest.approx(variance, rel=6 * math.sqrt(5 / DRAWS))


def test_gaussian_sum_noise_is_unbiased_with_gaussian_variance() -> None:
    query = DpQuery("sum", 1.0, 2, (0.0, 10.0), mechanism="gaussian", delta=1e-6)
    rows = [(f"w{i}", 5.0) for i in range(100)]
    sigma = query.calibration.scale

    draws = [query.release(rows).value for _ in range(DRAWS)]

    assert statistics.fmean(draws) == pytest.approx(500.0, abs=6 * sigma / math.sqrt(DRAWS))
    # relative standard error of a Gaussian sample variance: sqrt(2 / n)
    assert statistics.variance(draws) == pytest.approx(sigma**2, rel=6 * math.sqrt(2 / DRAWS))
