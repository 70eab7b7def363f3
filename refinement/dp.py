"""Differentially private counts, sums and means over a batch, on OpenDP.

Workflow. A :class:`DpQuery` states the statistic, the privacy unit's contribution
bound, the clamping bounds and the target (ε, δ). Calibration needs no data: OpenDP
measures the transformation's sensitivity, the noise scale is set from it, and OpenDP's
privacy map then says what the release costs (never more than the target); that cost is
what a :class:`~refinement.ledger.BudgetLedger` is charged. :meth:`DpQuery.release` takes
``(privacy unit, value)`` rows and

1. bounds contributions: each unit keeps at most ``contribution_bound`` rows, picked
   evenly over its rows in the order given (so a caller sorting by time keeps a spread
   of the window, not its first seconds); the rest are dropped and counted;
2. clamps values to the declared bounds (inside OpenDP) and sums or counts them;
3. adds Laplace noise (pure ε) or Gaussian noise (zCDP, reported as (ε, δ)).

Dropping rows per unit only looks at that unit's own rows, so adding or removing one
unit changes at most ``contribution_bound`` rows of the bounded batch: that is the
``d_in`` every privacy map is asked about (add/remove adjacency, OpenDP's
``symmetric_distance``).

OpenDP's noise is not seedable on purpose, so tests check what is deterministic
(bounding, clamping, scales, accounting) and the noise by its distribution.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal

logger = logging.getLogger(__name__)

Statistic = Literal["count", "sum", "mean"]
Mechanism = Literal["laplace", "gaussian"]

# A scale that OpenDP's map puts a hair over the target (float rounding in its
# sensitivity) is widened by this factor until the map fits.
_WIDEN = 1.0 + 1e-9
# Bisection steps tightening a Gaussian scale to OpenDP's (ε, δ) conversion: 2^-24 relative.
_BISECT_STEPS = 24


def _opendp() -> Any:
    """OpenDP's prelude with the ``contrib`` features on (its constructors refuse to run without)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class BoundedBatch:
    """A batch after contribution bounding; exact, so it stays on the machine that computed it.

    Attributes:
        values: the kept values, finite, not yet clamped.
        rows_dropped: rows dropped because their unit was over the contribution bound.
        rows_invalid: rows dropped because their value was not a finite number.
    """

    values: tuple[float, ...]
    rows_dropped: int
    rows_invalid: int


def bound_contributions(
    rows: Iterable[tuple[Hashable, float]], bound: int, *, require_finite: bool = True
) -> BoundedBatch:
    """Keep at most ``bound`` rows per privacy unit, deterministically.

    For a unit with ``n > bound`` rows, the rows at positions ``i * n // bound`` (``i`` in
    ``0..bound-1``) of its rows, in the order given, are kept: the same input always
    keeps the same rows, and the choice depends on that unit's rows alone.

    Args:
        rows: ``(privacy unit, value)`` pairs.
        bound: most rows one unit may contribute (>= 1).
        require_finite: drop (and count) rows whose value is NaN or infinite; a count
            does not look at values and passes False.

    Raises:
        ValueError: ``bound`` is below 1.
    """
    if bound < 1:
        raise ValueError(f"contribution bound must be at least 1, got {bound}")
    by_unit: dict[Hashable, list[float]] = defaultdict(list)
    invalid = 0
    for unit, value in rows:
        number = float(value)
        if require_finite and not math.isfinite(number):
            invalid += 1
            continue
        by_unit[unit].append(number)
    kept: list[float] = []
    dropped = 0
    for values in by_unit.values():
        n = len(values)
        if n <= bound:
            kept.extend(values)
        else:
            kept.extend(values[i * n // bound] for i in range(bound))
            dropped += n - bound
    return BoundedBatch(tuple(kept), dropped, invalid)


@dataclass(frozen=True)
class Calibration:
    """The noise of a :class:`DpQuery` and what OpenDP proves it costs.

    Attributes:
        scale: noise scale of the released numerator (the count, or the sum); Laplace
            ``b`` (std = b·√2) or Gaussian σ.
        count_scale: noise scale of the denominator count of a mean; None otherwise.
        epsilon: ε of one release by OpenDP's privacy map, at most the query's target.
        delta: δ of one release (0 for Laplace).
        sensitivity: the numerator's sensitivity for ``d_in = contribution_bound``
            (L1 for Laplace, L2 for Gaussian; equal for a scalar).
    """

    scale: float
    count_scale: float | None
    epsilon: float
    delta: float
    sensitivity: float


@dataclass(frozen=True)
class DpRelease:
    """One differentially private value and everything needed to account for it.

    ``value`` is the only private output. ``rows_dropped``, ``rows_clamped`` and
    ``rows_invalid`` are exact counts for the operator of the site that computed the
    release: they are not differentially private and must not be published with it.

    Attributes:
        statistic: ``count``, ``sum`` or ``mean``.
        value: the noisy value (a count is rounded at 0, a mean clamped into its bounds;
            both post-processing, free of privacy cost).
        epsilon: ε spent by this release (OpenDP's privacy map).
        delta: δ spent by this release.
        mechanism: ``laplace`` or ``gaussian``.
        scale: noise scale of the numerator (see :class:`Calibration`).
        count_scale: noise scale of a mean's denominator; None for count and sum.
        contribution_bound: most rows one privacy unit contributed.
        bounds: the clamping bounds; None for a count.
        privacy_unit: what one unit is (e.g. ``worker_id``, ``device_id``).
        rows_dropped: rows dropped by the contribution bound (not private).
        rows_clamped: rows whose value was clamped (not private).
        rows_invalid: rows dropped for a non-finite value (not private).
    """

    statistic: Statistic
    value: float
    epsilon: float
    delta: float
    mechanism: Mechanism
    scale: float
    count_scale: float | None
    contribution_bound: int
    bounds: tuple[float, float] | None
    privacy_unit: str
    rows_dropped: int = 0
    rows_clamped: int = 0
    rows_invalid: int = 0

    def public(self) -> dict[str, Any]:
        """The fields that may leave with the value: everything but the exact row counts."""
        data = asdict(self)
        for name in ("rows_dropped", "rows_clamped", "rows_invalid"):
            del data[name]
        return data


@dataclass(frozen=True)
class ReleasePlan:
    """A calendar month's budget shared evenly by every release the month will hold.

    A release made ``per_day`` times a day (one per metric) over a month of ``d`` days
    makes ``d * per_day`` releases; each gets ``budget / (d * per_day)``, so the month's
    releases fit its budget exactly, in 28-day months as in 31-day ones.

    Attributes:
        budget_epsilon: ε of the ledger key per month.
        per_day: releases a day.
    """

    budget_epsilon: float
    per_day: int

    def releases(self, period: str) -> int:
        """How many releases month ``period`` (``YYYY-MM``) holds."""
        import calendar

        year, month = (int(part) for part in period.split("-"))
        return calendar.monthrange(year, month)[1] * self.per_day

    def epsilon(self, period: str) -> float:
        """ε of each release in month ``period``."""
        return self.budget_epsilon / self.releases(period)


@dataclass(frozen=True)
class DpQuery:
    """A differentially private statistic over rows grouped by privacy unit.

    Args:
        statistic: ``count`` (rows after bounding), ``sum`` or ``mean`` of the values.
        epsilon: target ε of one release (> 0); the release costs at most this.
        contribution_bound: most rows one privacy unit may contribute per release.
        bounds: ``(lower, upper)`` values are clamped to; required for sum and mean.
        mechanism: ``laplace`` (pure ε, δ = 0) or ``gaussian`` (zCDP, needs δ > 0).
        delta: target δ for ``gaussian``; must be 0 for ``laplace``.
        privacy_unit: what one unit is, recorded with each release.

    Raises:
        ValueError: a parameter is out of range or missing for the statistic.
    """

    statistic: Statistic
    epsilon: float
    contribution_bound: int = 1
    bounds: tuple[float, float] | None = None
    mechanism: Mechanism = "laplace"
    delta: float = 0.0
    privacy_unit: str = "unit"

    def __post_init__(self) -> None:
        if self.statistic not in ("count", "sum", "mean"):
            raise ValueError(f"statistic must be count, sum or mean, got {self.statistic!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a finite number above 0, got {self.epsilon}")
        if not isinstance(self.contribution_bound, int) or self.contribution_bound < 1:
            raise ValueError(f"contribution_bound must be an integer >= 1, got {self.contribution_bound!r}")
        if self.mechanism == "laplace":
            if self.delta != 0:
                raise ValueError("the Laplace mechanism is pure ε-DP: set delta=0, or use mechanism='gaussian'")
        elif self.mechanism == "gaussian":
            if not 0 < self.delta < 1:
                raise ValueError(f"the Gaussian mechanism needs 0 < delta < 1, got {self.delta}")
        else:
            raise ValueError(f"mechanism must be laplace or gaussian, got {self.mechanism!r}")
        if self.statistic == "count":
            if self.bounds is not None:
                raise ValueError("a count has no value bounds; leave bounds unset")
        else:
            if self.bounds is None:
                raise ValueError(f"a DP {self.statistic} needs bounds=(lower, upper) to clamp values to")
            lower, upper = self.bounds
            if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
                raise ValueError(f"bounds must be finite with lower < upper, got {self.bounds}")
            object.__setattr__(self, "bounds", (float(lower), float(upper)))

    # -- calibration (no data) --------------------------------------------------------
    @cached_property
    def calibration(self) -> Calibration:
        """Noise scale(s) and the (ε, δ) OpenDP proves for one release; computed once."""
        return _calibrate(
            self.statistic, self.epsilon, self.delta, self.mechanism, self.contribution_bound, self.bounds
        )

    # -- release ----------------------------------------------------------------------
    def release(self, rows: Iterable[tuple[Hashable, float]]) -> DpRelease:
        """Bound, clamp, aggregate and noise one batch.

        Args:
            rows: ``(privacy unit, value)`` pairs of one release window; a count ignores
                the values. Rows of a unit are bounded in the order given.

        Returns:
            The release. Nothing is recorded anywhere: charge ``epsilon``/``delta`` to a
            ledger before publishing ``value``.
        """
        cal = self.calibration
        batch = bound_contributions(rows, self.contribution_bound, require_finite=self.statistic != "count")
        measurement = _measurement(
            self.statistic, self.mechanism, self.contribution_bound, self.bounds, cal.scale, cal.count_scale, cal.delta
        )
        clamped = 0
        if self.statistic == "count":
            # the count only looks at the number of rows; zeros keep values out of the FFI call
            value = float(max(0, measurement([0.0] * len(batch.values))))
        else:
            lower, upper = self.bounds  # type: ignore[misc]
            clamped = sum(1 for v in batch.values if v < lower or v > upper)
            if self.statistic == "sum":
                value = float(measurement(list(batch.values)))
            else:
                noisy_sum, noisy_count = measurement([v - lower for v in batch.values])
                value = min(max(lower + float(noisy_sum) / max(float(noisy_count), 1.0), lower), upper)
        if batch.rows_dropped or batch.rows_invalid:
            logger.debug(
                "dp %s: %d rows over the contribution bound, %d non-finite, dropped",
                self.statistic,
                batch.rows_dropped,
                batch.rows_invalid,
            )
        return DpRelease(
            statistic=self.statistic,
            value=value,
            epsilon=cal.epsilon,
            delta=cal.delta,
            mechanism=self.mechanism,
            scale=cal.scale,
            count_scale=cal.count_scale,
            contribution_bound=self.contribution_bound,
            bounds=self.bounds,
            privacy_unit=self.privacy_unit,
            rows_dropped=batch.rows_dropped,
            rows_clamped=clamped,
            rows_invalid=batch.rows_invalid,
        )


def dp_count(
    rows: Iterable[tuple[Hashable, float]],
    *,
    epsilon: float,
    contribution_bound: int = 1,
    mechanism: Mechanism = "laplace",
    delta: float = 0.0,
    privacy_unit: str = "unit",
) -> DpRelease:
    """A DP count of rows, each unit counted at most ``contribution_bound`` times (see :class:`DpQuery`)."""
    return DpQuery("count", epsilon, contribution_bound, None, mechanism, delta, privacy_unit).release(rows)


def dp_sum(
    rows: Iterable[tuple[Hashable, float]],
    *,
    bounds: tuple[float, float],
    epsilon: float,
    contribution_bound: int = 1,
    mechanism: Mechanism = "laplace",
    delta: float = 0.0,
    privacy_unit: str = "unit",
) -> DpRelease:
    """A DP sum of values clamped to ``bounds`` (see :class:`DpQuery`)."""
    return DpQuery("sum", epsilon, contribution_bound, bounds, mechanism, delta, privacy_unit).release(rows)


def dp_mean(
    rows: Iterable[tuple[Hashable, float]],
    *,
    bounds: tuple[float, float],
    epsilon: float,
    contribution_bound: int = 1,
    mechanism: Mechanism = "laplace",
    delta: float = 0.0,
    privacy_unit: str = "unit",
) -> DpRelease:
    """A DP mean of values clamped to ``bounds``: noisy sum over noisy count, ε split evenly (see :class:`DpQuery`)."""
    return DpQuery("mean", epsilon, contribution_bound, bounds, mechanism, delta, privacy_unit).release(rows)


# -- OpenDP plumbing ------------------------------------------------------------------
def _space(dp: Any) -> tuple[Any, Any]:
    # unknown batch size and add/remove adjacency: the number of rows is itself private
    return dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()


def _numerator(dp: Any, statistic: Statistic, bounds: tuple[float, float] | None) -> Any:
    """The transformation whose output gets the main noise."""
    space = _space(dp)
    if statistic == "count":
        return space >> dp.t.then_count()
    lower, upper = bounds  # type: ignore[misc]
    if statistic == "mean":
        # The mean's sum runs on values shifted by the lower bound: non-negative values
        # give OpenDP's sum sensitivity (upper - lower) rather than max(|lower|, |upper|).
        lower, upper = 0.0, upper - lower
    return space >> dp.t.then_clamp((lower, upper)) >> dp.t.then_sum()


@lru_cache(maxsize=256)
def _measurement(
    statistic: Statistic,
    mechanism: Mechanism,
    bound: int,
    bounds: tuple[float, float] | None,
    scale: float,
    count_scale: float | None,
    delta: float,
) -> Any:
    """The complete OpenDP measurement; its privacy map is in (ε, δ) for either mechanism."""
    dp = _opendp()
    noise = dp.m.then_laplace if mechanism == "laplace" else dp.m.then_gaussian
    measurement = _numerator(dp, statistic, bounds) >> noise(scale)
    if statistic == "mean":
        count = _numerator(dp, "count", None) >> noise(count_scale)
        measurement = dp.c.make_composition([measurement, count])
    if mechanism == "gaussian":
        # zCDP composes the two halves of a mean tightly; convert once, at the end
        measurement = dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(measurement), delta)
    return measurement


def _epsilon_of(measurement: Any, bound: int, mechanism: Mechanism) -> tuple[float, float]:
    loss = measurement.map(bound)
    if mechanism == "laplace":
        return float(loss), 0.0
    eps, delta = loss
    return float(eps), float(delta)


def _rho_for(epsilon: float, delta: float) -> float:
    """The largest ρ with ρ + 2·sqrt(ρ·ln(1/δ)) <= ε (Bun & Steinke 2016, Prop. 1.3).

    OpenDP converts zCDP to (ε, δ) with a tighter bound, so the map of a release
    calibrated to this ρ never exceeds the target; the ledger is charged the map.
    """
    log_inv_delta = math.log(1.0 / delta)
    root = math.sqrt(log_inv_delta + epsilon) - math.sqrt(log_inv_delta)
    return root * root


def _calibrate(
    statistic: Statistic,
    epsilon: float,
    delta: float,
    mechanism: Mechanism,
    bound: int,
    bounds: tuple[float, float] | None,
) -> Calibration:
    """Set the noise from OpenDP's sensitivity, then check the cost with OpenDP's own privacy map."""
    dp = _opendp()
    sensitivity = float(_numerator(dp, statistic, bounds).map(bound))
    count_sensitivity = float(bound)
    # a mean spends half of its budget on the sum and half on the count
    parts = 2 if statistic == "mean" else 1
    if mechanism == "laplace":
        scale = sensitivity * parts / epsilon
        count_scale = count_sensitivity * parts / epsilon if statistic == "mean" else None
    else:
        rho = _rho_for(epsilon, delta) / parts
        scale = sensitivity / math.sqrt(2.0 * rho)
        count_scale = count_sensitivity / math.sqrt(2.0 * rho) if statistic == "mean" else None
    ratio = count_scale / scale if count_scale is not None else None

    def cost(factor: float) -> tuple[float, float] | None:
        """(ε, δ) of the release with every scale multiplied by ``factor``; None if over the target."""
        measurement = _measurement(
            statistic,
            mechanism,
            bound,
            bounds,
            scale * factor,
            scale * factor * ratio if ratio is not None else None,
            delta,
        )
        spent = _epsilon_of(measurement, bound, mechanism)
        return spent if spent[0] <= epsilon and spent[1] <= delta else None

    factor = 1.0
    for _ in range(64):
        if cost(factor) is not None:
            break
        factor *= _WIDEN
    else:  # pragma: no cover - OpenDP's sensitivity already includes its float error
        raise AssertionError(f"could not calibrate a {mechanism} {statistic} to ε={epsilon}, δ={delta}")
    if mechanism == "gaussian":
        # The closed form above is loose; OpenDP's conversion allows less noise. Bisect
        # the scale down towards the target, checking every step with OpenDP's map.
        low = factor / 4
        for _ in range(_BISECT_STEPS):
            middle = (low + factor) / 2
            if cost(middle) is None:
                low = middle
            else:
                factor = middle
    spent_eps, spent_delta = cost(factor)  # type: ignore[misc]
    return Calibration(
        scale * factor, scale * factor * ratio if ratio is not None else None, spent_eps, spent_delta, sensitivity
    )
