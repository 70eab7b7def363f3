"""The edge agent: update, verify, activate, run, report.

An :class:`Agent` owns one provisioned device directory. Its workflow:

* :meth:`Agent.update` is one update cycle: read the fleet's signed release pointer
  (:class:`~actuation.agent.updater.ReleaseChannel`); if it names a release other than the
  active one, download and verify it, install it in the inactive slot, self-test it there and
  switch (:class:`~actuation.agent.slots.Slots`). Any refusal keeps the active model and is
  the cycle's state (``refused: <reason>``); an unreachable repository or expired metadata
  is ``offline``. It never raises for what the repository serves.
* :meth:`Agent.infer` runs one frame: :meth:`Agent.command` (the feature window, the active
  model, the safety monitor with the release's signed limits; fallback only while there is
  no model), then one telemetry record, spooled after the command is decided.
* :meth:`Agent.run` interleaves the two at the device's rate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from actuation.agent.device import DeviceConfig, DeviceDir, write_atomic
from actuation.agent.errors import OfflineError, UpdateRefusedError
from actuation.agent.features import FeatureWindow
from actuation.agent.monitor import Decision, SafetyMonitor
from actuation.agent.slots import ActiveModel, Slots
from actuation.agent.telemetry import CONTRACT, NO_MODEL, MemorySink, TelemetrySink, TelemetryWindow
from actuation.agent.updater import ReleaseChannel, http_fetcher
from actuation.contract import load_runtime_limits
from fieldloop.datasets import layout

logger = logging.getLogger(__name__)

# update states, as the device reports them
UP_TO_DATE, UPDATED, NO_RELEASE = "up-to-date", "updated", "no-release"
OFFLINE, REFUSED, ERROR = "offline", "refused", "error"


@dataclass(frozen=True)
class UpdateResult:
    """One update cycle's outcome: ``state`` (see the constants above), why, and what runs now."""

    state: str
    detail: str
    reason: str | None
    active: str | None  # <model>@<version>, or None: no model
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.detail,
            "reason": self.reason,
            "active": self.active,
            "seconds": round(self.seconds, 4),
        }

    @property
    def line(self) -> str:
        """What a person reads: ``refused: attestation: ...``."""
        return f"{self.state}: {self.reason}: {self.detail}" if self.reason else f"{self.state}: {self.detail}"


class Agent:
    """See the module docstring.

    Args:
        device: the provisioned device directory.
        telemetry: where telemetry records go (default: kept in memory).
        fetcher: a ``tuf.ngclient.FetcherInterface`` (default: HTTP to the device's repository).
        pause: called at the crash-test points ``download`` and ``activation``.
        clock: wall clock in seconds (telemetry timestamps).
    """

    def __init__(
        self,
        device: DeviceDir,
        telemetry: TelemetrySink | None = None,
        fetcher: Any = None,
        pause: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.device = device
        self.config: DeviceConfig = device.config()
        self.telemetry = telemetry if telemetry is not None else MemorySink()
        self.fetcher, self._pause, self._clock = fetcher or http_fetcher(), pause, clock
        self.slots = Slots(device, pause)
        self.window = FeatureWindow(layout(self.config.task))
        self.stats = TelemetryWindow()
        self.last_update: UpdateResult | None = None
        self._active: ActiveModel | None = self.slots.active()
        self._monitor = self._make_monitor()
        self._last_latency_ms = 0.0
        self._update_code: str | None = None  # telemetry.v2's update_state: null before the first cycle
        self._window_started = datetime.now(UTC)

    # -- what runs ---------------------------------------------------------------------
    @property
    def active(self) -> str | None:
        return f"{self._active.release.model}@{self._active.release.version}" if self._active else None

    def _make_monitor(self) -> SafetyMonitor:
        if self._active is None:  # no signed limits yet: the packaged policy's fallback
            limits = load_runtime_limits(self.config.task)
            names = [o.name for o in limits.outputs] + ([limits.ood_output] if limits.ood_output else [])
            return SafetyMonitor(limits, names)
        self.stats.ood_threshold = self._active.release.limits.ood_threshold
        return SafetyMonitor(self._active.release.limits, self._active.runner.manifest.outputs)

    # -- update --------------------------------------------------------------------------
    def update(self) -> UpdateResult:
        """One update cycle (see the module docstring); the result is also ``last_update``."""
        start = time.perf_counter()
        try:
            state, detail, reason = self._update()
        except OfflineError as e:
            state, detail, reason = OFFLINE, str(e), None
        except UpdateRefusedError as e:
            state, detail, reason = REFUSED, str(e), e.reason
            self.stats.error(f"refused:{e.reason}")
        except Exception as e:  # a full disk, a bug: the device keeps serving, the cycle says why
            logger.exception("update cycle failed")
            state, detail, reason = (
                ERROR,
                f"the update cycle failed ({type(e).__name__}: {e}); keeping the active model",
                None,
            )
            self.stats.error("update")
        result = UpdateResult(state, detail, reason, self.active, time.perf_counter() - start)
        if state in (OFFLINE, REFUSED):  # ERROR was logged with its traceback
            logger.warning("update %s", result.line)
        self.last_update = result
        self._update_code = f"{state}:{reason}" if reason else state
        return result

    def _update(self) -> tuple[str, str, str | None]:
        channel = ReleaseChannel(self.device, self.config, self.fetcher, self._pause)
        pointer = channel.check()
        if pointer is None:
            return NO_RELEASE, f"the repository has no release for fleet {self.config.fleet} yet", None
        release = pointer.active
        label = f"{release.model}@{release.version}"
        if self._active and self._active.release == release:  # model, files and limits: a new limit is an update
            return UP_TO_DATE, f"running {label}, the fleet's release", None
        refused = self.slots.refused(release)
        if refused:
            raise UpdateRefusedError(
                refused.split(":", 1)[0], f"{label} was refused before: {refused.split(':', 1)[1]}"
            )
        try:
            verified = channel.fetch(pointer)
            self._active = self.slots.install(verified)
        except UpdateRefusedError as e:
            if e.reason not in ("metadata", "target"):  # the repository may serve them right next time
                self.slots.refuse(release, f"{e.reason}:{e}")
            raise
        self._monitor = self._make_monitor()
        return UPDATED, f"activated {label} in slot {self._active.slot}", None

    # -- inference -----------------------------------------------------------------------
    def infer(self, frame: Mapping[str, Any]) -> Decision:
        """One frame through the model (if any) and the safety monitor; one telemetry record."""
        decision = self.command(frame)
        self._report(decision, self._last_latency_ms)
        return decision

    def command(self, frame: Mapping[str, Any]) -> Decision:
        """What to command for ``frame`` (the actuation path): the feature window, the model, the
        monitor; its telemetry is :meth:`infer`'s, after the command is out."""
        start = time.perf_counter()
        try:
            vector = self.window.push(frame)
        except (KeyError, TypeError, ValueError) as e:  # a frame without a signal the task needs
            logger.debug("frame refused (%r): commanding the fallback", e)
            self.stats.error("frame")
            decision = self._fallback("bad-frame")
        else:
            if self._active is None:
                decision = self._monitor.fallback_only()
            elif vector is None:  # fewer frames than the window: the model has no input yet
                decision = self._fallback("warm-up")
            else:
                try:
                    decision = self._monitor.decide(self._active.runner.predict(vector))
                except Exception as e:  # an ONNX Runtime failure must not stop the fallback
                    logger.error("inference failed (%s): commanding the fallback", e)
                    self.stats.error("inference")
                    decision = self._monitor.fallback_only()
        self._last_latency_ms = latency_ms = (time.perf_counter() - start) * 1e3
        self.stats.record(latency_ms, decision.ood_score, decision.reason)
        return decision

    def _fallback(self, reason: str) -> Decision:
        decision = self._monitor.fallback_only()
        return Decision(decision.commanded, decision.proposed, 0.0, reason)

    def _report(self, decision: Decision, latency_ms: float) -> None:
        name, version = (self._active.release.model, str(self._active.release.version)) if self._active else NO_MODEL
        record = {
            "device_id": self.config.device_id,
            "model_name": name,
            "model_version": version,
            "ts": int(self._clock() * 1000),
            "latency_ms": latency_ms,
            "ood_score": min(max(decision.ood_score, 0.0), 1.0),
            "disagreement": decision.disagreement,
            "intervention": decision.intervened,
            "update_state": self._update_code,
        }
        try:
            self.telemetry.send(CONTRACT, self.config.device_id, record)
        except Exception as e:  # a full spool or a refused record must not stop the device
            logger.warning("telemetry record not spooled: %s", e)
            self.stats.error("telemetry")

    # -- the loop ------------------------------------------------------------------------
    def run(
        self,
        frames: Iterable[Mapping[str, Any]],
        seconds: float | None = None,
        update_every_s: float = 60.0,
        paced: bool = True,
    ) -> None:
        """Frames at the device's rate (``paced``) or as fast as they come, an update cycle
        every ``update_every_s``, until the frames or ``seconds`` run out.

        Each update cycle closes a telemetry window: its summary goes to ``status.json`` and a
        new window starts."""
        period = 1.0 / self.config.rate_hz
        start = next_tick = time.monotonic()
        next_update = start + update_every_s
        for frame in frames:
            now = time.monotonic()
            if seconds is not None and now - start >= seconds:
                break
            if now >= next_update:
                self.update()
                self.write_status()  # the window that ends here, as the device's status
                self.stats = TelemetryWindow(ood_threshold=self.stats.ood_threshold)
                self._window_started = datetime.now(UTC)
                next_update = now + update_every_s
            self.infer(frame)
            if paced:
                next_tick += period
                time.sleep(max(0.0, next_tick - time.monotonic()))

    def summary(self) -> dict[str, Any]:
        """The device's figures: what runs, the last update, the window's telemetry."""
        state = self.slots.state()
        return {
            "device": self.config.device_id,
            "fleet": self.config.fleet,
            "active": self.active,
            "slot": state.active,
            "slots": {k: f"{s.release.model}@{s.release.version}" for k, s in sorted(state.slots.items())},
            "update": self.last_update.as_dict() if self.last_update else None,
            "update_state": self.last_update.line if self.last_update else ("no model" if not self._active else None),
            "window": {"started": self._window_started.isoformat(), **self.stats.summary()},
            "at": datetime.now(UTC).isoformat(),
        }

    def write_status(self) -> dict[str, Any]:
        summary = self.summary()
        write_atomic(self.device.status, json.dumps(summary, indent=2).encode())
        return summary
