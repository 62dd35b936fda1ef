"""Every slice its own threshold at any volume: its FPR curve shrunk toward its parent's.

A slice's FPR at a threshold rests on its own few purchasing clicks (at 30,000 clicks a day,
20-200 per slice). Instead of pooling a small slice into its parent (one shared threshold),
each slice's FPR curve is a convex combination of its own and its parent's (itself shrunk
toward the root, "desktop/in" -> "desktop" -> "all"):

    FPR~_s(t) = lambda_s FPR_s(t) + (1 - lambda_s) FPR~_parent(t),   lambda_s = n_s / (n_s + m)

the posterior mean of a beta-binomial model whose prior is centred on the parent and holds
``m`` pseudo-clicks. ``n_s`` is the slice's (effective) number of stand-in clicks; ``m`` is
estimated per level by the method of moments (empirical Bayes): the spread of the slices'
own FPRs around their parents' at a reference threshold, less the binomial noise expected on
``n_s`` clicks, is the between-slice variance ``tau^2``, and ``m = p (1 - p) / tau^2 - 1``
(capped at ``max_prior_strength``). Slices that differ get little shrinkage, slices that
do not (or cannot be told apart on so few clicks) lean on their parent. IVR and coverage stay
each slice's own (thousands of clicks). Each slice then gets its own threshold from the same
convex problem, cautious where its evidence is thin.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from slidr.metrics import Curve, Floats, effective_size
from slidr.slices import ROOT_SLICE, slice_ancestors


@dataclass(frozen=True)
class _Node:
    scores: Floats  # descending
    cumulative: Floats  # weight of the clicks with score >= scores[i]
    total: float
    n: float  # effective number of stand-ins

    def own(self, t: Floats) -> Floats:
        """Weighted share of stand-ins with score >= t."""
        if self.total <= 0:
            return np.zeros_like(t)
        k = np.searchsorted(-self.scores, -t, side="right")
        covered = np.where(k > 0, self.cumulative[np.maximum(k - 1, 0)], 0.0)
        out: Floats = covered / self.total
        return out


@dataclass(frozen=True)
class Shrinkage:
    """The fitted prior strength per level and each node's own weight (lambda)."""

    strength: dict[int, float]
    weight: dict[str, float]
    nodes: dict[str, _Node]
    parent: dict[str, str]

    def fpr(self, name: str, t: Floats) -> Floats:
        own = self.nodes[name].own(t)
        if name == ROOT_SLICE:
            return own
        lam = self.weight[name]
        out: Floats = lam * own + (1 - lam) * self.fpr(self.parent[name], t)
        return out

    def shrink(self, name: str, c: Curve) -> Curve:
        """``c`` (a slice's own curve) with its FPR axis shrunk toward the parent."""
        t = c.thresholds
        fpr = self.fpr(name, t)
        fpr[0] = 0.0  # the +inf threshold invalidates nothing
        return replace(c, fpr=np.maximum.accumulate(fpr))


def _node(score: Floats, weight: Floats) -> _Node:
    order = np.argsort(-score, kind="stable")
    chosen = weight[order] > 0
    s, w = score[order][chosen], weight[order][chosen]
    return _Node(s, np.cumsum(w), float(w.sum()), effective_size(w))


def _depth(name: str) -> int:
    return 0 if name == ROOT_SLICE else name.count("/") + 1


def fit_shrinkage(
    frame: pd.DataFrame, weight: Floats, reference: float, max_strength: float
) -> Shrinkage:
    """Nodes for every slice of ``frame`` and its ancestors; the prior strength per level,
    estimated at the score threshold where all clicks reach the FPR ``reference``."""
    score = frame["score"].to_numpy(dtype=np.float64)
    slices = frame["slice"].astype(str).to_numpy()
    parent: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for leaf in sorted(set(slices)):
        chain = list(slice_ancestors(leaf))
        for child, up in itertools.pairwise(chain):
            parent[child] = up
        for node in chain:
            members.setdefault(node, []).append(leaf)
    nodes = {}
    for name, leaves in members.items():
        rows = np.isin(slices, leaves)
        nodes[name] = _node(score[rows], weight[rows])
    # The reference threshold: where all clicks reach the reference FPR.
    root = nodes[ROOT_SLICE]
    reached = int(
        np.searchsorted(root.cumulative / max(root.total, 1e-12), reference, side="right")
    )
    t_ref = np.array([root.scores[min(max(reached - 1, 0), len(root.scores) - 1)]])
    shrinkage = Shrinkage({}, {ROOT_SLICE: 1.0}, nodes, parent)
    for depth in sorted({_depth(n) for n in nodes if n != ROOT_SLICE}):
        level = [n for n in nodes if _depth(n) == depth]
        own = np.array([float(nodes[n].own(t_ref)[0]) for n in level])
        prior = np.array([float(shrinkage.fpr(parent[n], t_ref)[0]) for n in level])
        size = np.array([max(nodes[n].n, 1.0) for n in level])
        noise = float(np.mean(prior * (1 - prior) / size))
        tau2 = float(np.mean((own - prior) ** 2)) - noise
        p = float(np.mean(prior))
        m = max_strength if tau2 <= 0 else min(max(p * (1 - p) / tau2 - 1, 0.0), max_strength)
        shrinkage.strength[depth] = m
        for name in level:
            n = nodes[name].n
            shrinkage.weight[name] = n / (n + m) if n + m > 0 else 0.0
    return shrinkage
