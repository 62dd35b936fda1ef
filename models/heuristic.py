"""The velocity heuristic: the article's rule-based baseline and slidr's day-zero model.

A click scores by how far its fastest velocity counter is past that counter's limit: exactly
at a limit it scores 0.5, twice the limit or more 1.0. The same formula runs inside Triton
(triton_repo/slidr/model.py, fed from ``heuristic.json``); a test checks both agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from slidr.features import FEATURE_HASH, INDEX

#: Clicks in a window past which a click looks robotic.
VELOCITY_LIMITS: dict[str, float] = {
    "session_clicks_1m": 6.0,
    "session_clicks_1h": 40.0,
    "customer_clicks_1h": 60.0,
    "ip_clicks_1m": 30.0,
    "ip_clicks_1h": 400.0,
}


def heuristic_spec() -> dict[str, object]:
    """What ``heuristic.json`` holds: limits keyed by feature index, and the feature hash."""
    return {
        "feature_hash": FEATURE_HASH,
        "limits": {str(INDEX[name]): limit for name, limit in VELOCITY_LIMITS.items()},
        "names": list(VELOCITY_LIMITS),
    }


def limit_scores(
    spec: dict[str, object], features: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Scores in [0, 1] of a [n, N_FEATURES] matrix under the limits of a ``heuristic.json``."""
    limits = spec["limits"]
    assert isinstance(limits, dict)
    index = np.asarray([int(i) for i in limits], dtype=np.int64)
    limit = np.asarray(list(limits.values()), dtype=np.float32)
    ratio = (features[:, index] / limit).max(axis=1)
    scores: npt.NDArray[np.float32] = np.clip(ratio / 2.0, 0.0, 1.0).astype(np.float32)
    return scores


def velocity_score(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scores of the day-zero limits (VELOCITY_LIMITS)."""
    return limit_scores(heuristic_spec(), features)
