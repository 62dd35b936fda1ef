"""The kinds of bots the simulator mixes into human traffic, and how each behaves.

The first six kinds go after the site's search ads (scrapers, botnets, proxies, account
takeover; competitor click fraud on a few advertisers). The last three are publisher fraud,
what the MRC's sophisticated invalid traffic (SIVT) names beside them: a few fraudulent
publishers' placements earn from clicks made on real people's devices (adware, ad stacking)
or by people paid to click (click farms). docs/simulator.md gives each kind's source.
"""

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
    #: Adware or a malicious SDK on real people's devices clicks a fraudulent publisher's ads
    #: in the background (hijacked devices): the owner's IP and browser, the publisher's
    #: placements and campaigns only.
    CLICK_SPAM = "click_spam"
    #: Several ads stacked in one slot of a fraudulent publisher: one real tap is a click on
    #: every ad of the stack, a fraction of a second apart.
    AD_STACKING = "ad_stacking"
    #: People paid to click (click farm, incentivised traffic): phones behind a few shared
    #: lines, human pace and user agents, on a fraudulent publisher's placements, in the farm's
    #: working hours.
    CLICK_FARM = "click_farm"


#: How a bot session gets its IPs: a fixed IP per agent, a fresh IP per click from a botnet
#: pool, one IP per session borrowed from the humans' residential and carrier pools, or the
#: home or carrier IP of the real visitor whose device the agent is (``visitor``).
IpMode = Literal["agent", "rotate", "proxy", "visitor"]
#: When a kind clicks (UTC): all day, at night, like humans but flatter (``humanlike``),
#: exactly when humans do (``human``: it rides on real people's activity), or in a working
#: shift far from the marketplaces' daytime (``shift``).
HourProfile = Literal["flat", "night", "humanlike", "human", "shift"]
#: Which ads a kind clicks: by popularity as humans do, a few competitor-targeted
#: advertisers' ads, or the campaigns its fraudulent publisher shows.
Target = Literal["popular", "competitor", "publisher"]


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
    target: Target
    #: The agents are real human visitors' devices: their device, platform, user agent,
    #: marketplace and (with ip_mode ``visitor``) their IPs.
    on_visitors: bool = False
    #: With ip_mode ``agent``: the agents share this many IPs (0: one IP per agent).
    shared_ips: int = 0
    #: With target ``publisher``: every click of a session on the same placement (one slot
    #: holds the stack) instead of one per click.
    one_placement_per_session: bool = False

    @property
    def publisher(self) -> bool:
        return self.target == "publisher"


def publisher_fraud(
    devices: tuple[float, float, float],
    session_clicks: float,
    gap_s: float,
    agents: int,
    hour_profile: HourProfile,
    *,
    ip_mode: IpMode = "visitor",
    shared_ips: int = 0,
    one_placement_per_session: bool = False,
) -> BotProfile:
    """A fraudulent publisher's clicks: human user agents, never logged in, on its own
    placements and campaigns; on real visitors' devices unless its agents have their own IPs."""
    return BotProfile(
        devices, session_clicks, gap_s, ip_mode, agents, 0.0, False, hour_profile, False,
        "publisher", on_visitors=ip_mode == "visitor", shared_ips=shared_ips,
        one_placement_per_session=one_placement_per_session,
    )  # fmt: skip


PROFILES: dict[BotKind, BotProfile] = {
    BotKind.SCRAPER: BotProfile(
        (0.9, 0.1, 0.0), 40.0, 3.0, "agent", 60, 0.7, False, "flat", False, "competitor"
    ),
    BotKind.LOW_AND_SLOW: BotProfile(
        (0.45, 0.45, 0.1), 2.0, 240.0, "agent", 400, 0.05, False, "flat", False, "competitor"
    ),
    BotKind.BOTNET: BotProfile(
        (0.3, 0.5, 0.2), 6.0, 8.0, "rotate", 2000, 0.2, True, "flat", False, "competitor"
    ),
    BotKind.RESIDENTIAL_PROXY: BotProfile(
        (0.15, 0.3, 0.55), 4.0, 25.0, "proxy", 500, 0.1, False, "humanlike", False, "popular"
    ),
    BotKind.NIGHT_BURST: BotProfile(
        (0.6, 0.3, 0.1), 120.0, 0.6, "agent", 12, 0.5, False, "night", False, "competitor"
    ),
    BotKind.HIJACKED_ACCOUNT: BotProfile(
        (0.35, 0.3, 0.35), 8.0, 20.0, "proxy", 300, 0.0, False, "flat", True, "competitor"
    ),
    # Adware is mostly a Windows and Android affair; the owner's own browser and network.
    BotKind.CLICK_SPAM: publisher_fraud((0.45, 0.35, 0.2), 3.0, 30.0, 800, "human"),
    # In-app and mobile web stacks; each session is one tap on one slot of the publisher.
    BotKind.AD_STACKING: publisher_fraud(
        (0.1, 0.3, 0.6), 4.0, 0.08, 3000, "human", one_placement_per_session=True
    ),
    # Racks of phones on a handful of lines; people working through short tasks ("search for
    # this, click that ad") all shift long, not scripts.
    BotKind.CLICK_FARM: publisher_fraud(
        (0.05, 0.15, 0.8), 5.0, 20.0, 60, "shift", ip_mode="agent", shared_ips=4
    ),
}

DEFAULT_MIX: dict[BotKind, float] = {
    BotKind.SCRAPER: 0.28,
    BotKind.LOW_AND_SLOW: 0.15,
    BotKind.BOTNET: 0.2,
    BotKind.RESIDENTIAL_PROXY: 0.17,
    BotKind.NIGHT_BURST: 0.12,
    BotKind.HIJACKED_ACCOUNT: 0.08,
    BotKind.CLICK_SPAM: 0.1,
    BotKind.AD_STACKING: 0.05,
    BotKind.CLICK_FARM: 0.07,
}

#: The kinds that are publisher fraud: each has one fraudulent publisher of its own.
PUBLISHER_KINDS: tuple[BotKind, ...] = tuple(k for k, p in PROFILES.items() if p.publisher)
