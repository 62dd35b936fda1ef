"""What a simulation run is: the knobs, checked once, and the default time window."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from slidr.errors import SlidrError
from slidr.simulate.bots import DEFAULT_MIX, BotKind


class SimulationConfigError(SlidrError):
    """A simulation setting is out of range; the message names the setting and the range."""


def current_hour(now: datetime | None = None) -> datetime:
    """The start of the current UTC hour: the default end of the simulated window.

    Ending here keeps every event in the past (the pipeline rejects future events) and the whole
    window recent (it rejects events older than 8 days).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(minute=0, second=0, microsecond=0)


def parse_mix(text: str) -> dict[BotKind, float]:
    """Parse ``scraper=0.3,botnet=0.2`` into weights; unnamed kinds get weight 0."""
    mix: dict[BotKind, float] = dict.fromkeys(BotKind, 0.0)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise SimulationConfigError(f"bot mix item {item!r} is not KIND=WEIGHT")
        try:
            kind = BotKind(name.strip())
        except ValueError:
            known = ", ".join(k.value for k in BotKind)
            raise SimulationConfigError(f"unknown bot kind {name!r}; known: {known}") from None
        try:
            mix[kind] = float(value)
        except ValueError:
            raise SimulationConfigError(f"bot mix weight {value!r} is not a number") from None
    return mix


@dataclass(frozen=True)
class SimConfig:
    """Everything that determines the output: same config => byte-identical events."""

    start: datetime
    days: int = 1
    clicks_per_day: int = 100_000
    seed: int = 7
    #: Target share of bot clicks over the window (each day drifts around it).
    bot_share: float = 0.3
    bot_mix: dict[BotKind, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    #: Share of human visitors who have a customer account.
    customer_share: float = 0.5
    #: Mean purchases per human click (scaled up for high-RFM customers).
    purchase_rate: float = 0.03
    #: Scale of the day-to-day random walk of bot share, mix and speed; 0 = no drift.
    drift: float = 1.0
    #: The world's first hour (default: ``start``). Each hour's traffic is drawn from the seed
    #: and the hours since ``origin``, so a later ``start`` with the same seed and origin
    #: continues the world (same population, new sessions, the bots' walk carried on) instead
    #: of replaying its first days.
    origin: datetime | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise SimulationConfigError("start needs a UTC offset, e.g. 2026-01-05T00:00:00Z")
        start = self.start.astimezone(UTC)
        if start != start.replace(minute=0, second=0, microsecond=0):
            raise SimulationConfigError(f"start {start.isoformat()} must be on a whole hour")
        object.__setattr__(self, "start", start)
        origin = start if self.origin is None else self.origin
        if origin.tzinfo is None:
            raise SimulationConfigError("origin needs a UTC offset, e.g. 2026-01-05T00:00:00Z")
        origin = origin.astimezone(UTC)
        if origin != origin.replace(minute=0, second=0, microsecond=0) or origin > start:
            raise SimulationConfigError(
                f"origin {origin.isoformat()} must be on a whole hour, at or before the start "
                f"{start.isoformat()}"
            )
        object.__setattr__(self, "origin", origin)
        if not 1 <= self.days <= 366:
            raise SimulationConfigError(f"days must be between 1 and 366, got {self.days}")
        if not 24 <= self.clicks_per_day <= 500_000_000:
            raise SimulationConfigError(
                f"clicks per day must be between 24 and 500,000,000, got {self.clicks_per_day}"
            )
        if not 0 <= self.seed < 2**63:
            raise SimulationConfigError(f"seed must be a non-negative integer, got {self.seed}")
        for name in ("bot_share", "customer_share", "purchase_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SimulationConfigError(f"{name} must be within [0, 1], got {value}")
        if self.bot_share > 0.95:
            raise SimulationConfigError("bot_share above 0.95 leaves too few humans to simulate")
        if not 0.0 <= self.drift <= 5.0:
            raise SimulationConfigError(f"drift must be within [0, 5], got {self.drift}")
        if any(w < 0 for w in self.bot_mix.values()) or sum(self.bot_mix.values()) <= 0:
            raise SimulationConfigError("bot mix weights must be >= 0 and not all 0")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def hours(self) -> int:
        return self.days * 24

    @property
    def hours_since_origin(self) -> int:
        """Hours of the world before ``start``: the index of the run's first hour."""
        assert self.origin is not None  # set in __post_init__
        return int((self.start - self.origin).total_seconds()) // 3600


def window_ending_now(days: int, now: datetime | None = None) -> datetime:
    """Start of a ``days``-long window that ends at the current hour."""
    return current_hour(now) - timedelta(days=days)
