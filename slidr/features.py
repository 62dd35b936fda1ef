"""The one definition of the model's input: an ordered feature list and its stable hash.

The serving path, training data and replay all build vectors in this order. The hash is stored
with every model version; a worker refuses a model whose hash differs from this one.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime

#: Velocity windows in seconds: 1 minute, 10 minutes, 1 hour, 24 hours.
WINDOWS_S: tuple[int, ...] = (60, 600, 3600, 86400)
WINDOW_NAMES: tuple[str, ...] = ("1m", "10m", "1h", "24h")
#: Entities whose click velocity is counted.
VELOCITY_ENTITIES: tuple[str, ...] = ("customer", "session", "ip")
#: "Seconds since the previous click" is capped here (and used when there is none).
MAX_GAP_S = 86400.0

#: Distinct counts, each (name, counted entity, of what).
DISTINCT_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("ip_distinct_sessions", "ip", "session"),
    ("ip_distinct_customers", "ip", "customer"),
    ("customer_distinct_ips", "customer", "ip"),
    ("ip_distinct_user_agents", "ip", "user_agent"),
)

TIME_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")


def _names() -> tuple[str, ...]:
    names: list[str] = []
    for entity in VELOCITY_ENTITIES:
        names += [f"{entity}_clicks_{w}" for w in WINDOW_NAMES]
    names += [f"{entity}_gap_s" for entity in VELOCITY_ENTITIES]
    names += [name for name, _, _ in DISTINCT_COUNTERS]
    names += list(TIME_FEATURES)
    names.append("logged_in")
    return tuple(names)


FEATURES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURES)}


def feature_hash(names: tuple[str, ...] = FEATURES) -> str:
    """A short stable digest of the ordered names and the windows that define them."""
    spec = "|".join(names) + f"|windows={','.join(map(str, WINDOWS_S))}|gap_cap={MAX_GAP_S}"
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


FEATURE_HASH = feature_hash()

#: Counters and gaps: non-negative and heavy-tailed; models compress them with log1p.
HEAVY_TAILED: tuple[int, ...] = tuple(
    i for i, name in enumerate(FEATURES) if name not in TIME_FEATURES and name != "logged_in"
)


def time_features(event_time: datetime) -> tuple[float, float, float, float]:
    """Hour of day and day of week on the unit circle, so 23:00 sits next to 00:00."""
    hour = event_time.hour + event_time.minute / 60.0
    dow = event_time.weekday() + hour / 24.0
    h = 2.0 * math.pi * hour / 24.0
    d = 2.0 * math.pi * dow / 7.0
    return (math.sin(h), math.cos(h), math.sin(d), math.cos(d))
