"""The runtime safety monitor (the Simplex pattern): the learned model proposes, the monitor
disposes.

An output the device would act on is replaced by its signed fallback, and counted as an
intervention, when it is not finite, leaves its envelope ``[min, max]``, moves more than
``max_step`` from the model's previous output, or when the model's OOD score for the input
is at or above ``ood_threshold``. The limits are the release's
:class:`~actuation.contract.RuntimeLimits` (inside the signed pointer), never a local file.
With no model at all, every output is the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from actuation.contract import RuntimeLimits

# float32 outputs are compared with this slack: np.clip(x, -0.6, 0.6) on float32 gives
# 0.6000000238, which is the limit, not a breach.
_SLACK = 1e-6


@dataclass(frozen=True)
class Decision:
    """What the monitor commands for one frame, and why it took over (``reason``; None: it did not)."""

    commanded: tuple[float, ...]
    proposed: tuple[float, ...]
    ood_score: float
    reason: str | None

    @property
    def intervened(self) -> bool:
        return self.reason is not None

    @property
    def disagreement(self) -> float:
        """Largest |proposed - commanded| over the actuated outputs (0 when the model's output stood)."""
        pairs = zip(self.proposed, self.commanded, strict=True)
        return max((abs(p - c) if math.isfinite(p) else 0.0 for p, c in pairs), default=0.0)


class SafetyMonitor:
    """See the module docstring. ``outputs`` are the model's output columns (manifest order)."""

    def __init__(self, limits: RuntimeLimits, outputs: Sequence[str]) -> None:
        self.limits = limits
        missing = [o.name for o in limits.outputs if o.name not in outputs]
        if limits.ood_output and limits.ood_output not in outputs:
            missing.append(limits.ood_output)
        if missing:
            raise ValueError(f"the runtime limits name outputs the model lacks: {missing} (it has {list(outputs)})")
        self._index = [list(outputs).index(o.name) for o in limits.outputs]
        self._ood = list(outputs).index(limits.ood_output) if limits.ood_output else None
        self._previous: list[float | None] = [None] * len(limits.outputs)

    @property
    def fallback(self) -> tuple[float, ...]:
        return tuple(o.fallback for o in self.limits.outputs)

    def decide(self, outputs: Sequence[float]) -> Decision:
        proposed = tuple(float(outputs[i]) for i in self._index)
        ood = float(outputs[self._ood]) if self._ood is not None else 0.0
        reason = self._breach(proposed, ood)
        commanded = self.fallback if reason else proposed
        # the step is the model's own jump between frames: measured against the previous
        # command, one fallback would hold every later output that differs from it
        self._previous = [p if math.isfinite(p) else None for p in proposed]
        return Decision(commanded, proposed, ood if math.isfinite(ood) else 1.0, reason)

    def fallback_only(self) -> Decision:
        """No model to run: the fallback, counted as an intervention."""
        self._previous = [None] * len(self._previous)
        return Decision(self.fallback, self.fallback, 0.0, "no-model")

    def _breach(self, proposed: tuple[float, ...], ood: float) -> str | None:
        if not math.isfinite(ood) or (self._ood is not None and ood >= self.limits.ood_threshold):
            return "ood"
        for value, limit, previous in zip(proposed, self.limits.outputs, self._previous, strict=True):
            if not math.isfinite(value):
                return "non-finite"
            if value < limit.min - _SLACK or value > limit.max + _SLACK:
                return "envelope"
            if limit.max_step is not None and previous is not None and abs(value - previous) > limit.max_step + _SLACK:
                return "step"
        return None
