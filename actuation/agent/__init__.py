"""The edge agent: what runs on a device (installable with the edge extra).

A device is provisioned once with the release repository's trusted root
(:func:`provision`, ``fieldloop agent provision``), then :class:`Agent` keeps it current and
running (``fieldloop agent run``)::

    from actuation.agent import Agent, DeviceDir

    agent = Agent(DeviceDir(Path("/var/lib/fieldloop/devices/van-0042")), telemetry=producer)
    agent.update()               # one update cycle: verify, install in the other slot, self-test, switch
    decision = agent.infer(frame)  # the model behind the runtime safety monitor; one telemetry record

In a staged rollout the fleet's pointer decides per device (by a stable hash of its id) whether
it actuates the candidate, runs it in shadow beside the champion, or runs the champion alone;
a rollback returns it to the champion kept in its other slot without a download.

Modules: ``device`` (the directory and its config), ``updater`` (TUF and the attestation),
``slots`` (A/B on disk, and the shadow's), ``runner`` (ONNX Runtime and the self-test),
``monitor`` (the safety monitor), ``features`` (the task's feature layout), ``telemetry``,
``hardcases`` (the inputs worth learning from), ``sources`` (simulated frames), ``cli``.
"""

from actuation.agent.agent import Agent, UpdateResult
from actuation.agent.device import DeviceConfig, DeviceDir, provision
from actuation.agent.errors import DeviceError, OfflineError, UpdateRefusedError

__all__ = [
    "Agent",
    "DeviceConfig",
    "DeviceDir",
    "DeviceError",
    "OfflineError",
    "UpdateRefusedError",
    "UpdateResult",
    "provision",
]
