"""Edge budgets: the file a device runs against each target fleet's size and latency budget.

The p99 is measured here, batch 1 on one ONNX Runtime thread (the manifest's figure was
measured on the training machine, at training time; this one is measured when judged).
"""

from __future__ import annotations

from actuation.contract import Check, Fleet


def checks(size: int, p99_us: float, fleets: list[Fleet]) -> list[Check]:
    found = []
    for fleet in fleets:
        found.append(
            Check.measure(
                f"edge.{fleet.name}.bytes",
                "edge",
                size,
                "<=",
                fleet.max_model_bytes,
                "bytes",
                f"the int8 ONNX file against {fleet.name}'s max_model_bytes (actuation/fleets.toml)",
            )
        )
        found.append(
            Check.measure(
                f"edge.{fleet.name}.p99_us",
                "edge",
                p99_us,
                "<=",
                fleet.max_p99_us,
                "µs",
                f"p99 at batch 1 on one thread, measured now, against {fleet.name}'s max_p99_us",
            )
        )
    return found
