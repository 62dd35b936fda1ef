"""The baselines the network is measured against, trained on the same rows and weights.

- logistic regression and the velocity heuristic: the article's baselines;
- histogram gradient-boosted trees: what usually wins on tabular click data, so the network
  is held to an honest standard.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from models.heuristic import velocity_score
from models.network import Split
from slidr.features import HEAVY_TAILED

Scores = npt.NDArray[np.float32]


#: Feature rows -> P(robotic).
Scorer = Callable[[npt.NDArray[np.float32]], Scores]


def _compress(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """log1p on the heavy-tailed columns, as the network does."""
    out = np.array(x, dtype=np.float32, copy=True)
    cols = list(HEAVY_TAILED)
    out[:, cols] = np.log1p(np.clip(out[:, cols], 0.0, None))
    return out


def _probability(model: Pipeline | HistGradientBoostingClassifier) -> Scorer:
    def score(x: npt.NDArray[np.float32]) -> Scores:
        return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float32)

    return score


def logistic_regression(fit: Split, seed: int) -> Scorer:
    model = make_pipeline(
        FunctionTransformer(_compress),
        StandardScaler(),
        LogisticRegression(max_iter=2000, random_state=seed),
    )
    model.fit(fit.x, fit.y, logisticregression__sample_weight=fit.w)
    return _probability(model)


def boosted_trees(fit: Split, seed: int) -> Scorer:
    # Trees do not care about scale; early stopping off so the split is the same as the others'.
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, early_stopping=False, random_state=seed
    )
    model.fit(fit.x, fit.y, sample_weight=fit.w)
    return _probability(model)


def velocity_heuristic(x: npt.NDArray[np.float32]) -> Scores:
    return velocity_score(x)
