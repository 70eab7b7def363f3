"""The Airflow trigger a rollout stage's task defers to: the rollout controller, run by the
triggerer while the stage soaks, so no worker slot is held however long it takes.

Workflow. A stage task defers with the fleet, the rollout's id, its stage's index and the
state it waits in (``running`` while the stage soaks; ``paused`` or ``awaiting-approval``
while a person decides). :meth:`StageTrigger.run` then looks every ``poll_s`` seconds:

1. one :meth:`Controller.step` in the trigger's own thread (the controller reads Delta and
   Kafka synchronously; the triggerer's event loop must never block on it), with the
   trigger's context variables so what it logs lands in the task's log; it decides
   hold/pause/rollback/advance/await-approval/complete and publishes what it decided;
2. the fleet's rollout as the audit table now has it: while it is still the same rollout, in
   the same stage and state, the trigger waits; otherwise it fires once with where the
   rollout stands and its last decision (:func:`where`) and ends.

The controller lives as long as the trigger does (one Kafka reader per stage window). All of
its state is in the audit table and the telemetry topic, so a triggerer that restarts, or
a second decider (``fieldloop rollout run``, a person's ``rollout pause``), changes nothing:
the rebuilt controller resumes exactly, and the audit table refuses a decision taken on a
stale look. Transient failures (Kafka or the lake briefly away) are logged and looked at
again; after ``max_failures`` looks in a row the trigger fires an ``error`` event, which fails
the task (its retries defer again).

Importing this module stays light (the DAG processor may): the controller, delta-rs and the
Kafka client are imported when the trigger runs.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

logger = logging.getLogger(__name__)

ERROR = "error"  # an event's status when the controller could not look ``max_failures`` times in a row
MOVED = "moved"  # an event's status when the rollout left the stage and state the task waited in


def where(rollout: Any) -> dict[str, Any]:
    """An event's payload: where ``rollout`` (an :class:`actuation.rollout.audit.Rollout`, or None)
    stands and its last decision, JSON-ready."""
    if rollout is None:
        return {"status": MOVED, "rollout": None, "state": None, "stage": None, "stage_index": None, "last": None}
    last = rollout.last
    return {
        "status": MOVED,
        "rollout": rollout.id,
        "state": rollout.state,
        "stage": last.stage,
        "stage_index": last.stage_index,
        "last": {
            "seq": last.seq,
            "at": last.at.isoformat(),
            "action": last.action,
            "requested_by": last.requested_by,
            "reason": last.reason,
            "model": last.model,
            "version": last.version,
        },
    }


def left(rollout: Any, rollout_id: str, stage_index: int, waiting_in: str) -> bool:
    """Whether ``rollout`` is no longer the one a task waits on, in its stage and state.

    A rollout still in an earlier stage has not reached the task's stage yet: that is waiting too.
    """
    if rollout is None or rollout.id != rollout_id or rollout.done:
        return True
    if rollout.stage_index != stage_index:
        return rollout.stage_index > stage_index
    return rollout.state != waiting_in


class StageTrigger(BaseTrigger):
    """Fires when a fleet's rollout leaves the stage (and state) a task deferred on.

    Args:
        fleet: the fleet (``actuation/fleets.toml``).
        rollout_id: the rollout the task follows.
        stage_index: the policy's stage the task stands for (0-based).
        waiting_in: the rollout's state the task waits in: ``running`` while the stage soaks,
            ``paused`` or ``awaiting-approval`` until a person resumes it.
        poll_s: seconds between two looks.
        max_failures: looks in a row that may fail before the trigger gives up with an error event.
    """

    def __init__(
        self,
        fleet: str,
        rollout_id: str,
        stage_index: int,
        waiting_in: str = "running",
        poll_s: float = 5.0,
        max_failures: int = 12,
    ) -> None:
        super().__init__()
        self.fleet, self.rollout_id, self.stage_index = fleet, rollout_id, stage_index
        self.waiting_in, self.poll_s, self.max_failures = waiting_in, poll_s, max_failures
        self._controller: Any = None  # made on the first look, on the trigger's thread

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "fleet": self.fleet,
                "rollout_id": self.rollout_id,
                "stage_index": self.stage_index,
                "waiting_in": self.waiting_in,
                "poll_s": self.poll_s,
                "max_failures": self.max_failures,
            },
        )

    def controller(self) -> Any:
        """The fleet's controller, built from the deployment's config (the triggerer's environment)."""
        from actuation.rollout.controller import Controller, Site
        from fieldloop.config import load_config

        return Controller(Site.open(load_config(), self.fleet))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # one thread for the controller's whole life: its Kafka reader is not shared across threads
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rollout-{self.fleet}")
        failures = 0
        try:
            while True:
                try:
                    # with the trigger's context, as asyncio.to_thread: the triggerer routes logs to the
                    # task's log by context variables, so the controller's decisions show there
                    look = contextvars.copy_context().run
                    rollout = await asyncio.get_running_loop().run_in_executor(thread, look, self._look)
                except Exception as e:  # a trigger that raised would end the wait with a traceback only
                    failures += 1
                    logger.warning("rollout %s on %s: look %d of %d failed: %s", self.rollout_id, self.fleet,
                                   failures, self.max_failures, e)  # fmt: skip
                    if failures >= self.max_failures:
                        yield TriggerEvent({"status": ERROR, "rollout": self.rollout_id, "error": str(e)})
                        return
                else:
                    failures = 0
                    if left(rollout, self.rollout_id, self.stage_index, self.waiting_in):
                        yield TriggerEvent(where(rollout))
                        return
                await asyncio.sleep(self.poll_s)
        finally:
            thread.submit(self._close)  # on its own thread, after any look still under way
            thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._controller is not None:
            self._controller.close()
            self._controller = None

    def _look(self) -> Any:
        """One step of the controller, then the fleet's rollout as the audit table has it."""
        if self._controller is None:
            self._controller = self.controller()
        controller = self._controller
        decision = controller.step()
        if decision is not None:
            logger.info("rollout %s on %s: %s at %s: %s", decision.rollout_id, decision.fleet, decision.action,
                        decision.stage, decision.reason)  # fmt: skip
        site = controller.site
        return site.log.current(site.fleet.name)
