"""The networks: every model maps a float32 ``features`` matrix ``[N, D]`` to ``[N, K]``.

Each model carries what it needs to be used on a device as buffers (input normalization,
the out-of-distribution or anomaly calibration), so its ONNX export is self-contained:
the edge agent feeds raw gold-style features and reads scores; nothing else ships.

* :class:`LongitudinalNet` (``vehicle-longitudinal``): column 0 is the longitudinal
  acceleration to command (m/s²), column 1 an out-of-distribution score in [0, 1): the
  Mahalanobis distance ``d`` of the input from the training features, as ``d / (d + q99)``
  with ``q99`` the training set's 99th percentile of ``d``. 0.5 means "as far out as the
  rarest 1 % of training inputs"; the guardrails threshold it.
* :class:`AnomalyNet` (``plant-anomaly``): one column, an anomaly score in [0, 1) made the
  same way from a reconstruction error (teacher: an autoencoder; student: a small MLP that
  learned to predict the teacher's error, so it needs no decoder on the device).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Calibrated(nn.Module):
    """Shared buffers: input mean/std, and the 99th-percentile distance used to squash scores."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("q99", torch.ones(()))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def fit_normalization(self, x: torch.Tensor) -> None:
        """Mean and std per feature; a feature constant in training keeps std 1, so an unseen
        value of it moves the input by its difference, not by a million standard deviations."""
        std = x.std(0) if x.shape[0] > 1 else torch.ones(x.shape[1])
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def squash(self, distance: torch.Tensor) -> torch.Tensor:
        return distance / (distance + self.q99)


class LongitudinalNet(Calibrated):
    """Acceleration regressor with a built-in Mahalanobis OOD score; see the module docstring.

    The network learns a correction to persistence: its command is the current acceleration
    (feature ``persistence_index``) plus what the MLP adds. Untrained it does what a
    driver's foot already does, and each step of learning is judged against that, so a
    small fleet's few rows cannot leave it worse than doing nothing by much.

    The ``decreasing`` features (more road users in view, harder braking now) never raise
    the command, by construction rather than by hope: they bypass the MLP and enter through
    a linear term whose weights are ``-softplus(w)`` (never positive), on inputs normalized
    by a positive std. The command saturates at ``command_range``, the actuator's. Learned
    freely, the student did raise its command by 0.12 m/s² for more road users, and the
    guardrails' property check refused it.

    The correction (MLP plus that linear term) passes through ``c·tanh(·/c)`` with
    ``c = max_correction``: it stays within ±c, so between two frames the command moves at
    most 2c beyond the measured acceleration's own move, and tanh, increasing, keeps the
    ``decreasing`` features from raising it. Unbounded, a student's worst step on held-out
    sequences depended on which devices the holdout drew and crossed the runtime limit
    (3.1 against 2 m/s² per frame) on a fresh home.
    """

    outputs = ("accel_mps2", "ood_score")

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...],
        persistence_index: int,
        decreasing: tuple[int, ...] = (),
        command_range: tuple[float, float] = (-float("inf"), float("inf")),
        max_correction: float = float("inf"),
    ) -> None:
        super().__init__(dim)
        self.persistence_index = persistence_index
        self.command_range = command_range
        self.max_correction = max_correction
        free = [i for i in range(dim) if i not in set(decreasing)]
        self.register_buffer("free_index", torch.tensor(free, dtype=torch.long))
        self.register_buffer("decreasing_index", torch.tensor(sorted(decreasing), dtype=torch.long))
        self.body = mlp([len(free), *hidden, 1])
        # softplus(-5) = 0.007: untrained, the term is next to nothing (persistence, as above)
        self.decreasing_weight = nn.Parameter(torch.full((len(decreasing),), -5.0))
        self.register_buffer("precision", torch.eye(dim))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalize(x)
        d2 = ((z @ self.precision) * z).sum(-1, keepdim=True)
        return torch.sqrt(torch.clamp(d2, min=0.0))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        current = x[:, self.persistence_index : self.persistence_index + 1]
        z = self.normalize(x)
        correction = self.body(z.index_select(1, self.free_index))
        if self.decreasing_index.numel():
            slope = nn.functional.softplus(self.decreasing_weight)
            correction = correction - (z.index_select(1, self.decreasing_index) * slope).sum(-1, keepdim=True)
        if self.max_correction != float("inf"):
            correction = self.max_correction * torch.tanh(correction / self.max_correction)
        out = current + correction
        # the actuator cannot do more: a command past its range is one the network saturates,
        # not one a safety monitor has to catch (persistence at the range's edge plus a
        # correction left it 1/3 of the guardrails' boundary scenarios)
        return out.clamp(*self.command_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.predict(x), self.squash(self.distance(x))], dim=-1)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Normalization and OOD statistics from the training features."""
        self.fit_normalization(x)
        self.calibrate_ood(x)

    @torch.no_grad()
    def calibrate_ood(self, x: torch.Tensor) -> None:
        z = self.normalize(x)
        cov = torch.cov(z.T) if z.shape[0] > 1 else torch.eye(z.shape[1])
        # Shrinkage keeps the inverse stable when features are collinear (window overlap makes them so).
        cov = 0.9 * cov + 0.1 * torch.eye(cov.shape[0])
        self.precision.copy_(torch.linalg.inv(cov))
        self.q99.copy_(torch.quantile(self.distance(x).squeeze(-1), 0.99).clamp(min=1e-6))


class AnomalyNet(Calibrated):
    """Anomaly score from a reconstruction error (teacher) or a learned estimate of it (student)."""

    outputs = ("anomaly_score",)

    def __init__(self, dim: int, hidden: tuple[int, ...], autoencoder: bool) -> None:
        super().__init__(dim)
        self.autoencoder = autoencoder
        # The teacher reconstructs its input; the student regresses the teacher's log error.
        self.body = mlp([dim, *hidden, dim] if autoencoder else [dim, *hidden, 1])

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction error per row (teacher) or the student's estimate of it; ``[N, 1]``, ≥ 0."""
        z = self.normalize(x)
        if self.autoencoder:
            return ((self.body(z) - z) ** 2).mean(-1, keepdim=True)
        return torch.expm1(nn.functional.softplus(self.body(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squash(self.error(x))

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        self.fit_normalization(x)

    @torch.no_grad()
    def calibrate_score(self, x: torch.Tensor) -> None:
        self.q99.copy_(torch.quantile(self.error(x).squeeze(-1), 0.99).clamp(min=1e-9))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
