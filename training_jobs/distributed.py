"""This process's place in a training job: rank 0 of 1 alone, or one of N under torchrun.

Every rank reads the same rows and trains its equal share of each epoch (DDP over gloo on
CPU); rank 0 decides what is read and is the only one that talks to MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world


def start_distributed() -> Dist:
    """Join torchrun's process group when started by it (``WORLD_SIZE`` > 1), else rank 0 of 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only; no other interface is ours to use
    dist.init_process_group("gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def stop_distributed(dist: Dist) -> None:
    """Leave the process group (after the last collective call)."""
    if dist.world > 1:
        import torch.distributed

        torch.distributed.destroy_process_group()
