"""The one definition of the model's input: a declarative feature spec.

The spec names what the feature store counts: click velocity per entity over time windows
(with the gap since the entity's previous click) and distinct counts of one click field per
entity. An entity is a tuple of click fields, so ``("ip", "advertiser_id")`` counts the clicks of
an IP on one advertiser. The ordered feature list and its hash are derived from the spec; the
Redis store (``streams.feature_store``), the Lua script it runs, training data and the docs all
read it, so adding a counter is one line in :data:`SPEC`.

The hash is stored with every model version; a worker refuses a model whose hash differs.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime

#: "Seconds since the previous click" is capped here (and used when there is none).
MAX_GAP_S = 86400.0
#: A distinct count stops growing here: an entity keeps at most this many elements, so one
#: huge NAT or botnet IP cannot make its state (and each batch that reads it) unbounded.
DISTINCT_CAP = 512

TIME_FEATURES: tuple[str, ...] = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")


@dataclass(frozen=True)
class Window:
    """A sliding window ``(t - seconds, t]`` counted in ``tiles`` equal time tiles.

    More tiles mean a tighter error bound and more state per active entity
    (docs/redis-keys.md).
    """

    name: str
    seconds: int
    tiles: int
    tile_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seconds * 1000 % self.tiles:
            raise ValueError(f"window {self.name}: {self.tiles} tiles do not divide it in ms")
        object.__setattr__(self, "tile_ms", self.seconds * 1000 // self.tiles)


@dataclass(frozen=True)
class Entity:
    """Who is counted: the values of these click fields, together. A click whose value of any
    of them is missing (an anonymous click has no customer) has no such entity."""

    name: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Velocity:
    """``<entity>_clicks_<window>`` for each window, and ``<entity>_gap_s`` if ``gap``.

    The gap is capped at ``gap_cap_s`` (also its value when there is no previous click). An
    entity whose windows and gap cap are all short is kept only that long after its last
    click (plus an hour): pair entities are many, and most are seen once
    (docs/redis-keys.md, "Keys").
    """

    entity: Entity
    windows: tuple[Window, ...]
    gap: bool = True
    gap_cap_s: float = MAX_GAP_S


@dataclass(frozen=True)
class Distinct:
    """``name``: distinct values of click field ``counted`` seen with the entity in ``window``."""

    name: str
    entity: Entity
    counted: str
    window: Window


@dataclass(frozen=True)
class FeatureSpec:
    velocity: tuple[Velocity, ...]
    distinct: tuple[Distinct, ...]
    #: Derived, in model-input order: velocity counts, gaps, distinct counts, time, login.
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names: list[str] = []
        for v in self.velocity:
            names += [f"{v.entity.name}_clicks_{w.name}" for w in v.windows]
        names += [f"{v.entity.name}_gap_s" for v in self.velocity if v.gap]
        names += [d.name for d in self.distinct]
        names += [*TIME_FEATURES, "logged_in"]
        if len(set(names)) != len(names):
            raise ValueError("two features of the spec have the same name")
        object.__setattr__(self, "names", tuple(names))

    def horizon_s(self, entity: Entity) -> float:
        """How far back anything counted for the entity looks: its longest window, distinct
        count window or gap cap. Its state is kept that long after its last click (plus
        slack), so an expired state changes no feature."""
        spans = [
            s
            for v in self.velocity
            if v.entity == entity
            for s in [*(w.seconds for w in v.windows), *([v.gap_cap_s] if v.gap else [])]
        ]
        spans += [d.window.seconds for d in self.distinct if d.entity == entity]
        return float(max(spans))

    def gap_cap_s(self, entity: Entity) -> float:
        """The cap of the entity's gap (MAX_GAP_S when it has none)."""
        return next((v.gap_cap_s for v in self.velocity if v.entity == entity and v.gap), MAX_GAP_S)

    @property
    def entities(self) -> tuple[Entity, ...]:
        """Every counted entity, once, in spec order."""
        seen: dict[str, Entity] = {}
        for e in [v.entity for v in self.velocity] + [d.entity for d in self.distinct]:
            if seen.setdefault(e.name, e) != e:
                raise ValueError(f"entity {e.name} is defined twice with different fields")
        return tuple(seen.values())

    def digest(self) -> str:
        """A short stable digest of everything that defines the features' values."""
        text = repr((self.velocity, self.distinct, MAX_GAP_S, DISTINCT_CAP, self.names))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


MINUTE = Window("1m", 60, 12)
TEN_MINUTES = Window("10m", 600, 10)
HOUR = Window("1h", 3600, 12)
DAY = Window("24h", 86400, 24)
WINDOWS: tuple[Window, ...] = (MINUTE, TEN_MINUTES, HOUR, DAY)

CUSTOMER = Entity("customer", ("customer_id",))
SESSION = Entity("session", ("session_id",))
IP = Entity("ip", ("ip",))
#: Ad context: an IP's clicks on one advertiser (on TalkingData: an ip's clicks on one app).
IP_ADVERTISER = Entity("ip_advertiser", ("ip", "advertiser_id"))
#: The pair's windows and gap stop at an hour, so its state lives 2 h, not 25: there are about
#: four (ip, advertiser) pairs per IP in a day, most clicked once (docs/redis-keys.md, "Cost").
PAIR_GAP_CAP_S = 3600.0

#: The features slidr serves. Add a counter here; everything else follows.
SPEC = FeatureSpec(
    velocity=(
        Velocity(CUSTOMER, WINDOWS),
        Velocity(SESSION, WINDOWS),
        Velocity(IP, WINDOWS),
        Velocity(IP_ADVERTISER, (TEN_MINUTES, HOUR), gap_cap_s=PAIR_GAP_CAP_S),
    ),
    distinct=(
        Distinct("ip_distinct_sessions", IP, "session_id", DAY),
        Distinct("ip_distinct_customers", IP, "customer_id", DAY),
        Distinct("customer_distinct_ips", CUSTOMER, "ip", DAY),
        Distinct("ip_distinct_user_agents", IP, "user_agent", DAY),
        # Ad context (TalkingData: distinct apps per ip).
        Distinct("ip_distinct_advertisers", IP, "advertiser_id", DAY),
    ),
)

FEATURES: tuple[str, ...] = SPEC.names
N_FEATURES = len(FEATURES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURES)}
FEATURE_HASH = SPEC.digest()

#: Counters and gaps: non-negative and heavy-tailed; models compress them with log1p.
HEAVY_TAILED: tuple[int, ...] = tuple(
    i for i, name in enumerate(FEATURES) if name not in TIME_FEATURES and name != "logged_in"
)


def time_features(event_time: datetime) -> tuple[float, float, float, float]:
    """Hour of day and day of week on the unit circle, so 23:00 sits next to 00:00.

    >>> from datetime import UTC
    >>> [round(x, 3) for x in time_features(datetime(2026, 3, 2, 6, 0, tzinfo=UTC))]
    [1.0, 0.0, 0.223, 0.975]
    """
    hour = event_time.hour + event_time.minute / 60.0
    dow = event_time.weekday() + hour / 24.0
    h = 2.0 * math.pi * hour / 24.0
    d = 2.0 * math.pi * dow / 7.0
    return (math.sin(h), math.cos(h), math.sin(d), math.cos(d))
