"""The feature store of the scoring path: Redis state per active entity, one script call per
node per batch, on a single node or a Redis Cluster (docs/redis-keys.md)."""

from streams.feature_store.batch import epoch_ms, local_features, processing_order, short_hash
from streams.feature_store.ordered import featurize
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
    "epoch_ms",
    "featurize",
    "local_features",
    "processing_order",
    "short_hash",
]
