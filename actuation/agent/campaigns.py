"""Collection campaigns on the device: send home the input windows a campaign asks for, within its budget.

The fleet's role signs its campaigns (:class:`~actuation.contract.Campaigns`, at
:func:`~actuation.contract.campaigns_path`); each update cycle hands the verified list to
:meth:`Collector.follow` (a missing target: no campaigns). On every inference
:meth:`Collector.observe` gets the frame's feature signals and the inference's figures:

1. the frame joins a ring buffer and every window waiting for its after-frames;
2. each active campaign (not stopped, not expired, this fleet's) whose trigger fires, and
   whose budget has room this hour, opens a window: the last ``window_before`` frames, then
   the next ``window_after``;
3. a complete window is one ``hard_cases`` record through the telemetry sink (the edge SDK's
   spool) on the hard-case contract of the device's tenant, charged to the campaign's budget.

A frame carries only the task's feature signals (its layout's), so no identifier or position
leaves the device with it. The budget counters (windows per UTC hour, bytes per UTC day, per
campaign) are kept in ``campaign-budget.json`` in the device directory, so a restart does not reset
them. The bytes charged are the record's compact JSON, at least its Avro encoding's.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actuation.agent.device import write_atomic
from actuation.contract import Campaign, Campaigns

logger = logging.getLogger(__name__)

STREAM = "hard_cases"
MAX_BEFORE = 100  # the ring buffer: Campaign.window_before's bound


def hard_case_contract(tenant: str | None) -> str:
    """The hard-case contract a device of ``tenant`` sends on: its tenant's (restricted), or the
    public one for a device without a tenant. The stream keeps its source data's class and tenant."""
    return f"hard-cases-{tenant}" if tenant else "hard-cases-public"


@dataclass(frozen=True)
class Inference:
    """What one inference gives a campaign's trigger, besides the frame's signals."""

    ts: int  # milliseconds since the epoch
    model_name: str
    model_version: str
    ood_score: float | None
    disagreement: float | None  # |shadow - actuated|, with a shadow
    intervened_by_model: bool  # the monitor overruled the model's own output
    reason: str | None
    output_names: Sequence[str] = ()
    outputs: Sequence[float] = ()


@dataclass
class _Window:
    campaign: Campaign
    inference: Inference
    frames: list[list[float | None]]
    trigger_index: int
    after: int  # frames still to come


@dataclass
class Ledger:
    """Per campaign: windows sent in the current UTC hour, bytes in the current UTC day."""

    path: Path
    spent: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Ledger:
        try:
            return cls(path, json.loads(path.read_text()))
        except (OSError, ValueError):  # none yet, or unreadable: start afresh
            return cls(path)

    def _current(self, campaign_id: str, now: datetime) -> dict[str, Any]:
        hour, day = now.strftime("%Y-%m-%dT%H"), now.strftime("%Y-%m-%d")
        s = self.spent.setdefault(campaign_id, {"hour": hour, "count": 0, "day": day, "bytes": 0})
        if s["hour"] != hour:
            s["hour"], s["count"] = hour, 0
        if s["day"] != day:
            s["day"], s["bytes"] = day, 0
        return s

    def room(self, campaign: Campaign, now: datetime, size: int = 0) -> bool:
        """Whether one more window (of ``size`` bytes) fits the campaign's budget at ``now``."""
        s = self._current(campaign.id, now)
        b = campaign.budget
        return s["count"] < b.max_per_hour and s["bytes"] + max(size, 1) <= b.max_bytes_per_day

    def keep_only(self, campaign_ids: set[str]) -> None:
        """Forget the counters of campaigns no longer signed (the file stays small)."""
        self.spent = {k: v for k, v in self.spent.items() if k in campaign_ids}

    def charge(self, campaign: Campaign, now: datetime, size: int) -> None:
        s = self._current(campaign.id, now)
        s["count"] += 1
        s["bytes"] += size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.spent).encode())


class Collector:
    """See the module docstring.

    Args:
        device_id, fleet, tenant: what the device was provisioned as.
        signals: the names of each frame's values (the task's layout).
        sink: where records go (the agent's telemetry sink: the edge SDK's spool).
        ledger: the budget counters.
        clock: wall clock in seconds (budgets and expiry).
    """

    def __init__(
        self,
        device_id: str,
        fleet: str,
        tenant: str | None,
        signals: Sequence[str],
        sink: Any,
        ledger: Ledger,
        clock: Callable[[], float],
    ) -> None:
        self.device_id, self.fleet, self.signals = device_id, fleet, list(signals)
        self.contract = hard_case_contract(tenant)
        self.sink, self.ledger, self._clock = sink, ledger, clock
        self.campaigns: list[Campaign] = []
        self._recent: deque[list[float | None]] = deque(maxlen=MAX_BEFORE)
        self._open: list[_Window] = []
        self.sent = 0
        self.first_sent_at: float | None = None  # clock seconds of the first window spooled (loop closure starts)
        self.skipped: dict[str, int] = {}  # why a fired trigger sent nothing: budget, refused

    def follow(self, campaigns: Campaigns | None) -> None:
        """Take the campaigns the update cycle verified (None: the role signs none)."""
        mine = []
        for c in campaigns.campaigns if campaigns else []:
            if c.fleet != self.fleet:
                logger.warning("campaign %s is for fleet %s, not %s: ignored", c.id, c.fleet, self.fleet)
                continue
            mine.append(c)
        ids = {c.id for c in mine if not c.stopped}
        self._open = [w for w in self._open if w.campaign.id in ids]  # a stopped campaign's window is dropped
        self.campaigns = mine
        if campaigns is not None:  # None after a refusal too: keep the counters for when it verifies again
            self.ledger.keep_only({c.id for c in mine})

    def active(self) -> list[Campaign]:
        now = self._now()
        return [c for c in self.campaigns if c.active(now)]

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def observe(self, frame: Sequence[float | None], inference: Inference) -> None:
        """One inference: extend the open windows, open those whose trigger fires, send the complete."""
        row = [v if v is not None and math.isfinite(v) else None for v in frame]
        self._recent.append(row)
        for window in self._open:
            if window.after > 0:
                window.frames.append(row)
                window.after -= 1
        now = self._now()
        busy = {w.campaign.id for w in self._open}
        for campaign in self.campaigns:
            if campaign.id in busy or not campaign.active(now) or not self._fires(campaign, row, inference):
                continue
            if not self.ledger.room(campaign, now):
                self.skipped["budget"] = self.skipped.get("budget", 0) + 1
                continue
            before = list(self._recent)[-campaign.window_before :]  # the trigger's frame is the last
            self._open.append(_Window(campaign, inference, before, len(before) - 1, campaign.window_after))
        for window in [w for w in self._open if w.after == 0]:
            self._open.remove(window)
            self._send(window, now)

    def _fires(self, campaign: Campaign, row: list[float | None], inference: Inference) -> bool:
        values: dict[str, float | None] = dict(zip(self.signals, row, strict=True))
        values["ood"], values["disagreement"] = inference.ood_score, inference.disagreement
        return campaign.trigger.fires(values, inference.intervened_by_model)

    def _send(self, window: _Window, now: datetime) -> None:
        record = self.record(window)
        size = len(json.dumps(record, separators=(",", ":")).encode())
        if not self.ledger.room(window.campaign, now, size):
            self.skipped["budget"] = self.skipped.get("budget", 0) + 1
            return
        try:
            self.sink.send(self.contract, self.device_id, record)
        except Exception as e:  # a refused record or a full spool must not stop the device
            logger.warning("hard case of campaign %s not spooled: %s", window.campaign.id, e)
            self.skipped["refused"] = self.skipped.get("refused", 0) + 1
            return
        self.ledger.charge(window.campaign, now, size)
        self.sent += 1
        if self.first_sent_at is None:
            self.first_sent_at = now.timestamp()

    def record(self, window: _Window) -> dict[str, Any]:
        """The ``hard_cases.v1`` record of a complete window."""
        c, i = window.campaign, window.inference
        return {
            "device_id": self.device_id,
            "fleet": self.fleet,
            "campaign_id": c.id,
            "trigger_kind": c.trigger.kind,
            "trigger": c.trigger.expression,
            "model_name": i.model_name,
            "model_version": i.model_version,
            "ts": i.ts,
            "signals": self.signals,
            "frames": window.frames,
            "trigger_index": window.trigger_index,
            "output_names": list(i.output_names),
            "outputs": [float(v) if math.isfinite(v) else None for v in i.outputs],
            "ood_score": _finite(i.ood_score),
            "disagreement": _finite(i.disagreement),
            "intervention": i.intervened_by_model,
            "reason": i.reason,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "active": [c.id for c in self.active()],
            "sent": self.sent,
            "first_sent_at": self.first_sent_at,
            "skipped": dict(self.skipped),
        }


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def campaign_signals(layout: Any) -> list[str]:
    """The names of a frame's values a campaign sees and sends: the task layout's signals (a
    z-scored ``<field>_z`` as its raw ``<field>``), then its extras."""
    return [name.removesuffix("_z") for name in layout.signals] + list(layout.extras)


def frame_signals(frame: Mapping[str, Any], names: Sequence[str]) -> list[float | None]:
    """The frame's values of ``names`` (``a.b``: field ``b`` of record ``a``); a missing one is None."""
    out: list[float | None] = []
    for name in names:
        value: Any = frame
        try:
            for part in name.split("."):
                value = value[part]
            out.append(float(value))
        except (KeyError, TypeError, ValueError):
            out.append(None)
    return out
