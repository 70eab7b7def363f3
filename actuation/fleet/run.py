"""A fleet of real edge agents in one process: provision, schedule, inject faults, record.

:class:`FleetRun` gives each of N devices of a fleet its own provisioned device directory
(``<dir>/<fleet>-0001/``: trusted root, TUF metadata cache, A/B slots, spool) and a real
:class:`~actuation.agent.Agent`, then ticks them all from a few worker threads:

1. **provision** (once; a directory provisioned for the same repository is reused, slots and all);
2. **schedule**: device *i* belongs to worker *i mod threads*, which keeps a heap of its
   devices' next events: an update cycle every ``poll_s`` (at a stable per-device phase in
   ``[0, poll_s)``, from a hash of the device id, so the fleet does not poll in lockstep) and
   an inference every ``1/rate_hz`` (none at rate 0). A device is only ever touched by its
   own worker, so agents need no locks. A worker that falls behind skips the missed ticks
   and counts the lag;
3. **record**: after each update cycle, a change of the agent's actuated model is an
   :class:`Activation` (time, device, from, to); the cycle's state, its metadata bytes and
   the device's version are kept for :meth:`FleetRun.summary`.

Faults (:mod:`actuation.fleet.faults`) act at the edges: a device's fetcher fails while it is
offline or the repository is out (:mod:`actuation.fleet.network`), its telemetry producer is
paused while it is offline, its frames are transformed while its field condition holds.

Telemetry: each device gets **its own edge SDK producer** on its own spool (what ``fieldloop
agent run`` does), for fleets up to :data:`MAX_TELEMETRY_DEVICES`; larger runs go without
(``telemetry=False``: records are counted, not kept). A shared producer was the alternative,
but the SDK's spool is one FIFO per producer whose sequence numbers are per device key: it
cannot hold back only the offline devices' records, and moving a device between spools (to a
fault's own, say) would restart its sequence numbers, which bronze deduplicates by (device,
seq). The price of per-device spools is a sender thread and a Kafka client per device.

Which release a device actuates is the agent's decision (``pointer.active`` today,
``pointer.release_for(device)`` once the agent acts on rollout stages): the harness only
watches ``agent.active`` change, so it does not care which.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actuation.fleet.errors import FleetError
from actuation.fleet.faults import OFFLINE, Fault, FaultPlan, FieldCondition

logger = logging.getLogger(__name__)

MAX_TELEMETRY_DEVICES = 200  # a Kafka client and a sender thread each: more is a run without telemetry
NO_MODEL = "none"


class FleetSettings(BaseModel):
    """What a fleet run is: which fleet, how many devices, how they poll and infer, what goes wrong."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    fleet: str = Field(description="the fleet the devices belong to (actuation/fleets.toml)")
    devices: int = Field(ge=1, le=100_000, description="how many agents (count)")
    id_prefix: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$",
        description="device ids are <id_prefix>-0001...; default the fleet",
    )
    poll_s: float = Field(10.0, gt=0, description="time between a device's update cycles (seconds)")
    rate_hz: float = Field(1.0, ge=0, le=100, description="inferences per device per second (0: none)")
    threads: int = Field(2, ge=1, le=64, description="worker threads that tick all agents (count)")
    telemetry: bool = Field(True, description="each device's telemetry through its own edge SDK spool to Kafka")
    faults: tuple[Fault, ...] = Field((), description="faults of the run (actuation.fleet.faults)")
    write_status: bool = Field(True, description="write each device's status.json at the end (one fsync each)")
    progress_s: float = Field(5.0, gt=0, description="time between progress reports (seconds)")

    @field_validator("telemetry")
    @classmethod
    def _telemetry_fits(cls, value: bool, info: Any) -> bool:
        devices = info.data.get("devices", 0)
        if value and devices > MAX_TELEMETRY_DEVICES:
            raise ValueError(
                f"telemetry for {devices} devices would open {devices} Kafka clients (one spool each); "
                f"run at most {MAX_TELEMETRY_DEVICES} with telemetry, or without it (--no-telemetry)"
            )
        return value


@dataclass(frozen=True)
class Activation:
    """A device's actuated model changed: ``at_s`` seconds after the run's start, ``previous`` -> ``active``."""

    at_s: float
    device: str
    previous: str | None
    active: str | None
    state: str  # the update cycle's state (``updated``, or a state of the agent's own)


class FleetAgent(Protocol):
    """What the harness uses of an agent (``actuation.agent.Agent``, or a test's fake)."""

    @property
    def active(self) -> str | None: ...

    def update(self) -> Any: ...  # an UpdateResult: ``.state``

    def infer(self, frame: Mapping[str, Any]) -> Any: ...  # a Decision: ``.intervened``


@dataclass(frozen=True)
class Device:
    """One device of the run: its place, its id, its fetcher, its telemetry sink and its agent."""

    index: int
    device_id: str
    agent: FleetAgent
    fetcher: Any = None  # a DeviceFetcher (bytes counted), or None
    telemetry: Any = None  # its own producer, or None
    frames: Iterator[Mapping[str, Any]] | None = None


AgentFactory = Callable[[int, str, Any, Any], FleetAgent]  # (index, device id, fetcher, telemetry) -> agent


@dataclass
class _WorkerStats:
    """One worker's figures (merged on read; each worker writes only its own)."""

    polls: int = 0
    states: Counter[str] = field(default_factory=Counter)
    inferences: Counter[str] = field(default_factory=Counter)  # by actuated version
    interventions: Counter[str] = field(default_factory=Counter)
    poll_bytes: dict[str, list[int]] = field(default_factory=dict)  # state -> [polls, metadata bytes, target bytes]
    max_poll_lag_s: float = 0.0
    max_infer_lag_s: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)  # poll or infer calls that raised


class FleetRun:
    """N agents of one fleet in this process (see the module docstring).

    Args:
        settings: the run's settings.
        root: the repository's trusted root a device is provisioned with (``fieldloop release root``).
        repo_url: the release repository's base URL.
        directory: where the devices' directories go (``<directory>/<device id>/``).
        bootstrap: Kafka bootstrap servers (telemetry); ``kafka``: the SDK's security settings.
        shared_fetcher: the fleet's ``FetcherInterface`` (default: a :class:`PooledFetcher`).
        agents: builds each device's agent (default: a real :class:`~actuation.agent.Agent` on its
            provisioned directory); tests pass fakes, and then nothing is provisioned.
        clock: monotonic seconds.

    Usage::

        run = FleetRun(settings, root=root, repo_url=url, directory=d)
        run.start()            # provisioned, agents built, workers ticking
        ...                    # publish pointers; watch run.versions(), run.activations
        run.stop()             # prompt: workers end after their current cycle; telemetry flushed
        print(run.summary())
    """

    def __init__(
        self,
        settings: FleetSettings,
        *,
        root: bytes | None = None,
        repo_url: str | None = None,
        directory: Path | None = None,
        bootstrap: str | None = None,
        kafka: Mapping[str, Any] | None = None,
        shared_fetcher: Any = None,
        agents: AgentFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if agents is None and (root is None or repo_url is None or directory is None):
            raise FleetError("a fleet of real agents needs the repository's trusted root, its URL and a directory")
        if settings.telemetry and agents is None and not bootstrap:
            raise FleetError("telemetry needs the Kafka bootstrap servers (or run without telemetry)")
        self.settings = settings
        self.device_ids = device_ids(settings.id_prefix or settings.fleet, settings.devices)
        self.plan = FaultPlan(settings.faults, self.device_ids)
        self._root, self._repo_url, self._directory = root, repo_url, directory
        self._bootstrap, self._kafka = bootstrap, dict(kafka or {})
        self._shared_fetcher, self._factory, self._clock = shared_fetcher, agents, clock
        self._owns_fetcher = False
        self.devices: list[Device] = []
        self._versions: dict[str, str | None] = {}
        self._activations: list[Activation] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._stats = [_WorkerStats() for _ in range(settings.threads)]
        self._started: float | None = None
        self._stopped: float | None = None
        self._paused: set[int] = set()
        self._progress: Callable[[dict[str, Any]], None] | None = None
        self._fleet_lock: Any = None
        self._delivered: bool | None = None
        self._conditions: dict[int, FieldCondition] = {}  # written by the device's own worker only

    # -- lifecycle -------------------------------------------------------------------
    def start(self, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Provision (if needed), build the agents and start ticking; ``progress`` gets a
        :meth:`snapshot` every ``progress_s`` (from the run's clock thread)."""
        if self._started is not None:
            raise FleetError("this fleet run was started already; make a new FleetRun")
        self._progress = progress
        try:
            self.devices = self._build_devices()
        except BaseException:
            if self._fleet_lock is not None:
                self._fleet_lock.close()
            raise
        self._versions = {d.device_id: d.agent.active for d in self.devices}
        self._started = self._clock()
        for w in range(self.settings.threads):
            mine = [d for d in self.devices if d.index % self.settings.threads == w]
            thread = threading.Thread(target=self._work, args=(mine, self._stats[w]), name=f"fleet-{w}", daemon=True)
            thread.start()
            self._workers.append(thread)
        clock = threading.Thread(target=self._tick_clock, name="fleet-clock", daemon=True)
        clock.start()
        self._workers.append(clock)

    def run(self, seconds: float, progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """:meth:`start`, run ``seconds`` (or until :meth:`stop` from another thread), :meth:`stop`;
        the :meth:`summary`."""
        self.start(progress)
        try:
            self._stop.wait(seconds)
        finally:
            self.stop()
        return self.summary()

    def stop(self, flush_s: float = 10.0) -> None:
        """Stop ticking (each worker ends after its current event), flush and close telemetry,
        write the devices' status. Idempotent."""
        self._stop.set()
        for thread in self._workers:
            thread.join()
        if self._stopped is not None:
            return
        self._stopped = self._clock()
        self._close_telemetry(flush_s)
        if self.settings.write_status:
            for d in self.devices:
                write = getattr(d.agent, "write_status", None)
                if write is not None:
                    write()
        if self._owns_fetcher:
            self._shared_fetcher.close()
        if self._fleet_lock is not None:
            self._fleet_lock.close()

    def elapsed(self) -> float:
        """Seconds since the run started (to its stop, once stopped)."""
        if self._started is None:
            return 0.0
        return (self._stopped or self._clock()) - self._started

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # -- what tests and the demo read ------------------------------------------------
    @property
    def activations(self) -> list[Activation]:
        """Every change of a device's actuated model so far, in time order."""
        with self._lock:
            return sorted(self._activations, key=lambda a: a.at_s)

    def activations_to(self, version: str | None) -> list[Activation]:
        """The activations of ``version`` (``<model>@<version>``; None: back to no model), in time order."""
        return [a for a in self.activations if a.active == version]

    def converged_at(self, version: str | None, devices: Iterable[str] | None = None) -> float | None:
        """When the last of ``devices`` (default: all) switched to ``version``, in seconds from the
        start, if every one of them runs it now; None otherwise. A device that ran it from the
        start (no activation) counts at 0."""
        names = set(self.device_ids if devices is None else devices)
        running = self.versions()
        if any(running.get(d) != version for d in names):
            return None
        last = {a.device: a.at_s for a in self.activations_to(version) if a.device in names}
        return max(last.values(), default=0.0)

    def versions(self) -> dict[str, str | None]:
        """Device id -> the model it actuates now (``<model>@<version>``; None: no model)."""
        return dict(self._versions)

    def running(self) -> Counter[str]:
        """Devices per actuated version (``none``: no model)."""
        return Counter(v or NO_MODEL for v in self._versions.values())

    def wait_for(self, predicate: Callable[[FleetRun], bool], timeout_s: float, every_s: float = 0.1) -> bool:
        """Wait until ``predicate(self)`` holds (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if time.monotonic() >= deadline or self._stop.is_set():
                return predicate(self)
            time.sleep(every_s)
        return True

    def hard_cases(self) -> dict[str, Any]:
        """Windows the devices' campaign collectors spooled so far, and when the first was (epoch seconds)."""
        collectors = [c for d in self.devices if (c := getattr(d.agent, "collector", None)) is not None]
        firsts = [c.first_sent_at for c in collectors if c.first_sent_at is not None]
        return {"sent": sum(c.sent for c in collectors), "first_sent_at": min(firsts, default=None)}

    def snapshot(self) -> dict[str, Any]:
        """The figures so far (what the progress line shows)."""
        merged = self._merged()
        return {
            "at_s": round(self.elapsed(), 2),
            "versions": dict(sorted(self.running().items())),
            "polls": merged.polls,
            "update_states": dict(merged.states),
            "inferences": sum(merged.inferences.values()),
            "activations": len(self._activations),
            "offline_devices": sum(self.plan.offline(d.index, self.elapsed()) for d in self.devices),
            "outage": self.plan.outage(self.elapsed()),
        }

    def summary(self) -> dict[str, Any]:
        """The run's figures: versions, update states, inferences, activations, metadata bytes per poll."""
        merged, seconds = self._merged(), self.elapsed()
        by_state = {
            state: {
                "polls": polls,
                "metadata_bytes_per_poll": round(meta / polls, 1),
                "target_bytes_per_poll": round(targets / polls, 1),
            }
            for state, (polls, meta, targets) in sorted(merged.poll_bytes.items())
            if polls
        }
        return {
            "fleet": self.settings.fleet,
            "devices": self.settings.devices,
            "seconds": round(seconds, 2),
            "poll_s": self.settings.poll_s,
            "rate_hz": self.settings.rate_hz,
            "threads": self.settings.threads,
            "faults": self.plan.as_dicts(),
            "versions": dict(sorted(self.running().items())),
            "last_states": dict(Counter(_state(d.agent) for d in self.devices)),
            "update_states": dict(merged.states),
            "polls": merged.polls,
            "polls_per_s": round(merged.polls / seconds, 2) if seconds else None,
            "max_poll_lag_s": round(merged.max_poll_lag_s, 3),
            "max_inference_lag_s": round(merged.max_infer_lag_s, 3),
            "poll_bytes": by_state,
            "inferences": sum(merged.inferences.values()),
            "inferences_by_version": dict(merged.inferences),
            "interventions_by_version": dict(merged.interventions),
            "activations": [asdict(a) for a in self.activations],
            "telemetry": self._telemetry_stats(),
            "hard_cases": self.hard_cases(),
            "failures": dict(merged.failures),
        }

    # -- provisioning ----------------------------------------------------------------
    def _build_devices(self) -> list[Device]:
        if self._factory is not None:
            task = _task(self.settings.fleet)
            return [
                Device(i, device_id, self._factory(i, device_id, None, None), frames=self._frames(i, task))
                for i, device_id in enumerate(self.device_ids)
            ]
        from actuation.agent import Agent, DeviceDir
        from actuation.fleet.network import DeviceFetcher, PooledFetcher

        assert self._directory is not None
        self._directory.mkdir(parents=True, exist_ok=True)
        self._fleet_lock = _lock_directory(self._directory)
        if self._shared_fetcher is None:
            self._shared_fetcher, self._owns_fetcher = PooledFetcher(self.settings.threads), True
        task = self._provision_all()
        devices: list[Device] = []
        try:
            for i, device_id in enumerate(self.device_ids):
                dev = DeviceDir(self._directory / device_id)
                fetcher = DeviceFetcher(self._shared_fetcher, self._reachability(i))
                producer = self._producer(dev) if self.settings.telemetry else None
                agent = Agent(dev, telemetry=producer or _Discard(), fetcher=fetcher)
                devices.append(Device(i, device_id, agent, fetcher, producer, self._frames(i, task)))
        except BaseException:  # a spool that will not open: release what the others opened
            for d in devices:
                if d.telemetry is not None:
                    d.telemetry.close(0.0)
            raise
        return devices

    def _provision_all(self) -> str:
        """Each device's directory, provisioned unless it already is, for this repository; the fleet's task."""
        from actuation.agent import DeviceConfig, DeviceDir, provision
        from actuation.contract import load_fleets

        assert self._directory is not None and self._root is not None and self._repo_url is not None
        _task(self.settings.fleet)
        known = load_fleets().get(self.settings.fleet)
        for device_id in self.device_ids:
            config = DeviceConfig(
                device_id=device_id,
                fleet=known.name,
                tenant=known.tenant,
                task=known.task,
                repo_url=self._repo_url,
                rate_hz=self.settings.rate_hz or 1.0,
            )
            dev = DeviceDir(self._directory / device_id)
            if dev.config_file.exists() and dev.root.exists():
                if dev.config() == config and dev.trusted_root() == self._root:
                    continue
                raise FleetError(
                    f"{dev.path} was provisioned for another repository or fleet; "
                    "remove the fleet's directory or run in another one (--dir)"
                )
            provision(dev.path, config, self._root)
        return known.task

    def _producer(self, dev: Any) -> Any:
        from actuation.agent.telemetry import producer

        assert self._bootstrap is not None
        return producer(self._bootstrap, dev.spool, dev.config().tenant, **self._kafka)

    def _frames(self, index: int, task: str | None) -> Iterator[Mapping[str, Any]] | None:
        if not self.settings.rate_hz or task is None:
            return None
        from actuation.agent.sources import simulated_frames

        return simulated_frames(task, self.settings.rate_hz, seed=index)

    def _reachability(self, index: int) -> Callable[[], str | None]:
        plan = self.plan

        def reachable() -> str | None:
            t = self.elapsed()
            if plan.offline(index, t):
                return "the device is offline (fault)"
            if plan.outage(t):
                return "the release repository is out (fault)"
            return None

        return reachable

    # -- the workers -----------------------------------------------------------------
    def _work(self, devices: list[Device], stats: _WorkerStats) -> None:
        """Tick ``devices`` until stopped: a heap of (due, seq, kind, device)."""
        s, start = self.settings, self._started
        assert start is not None
        seq = itertools.count()
        heap: list[tuple[float, int, str, Device]] = []
        for d in devices:
            heapq.heappush(heap, (start + phase(d.device_id) * s.poll_s, next(seq), "poll", d))
            if d.frames is not None and s.rate_hz:
                heapq.heappush(heap, (start + phase(d.device_id, "infer") / s.rate_hz, next(seq), "infer", d))
        while heap and not self._stop.is_set():
            due = heap[0][0]
            now = self._clock()
            if due > now:
                self._stop.wait(min(due - now, 0.5))
                continue
            _, _, kind, d = heapq.heappop(heap)
            lag = now - due
            try:
                if kind == "poll":
                    stats.max_poll_lag_s = max(stats.max_poll_lag_s, lag)
                    self._poll(d, stats)
                else:
                    stats.max_infer_lag_s = max(stats.max_infer_lag_s, lag)
                    self._infer(d, stats)
            except Exception:  # the agent never raises by design; if one does, its device goes on, counted
                logger.exception("%s of %s failed", kind, d.device_id)
                stats.failures[kind] += 1
            period = s.poll_s if kind == "poll" else 1.0 / s.rate_hz
            # a worker that fell behind skips the missed ticks rather than bursting through them
            heapq.heappush(heap, (max(due + period, self._clock()), next(seq), kind, d))

    def _poll(self, d: Device, stats: _WorkerStats) -> None:
        before = d.agent.active
        meta0, targets0 = (d.fetcher.metadata_bytes, d.fetcher.target_bytes) if d.fetcher else (0, 0)
        result = d.agent.update()
        after, state = d.agent.active, result.state
        stats.polls += 1
        stats.states[state] += 1
        if d.fetcher is not None:
            figures = stats.poll_bytes.setdefault(state, [0, 0, 0])
            figures[0] += 1
            figures[1] += d.fetcher.metadata_bytes - meta0
            figures[2] += d.fetcher.target_bytes - targets0
        self._versions[d.device_id] = after
        if after != before:
            with self._lock:
                self._activations.append(Activation(round(self.elapsed(), 3), d.device_id, before, after, state))

    def _infer(self, d: Device, stats: _WorkerStats) -> None:
        assert d.frames is not None
        frame = next(d.frames)
        if self.plan.condition(d.index, self.elapsed()):
            frame = self._conditions.setdefault(d.index, FieldCondition())(frame)
        decision = d.agent.infer(frame)
        version = d.agent.active or NO_MODEL
        stats.inferences[version] += 1
        if decision.intervened:
            stats.interventions[version] += 1

    # -- faults on telemetry, progress -----------------------------------------------
    def _tick_clock(self) -> None:
        """Pause and resume the offline devices' telemetry; report progress."""
        offline = [d for d in self.devices if d.telemetry is not None and d.index in self.plan.devices(OFFLINE)]
        next_progress = self._clock() + self.settings.progress_s
        while not self._stop.wait(0.1):
            t = self.elapsed()
            for d in offline:
                down = self.plan.offline(d.index, t)
                if down and d.index not in self._paused:
                    d.telemetry.pause()
                    self._paused.add(d.index)
                elif not down and d.index in self._paused:
                    d.telemetry.resume()
                    self._paused.discard(d.index)
            if self._progress is not None and self._clock() >= next_progress:
                next_progress += self.settings.progress_s
                try:
                    self._progress(self.snapshot())
                except Exception:  # a broken progress printer must not stop the fleet
                    logger.exception("progress report failed")

    def _close_telemetry(self, flush_s: float) -> None:
        producers = [d.telemetry for d in self.devices if d.telemetry is not None]
        if not producers:
            return
        # a device still offline at the end keeps its records spooled for its next run
        deadline = time.monotonic() + flush_s
        self._delivered = all(p.paused or p.flush(max(0.0, deadline - time.monotonic())) for p in producers)
        for p in producers:
            p.close(0.0)

    def _telemetry_stats(self) -> dict[str, Any] | None:
        producers = [d.telemetry for d in self.devices if d.telemetry is not None]
        if not producers:
            return None
        stats = [p.stats for p in producers]
        return {
            "accepted": sum(s.accepted for s in stats),
            "acked": sum(s.acked for s in stats),
            "pending": sum(s.pending for s in stats),
            "delivered": self._delivered,
        }

    def _merged(self) -> _WorkerStats:
        out = _WorkerStats()
        for s in self._stats:
            # dict() copies in one step under the GIL: a worker may add a key meanwhile
            out.polls += s.polls
            out.states.update(dict(s.states))
            out.inferences.update(dict(s.inferences))
            out.interventions.update(dict(s.interventions))
            out.failures.update(dict(s.failures))
            for state, figures in list(s.poll_bytes.items()):
                mine = out.poll_bytes.setdefault(state, [0, 0, 0])
                for k in range(3):
                    mine[k] += figures[k]
            out.max_poll_lag_s = max(out.max_poll_lag_s, s.max_poll_lag_s)
            out.max_infer_lag_s = max(out.max_infer_lag_s, s.max_infer_lag_s)
        return out


def device_ids(prefix: str, count: int) -> list[str]:
    """The run's devices: ``<prefix>-0001`` ... (at least four digits); the prefix is the fleet's
    name unless the run names another (a device is its directory: two directories of the same
    ids would restart their telemetry's sequence numbers)."""
    width = max(4, len(str(count)))
    return [f"{prefix}-{i:0{width}d}" for i in range(1, count + 1)]


def phase(device_id: str, salt: str = "poll") -> float:
    """A device's stable place in a period, in [0, 1): a hash of its id."""
    digest = hashlib.sha256(f"{salt}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _task(fleet: str) -> str:
    from actuation.contract import load_fleets

    try:
        return load_fleets().get(fleet).task
    except KeyError as e:
        raise FleetError(str(e).strip('"')) from e


def _state(agent: Any) -> str:
    last = getattr(agent, "last_update", None)
    return last.state if last is not None else "not-polled"


class _Discard:
    """Telemetry of a run without it: the agent's records go nowhere (the run counts inferences)."""

    def send(self, contract_id: str, device_id: str, record: Mapping[str, Any]) -> int:
        return 0

    def flush(self, timeout_s: float = 30.0) -> bool:
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        pass


def _lock_directory(directory: Path) -> Any:
    """Held while a fleet runs in ``directory``: two runs would race on the devices' slots."""
    import fcntl
    import os

    f = open(directory / "fleet.lock", "a+")  # noqa: SIM115 - held until stop()
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise FleetError(f"another fleet run uses {directory}; stop it, or run in another directory (--dir)") from None
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f
