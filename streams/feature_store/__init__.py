"""The feature store of the scoring path: Redis state per active entity, one script call per
node per batch, on a single node or a Redis Cluster (docs/redis-keys.md)."""

from streams.feature_store.batch import element_id, epoch_ms, local_features
from streams.feature_store.store import (
    ENTITY_TTL_S,
    FeatureStore,
    FeatureStoreUnavailable,
    NodeMemory,
    RedisFeatureStore,
)

__all__ = [
    "ENTITY_TTL_S",
    "FeatureStore",
    "FeatureStoreUnavailable",
    "NodeMemory",
    "RedisFeatureStore",
    "element_id",
    "epoch_ms",
    "local_features",
]
