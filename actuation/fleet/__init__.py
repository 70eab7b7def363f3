"""A fleet of real edge agents in one process, with faults (``fieldloop fleet agents``).

What the rollout's tests, its benchmark and the demo stand on: N devices of a fleet, each a
real :class:`~actuation.agent.Agent` with its own device directory, polling a real release
repository, with network, repository and field-condition faults, and a log of every change
of a device's actuated model::

    from actuation.fleet import FleetRun, FleetSettings, Fault

    run = FleetRun(FleetSettings(fleet="public-cars", devices=20, poll_s=2, telemetry=False,
                                 faults=(Fault.parse("offline:0.25@5+10"),)),
                   root=root, repo_url=url, directory=tmp)
    run.start()
    ...                      # publish pointers meanwhile
    run.wait_for(lambda r: r.running() == {"fieldloop.vehicle-longitudinal@2": 20}, timeout_s=60)
    run.activations_to("fieldloop.vehicle-longitudinal@2")   # who switched, when (s from the start)
    run.converged_at("fieldloop.vehicle-longitudinal@1", canary_ids)  # all back on it by then, or None
    run.stop()
    run.summary()            # versions, update states, bytes per check, inferences, every activation

Modules: ``run`` (the harness), ``faults`` (fault specs and which devices they hit),
``network`` (the shared connection pool and each device's failing, counting view), ``cli``.
"""

from actuation.fleet.errors import FaultSpecError, FleetError
from actuation.fleet.faults import Fault, FaultPlan, FieldCondition, parse_faults
from actuation.fleet.run import Activation, FleetRun, FleetSettings, device_ids

__all__ = [
    "Activation",
    "Fault",
    "FaultPlan",
    "FaultSpecError",
    "FieldCondition",
    "FleetError",
    "FleetRun",
    "FleetSettings",
    "device_ids",
    "parse_faults",
]
