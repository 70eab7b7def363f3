"""The scenario suite: inputs a deployed model meets, built from the holdout's rows.

Every scenario has as many rows as the policy's ``envelope.rows`` and is seeded, so a
verdict can be reproduced. Scales are the reference rows' per-feature standard deviation;
"a signal" is one of the layout's signals across the whole window (a sensor that drops out
does so for every frame it is in):

* ``normal``: holdout rows as they are;
* ``boundary``: every feature at the reference rows' minimum or maximum (corners of the box);
* ``out_of_range``: a third of the features pushed beyond that range;
* ``dropout_nan`` / ``dropout_zero`` / ``dropout_stuck``: one signal reads NaN, 0, or its oldest
  value for the whole window;
* ``noise``: Gaussian sensor noise;
* ``adversarial``: the worst of several sign perturbations at the L-inf bound (a random-sign
  search, no gradients: the file is what is judged, not a differentiable copy of it).

:func:`shifted` is the OOD check's positive class; :func:`sequences` the consecutive frames
the step (jerk) check runs through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actuation.guardrails.policy import EnvelopePolicy
from fieldloop.datasets import FeatureLayout


@dataclass(frozen=True)
class Reference:
    """The rows the scenarios are built from, and their per-feature statistics."""

    x: np.ndarray  # float32 [N, D]
    lo: np.ndarray
    hi: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Reference:
        x = np.ascontiguousarray(x, dtype=np.float32)
        std = x.std(0)
        # A feature constant in the reference rows still gets moved by one unit.
        std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        return cls(x, x.min(0), x.max(0), std)


def _signal_columns(layout: FeatureLayout, signal: str) -> list[int]:
    return [layout.index(signal, frame) for frame in range(layout.window)]


def _sample(ref: Reference, rng: np.random.Generator, n: int) -> np.ndarray:
    return ref.x[rng.integers(0, len(ref.x), n)].copy()


def build(ref: Reference, layout: FeatureLayout, policy: EnvelopePolicy) -> dict[str, np.ndarray]:
    """Every scenario except ``adversarial`` (which needs the model): name -> ``[rows, D]`` float32."""
    rng = np.random.default_rng(policy.seed)
    n, d = policy.rows, ref.x.shape[1]
    scenarios = {"normal": _sample(ref, rng, n)}
    corners = rng.random((n, d)) < 0.5
    scenarios["boundary"] = np.where(corners, ref.hi, ref.lo).astype(np.float32)
    beyond = _sample(ref, rng, n)
    pushed = rng.random((n, d)) < 1 / 3
    up = rng.random((n, d)) < 0.5
    far = policy.out_of_range_std * ref.std
    beyond = np.where(pushed & up, ref.hi + far, np.where(pushed, ref.lo - far, beyond))
    scenarios["out_of_range"] = beyond.astype(np.float32)
    for kind in ("nan", "zero", "stuck"):
        rows = _sample(ref, rng, n)
        signals = rng.integers(0, len(layout.signals), n)
        for i, s in enumerate(signals):
            cols = _signal_columns(layout, layout.signals[s])
            rows[i, cols] = {"nan": np.nan, "zero": 0.0, "stuck": rows[i, cols[0]]}[kind]
        scenarios[f"dropout_{kind}"] = rows
    scenarios["noise"] = (_sample(ref, rng, n) + rng.normal(0, policy.noise_std, (n, d)) * ref.std).astype(np.float32)
    return scenarios


def adversarial(
    ref: Reference, policy: EnvelopePolicy, margin: callable, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Per row, the sign perturbation at the bound whose output is nearest to (or furthest past) its envelope.

    Args:
        margin: rows -> per-row margin to the envelope (larger is worse), from the model's outputs.
    """
    rng = rng or np.random.default_rng(policy.seed + 1)
    n, d = policy.rows, ref.x.shape[1]
    base = _sample(ref, rng, n)
    best, best_margin = base.copy(), np.full(n, -np.inf)
    for _ in range(policy.adversarial_tries):
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), (n, d))
        tried = (base + signs * policy.adversarial_eps * ref.std).astype(np.float32)
        m = margin(tried)
        better = m > best_margin
        best[better], best_margin[better] = tried[better], m[better]
    return best


def shifted(ref: Reference, shift_std: float, n: int, seed: int) -> np.ndarray:
    """Reference rows moved by ``shift_std`` standard deviations in random directions (OOD positives)."""
    rng = np.random.default_rng(seed + 2)
    rows = _sample(ref, rng, n)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), rows.shape)
    return (rows + signs * shift_std * ref.std).astype(np.float32)


def sequences(devices: np.ndarray) -> list[np.ndarray]:
    """Index runs of consecutive rows of one device (the holdout is sorted by device, then time)."""
    if len(devices) == 0:
        return []
    cuts = np.flatnonzero(devices[1:] != devices[:-1]) + 1
    return [run for run in np.split(np.arange(len(devices)), cuts) if len(run) > 1]
