"""Raw worker audio of a plant site: the secret stream the edge keeps and releases only as DP aggregates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from ingestion.simulator.device import DEVICE_STREAM


def worker_audio(site: str, workers: int, start: datetime, seconds: float, seed: int = 0) -> list[dict[str, Any]]:
    """Raw worker-audio features of a plant site, one reading per worker and second.

    Secret data: what the site's edge keeps and releases only as DP aggregates
    (:mod:`refinement.edge`); the edge SDK refuses to send it.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(DEVICE_STREAM + 7,)))
    t0 = int(start.timestamp() * 1000)
    base = rng.normal(82, 6, workers)  # dB: loud shop floor, some near the furnace
    return [
        {
            "site": site,
            "worker_id": f"w-{site}-{w:03d}",
            "ts": t0 + s * 1000,
            "db_level": round(float(base[w] + rng.normal(0, 3)), 2),
            "mfcc": [round(float(x), 3) for x in rng.normal(0, 1, 13)],
        }
        for s in range(int(seconds))
        for w in range(workers)
    ]
