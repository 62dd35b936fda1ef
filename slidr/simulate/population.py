"""Who clicks: human visitors (some of them customers with an RFM history), the networks they sit
behind, the bots' agents, and the ads. Built once per run from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from slidr.simulate import catalog
from slidr.simulate.bots import PROFILES, PUBLISHER_KINDS, BotKind
from slidr.simulate.config import SimConfig

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Share of desktop visitors who browse from an office behind a corporate NAT.
CORPORATE_SHARE = 0.15
#: Humans per corporate NAT IP and per mobile carrier gateway IP (CGNAT).
USERS_PER_NAT = 40
USERS_PER_GATEWAY = 250
#: Chance that a mobile session goes over the carrier rather than home Wi-Fi.
CARRIER_SESSION_SHARE = 0.6
N_ADS = 5000
ADS_PER_CAMPAIGN = 10
CAMPAIGNS_PER_ADVERTISER = 5
BOTNET_IPS = 200_000
#: Advertisers whose ads competitor click fraud goes after.
COMPETITOR_VICTIMS = 8
#: Share of human clicks with a placement that are on the site's own search results; the rest
#: are on publishers' sites and apps.
SEARCH_PLACEMENT_SHARE = 0.8
#: Share of a publisher's human clicks in its first and second slot.
SLOT_SHARES = (0.6, 0.4)
#: Fraudulent publishers are among this many least popular publishers: small sites that make
#: most of their clicks by fraud.
FRAUD_AMONG_LEAST_POPULAR = 5
#: Campaigns each fraudulent publisher's placements carry (and its fraud clicks go to).
CAMPAIGNS_PER_FRAUD_PUBLISHER = 3
#: Agents on fixed IPs that sit on consumer lines rather than in data centres.
RESIDENTIAL_AGENT_KINDS = frozenset({BotKind.LOW_AND_SLOW, BotKind.CLICK_FARM})


def random_ips(rng: np.random.Generator, n: int, first_octets: tuple[int, ...]) -> IntArray:
    """Public-looking IPv4 addresses as integers, first octet from the given ranges."""
    first = rng.choice(np.array(first_octets, dtype=np.int64), size=n)
    # Avoid .0 and .255 in the last octet: they look like network/broadcast addresses.
    rest = rng.integers(0, 1 << 16, size=n) << 8 | rng.integers(1, 255, size=n)
    return (first << 24) | rest


def _choose(rng: np.random.Generator, shares: dict[int, float], n: int) -> IntArray:
    keys = np.array(list(shares), dtype=np.int64)
    probs = np.array(list(shares.values()))
    return rng.choice(keys, size=n, p=probs / probs.sum())


@dataclass(frozen=True)
class Agents:
    """The actors of one bot kind: each has a device, platform, user agent, IP and market."""

    device: IntArray
    platform: IntArray
    ua: IntArray
    ip: IntArray
    marketplace: IntArray
    #: The human visitor whose device each agent is (kinds ``on_visitors``), else -1.
    visitor: IntArray


class World:
    """Everything that stays fixed during a run; generation draws from these pools."""

    def __init__(self, config: SimConfig, rng: np.random.Generator) -> None:
        self.user_agents = pa.array([ua.text for ua in catalog.USER_AGENTS], pa.string())
        self._ua_candidates: dict[tuple[int, int, bool], IntArray] = {}
        for i, ua in enumerate(catalog.USER_AGENTS):
            key = (ua.device, ua.platform, ua.odd)
            self._ua_candidates[key] = np.append(self._ua_candidates.get(key, []), i).astype(
                np.int64
            )
        self._build_visitors(config, rng)
        self._build_customers(rng)
        self._build_ads(rng)
        self._build_placements(rng)
        self.botnet_ips = random_ips(rng, BOTNET_IPS, catalog.RESIDENTIAL_OCTETS)
        # Residential proxies exit through the very IPs humans use.
        self.proxy_ips = np.unique(
            np.concatenate([self.home_ip, self.carrier_ip[self.carrier_ip > 0]])
        )
        self.agents = {kind: self._build_agents(rng, kind) for kind in BotKind}

    def pick_platform(self, rng: np.random.Generator, device: IntArray) -> IntArray:
        platform = np.empty_like(device)
        for code, shares in catalog.PLATFORM_SHARES.items():
            mask = device == code
            platform[mask] = _choose(rng, shares, int(mask.sum()))
        return platform

    def pick_ua(
        self,
        rng: np.random.Generator,
        device: IntArray,
        platform: IntArray,
        odd: npt.NDArray[np.bool_],
    ) -> IntArray:
        """A user agent consistent with device and platform; odd ones move to their platform."""
        platform = np.where(odd, np.asarray(catalog.ODD_PLATFORM)[device], platform)
        ua = np.empty_like(device)
        for (dev, plat, is_odd), candidates in self._ua_candidates.items():
            mask = (device == dev) & (platform == plat) & (odd == is_odd)
            ua[mask] = rng.choice(candidates, size=int(mask.sum()))
        return ua

    def _build_visitors(self, config: SimConfig, rng: np.random.Generator) -> None:
        # About three clicks per visitor and day, so velocity counters of humans stay low.
        n = max(500, int(config.clicks_per_day * (1 - config.bot_share) / 3))
        self.device = rng.choice(3, size=n, p=[0.42, 0.34, 0.24]).astype(np.int64)
        self.platform = self.pick_platform(rng, self.device)
        self.ua = self.pick_ua(rng, self.device, self.platform, np.zeros(n, dtype=bool))
        self.marketplace = rng.choice(3, size=n, p=catalog.MARKETPLACE_SHARES).astype(np.int64)
        # Heavy-tailed activity: a few visitors click a lot.
        activity = rng.lognormal(0.0, 1.0, size=n)
        self.visitor_cdf = np.cumsum(activity) / activity.sum()
        self.home_ip = random_ips(rng, n, catalog.RESIDENTIAL_OCTETS)
        # Households: a share of visitors live with another visitor and share its IP.
        shared = rng.random(n) < 0.2
        self.home_ip[shared] = self.home_ip[rng.integers(0, n, size=int(shared.sum()))]
        corporate = (self.device == catalog.DESKTOP) & (rng.random(n) < CORPORATE_SHARE)
        nat_ips = random_ips(
            rng, max(2, int(corporate.sum()) // USERS_PER_NAT), catalog.CORPORATE_OCTETS
        )
        self.home_ip[corporate] = rng.choice(nat_ips, size=int(corporate.sum()))
        mobile = self.device != catalog.DESKTOP
        gateways = random_ips(
            rng, max(2, int(mobile.sum()) // USERS_PER_GATEWAY), catalog.CARRIER_OCTETS
        )
        self.carrier_ip = np.where(mobile, rng.choice(gateways, size=n), 0)
        is_customer = rng.random(n) < config.customer_share
        self.customer = np.full(n, -1, dtype=np.int64)
        self.customer[is_customer] = np.arange(int(is_customer.sum()))

    def _build_customers(self, rng: np.random.Generator) -> None:
        n = int((self.customer >= 0).sum())
        self.recency_days = np.minimum(rng.exponential(45.0, n), 730).astype(np.int64)
        self.frequency = rng.negative_binomial(2, 0.2, n).astype(np.int64)
        basket = rng.lognormal(3.4, 0.7, n)
        self.monetary: FloatArray = np.round(self.frequency * basket, 2).astype(np.float64)
        # Percentile ranks, averaged: recent, frequent, big spenders score near 1.
        ranks = [
            _rank(-self.recency_days.astype(np.float64)),
            _rank(self.frequency.astype(np.float64)),
            _rank(self.monetary),
        ]
        self.rfm_score = np.round((ranks[0] + ranks[1] + ranks[2]) / 3.0, 6)
        self.customer_ids = pa.array([f"cu{i:07d}" for i in range(n)], pa.string())

    def _build_ads(self, rng: np.random.Generator) -> None:
        popularity = 1.0 / np.arange(1, N_ADS + 1) ** 0.9
        self.ad_probs = popularity[rng.permutation(N_ADS)] / popularity.sum()
        campaign = np.arange(N_ADS) // ADS_PER_CAMPAIGN
        self.ad_ids = pa.array([f"ad{i:05d}" for i in range(N_ADS)], pa.string())
        self.campaign_ids = pa.array([f"cmp{c:04d}" for c in campaign], pa.string())
        self.advertiser_ids = pa.array(
            [f"adv{c // CAMPAIGNS_PER_ADVERTISER:03d}" for c in campaign], pa.string()
        )
        # Click fraud goes after a few advertisers' budgets.
        victims = rng.choice(
            N_ADS // (ADS_PER_CAMPAIGN * CAMPAIGNS_PER_ADVERTISER),
            COMPETITOR_VICTIMS,
            replace=False,
        )
        per_advertiser = ADS_PER_CAMPAIGN * CAMPAIGNS_PER_ADVERTISER
        self.targeted_ads = (victims[:, None] * per_advertiser + np.arange(per_advertiser)).ravel()
        # Each fraudulent publisher carries a few campaigns of other advertisers.
        n_campaigns = N_ADS // ADS_PER_CAMPAIGN
        victim_campaigns = (
            victims[:, None] * CAMPAIGNS_PER_ADVERTISER + np.arange(CAMPAIGNS_PER_ADVERTISER)
        ).ravel()
        others = np.setdiff1d(np.arange(n_campaigns), victim_campaigns)
        chosen = rng.choice(
            others, (len(PUBLISHER_KINDS), CAMPAIGNS_PER_FRAUD_PUBLISHER), replace=False
        )
        self.publisher_ads: dict[BotKind, IntArray] = {
            kind: (campaigns[:, None] * ADS_PER_CAMPAIGN + np.arange(ADS_PER_CAMPAIGN)).ravel()
            for kind, campaigns in zip(PUBLISHER_KINDS, chosen, strict=True)
        }

    def _build_placements(self, rng: np.random.Generator) -> None:
        """Humans' placements by popularity (Zipf); a few small publishers are fraudulent."""
        n_search, n_pub = len(catalog.SEARCH_PLACEMENTS), len(catalog.PUBLISHERS)
        search = 1.0 / np.arange(1, n_search + 1)
        search = search[rng.permutation(n_search)] / search.sum()
        rank = rng.permutation(n_pub)  # 0 = the most popular publisher
        publisher = 1.0 / (rank + 1.0)
        publisher /= publisher.sum()
        self.placement_probs: FloatArray = np.concatenate(
            [
                SEARCH_PLACEMENT_SHARE * search,
                ((1 - SEARCH_PLACEMENT_SHARE) * publisher[:, None] * SLOT_SHARES).ravel(),
            ]
        )
        self.placement_cdf: FloatArray = np.cumsum(self.placement_probs)
        small = np.flatnonzero(rank >= n_pub - FRAUD_AMONG_LEAST_POPULAR)
        fraud = rng.choice(small, len(PUBLISHER_KINDS), replace=False)
        slots = len(catalog.PUBLISHER_SLOTS)
        #: Placement codes of each publisher-fraud kind's publisher (its slots).
        self.publisher_placements: dict[BotKind, IntArray] = {
            kind: n_search + p * slots + np.arange(slots, dtype=np.int64)
            for kind, p in zip(PUBLISHER_KINDS, fraud.tolist(), strict=True)
        }

    def _build_agents(self, rng: np.random.Generator, kind: BotKind) -> Agents:
        profile = PROFILES[kind]
        n = profile.agents
        device = rng.choice(3, size=n, p=profile.devices).astype(np.int64)
        if profile.on_visitors:
            return self._visitor_agents(rng, device)
        platform = self.pick_platform(rng, device)
        odd = rng.random(n) < profile.odd_ua_share
        if profile.ip_mode == "agent":
            octets = (
                catalog.RESIDENTIAL_OCTETS
                if kind in RESIDENTIAL_AGENT_KINDS
                else catalog.DATACENTER_OCTETS
            )
            if profile.shared_ips:
                ip = rng.choice(random_ips(rng, profile.shared_ips, octets), size=n)
            else:
                ip = random_ips(rng, n, octets)
        else:
            ip = np.zeros(n, dtype=np.int64)  # chosen per session or click
        return Agents(
            device=device,
            platform=np.where(odd, np.asarray(catalog.ODD_PLATFORM)[device], platform),
            ua=self.pick_ua(rng, device, platform, odd),
            ip=ip,
            # Bots mostly hit the largest marketplace.
            marketplace=rng.choice(3, size=n, p=[0.8, 0.1, 0.1]).astype(np.int64),
            visitor=np.full(n, -1, dtype=np.int64),
        )

    def _visitor_agents(self, rng: np.random.Generator, device: IntArray) -> Agents:
        """Agents that are human visitors' devices (hijacked, or tapping a stacked slot)."""
        visitor = np.empty_like(device)
        for code in range(len(catalog.DEVICES)):
            mask = device == code
            pool = np.flatnonzero(self.device == code)
            if not len(pool):
                pool = np.arange(len(self.device))
            visitor[mask] = rng.choice(pool, size=int(mask.sum()))
        return Agents(
            device=self.device[visitor],
            platform=self.platform[visitor],
            ua=self.ua[visitor],
            ip=np.zeros(len(visitor), dtype=np.int64),  # the visitor's, chosen per session
            marketplace=self.marketplace[visitor],
            visitor=visitor,
        )

    def customers_table(self) -> pa.Table:
        return pa.table(
            {
                "customer_id": self.customer_ids,
                "recency_days": pa.array(self.recency_days, pa.int32()),
                "frequency": pa.array(self.frequency, pa.int32()),
                "monetary": pa.array(self.monetary, pa.float64()),
                "rfm_score": pa.array(self.rfm_score, pa.float64()),
            }
        )


def _rank(values: FloatArray) -> FloatArray:
    """Percentile rank in [0, 1]; ties share the average rank."""
    if len(values) < 2:
        return np.ones(len(values))
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return np.asarray(sums[inverse] / counts[inverse] / (len(values) - 1), dtype=np.float64)
