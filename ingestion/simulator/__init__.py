"""Fleet simulator: deterministic devices with plausible physics, sent through the edge SDK.

Workflow:

1. a :class:`FleetSpec` (devices, rate, seconds, seed, start) is validated;
2. :class:`Fleet` builds the devices by a fixed pattern (of every 10, 5 vehicles, 3
   blast-furnace sensors, 2 robot arms), each drawing from its own
   ``numpy.random.Generator`` seeded by (seed, device index), so a device's output depends
   only on the seed and its index, never on how many devices run beside it; who the
   devices belong to and which contracts their streams go to is data, the fleet file
   (``fleet.toml``, read by :func:`load_layout`);
3. :meth:`Fleet.items` yields :class:`Item` s in event-time order on a simulated clock;
4. :meth:`Simulation.run` applies the :class:`FaultPlan`, offers each record to a
   :class:`Sink` (the edge SDK), sends junk and duplicates through a :class:`RawSender`,
   and returns a :class:`SimulationReport`.

Modules: one per kind of device with its physics (``vehicle``, ``robot``, ``furnace``,
on the shared ``device`` base), ``fleet`` (spec and pattern), ``layout`` (the fleet
file), ``run`` (the loop), ``sink`` and ``raw`` (the two ways out), ``report``,
``faults``, ``notes`` (free text people type), ``vin`` and ``audio`` (the secret
worker-audio stream).

Nothing here dials Kafka on its own; ``ingestion.cli`` wires the real SDK, raw producer and
broker. ``--rate`` is the rate of each device's main stream; a vehicle's camera reports every
2nd frame and each vehicle and robot reports model telemetry every 10th.
"""

from ingestion.simulator.audio import worker_audio
from ingestion.simulator.device import Device, Item
from ingestion.simulator.faults import FaultPlan, FaultSpec
from ingestion.simulator.fleet import Fleet, FleetSpec
from ingestion.simulator.layout import FleetLayout, load_layout
from ingestion.simulator.raw import KafkaRawSender, MemoryRawSender, RawSender
from ingestion.simulator.report import Counts, SimulationReport
from ingestion.simulator.run import Broker, Simulation
from ingestion.simulator.sink import MemorySink, SentRecord, Sink

__all__ = [
    "Broker",
    "Counts",
    "Device",
    "FaultPlan",
    "FaultSpec",
    "Fleet",
    "FleetLayout",
    "FleetSpec",
    "Item",
    "KafkaRawSender",
    "MemoryRawSender",
    "MemorySink",
    "RawSender",
    "SentRecord",
    "Simulation",
    "SimulationReport",
    "Sink",
    "load_layout",
    "worker_audio",
]
