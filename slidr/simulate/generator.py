"""Vectorised generation of one hour of traffic at a time: sessions of humans and bots, purchases.

Sessions started in one hour may run into the next and purchases arrive minutes to hours after
their click, so generated rows wait in a buffer until the hour they belong to is emitted. Every
random draw comes from a generator seeded by (seed, purpose, hour): the output depends only on
the config, never on the sink or on timing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from slidr.simulate import catalog, frames
from slidr.simulate.bots import PROFILES, BotKind
from slidr.simulate.config import SimConfig
from slidr.simulate.frames import Frame, IntArray
from slidr.simulate.population import CARRIER_SESSION_SHARE, World
from slidr.simulate.tables import click_table, purchase_table, truth_table
from slidr.simulate.timeline import HOUR_SHARE, WEEKDAY_FACTOR, bot_hour_shares, plan_traffic_days

logger = logging.getLogger(__name__)

KINDS: tuple[BotKind, ...] = tuple(BotKind)
#: Code of each bot kind in the ``kind`` column; 0 is human.
KIND_CODE: dict[BotKind, int] = {kind: i + 1 for i, kind in enumerate(KINDS)}
HUMAN_SESSION_CLICKS = 2.5
HUMAN_GAP_MEDIAN_S = 40.0
#: Logged-in customers still browse logged out now and then.
CUSTOMER_LOGIN_SHARE = 0.85
PLACEMENT_SHARE = 0.7
PURCHASE_DELAY_MEDIAN_S = 900.0
MAX_PURCHASE_DELAY_S = 8 * 3600
HOUR_MS = 3_600_000

# Purposes mixed into the seed so that streams never share draws.
_WORLD, _PLAN, _HOUR = 1, 2, 3


@dataclass(frozen=True)
class HourBatch:
    """All events whose event time falls in one hour, sorted by event time."""

    start: datetime
    clicks: pa.Table
    purchases: pa.Table
    truth: pa.Table
    #: Click counts per (device code, logged in, kind code): enough for every summary.
    counts: npt.NDArray[np.int64]


def _sessions(
    rng: np.random.Generator, n_sessions: int, mean_clicks: float, hour_ms: int
) -> tuple[IntArray, IntArray]:
    """Session index of every click and the session starts (ms), clicks per session ~ geometric."""
    lengths = rng.geometric(1.0 / mean_clicks, n_sessions).astype(np.int64)
    starts = hour_ms + rng.integers(0, HOUR_MS, n_sessions)
    return np.repeat(np.arange(n_sessions), lengths), starts


def _click_times(session: IntArray, starts: IntArray, gaps_ms: npt.NDArray[np.float64]) -> IntArray:
    """Session start plus the running sum of the gaps within the session."""
    first = np.flatnonzero(np.diff(session, prepend=-1))
    gaps_ms[first] = 0.0
    elapsed = np.cumsum(gaps_ms)
    offsets = elapsed - np.repeat(elapsed[first], np.diff(np.append(first, len(session))))
    return np.asarray(starts[session] + offsets.astype(np.int64), dtype=np.int64)


class Generator:
    """Iterates over the hours of a run, yielding each hour's events once it is complete."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.world = World(config, self._rng(_WORLD))
        # Hours and days are counted from the world's origin: a run that starts later with the
        # same seed and origin continues the world rather than replaying its first hours.
        self._first = config.hours_since_origin
        self.plan = plan_traffic_days(
            self._rng(_PLAN),
            (self._first + config.hours + 23) // 24,
            config.bot_share,
            config.bot_mix,
            config.drift,
        )
        self._start_ms = int(config.start.timestamp() * 1000)
        self._epoch_hour = self._start_ms // HOUR_MS
        self._bot_hours = {kind: bot_hour_shares(kind) for kind in KINDS}

    def _rng(self, purpose: int, hour: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, purpose, hour])

    def customers(self) -> pa.Table:
        return self.world.customers_table()

    def hours(self) -> Iterator[HourBatch]:
        pending_clicks: dict[int, list[Frame]] = defaultdict(list)
        pending_purchases: dict[int, list[Frame]] = defaultdict(list)
        for hour in range(self.config.hours):
            clicks, purchases = self.generate_hour(hour)
            for target, part in frames.split_by_hour(clicks, self._start_ms).items():
                if target < self.config.hours:  # events after the window are never emitted
                    pending_clicks[target].append(part)
            for target, part in frames.split_by_hour(purchases, self._start_ms).items():
                if target < self.config.hours:
                    pending_purchases[target].append(part)
            yield self._emit(
                hour,
                frames.concat(pending_clicks.pop(hour, []), frames.CLICK_COLUMNS),
                frames.concat(pending_purchases.pop(hour, []), frames.PURCHASE_COLUMNS),
            )

    def _emit(self, hour: int, clicks: Frame, purchases: Frame) -> HourBatch:
        clicks = frames.sort_by_time(clicks)
        purchases = frames.sort_by_time(purchases)
        start = self.config.start + timedelta(hours=hour)
        seed, world = self.config.seed, self.world
        counts = np.bincount(
            (clicks["device"] * 2 + (clicks["customer"] >= 0)) * (len(KINDS) + 1) + clicks["kind"],
            minlength=3 * 2 * (len(KINDS) + 1),
        ).reshape(3, 2, len(KINDS) + 1)
        click_events = click_table(clicks, world, seed, self._epoch_hour)
        return HourBatch(
            start=start,
            clicks=click_events,
            purchases=purchase_table(purchases, world, seed, self._epoch_hour),
            truth=truth_table(clicks, click_events.column("click_id").combine_chunks(), KINDS),
            counts=counts,
        )

    def generate_hour(self, hour: int) -> tuple[Frame, Frame]:
        """Clicks of the sessions starting in ``hour`` (index from the start), their purchases."""
        rng = self._rng(_HOUR, self._first + hour)
        when = self.config.start + timedelta(hours=hour)
        day = (self._first + hour) // 24
        hour_ms = self._start_ms + hour * HOUR_MS
        human_expected = (
            self.config.clicks_per_day
            * (1.0 - self.plan.bot_share[day])
            * WEEKDAY_FACTOR[when.weekday()]
            * HOUR_SHARE[when.hour]
        )
        parts = [self._humans(rng, human_expected, hour_ms)]
        for k, kind in enumerate(KINDS):
            expected = (
                self.config.clicks_per_day
                * self.plan.bot_share[day]
                * self.plan.mix[day, k]
                * self._bot_hours[kind][when.hour]
            )
            if expected > 0:
                parts.append(self._bots(rng, kind, expected, self.plan.gap_scale[day, k], hour_ms))
        n_sessions = 0
        for part in parts:  # session numbers start at 0 in every part until here
            part["sess"] = part["sess"] + n_sessions
            if len(part["sess"]):
                n_sessions = int(part["sess"][-1]) + 1
        clicks = frames.concat(parts, tuple(parts[0]))
        n = frames.length(clicks)
        clicks["gen_hour"] = np.full(n, hour, dtype=np.int64)
        # Shuffled numbers: ids in generation order would tell humans (generated first) from bots.
        clicks["serial"] = rng.permutation(n).astype(np.int64)
        clicks["sess"] = rng.permutation(n_sessions).astype(np.int64)[clicks["sess"]]
        clicks["sess_hour"] = clicks["gen_hour"]
        return clicks, self._purchases(rng, clicks, hour)

    def _humans(self, rng: np.random.Generator, expected: float, hour_ms: int) -> Frame:
        w = self.world
        n_sessions = int(rng.poisson(expected / HUMAN_SESSION_CLICKS))
        session, starts = _sessions(rng, n_sessions, HUMAN_SESSION_CLICKS, hour_ms)
        gaps = rng.lognormal(np.log(HUMAN_GAP_MEDIAN_S * 1000), 1.0, len(session)) + 2000.0
        visitor = np.searchsorted(w.visitor_cdf, rng.random(n_sessions), side="right")
        visitor = np.minimum(visitor, len(w.visitor_cdf) - 1)
        logged_in = (w.customer[visitor] >= 0) & (rng.random(n_sessions) < CUSTOMER_LOGIN_SHARE)
        ip = self._visitor_ips(rng, visitor)
        v = visitor[session]
        n = len(session)
        return {
            "t_ms": _click_times(session, starts, gaps),
            "sess": session,
            "customer": np.where(logged_in, w.customer[visitor], -1)[session],
            "ip": ip[session],
            "ua": w.ua[v],
            "device": w.device[v],
            "platform": w.platform[v],
            "market": w.marketplace[v],
            "ad": rng.choice(len(w.ad_probs), size=n, p=w.ad_probs),
            "placement": self._placements(rng, n),
            "kind": np.zeros(n, dtype=np.int64),
        }

    def _bots(
        self,
        rng: np.random.Generator,
        kind: BotKind,
        expected: float,
        gap_scale: float,
        hour_ms: int,
    ) -> Frame:
        w, profile = self.world, PROFILES[kind]
        agents = w.agents[kind]
        n_sessions = int(rng.poisson(expected / profile.session_clicks))
        session, starts = _sessions(rng, n_sessions, profile.session_clicks, hour_ms)
        n = len(session)
        gaps = rng.exponential(profile.gap_s * gap_scale * 1000, n) + 200.0
        session_agent = rng.integers(0, len(agents.device), n_sessions)
        agent = session_agent[session]
        device, platform, ua = agents.device[agent], agents.platform[agent], agents.ua[agent]
        if profile.rotate_ua:
            odd = rng.random(n) < profile.odd_ua_share
            platform = np.where(odd, np.asarray(catalog.ODD_PLATFORM)[device], platform)
            ua = w.pick_ua(rng, device, platform, odd)
        if profile.ip_mode == "agent":
            ip = agents.ip[agent]
        elif profile.ip_mode == "rotate":
            ip = w.botnet_ips[rng.integers(0, len(w.botnet_ips), n)]
        elif profile.ip_mode == "visitor":
            ip = self._visitor_ips(rng, agents.visitor[session_agent])[session]
        else:
            ip = w.proxy_ips[rng.integers(0, len(w.proxy_ips), n_sessions)][session]
        n_customers = len(w.rfm_score)
        if profile.logged_in and n_customers:
            customer = rng.integers(0, n_customers, n_sessions)[session]
        else:
            customer = np.full(n, -1, dtype=np.int64)
        if profile.target == "competitor":
            ad = rng.choice(w.targeted_ads, size=n)
        elif profile.target == "publisher":
            ad = rng.choice(w.publisher_ads[kind], size=n)
        else:
            ad = rng.choice(len(w.ad_probs), size=n, p=w.ad_probs)
        if not profile.publisher:
            placement = self._placements(rng, n)
        elif profile.one_placement_per_session:
            placement = rng.choice(w.publisher_placements[kind], size=n_sessions)[session]
        else:
            placement = rng.choice(w.publisher_placements[kind], size=n)
        return {
            "t_ms": _click_times(session, starts, gaps),
            "sess": session,
            "customer": customer,
            "ip": ip,
            "ua": ua,
            "device": device,
            "platform": platform,
            "market": agents.marketplace[agent],
            "ad": ad,
            "placement": placement,
            "kind": np.full(n, KIND_CODE[kind], dtype=np.int64),
        }

    def _placements(self, rng: np.random.Generator, n: int) -> IntArray:
        """Placements by popularity (null for a share of clicks), as humans see them."""
        cdf = self.world.placement_cdf
        chosen = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)
        return np.where(rng.random(n) < PLACEMENT_SHARE, chosen, -1)

    def _visitor_ips(self, rng: np.random.Generator, visitor: IntArray) -> IntArray:
        """One IP per session of these visitors: carrier or home, as their own sessions get."""
        w = self.world
        over_carrier = (w.carrier_ip[visitor] > 0) & (
            rng.random(len(visitor)) < CARRIER_SESSION_SHARE
        )
        return np.where(over_carrier, w.carrier_ip[visitor], w.home_ip[visitor])

    def _purchases(self, rng: np.random.Generator, clicks: Frame, hour: int) -> Frame:
        """Only humans buy; loyal (high-RFM) customers more often than anonymous visitors."""
        w = self.world
        customer = clicks["customer"]
        rfm = np.where(customer >= 0, w.rfm_score[np.maximum(customer, 0)], 0.0)
        propensity = np.where(customer >= 0, 0.4 + 1.6 * rfm, 0.6) * self.config.purchase_rate
        buys = (clicks["kind"] == 0) & (rng.random(len(customer)) < propensity)
        src = frames.take(clicks, buys)
        n = int(buys.sum())
        delay_ms = np.minimum(
            rng.lognormal(np.log(PURCHASE_DELAY_MEDIAN_S), 1.1, n) + 60.0, MAX_PURCHASE_DELAY_S
        )
        return {
            "t_ms": src["t_ms"] + (delay_ms * 1000).astype(np.int64),
            "gen_hour": np.full(n, hour, dtype=np.int64),
            "serial": np.arange(n, dtype=np.int64),
            "click_serial": src["serial"],
            "sess_hour": src["sess_hour"],
            "sess": src["sess"],
            "customer": src["customer"],
            "amount": np.round(rng.lognormal(3.3, 0.9, n) + 0.99, 2),
            "currency": src["market"],
        }
