"""Features for clicks in any order (a replay's range, an offline dataset), by the live code.

The worker sees clicks in the order they arrive; anyone else feeds them in the store's
processing order (event time, then click), batch by batch as the worker would, so the vectors
are the ones the live pipeline would have served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from slidr.events import Click
from slidr.features import N_FEATURES
from streams.feature_store.batch import processing_order
from streams.feature_store.store import FeatureStore


async def featurize(
    clicks: Sequence[Click], store: FeatureStore, batch_size: int = 1000
) -> npt.NDArray[np.float32]:
    """Vectors for clicks in any order: fed in the store's processing order, batch by batch as
    the worker would, and returned in the order given."""
    order = sorted(range(len(clicks)), key=lambda i: processing_order(clicks[i]))
    out = np.empty((len(clicks), N_FEATURES), dtype=np.float32)
    for start in range(0, len(clicks), batch_size):
        part = order[start : start + batch_size]
        out[part] = await store.features([clicks[i] for i in part])
    return out
