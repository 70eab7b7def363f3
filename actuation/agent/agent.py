"""The edge agent: update, verify, activate, run, report.

An :class:`Agent` owns one provisioned device directory. Its workflow:

* :meth:`Agent.update` is one update cycle: read the fleet's signed release pointer
  (:class:`~actuation.agent.updater.ReleaseChannel`) and the release this device actuates,
  :meth:`~actuation.contract.ReleasePointer.release_for` (a rollout's candidate in an active
  stage's cohort, else the fleet's champion). If the inactive slot holds it (a rollback, or
  the cohort moved), switch back to it without downloading (Mender's revert); else, if it is
  not the active one, download and verify it, install it in the inactive slot, self-test it
  there and switch (:class:`~actuation.agent.slots.Slots`). Any refusal keeps the active
  model (a device with none and a refused candidate takes the champion) and is the cycle's
  state (``refused: <reason>``); an unreachable repository or expired metadata is
  ``offline``. It never raises for what the repository serves. Then the shadow: the release
  the pointer has this device run in shadow, verified like an update and installed in
  ``slots/shadow/`` (outside the A/B state), or none.
* :meth:`Agent.infer` runs one frame: :meth:`Agent.command` (the feature window, the active
  model, the safety monitor with the release's signed limits; fallback only while there is
  no model); after the command is decided, the shadow on the same feature vector (its
  failure is counted, never raised); then one telemetry record and the hard cases
  (:mod:`~actuation.agent.hardcases`).
* :meth:`Agent.run` interleaves the two at the device's rate.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import numpy as np

from actuation.agent.campaigns import Collector, Inference, Ledger, campaign_signals, frame_signals
from actuation.agent.device import DeviceConfig, DeviceDir, write_atomic
from actuation.agent.errors import OfflineError, UpdateRefusedError
from actuation.agent.features import FeatureWindow
from actuation.agent.hardcases import DISAGREEMENT, INTERVENTION, MODEL_REASONS, SHADOW_OOD, HardCase, HardCases, floats
from actuation.agent.monitor import Decision, SafetyMonitor
from actuation.agent.slots import ActiveModel, ShadowModel, Slots
from actuation.agent.telemetry import CONTRACT, NO_MODEL, MemorySink, TelemetrySink, TelemetryWindow
from actuation.agent.updater import ReleaseChannel, http_fetcher
from actuation.contract import Release, ReleasePointer, load_runtime_limits
from fieldloop.datasets import layout

logger = logging.getLogger(__name__)
T = TypeVar("T")

# update states, as the device reports them
UP_TO_DATE, UPDATED, NO_RELEASE = "up-to-date", "updated", "no-release"
OFFLINE, REFUSED, ERROR = "offline", "refused", "error"
# what failed in one inference (telemetry.v3's error)
BAD_FRAME, INFERENCE, SHADOW = "bad-frame", "inference", "shadow"


@dataclass(frozen=True)
class UpdateResult:
    """One update cycle's outcome: ``state`` (see the constants above), why, and what runs now.

    ``reverted``: the cycle switched back to the release kept in the inactive slot, with no
    download. ``shadow``: the shadow's state after the cycle (``running <model>@<version>``,
    ``installed ...``, ``refused: <reason>: ...``, ``offline: ...``, ``error: ...``), None when the
    pointer has this device run none."""

    state: str
    detail: str
    reason: str | None
    active: str | None  # <model>@<version>, or None: no model
    seconds: float
    reverted: bool = False
    shadow: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "detail": self.detail,
            "reason": self.reason,
            "active": self.active,
            "reverted": self.reverted,
            "shadow": self.shadow,
            "seconds": round(self.seconds, 4),
        }

    @property
    def line(self) -> str:
        """What a person reads: ``refused: attestation: ...``."""
        return f"{self.state}: {self.reason}: {self.detail}" if self.reason else f"{self.state}: {self.detail}"


@dataclass(frozen=True)
class ShadowResult:
    """The shadow's take on one inference: its raw outputs, |shadow - actuated|, its OOD score."""

    version: str
    outputs: np.ndarray | None  # None: it failed
    disagreement: float | None
    ood_score: float | None


def _label(release: Release) -> str:
    return f"{release.model}@{release.version}"


class Agent:
    """See the module docstring.

    Args:
        device: the provisioned device directory.
        telemetry: where telemetry records go (default: kept in memory).
        fetcher: a ``tuf.ngclient.FetcherInterface`` (default: HTTP to the device's repository).
        pause: called at the crash-test points ``download`` and ``activation``.
        clock: wall clock in seconds (telemetry timestamps).
        disagreement_threshold: |shadow - actuated| above which a shadowed inference counts as
            disagreeing in the window's ``shadow.disagreement_rate`` (the fleet's rollout
            policy's; None: the rate is not computed on the device).
        hard_cases: how many inputs of each kind :mod:`~actuation.agent.hardcases` keeps.

    Attributes:
        pointer: the fleet's release pointer as the last update cycle verified it (None before).
        shadow: the release running in shadow, loaded, or None.
        hard_cases: the bounded store of inputs worth learning from.
    """

    def __init__(
        self,
        device: DeviceDir,
        telemetry: TelemetrySink | None = None,
        fetcher: Any = None,
        pause: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        disagreement_threshold: float | None = None,
        hard_cases: int = 20,
    ) -> None:
        self.device = device
        self.config: DeviceConfig = device.config()
        self.telemetry = telemetry if telemetry is not None else MemorySink()
        self.fetcher, self._pause, self._clock = fetcher or http_fetcher(), pause, clock
        self.slots = Slots(device, pause)
        self.window = FeatureWindow(layout(self.config.task))
        self.stats = TelemetryWindow(disagreement_threshold=disagreement_threshold)
        self.hard_cases = HardCases.load(device.hardcases, hard_cases)
        self.collector = Collector(
            self.config.device_id,
            self.config.fleet,
            self.config.tenant,
            campaign_signals(self.window.layout),
            self.telemetry,
            Ledger.load(device.campaign_budget),
            clock,
        )
        self.last_update: UpdateResult | None = None
        self.pointer: ReleasePointer | None = None
        self.shadow: ShadowModel | None = None
        self._reverted, self._shadow_state = False, None  # the cycle in progress: see UpdateResult
        self.slots.drop_shadow()  # a shadow is never trusted from disk: the next cycle verifies it again
        self._active: ActiveModel | None = self.slots.active()
        self._monitor = self._make_monitor()
        self._last_latency_ms = 0.0
        self._update_code: str | None = None  # telemetry's update_state: null before the first cycle
        self._window_started = datetime.now(UTC)
        self._frames: deque[Mapping[str, Any]] = deque(maxlen=self.window.layout.window)
        # what command() leaves for the shadow, the record and the hard cases of the same inference
        self._vector: np.ndarray | None = None
        self._outputs: np.ndarray | None = None
        self._error: str | None = None

    # -- what runs ---------------------------------------------------------------------
    @property
    def active(self) -> str | None:
        return _label(self._active.release) if self._active else None

    @property
    def active_release(self) -> Release | None:
        """The release the device actuates now (None: no model, the fallback)."""
        return self._active.release if self._active else None

    def _make_monitor(self) -> SafetyMonitor:
        if self._active is None:  # no signed limits yet: the packaged policy's fallback
            limits = load_runtime_limits(self.config.task)
            names = [o.name for o in limits.outputs] + ([limits.ood_output] if limits.ood_output else [])
            return SafetyMonitor(limits, names)
        self.stats.ood_threshold = self._active.release.limits.ood_threshold
        return SafetyMonitor(self._active.release.limits, self._active.runner.manifest.outputs)

    def _activate(self, model: ActiveModel) -> None:
        self._active = model
        self._monitor = self._make_monitor()

    # -- update --------------------------------------------------------------------------
    def update(self) -> UpdateResult:
        """One update cycle (see the module docstring); the result is also ``last_update``."""
        start = time.perf_counter()
        self._reverted = False
        self._shadow_state = f"running {self.shadow.label}" if self.shadow else None  # unless the cycle gets further
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
        result = UpdateResult(
            state, detail, reason, self.active, time.perf_counter() - start, self._reverted, self._shadow_state
        )
        if state in (OFFLINE, REFUSED):  # ERROR was logged with its traceback
            logger.warning("update %s", result.line)
        self.last_update = result
        self._update_code = f"{state}:{reason}" if reason else state
        return result

    def _update(self) -> tuple[str, str, str | None]:
        channel = ReleaseChannel(self.device, self.config, self.fetcher, self._pause)
        self.pointer = pointer = channel.check()
        self._follow_campaigns(channel)
        if pointer is not None and pointer.stage is not None and pointer.stage.disagreement_threshold:
            self.stats.disagreement_threshold = pointer.stage.disagreement_threshold  # the rollout policy's
        if pointer is None:
            self._drop_shadow()
            return NO_RELEASE, f"the repository has no release for fleet {self.config.fleet} yet", None
        try:
            return self._actuate(channel, pointer)
        finally:  # the shadow is followed whatever became of the actuated release
            self._shadow_state = self._follow_shadow(channel, pointer)

    def _actuate(self, channel: ReleaseChannel, pointer: ReleasePointer) -> tuple[str, str, str | None]:
        """Make the release this device actuates the active one; a refused candidate leaves the
        champion running (and a device without a model takes the champion)."""
        release = pointer.release_for(self.config.device_id)
        role = "the fleet's release" if release == pointer.active else f"the rollout's candidate ({pointer.stage.name})"
        if self._active and self._active.release == release:  # model, files and limits: a new limit is an update
            return UP_TO_DATE, f"running {_label(release)}, {role}", None
        try:
            detail = self._switch_to(channel, pointer, release)
        except UpdateRefusedError:
            if release != pointer.active and (self._active is None or self._active.release != pointer.active):
                self._take_champion(channel, pointer)
            raise
        return UPDATED, f"{detail}, {role}", None

    def _switch_to(self, channel: ReleaseChannel, pointer: ReleasePointer, release: Release) -> str:
        """Revert to ``release`` if the inactive slot holds it, else download, verify, install it."""
        label = _label(release)
        reverted = self.slots.revert(release)
        if reverted is not None:
            self._activate(reverted)
            self._reverted = True
            return f"returned to {label} kept in slot {reverted.slot} (nothing downloaded)"
        model = self._install(channel, pointer, release, self.slots.install)
        self._activate(model)
        return f"activated {label} in slot {model.slot}"

    def _install(
        self, channel: ReleaseChannel, pointer: ReleasePointer, release: Release, install: Callable[[Any], T]
    ) -> T:
        """Download and verify ``release``, then ``install`` it; a refusal is remembered (one per
        release, whether it was to run actuated or in shadow) and not downloaded again."""
        refused = self.slots.refused(release)
        if refused:
            reason, _, why = refused.partition(":")
            raise UpdateRefusedError(reason, f"{_label(release)} was refused before: {why}")
        try:
            return install(channel.fetch(pointer, release))
        except UpdateRefusedError as e:
            if e.reason not in ("metadata", "target"):  # the repository may serve them right next time
                self.slots.refuse(release, f"{e.reason}:{e}")
            raise

    def _take_champion(self, channel: ReleaseChannel, pointer: ReleasePointer) -> None:
        """After a refused candidate: the champion, so the device does not run blind or stale."""
        try:
            logger.warning("candidate refused: %s", self._switch_to(channel, pointer, pointer.active))
        except (UpdateRefusedError, OfflineError) as e:  # the cycle reports the candidate's refusal
            logger.error("the fleet's release %s could not be taken either: %s", _label(pointer.active), e)

    def _follow_campaigns(self, channel: ReleaseChannel) -> None:
        """The fleet's signed campaigns for the collector. A refused list collects nothing (the
        device sends only what a verified campaign asks for); offline, the last verified list
        stays, bounded by each campaign's expiry."""
        try:
            self.collector.follow(channel.campaigns())
        except UpdateRefusedError as e:
            logger.warning("campaigns refused, collecting nothing: %s", e)
            self.stats.error(f"refused:{e.reason}")
            self.collector.follow(None)
        except OfflineError as e:
            logger.info("campaigns not refreshed (%s): keeping the last verified ones", e)

    # -- the shadow ----------------------------------------------------------------------
    def _follow_shadow(self, channel: ReleaseChannel, pointer: ReleasePointer) -> str | None:
        """Install the release the pointer has this device shadow, if it is new; drop one it no
        longer names. Never raises: the device runs on without a shadow; the state says why."""
        release = pointer.shadow_for(self.config.device_id)
        if release is None:
            self._drop_shadow()
            return None
        label = _label(release)
        if self.shadow is not None and self.shadow.release == release:
            return f"running {label}"
        self._drop_shadow()
        try:
            self.shadow = self._install(channel, pointer, release, self.slots.install_shadow)
        except UpdateRefusedError as e:
            logger.warning("shadow %s refused: %s", label, e)
            self.stats.error(f"shadow-refused:{e.reason}")
            return f"{REFUSED}: {e.reason}: {e}"
        except OfflineError as e:
            return f"{OFFLINE}: {e}"
        except Exception as e:  # a full disk, a bug: no shadow this cycle, the device runs on
            logger.exception("installing the shadow %s failed", label)
            self.stats.error(SHADOW)
            return f"{ERROR}: {type(e).__name__}: {e}"
        self.stats.shadow_ood_threshold = release.limits.ood_threshold
        return f"installed {label}"

    def _drop_shadow(self) -> None:
        if self.shadow is not None:
            logger.info("no longer shadowing %s", self.shadow.label)
        self.shadow = None
        self.slots.drop_shadow()

    # -- inference -----------------------------------------------------------------------
    def infer(self, frame: Mapping[str, Any]) -> Decision:
        """One frame through the model (if any) and the safety monitor; after the command is
        decided, the shadow (if any) on the same input; one telemetry record; the hard cases."""
        decision = self.command(frame)
        shadow = self._run_shadow(decision) if self.shadow is not None else None
        ts = int(self._clock() * 1000)
        self._report(decision, self._last_latency_ms, shadow, ts)
        if self.collector.campaigns:
            self._collect(frame, decision, shadow, ts)
        if self._outputs is not None:
            self._keep_hard_cases(decision, shadow, ts)
        return decision

    def command(self, frame: Mapping[str, Any]) -> Decision:
        """What to command for ``frame`` (the actuation path): the feature window, the model, the
        monitor; its telemetry is :meth:`infer`'s, after the command is out."""
        start = time.perf_counter()
        self._outputs = self._error = None
        try:
            self._vector = vector = self.window.push(frame)
        except (KeyError, TypeError, ValueError) as e:  # a frame without a signal the task needs
            logger.debug("frame refused (%r): commanding the fallback", e)
            self.stats.error("frame")
            self._error = BAD_FRAME
            decision = self._fallback(BAD_FRAME)
        else:
            self._frames.append(frame)
            if self._active is None:
                decision = self._monitor.fallback_only()
            elif vector is None:  # fewer frames than the window: the model has no input yet
                decision = self._fallback("warm-up")
            else:
                try:
                    self._outputs = outputs = self._active.runner.predict(vector)
                    decision = self._monitor.decide(outputs)
                except Exception as e:  # an ONNX Runtime failure must not stop the fallback
                    logger.error("inference failed (%s): commanding the fallback", e)
                    self.stats.error("inference")
                    self._outputs, self._error = None, INFERENCE
                    decision = self._monitor.fallback_only()
        self._last_latency_ms = latency_ms = (time.perf_counter() - start) * 1e3
        self.stats.record(latency_ms, decision.ood_score, decision.reason)
        return decision

    def _fallback(self, reason: str) -> Decision:
        decision = self._monitor.fallback_only()
        return Decision(decision.commanded, decision.proposed, 0.0, reason)

    def _run_shadow(self, decision: Decision) -> ShadowResult | None:
        """The shadow on the input the active model just ran on (None: the active model did not
        run, so there is nothing to compare); a failure is counted as error ``shadow``."""
        shadow = self.shadow
        if self._outputs is None or shadow is None or self._vector is None:
            return None
        version = str(shadow.release.version)
        try:
            outputs = np.array(shadow.runner.predict(self._vector))
            names = shadow.runner.manifest.outputs
            limits = shadow.release.limits
            first = float(outputs[names.index(limits.outputs[0].name)])
            ood = float(outputs[names.index(limits.ood_output)]) if limits.ood_output else None
            if not math.isfinite(first) or (ood is not None and not math.isfinite(ood)):
                raise ValueError(f"a non-finite output ({first}, OOD {ood})")
        except Exception as e:  # the shadow never stops the device
            logger.debug("shadow %s failed: %s", shadow.label, e)
            self.stats.error(SHADOW)
            self._error = self._error or SHADOW
            return ShadowResult(version, None, None, None)
        actuated = decision.proposed[0]
        comparable = math.isfinite(actuated) and limits.outputs[0].name == self._monitor.limits.outputs[0].name
        disagreement = abs(first - actuated) if comparable else None
        if ood is not None:
            ood = min(max(ood, 0.0), 1.0)
        if disagreement is not None:
            self.stats.shadow(disagreement, ood)
        return ShadowResult(version, outputs, disagreement, ood)

    def _report(self, decision: Decision, latency_ms: float, shadow: ShadowResult | None, ts: int) -> None:
        name, version = (self._active.release.model, str(self._active.release.version)) if self._active else NO_MODEL
        record = {
            "device_id": self.config.device_id,
            "model_name": name,
            "model_version": version,
            "ts": ts,
            "latency_ms": latency_ms,
            "ood_score": min(max(decision.ood_score, 0.0), 1.0),
            "disagreement": decision.disagreement,
            "intervention": decision.intervened,
            "update_state": self._update_code,
            "fleet": self.config.fleet,
            "shadow_version": shadow.version if shadow else None,
            "shadow_disagreement": shadow.disagreement if shadow else None,
            "shadow_ood_score": shadow.ood_score if shadow else None,
            "error": self._error,
        }
        try:
            self.telemetry.send(CONTRACT, self.config.device_id, record)
        except Exception as e:  # a full spool or a refused record must not stop the device
            logger.warning("telemetry record not spooled: %s", e)
            self.stats.error("telemetry")

    def _collect(self, frame: Mapping[str, Any], decision: Decision, shadow: ShadowResult | None, ts: int) -> None:
        """Offer this inference to the collection campaigns (:mod:`~actuation.agent.campaigns`)."""
        active = self._active
        name, version = (active.release.model, str(active.release.version)) if active else NO_MODEL
        ran = self._outputs is not None and active is not None
        inference = Inference(
            ts=ts,
            model_name=name,
            model_version=version,
            ood_score=decision.ood_score if ran else None,
            disagreement=shadow.disagreement if shadow else None,
            intervened_by_model=decision.reason in MODEL_REASONS,
            reason=decision.reason,
            output_names=active.runner.manifest.outputs if ran and active else (),
            outputs=[float(v) for v in self._outputs] if ran and self._outputs is not None else (),
        )
        try:
            self.collector.observe(frame_signals(frame, self.collector.signals), inference)
        except Exception:  # collecting never stops the device
            logger.exception("collection campaign failed on this inference")
            self.stats.error("campaign")

    def _keep_hard_cases(self, decision: Decision, shadow: ShadowResult | None, ts: int) -> None:
        """Offer this inference to the hard cases; a case is built only for a kind that keeps it."""
        kinds = [INTERVENTION] if decision.reason in MODEL_REASONS else []
        disagreement = shadow.disagreement if shadow else None
        if disagreement is not None and self.hard_cases.would_keep(disagreement):
            kinds.append(DISAGREEMENT)
        if shadow and shadow.ood_score is not None and shadow.ood_score >= self.stats.shadow_ood_threshold:
            kinds.append(SHADOW_OOD)
        for kind in kinds:
            self.hard_cases.offer(kind, partial(self._hard_case, kind, decision, shadow, ts), disagreement)

    def _hard_case(self, kind: str, decision: Decision, shadow: ShadowResult | None, ts: int) -> HardCase:
        assert self._active is not None and self._vector is not None and self._outputs is not None
        return HardCase(
            kind=kind,
            ts=ts,
            model_version=str(self._active.release.version),
            features=floats(self._vector),
            outputs=floats(self._outputs),
            reason=decision.reason,
            ood_score=decision.ood_score,
            shadow_version=shadow.version if shadow else None,
            shadow_outputs=floats(shadow.outputs) if shadow and shadow.outputs is not None else None,
            shadow_disagreement=shadow.disagreement if shadow else None,
            shadow_ood_score=shadow.ood_score if shadow else None,
            frames=[dict(f) for f in self._frames],
        )

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

        Each update cycle closes a telemetry window: its summary goes to ``status.json`` (and
        the hard cases to ``hardcases.jsonl``) and a new window starts."""
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
                self.stats = self.stats.fresh()
                self._window_started = datetime.now(UTC)
                next_update = now + update_every_s
            self.infer(frame)
            if paced:
                next_tick += period
                time.sleep(max(0.0, next_tick - time.monotonic()))

    def summary(self) -> dict[str, Any]:
        """The device's figures: what runs, the rollout stage it is in, the last update, the
        window's telemetry (with the shadow's figures under ``window.shadow``)."""
        state = self.slots.state()
        return {
            "device": self.config.device_id,
            "fleet": self.config.fleet,
            "active": self.active,
            "slot": state.active,
            "slots": {k: _label(s.release) for k, s in sorted(state.slots.items())},
            "stage": self._stage_summary(),
            "shadow": self.shadow.label if self.shadow else None,
            "update": self.last_update.as_dict() if self.last_update else None,
            "update_state": self.last_update.line if self.last_update else ("no model" if not self._active else None),
            "window": {"started": self._window_started.isoformat(), **self.stats.summary()},
            "hard_cases": len(self.hard_cases),
            "campaigns": self.collector.summary(),
            "at": datetime.now(UTC).isoformat(),
        }

    def _stage_summary(self) -> dict[str, Any] | None:
        """The rollout stage the last verified pointer names (None: no rollout in progress)."""
        stage = self.pointer.stage if self.pointer else None
        if stage is None:
            return None
        return {
            "rollout_id": stage.rollout_id,
            "name": stage.name,
            "index": stage.index,
            "mode": stage.mode,
            "share": stage.share,
            "candidate": _label(stage.candidate),
            "in_cohort": stage.includes(self.config.device_id),
            "shadow": self.shadow.label if self.shadow else None,
            "shadow_state": self.last_update.shadow if self.last_update else None,
        }

    def write_status(self) -> dict[str, Any]:
        """Write ``status.json`` (the summary) and ``hardcases.jsonl``, each atomically."""
        summary = self.summary()
        write_atomic(self.device.status, json.dumps(summary, indent=2).encode())
        self.hard_cases.write(self.device.hardcases)
        return summary
