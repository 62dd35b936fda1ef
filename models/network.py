"""The SLIDR network: three fully connected layers, ReLU, L2 on the intermediate layers, sigmoid.

Preprocessing is part of the module, so what Triton serves is exactly what was trained:
heavy-tailed counters and gaps go through log1p, then every feature is standardised with the
mean and deviation of the training rows (buffers, saved with the weights).

Training is seeded and deterministic on a given machine, weighted (models/weights.py) and
stops early on a later day (time-based holdout, never shuffled rows).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from slidr.features import HEAVY_TAILED, N_FEATURES
from slidr.settings import LearnSettings

log = logging.getLogger(__name__)


class SlidrNet(nn.Module):
    log_mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, hidden: tuple[int, int]) -> None:
        super().__init__()
        mask = torch.zeros(N_FEATURES, dtype=torch.bool)
        mask[list(HEAVY_TAILED)] = True
        self.register_buffer("log_mask", mask)
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))
        self.hidden1 = nn.Linear(N_FEATURES, hidden[0])
        self.hidden2 = nn.Linear(hidden[0], hidden[1])
        self.output = nn.Linear(hidden[1], 1)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(self.log_mask, torch.log1p(torch.clamp(x, min=0.0)), x)
        return (x - self.mean) / self.std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden1(self.preprocess(x)))
        h = torch.relu(self.hidden2(h))
        out: torch.Tensor = self.output(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(robotic) as [batch, 1], the shape Triton's config declares."""
        return torch.sigmoid(self.logits(x))

    def fit_standardisation(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            z = torch.where(self.log_mask, torch.log1p(torch.clamp(x, min=0.0)), x)
            self.mean.copy_(z.mean(dim=0))
            self.std.copy_(z.std(dim=0).clamp(min=1e-6))

    def l2_penalty(self) -> torch.Tensor:
        """L2 on the weights of the intermediate (hidden) layers, as in the article."""
        return self.hidden1.weight.pow(2).sum() + self.hidden2.weight.pow(2).sum()


@dataclass(frozen=True)
class Split:
    """Rows of one side of a time split: features, labels (1 = robotic) and sample weights."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    w: npt.NDArray[np.float32]


@dataclass
class TrainedNetwork:
    module: SlidrNet
    epochs: int
    best_epoch: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def _loss(net: SlidrNet, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    per_row = nn.functional.binary_cross_entropy_with_logits(
        net.logits(x).squeeze(1), y, reduction="none"
    )
    return (per_row * w).sum() / w.sum()


def train_network(
    fit: Split,
    stop: Split,
    learn: LearnSettings,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> TrainedNetwork:
    """Fit on ``fit``; keep the weights of the epoch with the lowest weighted loss on ``stop``."""
    started = time.perf_counter()
    # One thread: this small network gains nothing from more, and loses a lot when the
    # machine's other cores are busy (Kafka, Triton, the worker share them).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(fit, stop, learn, on_epoch, started)
    finally:
        torch.set_num_threads(threads)


def _train(
    fit: Split,
    stop: Split,
    learn: LearnSettings,
    on_epoch: Callable[[int, float, float], None] | None,
    started: float,
) -> TrainedNetwork:
    torch.manual_seed(learn.seed)
    generator = torch.Generator().manual_seed(learn.seed)
    net = SlidrNet(learn.hidden)
    x, y, w = (torch.from_numpy(a) for a in (fit.x, fit.y, fit.w))
    xs, ys, ws = (torch.from_numpy(a) for a in (stop.x, stop.y, stop.w))
    net.fit_standardisation(x)
    optimiser = torch.optim.Adam(net.parameters(), lr=learn.learning_rate)
    best = (float("inf"), 0, copy.deepcopy(net.state_dict()))
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, learn.max_epochs + 1):
        net.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(order), learn.batch_size):
            idx = order[start : start + learn.batch_size]
            loss = _loss(net, x[idx], y[idx], w[idx]) + learn.l2 * net.l2_penalty()
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            holdout = float(_loss(net, xs, ys, ws))
        history.append({"epoch": epoch, "train_loss": total / len(order), "holdout_loss": holdout})
        if on_epoch is not None:
            on_epoch(epoch, total / len(order), holdout)
        if holdout < best[0] - 1e-5:
            best = (holdout, epoch, copy.deepcopy(net.state_dict()))
        elif epoch - best[1] >= learn.patience:
            break
    net.load_state_dict(best[2])
    net.eval()
    return TrainedNetwork(
        module=net,
        epochs=epoch,
        best_epoch=best[1],
        seconds=time.perf_counter() - started,
        history=history,
    )


def predict(
    net: nn.Module, x: npt.NDArray[np.float32], batch: int = 65536
) -> npt.NDArray[np.float32]:
    """P(robotic) per row, in-process."""
    out = np.empty(len(x), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch]))
            out[start : start + batch] = net(chunk).reshape(-1).numpy()
    return out
