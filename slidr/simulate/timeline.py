"""When traffic happens: human diurnal and weekly cycles, and the day-to-day drift of bots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from slidr.simulate.bots import PROFILES, BotKind

FloatArray = npt.NDArray[np.float64]

#: Relative human activity per UTC hour: quiet at night, a lunch bump, a peak in the evening.
HUMAN_DIURNAL: FloatArray = np.array(
    [0.35, 0.2, 0.12, 0.08, 0.07, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.05,
     1.15, 1.1, 1.0, 1.0, 1.05, 1.15, 1.35, 1.6, 1.75, 1.65, 1.25, 0.7]
)  # fmt: skip
#: Relative human activity per weekday, Monday first: more on the weekend.
WEEKLY: FloatArray = np.array([0.92, 0.9, 0.92, 0.95, 1.02, 1.15, 1.14])

#: UTC hours of a click farm's shift (08-20 local time at UTC+7).
FARM_SHIFT_UTC = slice(1, 13)

HOUR_SHARE: FloatArray = HUMAN_DIURNAL / HUMAN_DIURNAL.sum()
WEEKDAY_FACTOR: FloatArray = WEEKLY / WEEKLY.mean()


@dataclass(frozen=True)
class DayPlan:
    """Per simulated day: bot share, bot mix and bot speed after the seeded random walk."""

    bot_share: FloatArray  # (days,)
    #: Share of each bot kind among the day's bot clicks; rows sum to 1. Columns follow BotKind.
    mix: FloatArray  # (days, kinds)
    #: Multiplier of click gaps per kind: below 1 = faster bots that day.
    gap_scale: FloatArray  # (days, kinds)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def plan_traffic_days(
    rng: np.random.Generator,
    days: int,
    bot_share: float,
    mix: dict[BotKind, float],
    drift: float,
) -> DayPlan:
    """Random walks, mean-reverting so that a long run still averages near the configured values.

    Night attacks happen on some days only; on the other days their volume goes to other kinds,
    so the bot share does not dip.
    """
    kinds = list(BotKind)
    base = np.array([mix.get(k, 0.0) for k in kinds], dtype=np.float64)
    base = base / base.sum()
    share_walk = np.zeros(days)
    mix_walk = np.zeros((days, len(kinds)))
    gap_walk = np.zeros((days, len(kinds)))
    for d in range(1, days):
        share_walk[d] = 0.7 * share_walk[d - 1] + rng.normal(0.0, 0.12 * drift)
        mix_walk[d] = 0.7 * mix_walk[d - 1] + rng.normal(0.0, 0.35 * drift, len(kinds))
        gap_walk[d] = 0.7 * gap_walk[d - 1] + rng.normal(0.0, 0.2 * drift, len(kinds))
    attack = rng.random(days) < 0.6
    attack[0] = True  # every run shows at least one night attack
    share = (
        1.0 / (1.0 + np.exp(-(_logit(bot_share) + share_walk))) if bot_share > 0 else share_walk * 0
    )
    weights = base[None, :] * np.exp(mix_walk)
    night = kinds.index(BotKind.NIGHT_BURST)
    weights[~attack, night] = 0.0
    totals = weights.sum(axis=1, keepdims=True)
    # A mix of only night attacks has nothing to shift to on quiet days: keep the base mix.
    weights = np.where(totals > 0, weights, base[None, :])
    mix_by_day = weights / weights.sum(axis=1, keepdims=True)
    return DayPlan(bot_share=share, mix=mix_by_day, gap_scale=np.exp(gap_walk))


def bot_hour_shares(kind: BotKind) -> FloatArray:
    """Share of a bot kind's daily clicks in each UTC hour."""
    profile = PROFILES[kind].hour_profile
    if profile == "flat":
        weights = np.ones(24)
    elif profile == "night":
        weights = np.zeros(24)
        weights[[0, 1, 2, 3, 4]] = [0.6, 1.0, 1.0, 0.8, 0.4]
    elif profile == "humanlike":  # proxies hide in human traffic but are less peaky
        weights = 0.5 + HUMAN_DIURNAL
    elif profile == "human":  # clicks made on real people's devices while they use them
        weights = HUMAN_DIURNAL.copy()
    else:  # "shift": a click farm's working day, 08-20 at UTC+7, the marketplaces' night
        weights = np.full(24, 0.05)
        weights[FARM_SHIFT_UTC] = 1.0
    return np.asarray(weights / weights.sum(), dtype=np.float64)
