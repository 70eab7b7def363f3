"""The local stack: Kafka, MLflow, Airflow 3 and the release repository's nginx on 127.0.0.1,
started from the project's files.

``up`` is idempotent: a healthy component is left alone, a half-running one (a process
died, or it never became ready) is stopped and started again, and when a component
cannot be made ready everything this call started is stopped again, so ``up`` never
leaves a half-running stack behind. ``down`` stops only the processes ``up`` started,
by pid. State (pids, logs, data) lives under ``FIELDLOOP_HOME``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fieldloop import jvm
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import load_contracts
from fieldloop.errors import StackError
from fieldloop.residency import ResidencyGuard
from fieldloop.stack.components import AirflowComponent, Component, Health, MlflowComponent, components
from fieldloop.stack.process import port_in_use

logger = logging.getLogger(__name__)

__all__ = ["ComponentStatus", "Health", "Stack"]


@dataclass
class ProcessStatus:
    name: str
    pid: int | None
    state: str  # running | stopped | dead


@dataclass
class ComponentStatus:
    name: str
    url: str
    health: Health
    processes: list[ProcessStatus] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.state == "running" for p in self.processes)


Progress = Callable[[str], None]


class Stack:
    """Operates the embedded stack for one config."""

    def __init__(self, cfg: FieldloopConfig, only: list[str] | None = None) -> None:
        self.cfg = cfg
        self.components: list[Component] = [c for c in components(cfg) if not only or c.name in only]

    # status ---------------------------------------------------------------------
    def status_of(self, comp: Component) -> ComponentStatus:
        procs = []
        for proc in comp.processes:
            pid = proc.pid()
            if pid is not None:
                procs.append(ProcessStatus(proc.name, pid, "running"))
            elif proc.exited():
                procs.append(ProcessStatus(proc.name, proc.recorded_pid(), "dead"))
            else:
                procs.append(ProcessStatus(proc.name, None, "stopped"))
        if all(p.state == "stopped" for p in procs):
            health = Health(False, "not started (run `fieldloop stack up`)")
        else:
            health = comp.health()
            dead = [p.name for p in procs if p.state == "dead"]
            if dead:
                health = Health(
                    False, f"{', '.join(dead)} exited (see {self.cfg.logs_dir}); run `fieldloop stack up` to restart"
                )
        return ComponentStatus(comp.name, comp.url, health, procs, comp.notes())

    def status(self) -> list[ComponentStatus]:
        return [self.status_of(c) for c in self.components]

    # up ---------------------------------------------------------------------------
    def preflight(self) -> None:
        """Everything checkable before any process starts: contracts, residency, Java, jars."""
        load_contracts(self.cfg.contracts_dir, self.cfg.allowed_regions)
        guard = ResidencyGuard.from_config(self.cfg)
        for location in (str(self.cfg.home), self.cfg.lake):
            guard.check(location)
        for comp in self.components:
            comp.preflight()

    def setup(self, progress: Progress = logger.info) -> None:
        """Resolve the JVM jars (idempotent; a no-op when current)."""
        for profile in ("kafka", "spark"):
            progress(f"jars: {profile} ...")
            jvm.ensure_jars(self.cfg.jars_dir, profile)
        if self.cfg.lake.startswith(("s3a://", "s3://")):
            progress("jars: s3 ...")
            jvm.ensure_jars(self.cfg.jars_dir, "s3")

    def up(self, progress: Progress = logger.info) -> list[str]:
        """Start what is not running and wait until all is ready.

        Returns:
            Lines worth showing once (e.g. a newly created admin login).

        Raises:
            StackError: a component could not be made ready; what this call started is stopped.
        """
        self.setup(progress)
        self.preflight()
        started: list[Component] = []
        once: list[str] = []
        try:
            for comp in self.components:
                status = self.status_of(comp)
                if status.running and status.health.ok:
                    progress(f"{comp.name}: already running ({status.health.detail})")
                    continue
                if any(p.state == "running" for p in status.processes):
                    progress(f"{comp.name}: half-running ({status.health.detail}); restarting it")
                    self._stop(comp)
                self._check_ports(comp)
                if isinstance(comp, AirflowComponent):
                    password = comp.ensure_admin()
                    if password:
                        once.append(
                            f"Airflow admin login (shown once): {comp.cfg.airflow.admin_user} / {password}  "
                            f"(kept in {comp.passwords_file})"
                        )
                if isinstance(comp, MlflowComponent):
                    ResidencyGuard.from_config(self.cfg).check(comp.artifacts)
                progress(f"{comp.name}: starting")
                started.append(comp)
                t0 = time.monotonic()
                comp.start()
                health = self._await_ready(comp)
                progress(f"{comp.name}: ready in {time.monotonic() - t0:.0f}s ({health.detail})")
        except BaseException:
            for comp in reversed(started):
                self._stop(comp)
            raise
        return once

    def _check_ports(self, comp: Component) -> None:
        for key, port in comp.ports.items():
            if port_in_use(port):
                env = "FIELDLOOP_" + key.upper().replace(".", "_")
                raise StackError(
                    f"{comp.name}: port {port} on 127.0.0.1 is taken by another program{_owner(port)}; "
                    f"stop it or choose another port with {env}"
                )

    def _await_ready(self, comp: Component) -> Health:
        deadline = time.monotonic() + comp.ready_timeout
        health = Health(False, "not checked yet")
        while time.monotonic() < deadline:
            for proc in comp.processes:
                if proc.exited():
                    raise StackError(
                        f"{comp.name}: {proc.name} exited during start-up; last log lines ({proc.log_file}):\n"
                        f"{proc.log_tail()}"
                    )
            health = comp.health()
            if health.ok:
                return health
            time.sleep(1.0)
        raise StackError(
            f"{comp.name}: not ready after {comp.ready_timeout:.0f}s ({health.detail}); "
            f"see the logs in {self.cfg.logs_dir} and run `fieldloop stack up` again"
        )

    # down ---------------------------------------------------------------------------
    def _stop(self, comp: Component) -> bool:
        stopped = False
        for proc in reversed(comp.processes):
            stopped |= proc.stop()
        return stopped

    def down(self, progress: Progress = logger.info) -> None:
        """Stop, by pid, every process `up` started; others are left alone."""
        for comp in reversed(self.components):
            if self._stop(comp):
                progress(f"{comp.name}: stopped")
            else:
                progress(f"{comp.name}: was not running")


def _owner(port: int) -> str:
    """' (pid N, name)' of the listener on ``port`` when we may see it."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" (pid {conn.pid}, {psutil.Process(conn.pid).name()})"
    except Exception:  # best effort: the message is complete without it
        return ""
    return ""
