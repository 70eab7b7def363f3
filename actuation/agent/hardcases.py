"""Hard cases: the input windows a device keeps for the loop to learn from.

While a rollout's candidate runs in shadow, the inputs where it and the actuated model
disagree most are what the next training round should see; so are the inputs where the
safety monitor took over from the model or the OOD score passed its threshold. A device
keeps, in memory and bounded:

* the ``k`` inferences with the largest shadow disagreement (a min-heap: a case is only
  copied when it enters the top ``k``);
* the ``k`` most recent inferences where the monitor intervened on the model's own output
  (``ood``, ``envelope``, ``step``, ``non-finite``; not warm-up, bad frames or no model);
* the ``k`` most recent inferences where the shadow's OOD score passed its threshold.

Each case holds the feature vector, the raw frames of the window, both models' raw outputs,
the time and the versions. :meth:`HardCases.write` replaces ``hardcases.jsonl`` in the device
directory atomically, at most :data:`MAX_BYTES`; :meth:`HardCases.load` reads it back when the
agent restarts, so a restart loses none. The next issue sends the file home.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from actuation.agent.device import write_atomic

DISAGREEMENT, INTERVENTION, SHADOW_OOD = "disagreement", "intervention", "shadow-ood"
MODEL_REASONS = frozenset({"ood", "envelope", "step", "non-finite"})  # the monitor overruled the model itself
DEFAULT_K = 20
MAX_BYTES = 1024 * 1024  # of hardcases.jsonl: 3 x 20 cases of a 53-value window are ~100 KiB


@dataclass(frozen=True)
class HardCase:
    """One inference worth keeping (see the module docstring)."""

    kind: str  # disagreement | intervention | shadow-ood
    ts: int  # milliseconds since the epoch, as the telemetry record's
    model_version: str
    features: list[float | None]  # None: not finite (JSON has no NaN)
    outputs: list[float | None]  # the actuated model's raw outputs (manifest order)
    reason: str | None  # the monitor's, if it took over
    ood_score: float
    shadow_version: str | None = None
    shadow_outputs: list[float | None] | None = None
    shadow_disagreement: float | None = None
    shadow_ood_score: float | None = None
    frames: list[dict[str, Any]] | None = None  # the raw frames of the feature window, oldest first

    def as_json(self) -> str:
        return json.dumps(asdict(self), default=_plain)  # a NaN in a raw frame stays NaN


class HardCases:
    """The bounded store (see the module docstring); ``k`` cases of each kind at most."""

    def __init__(self, k: int = DEFAULT_K, max_bytes: int = MAX_BYTES) -> None:
        if k < 1:
            raise ValueError(f"hard cases: keep at least one of each kind, not {k}")
        self.k, self.max_bytes = k, max_bytes
        self._largest: list[tuple[float, int, HardCase]] = []  # min-heap by disagreement
        self._recent = {INTERVENTION: deque[HardCase](maxlen=k), SHADOW_OOD: deque[HardCase](maxlen=k)}
        self._order = itertools.count()  # ties in the heap never compare two cases

    def __len__(self) -> int:
        return len(self._largest) + sum(len(d) for d in self._recent.values())

    def would_keep(self, disagreement: float) -> bool:
        """Whether a case of this disagreement enters the top ``k`` (so it is worth copying)."""
        return math.isfinite(disagreement) and (len(self._largest) < self.k or disagreement > self._largest[0][0])

    def offer(self, kind: str, make: Callable[[], HardCase], disagreement: float | None = None) -> bool:
        """Keep the case ``make()`` builds if it belongs (built only then); whether it was kept."""
        if kind == DISAGREEMENT:
            if disagreement is None or not self.would_keep(disagreement):
                return False
            item = (disagreement, next(self._order), make())
            if len(self._largest) < self.k:
                heapq.heappush(self._largest, item)
            else:
                heapq.heapreplace(self._largest, item)
            return True
        self._recent[kind].append(make())
        return True

    def cases(self) -> list[HardCase]:
        """Largest disagreement first, then the monitor's and the shadow's OOD cases, newest first."""
        largest = [case for _, _, case in sorted(self._largest, key=lambda item: (-item[0], item[1]))]
        return largest + [case for kind in (INTERVENTION, SHADOW_OOD) for case in reversed(self._recent[kind])]

    @classmethod
    def load(cls, path: Path, k: int = DEFAULT_K, max_bytes: int = MAX_BYTES) -> HardCases:
        """The store as :meth:`write` left it (empty if there is no file; unreadable lines are skipped)."""
        store = cls(k, max_bytes)
        if not path.exists():
            return store
        cases = []
        for line in path.read_text().splitlines():
            try:
                cases.append(HardCase(**json.loads(line)))
            except (ValueError, TypeError):  # a file of an older agent: what it holds is only a hint
                continue
        for case in reversed(cases):  # oldest first, as they were offered
            store.offer(case.kind, lambda case=case: case, case.shadow_disagreement)
        return store

    def write(self, path: Path) -> int:
        """Replace ``path`` with the cases as JSON lines (atomic), cut to ``max_bytes``; cases written."""
        lines: list[bytes] = []
        size = 0
        for case in self.cases():
            line = (case.as_json() + "\n").encode()
            if size + len(line) > self.max_bytes:
                break
            lines.append(line)
            size += len(line)
        write_atomic(path, b"".join(lines))
        return len(lines)


def floats(values: Sequence[float]) -> list[float | None]:
    """Plain floats, a non-finite one as None (JSON has no NaN)."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _plain(value: Any) -> Any:
    """What json cannot write natively (numpy scalars in a frame, say) as plain values."""
    item = getattr(value, "item", None)
    if callable(item):
        v = item()
        return v if not isinstance(v, float) or math.isfinite(v) else None
    return str(value)
