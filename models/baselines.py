"""The baselines the network is measured against, trained on the same rows and weights.

- logistic regression and the velocity heuristic: the article's baselines;
- histogram gradient-boosted trees: what usually wins on tabular click data, so the network
  is held to an honest standard.

Both see the categorical ids the network embeds, in the form each handles fairly: logistic
regression one-hot encodes them (a value seen fewer than ``MIN_FREQUENCY`` times in the fit
rows shares one "infrequent" column; one never seen is all zeros), boosted trees split on them
as categories (scikit-learn takes at most 255 categories a feature: the 254 most frequent of
the fit rows keep their own, the others are one "other" category).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from models.heuristic import velocity_score
from models.network import Split
from slidr.features import CATEGORICAL_COLUMNS, HEAVY_TAILED, NUMERIC_COLUMNS

Scores = npt.NDArray[np.float32]


#: Feature rows -> P(robotic).
Scorer = Callable[[npt.NDArray[np.float32]], Scores]


#: One-hot: a categorical value needs this many fit rows for a column of its own, as a bucket
#: needs for an embedding of its own (``learn.min_bucket_rows``). 200 against 5: better on
#: both simulated validation seeds and TalkingData-format data, and 2-5x faster to fit
#: (docs/learning.md).
MIN_FREQUENCY = 200
#: Boosted trees: categories a feature keeps (scikit-learn's limit is 255, one is "other").
TREE_CATEGORIES = 254

#: log1p on these numeric columns (positions among NUMERIC_COLUMNS).
_HEAVY = [NUMERIC_COLUMNS.index(i) for i in HEAVY_TAILED]


def _compress(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """log1p on the heavy-tailed columns of the numeric columns, as the network does."""
    out = np.array(x, dtype=np.float32, copy=True)
    out[:, _HEAVY] = np.log1p(np.clip(out[:, _HEAVY], 0.0, None))
    return out


def _probability(model: Pipeline | HistGradientBoostingClassifier) -> Scorer:
    def score(x: npt.NDArray[np.float32]) -> Scores:
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float32)

    return score


def logistic_regression(
    fit: Split, seed: int, *, categorical: Sequence[int] = CATEGORICAL_COLUMNS
) -> Scorer:
    """``categorical``: the categorical id columns to one-hot encode (the others are left out)."""
    numeric = make_pipeline(FunctionTransformer(_compress), StandardScaler())
    parts: list[tuple[str, object, list[int]]] = [("numeric", numeric, list(NUMERIC_COLUMNS))]
    if categorical:
        onehot = OneHotEncoder(handle_unknown="ignore", min_frequency=MIN_FREQUENCY)
        parts.append(("categorical", onehot, list(categorical)))
    model = make_pipeline(
        ColumnTransformer(parts, sparse_threshold=0.3),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    model.fit(fit.x, fit.y, logisticregression__sample_weight=fit.w)
    return _probability(model)


class _TopCategories:
    """Each categorical column's values as codes 0..TREE_CATEGORIES - 1 by frequency in the fit
    rows; every other value (rarer, or unseen) is the code TREE_CATEGORIES."""

    def __init__(self, x: npt.NDArray[np.float32], columns: list[int]) -> None:
        self.columns = columns
        self.kept: list[npt.NDArray[np.float32]] = []
        for c in columns:
            values, counts = np.unique(x[:, c], return_counts=True)
            top = values[np.argsort(-counts, kind="stable")[:TREE_CATEGORIES]]
            self.kept.append(top)

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = np.array(x, dtype=np.float32, copy=True)
        for c, kept in zip(self.columns, self.kept, strict=True):
            order = np.argsort(kept)
            ranked = kept[order]
            at = np.clip(np.searchsorted(ranked, x[:, c]), 0, max(len(ranked) - 1, 0))
            found = ranked[at] == x[:, c] if len(ranked) else np.zeros(len(x), dtype=bool)
            out[:, c] = np.where(found, order[at], TREE_CATEGORIES)
        return out


def boosted_trees(
    fit: Split, seed: int, *, categorical: Sequence[int] = CATEGORICAL_COLUMNS
) -> Scorer:
    """``categorical``: the categorical id columns to split on as categories (the others are
    left out)."""
    # Trees do not care about scale; early stopping off so the split is the same as the others'.
    columns = list(categorical)
    keep = list(NUMERIC_COLUMNS) + columns
    codes = _TopCategories(fit.x, columns)
    model = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        early_stopping=False,
        random_state=seed,
        categorical_features=[keep.index(c) for c in columns] or None,
    )
    model.fit(codes(fit.x)[:, keep], fit.y, sample_weight=fit.w)

    def score(x: npt.NDArray[np.float32]) -> Scores:
        return np.asarray(model.predict_proba(codes(x)[:, keep])[:, 1], dtype=np.float32)

    return score


def velocity_heuristic(x: npt.NDArray[np.float32]) -> Scores:
    return velocity_score(x)
