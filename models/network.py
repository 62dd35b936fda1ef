"""The SLIDR network: three fully connected layers, ReLU, L2 on the intermediate layers, sigmoid.

Preprocessing is part of the module, so what Triton serves is exactly what was trained:
heavy-tailed counters and gaps go through log1p, then every numeric feature is standardised
with the mean and deviation of the training rows (buffers, saved with the weights). The
categorical columns (hashed bucket ids, ``slidr.features.CATEGORICAL``) are looked up in one
small embedding table per field (learned representations, issue 14 item 3); their vectors join
the numeric ones before the first layer. Optionally a deep-and-cross block (DCN-v2 cross
layers) sits between that input and the hidden layers; docs/learning.md says which won.

Training is seeded and deterministic on a given machine, weighted (models/weights.py) and
stops early on a later day (time-based holdout, never shuffled rows).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from slidr.features import (
    CATEGORICAL_BUCKETS,
    CATEGORICAL_COLUMNS,
    FEATURES,
    HEAVY_TAILED,
    N_FEATURES,
    NUMERIC_COLUMNS,
)
from slidr.settings import LearnSettings

log = logging.getLogger(__name__)


def embedding_dim(buckets: int) -> int:
    """Width of a field's embedding: 4 for small vocabularies, 8 for large ones."""
    return 4 if buckets <= 1024 else 8


class CrossLayer(nn.Module):
    """One DCN-v2 cross layer: ``x0 * (W x + b) + x`` (Wang et al., 2021)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x0 * self.linear(x) + x
        return out


class SlidrNet(nn.Module):
    log_mask: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    numeric: torch.Tensor
    categorical: torch.Tensor
    top_bucket: torch.Tensor

    def __init__(
        self,
        hidden: tuple[int, int],
        *,
        embeddings: bool | Sequence[str] = True,
        cross_layers: int = 0,
    ) -> None:
        """``embeddings``: embed every categorical field (True), none (False), or these (by
        feature name)."""
        super().__init__()
        mask = torch.zeros(N_FEATURES, dtype=torch.bool)
        mask[list(HEAVY_TAILED)] = True
        numeric = list(NUMERIC_COLUMNS)
        self.register_buffer("log_mask", mask[numeric])
        self.register_buffer("mean", torch.zeros(len(numeric)))
        self.register_buffer("std", torch.ones(len(numeric)))
        self.register_buffer("numeric", torch.tensor(numeric, dtype=torch.long))
        if embeddings is True or embeddings is False:
            chosen = list(CATEGORICAL_COLUMNS) if embeddings else []
        else:
            unknown = set(embeddings) - {FEATURES[c] for c in CATEGORICAL_COLUMNS}
            if unknown:
                raise ValueError(f"not categorical features: {sorted(unknown)}")
            chosen = [c for c in CATEGORICAL_COLUMNS if FEATURES[c] in set(embeddings)]
        fields = chosen
        buckets = [CATEGORICAL_BUCKETS[CATEGORICAL_COLUMNS.index(c)] for c in chosen]
        self.register_buffer("categorical", torch.tensor(fields, dtype=torch.long))
        self.register_buffer("top_bucket", torch.tensor([b - 1 for b in buckets]).float())
        # Zero at the start: a bucket no training click had (a new ad) adds nothing, instead of
        # a random vector.
        self.embeddings = nn.ModuleList(nn.Embedding(b, embedding_dim(b)) for b in buckets)
        # Per field, the buckets training saw often enough to learn (fit_vocabulary); the
        # others read bucket 0, the "none" row, as an unseen value does.
        for i, b in enumerate(buckets):
            self.register_buffer(f"known{i}", torch.ones(b, dtype=torch.bool))
        for table in self.embeddings:
            assert isinstance(table, nn.Embedding)
            nn.init.zeros_(table.weight)
        width = len(numeric) + sum(embedding_dim(b) for b in buckets)
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cross_layers))
        self.hidden1 = nn.Linear(width, hidden[0])
        self.hidden2 = nn.Linear(hidden[0], hidden[1])
        self.output = nn.Linear(hidden[1], 1)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised numeric columns, then each categorical field's embedding."""
        z = x.index_select(1, self.numeric)
        z = torch.where(self.log_mask, torch.log1p(torch.clamp(z, min=0.0)), z)
        parts = [(z - self.mean) / self.std]
        if len(self.embeddings):
            # Ids outside [0, buckets) (a corrupt row) read the nearest valid bucket.
            ids = x.index_select(1, self.categorical).clamp(min=0.0)
            ids = torch.minimum(ids, self.top_bucket).long()
            for i, table in enumerate(self.embeddings):
                field = ids[:, i]
                known = getattr(self, f"known{i}")
                parts.append(table(torch.where(known[field], field, torch.zeros_like(field))))
        return torch.cat(parts, dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h = self.preprocess(x)
        x0 = h
        for layer in self.cross:
            h = layer(x0, h)
        h = torch.relu(self.hidden1(h))
        h = torch.relu(self.hidden2(h))
        out: torch.Tensor = self.output(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P(robotic) as [batch, 1], the shape Triton's config declares."""
        return torch.sigmoid(self.logits(x))

    def fit_standardisation(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            z = x.index_select(1, self.numeric)
            z = torch.where(self.log_mask, torch.log1p(torch.clamp(z, min=0.0)), z)
            self.mean.copy_(z.mean(dim=0))
            self.std.copy_(z.std(dim=0).clamp(min=1e-6))

    def fit_vocabulary(self, x: torch.Tensor, min_rows: int) -> None:
        """Keep the buckets of each embedded field with at least ``min_rows`` training rows."""
        with torch.no_grad():
            ids = x.index_select(1, self.categorical).clamp(min=0.0)
            ids = torch.minimum(ids, self.top_bucket).long()
            for i, table in enumerate(self.embeddings):
                assert isinstance(table, nn.Embedding)
                counts = torch.bincount(ids[:, i], minlength=table.num_embeddings)
                known = counts >= min_rows
                known[0] = True
                getattr(self, f"known{i}").copy_(known)

    def l2_penalty(self) -> torch.Tensor:
        """L2 on the weights of the intermediate (hidden) layers, as in the article, and on the
        embeddings (a rare bucket's vector stays small)."""
        penalty = self.hidden1.weight.pow(2).sum() + self.hidden2.weight.pow(2).sum()
        for table in self.embeddings:
            assert isinstance(table, nn.Embedding)
            penalty = penalty + table.weight.pow(2).sum()
        return penalty

    def describe(self) -> str:
        """The architecture in a line (metadata, reports)."""
        parts = [f"{len(self.numeric)} numeric"]
        if len(self.embeddings):
            names = [FEATURES[int(c)] for c in self.categorical]
            parts.append(f"embeddings of {', '.join(names)}")
        if len(self.cross):
            parts.append(f"{len(self.cross)} cross layers")
        return (
            f"{' + '.join(parts)} -> {self.hidden1.out_features}"
            f" -> {self.hidden2.out_features} -> 1"
        )


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
    net = SlidrNet(learn.hidden, embeddings=learn.embeddings, cross_layers=learn.cross_layers)
    x, y, w = (torch.from_numpy(a) for a in (fit.x, fit.y, fit.w))
    xs, ys, ws = (torch.from_numpy(a) for a in (stop.x, stop.y, stop.w))
    net.fit_standardisation(x)
    net.fit_vocabulary(x, learn.min_bucket_rows)
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
