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


def velocity_score(features: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scores for a [n, N_FEATURES] matrix, in [0, 1]."""
    index = np.asarray([INDEX[name] for name in VELOCITY_LIMITS])
    limits = np.asarray(list(VELOCITY_LIMITS.values()), dtype=np.float32)
    ratio = (features[:, index] / limits).max(axis=1)
    scores: npt.NDArray[np.float32] = np.clip(ratio / 2.0, 0.0, 1.0).astype(np.float32)
    return scores
