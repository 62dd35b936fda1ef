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
import ipaddress
import math
import zlib
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


#: What a :class:`Categorical` can read off a click: a click field's text, or one of these
#: derived from one (:func:`category_text`).
DERIVED_SOURCES: dict[str, str] = {"ip_prefix": "ip", "ua_family": "user_agent"}
CLICK_SOURCES: tuple[str, ...] = (
    "device_type",
    "platform",
    "marketplace",
    "ad_id",
    "campaign_id",
    "advertiser_id",
    "placement",
    "user_agent",
)


@dataclass(frozen=True)
class Categorical:
    """``name``: a hashed bucket id of a text read off the click alone (no Redis).

    ``source`` is a click field (:data:`CLICK_SOURCES`) or a text derived from one
    (:data:`DERIVED_SOURCES`). The id is 0 when the click has no value (a placement is
    optional), else ``1 + crc32(text) % (buckets - 1)``: stable across processes and machines
    (never Python's salted ``hash``). It travels as a float in the one input tensor, exact
    below 2**24; the network looks it up in an embedding table of ``buckets`` rows.
    """

    name: str
    source: str
    buckets: int

    def __post_init__(self) -> None:
        if self.source not in CLICK_SOURCES and self.source not in DERIVED_SOURCES:
            raise ValueError(f"categorical {self.name}: unknown source {self.source!r}")
        if not 2 <= self.buckets <= 1 << 24:
            raise ValueError(f"categorical {self.name}: buckets must be in [2, 2**24]")

    @property
    def click_field(self) -> str:
        """The click field the text is read from."""
        return DERIVED_SOURCES.get(self.source, self.source)


@dataclass(frozen=True)
class FeatureSpec:
    velocity: tuple[Velocity, ...]
    distinct: tuple[Distinct, ...]
    categorical: tuple[Categorical, ...] = ()
    #: Derived, in model-input order: velocity counts, gaps, distinct counts, time, login,
    #: categorical ids.
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names: list[str] = []
        for v in self.velocity:
            names += [f"{v.entity.name}_clicks_{w.name}" for w in v.windows]
        names += [f"{v.entity.name}_gap_s" for v in self.velocity if v.gap]
        names += [d.name for d in self.distinct]
        names += [*TIME_FEATURES, "logged_in"]
        names += [c.name for c in self.categorical]
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
        text = repr(
            (
                self.velocity,
                self.distinct,
                MAX_GAP_S,
                DISTINCT_CAP,
                self.names,
                self.categorical,
                CATEGORY_HASHING,
            )
        )
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

#: User-agent families, first match wins: (family, substrings of the user agent, any of which
#: names it). Order matters: Edge and Opera also say "Chrome", Chrome also says "Safari", a
#: headless Chrome says "Chrome" too. A user agent matching none is the family of its first
#: product token (the text before the first "/" or space, lowercased, at most 24 characters:
#: "ShopApp/24.9.0 (...)" is "shopapp"); an empty one is "". A TalkingData user agent
#: ``td-device-<d>/os-<o>`` (docs/talkingdata.md) is the family ``td-os-<o>``: its os.
UA_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bot", ("bot", "Bot", "crawler", "Crawler", "spider", "Spider")),
    ("headless", ("HeadlessChrome", "PhantomJS", "Headless")),
    ("scripted", ("python-requests", "python-urllib", "Python-urllib", "curl/", "Wget/")),
    ("go-http", ("Go-http-client",)),
    ("okhttp", ("okhttp",)),
    ("edge", ("Edg/", "Edge/", "EdgA/", "EdgiOS/")),
    ("opera", ("OPR/", "Opera")),
    ("samsung", ("SamsungBrowser",)),
    ("firefox", ("Firefox/", "FxiOS/")),
    ("ie", ("MSIE ", "Trident/")),
    ("chrome", ("Chrome/", "CriOS/")),
    ("safari", ("Safari/",)),
)
#: How a text becomes a bucket id, and the version of the parses above; part of the feature
#: hash, so a change to either makes workers refuse models trained before it.
CATEGORY_HASHING = ("crc32-utf8, 0 = none, 1 + crc32 % (buckets - 1)", "ua-family-v1", "ip-24-48")


def ua_family(user_agent: str) -> str:
    """The family of a user agent (:data:`UA_FAMILIES`).

    >>> ua_family("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    ...           "HeadlessChrome/124.0.0.0 Safari/537.36")
    'headless'
    >>> ua_family("ShopApp/24.9.0 (iPhone15,2; iOS 17.4.1)"), ua_family("td-device-1/os-19")
    ('shopapp', 'td-os-19')
    """
    if user_agent.startswith("td-device-"):
        return "td-" + user_agent.rpartition("/")[2]
    for family, marks in UA_FAMILIES:
        if any(mark in user_agent for mark in marks):
            return family
    return user_agent.split("/", 1)[0].split(" ", 1)[0].lower()[:24]


def ip_prefix(ip: str) -> str:
    """The network of an IP: its /24 for IPv4, its /48 for IPv6 (a site's allocation).

    >>> ip_prefix("203.0.113.77"), ip_prefix("2001:db8:1:2::5")
    ('203.0.113.0/24', '2001:db8:1::/48')
    """
    if ":" not in ip:
        return ip.rpartition(".")[0] + ".0/24"
    return str(ipaddress.IPv6Network((ip, 48), strict=False))


def category_text(source: str, value: str | None) -> str | None:
    """The text a categorical feature of ``source`` hashes, from its click field's value."""
    if value is None:
        return None
    if source == "ip_prefix":
        return ip_prefix(value)
    if source == "ua_family":
        return ua_family(value)
    return value


def bucket(text: str | None, buckets: int) -> int:
    """The bucket id of a text: 0 for none, else ``1 + crc32(utf-8) % (buckets - 1)``.

    >>> bucket(None, 256), bucket("desktop", 256), bucket("desktop", 256) == bucket("app", 256)
    (0, 21, False)
    """
    if text is None:
        return 0
    return 1 + zlib.crc32(text.encode()) % (buckets - 1)


#: The categorical click fields, hashed (issue 14 item 3). Buckets: many times the values a
#: field takes where they are few (the device types and platforms of slidr.events land in
#: distinct buckets: a test checks), and bounded where they are many (ads, IP networks), where
#: a collision shares an embedding row between two rare values.
CATEGORICAL: tuple[Categorical, ...] = (
    Categorical("device_type_bucket", "device_type", 256),
    Categorical("platform_bucket", "platform", 256),
    Categorical("marketplace_bucket", "marketplace", 256),
    Categorical("ad_bucket", "ad_id", 1 << 14),
    Categorical("campaign_bucket", "campaign_id", 1 << 12),
    Categorical("advertiser_bucket", "advertiser_id", 1 << 12),
    Categorical("placement_bucket", "placement", 1 << 12),
    Categorical("ip_prefix_bucket", "ip_prefix", 1 << 14),
    Categorical("ua_family_bucket", "ua_family", 1024),
    # The whole user agent: browser and OS versions; on TalkingData the (device, os) pair.
    Categorical("user_agent_bucket", "user_agent", 1 << 12),
)

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
    categorical=CATEGORICAL,
)

FEATURES: tuple[str, ...] = SPEC.names
N_FEATURES = len(FEATURES)
INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURES)}
FEATURE_HASH = SPEC.digest()

#: Columns of the categorical ids, in spec order, and each one's number of buckets.
CATEGORICAL_COLUMNS: tuple[int, ...] = tuple(INDEX[c.name] for c in SPEC.categorical)
CATEGORICAL_BUCKETS: tuple[int, ...] = tuple(c.buckets for c in SPEC.categorical)
#: The ids that name a user rather than a context: an IP network, a device's exact user agent.
#: A model can learn from them which users carry a label, not how humans and bots behave;
#: ``models.train.categorical_inputs`` leaves them out when labels are given per customer.
IDENTIFYING_COLUMNS: tuple[int, ...] = (INDEX["ip_prefix_bucket"], INDEX["user_agent_bucket"])
#: Every other column: counts, gaps, time and login, which models read as numbers.
NUMERIC_COLUMNS: tuple[int, ...] = tuple(
    i for i in range(N_FEATURES) if i not in set(CATEGORICAL_COLUMNS)
)

#: Counters and gaps: non-negative and heavy-tailed; models compress them with log1p.
HEAVY_TAILED: tuple[int, ...] = tuple(
    i
    for i, name in enumerate(FEATURES)
    if name not in TIME_FEATURES and name != "logged_in" and i not in CATEGORICAL_COLUMNS
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
