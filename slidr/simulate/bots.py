"""The kinds of bots the simulator mixes into human traffic, and how each behaves."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class BotKind(StrEnum):
    #: High-velocity crawlers on hosting IPs, headless UAs, long sessions.
    SCRAPER = "scraper"
    #: A few clicks per session, long gaps: stays under velocity thresholds.
    LOW_AND_SLOW = "low_and_slow"
    #: Infected machines: a new IP and often a new UA for every click.
    BOTNET = "botnet"
    #: Traffic routed through residential/carrier proxies: IPs shared with real humans.
    RESIDENTIAL_PROXY = "residential_proxy"
    #: Short, very fast attacks in the UTC night, on some days only.
    NIGHT_BURST = "night_burst"
    #: Logged in through stolen customer accounts.
    HIJACKED_ACCOUNT = "hijacked_account"


#: How a bot session gets its IPs: a fixed IP per agent, a fresh IP per click from a botnet
#: pool, or one IP per session borrowed from the humans' residential and carrier pools.
IpMode = Literal["agent", "rotate", "proxy"]
HourProfile = Literal["flat", "night", "humanlike"]


@dataclass(frozen=True)
class BotProfile:
    #: Share of this kind's clicks on desktop, mobile_web, app: the bot mix differs by slice.
    devices: tuple[float, float, float]
    session_clicks: float
    gap_s: float
    ip_mode: IpMode
    #: Distinct actors (IP + UA) of this kind; few actors = high per-IP velocity.
    agents: int
    odd_ua_share: float
    #: A new user agent on every click (fingerprint rotation) instead of one per session.
    rotate_ua: bool
    hour_profile: HourProfile
    logged_in: bool
    #: Clicks go to a few targeted advertisers (competitor click fraud) instead of popular ads.
    targeted: bool


PROFILES: dict[BotKind, BotProfile] = {
    BotKind.SCRAPER: BotProfile(
        (0.9, 0.1, 0.0), 40.0, 3.0, "agent", 60, 0.7, False, "flat", False, True
    ),
    BotKind.LOW_AND_SLOW: BotProfile(
        (0.45, 0.45, 0.1), 2.0, 240.0, "agent", 400, 0.05, False, "flat", False, True
    ),
    BotKind.BOTNET: BotProfile(
        (0.3, 0.5, 0.2), 6.0, 8.0, "rotate", 2000, 0.2, True, "flat", False, True
    ),
    BotKind.RESIDENTIAL_PROXY: BotProfile(
        (0.15, 0.3, 0.55), 4.0, 25.0, "proxy", 500, 0.1, False, "humanlike", False, False
    ),
    BotKind.NIGHT_BURST: BotProfile(
        (0.6, 0.3, 0.1), 120.0, 0.6, "agent", 12, 0.5, False, "night", False, True
    ),
    BotKind.HIJACKED_ACCOUNT: BotProfile(
        (0.35, 0.3, 0.35), 8.0, 20.0, "proxy", 300, 0.0, False, "flat", True, True
    ),
}

DEFAULT_MIX: dict[BotKind, float] = {
    BotKind.SCRAPER: 0.28,
    BotKind.LOW_AND_SLOW: 0.15,
    BotKind.BOTNET: 0.2,
    BotKind.RESIDENTIAL_PROXY: 0.17,
    BotKind.NIGHT_BURST: 0.12,
    BotKind.HIJACKED_ACCOUNT: 0.08,
}
