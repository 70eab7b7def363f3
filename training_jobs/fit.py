"""The training loop both networks go through: Adam over a seeded shuffle, shared among ranks.

:class:`Objective` turns a loss into a module DDP can wrap (the teacher's loss, or the
student's against a frozen teacher); :func:`fit` runs it for some epochs. Seeded and
deterministic on CPU: the same rows, seed and number of ranks give the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from training_jobs.distributed import Dist

Loss = Callable[[nn.Module, "nn.Module | None", torch.Tensor, torch.Tensor], torch.Tensor]


class Objective(nn.Module):
    """``loss(model, frozen, x, y)`` as a module whose forward DDP can wrap.

    Only ``model``'s parameters are trained: ``frozen`` (a teacher to distil from) is kept
    out of the module tree, so neither the optimizer nor DDP sees its parameters.
    """

    def __init__(self, loss: Loss, model: nn.Module, frozen: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.model = model
        self._frozen = (frozen,)  # a tuple: not a submodule, so its parameters are not trained

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(self.model, self._frozen[0], x, y)


def fit(
    objective: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    dist: Dist,
    on_epoch: Callable[[int, float], None],
) -> list[float]:
    """Adam over this rank's equal share of a seeded shuffle each epoch; mean loss per epoch.

    Args:
        objective: an :class:`Objective` (its parameters are the ones trained).
        x, y: every rank's full training rows; each epoch a rank takes its share of them.
        epochs, batch, lr: epochs, global batch size (split among ranks), Adam's learning rate.
        seed: seeds each epoch's shuffle (``seed * 1000 + epoch``).
        dist: this process's place in the job.
        on_epoch: called with (epoch, mean loss over all ranks) after each epoch.
    """
    module: nn.Module = objective
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(objective, forward_sync_buffers=False)
    opt = torch.optim.Adam(objective.parameters(), lr=lr)
    share = len(y) // dist.world  # every rank takes as many steps as the others, or DDP would wait forever
    per_rank = max(1, batch // dist.world)
    losses = []
    for epoch in range(epochs):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(y), generator=g)[dist.rank * share : (dist.rank + 1) * share]
        total = 0.0
        module.train()
        for start in range(0, share, per_rank):
            idx = order[start : start + per_rank]
            loss = module(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(dist.mean(total / max(share, 1)))
        on_epoch(epoch, losses[-1])
    module.eval()
    return losses
