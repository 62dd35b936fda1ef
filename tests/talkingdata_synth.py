"""Synthetic files in the TalkingData AdTracking train format, for tests and benchmarks.

Not a traffic model (``slidr simulate`` is one): just the format's shape with its orders of
magnitude: device 1 for most clicks, heavy-tailed ips and apps, ~0.3 % of clicks attributed
minutes to hours later, and a few click-farm ips firing bursts that are never attributed.
As in train.csv, an ip's chance of a download falls with how many clicks it makes (busy ips
are carrier gateways and click farms) and varies by app, so velocity features carry some
signal and ids carry more (the features see no app id). Clicks come in visits: one (ip,
device, os) clicks ads of a few apps seconds apart. A share of clicks repeat an earlier click's
(ip, app, device, os, channel) a minute or two later and are never attributed (click spam: the
next-click features of the Kaggle winners find it), so the download rate also falls with an
ip's recent clicks on the same app, which only ad-context counters tell from a visit's clicks
on several apps.

    python -m tests.talkingdata_synth train.csv --rows 1000000
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import pandas as pd
import typer

from slidr.ingest.talkingdata_csv import TRAIN_COLUMNS

#: Where Kaggle's train.csv starts.
START = datetime(2017, 11, 6, 14, tzinfo=UTC)
_DEVICES = np.array([1, 2, 0, 3032, 3543, 4, 59])
_DEVICE_SHARES = np.array([0.94, 0.041, 0.006, 0.005, 0.004, 0.002, 0.002])
_OSES = np.array([19, 13, 17, 18, 22, 10, 8, 6, 20, 25])
_OS_SHARES = np.geomspace(1, 0.05, len(_OSES)) / np.geomspace(1, 0.05, len(_OSES)).sum()
#: Ids drawn with P(rank r) ~ r^-exponent: the busiest ip gets ~1 % of clicks, as in train.csv.
_IPS, _IP_EXPONENT = 100_000, 0.7
_APPS, _APP_EXPONENT = 400, 1.2
_CHANNELS, _CHANNEL_EXPONENT = 200, 1.0
_FARM_SHARE = 0.05
_N_FARMS = 12
_ATTRIBUTED_SHARE = 0.003
#: An ip with n clicks in the file downloads at a rate ~ 1 / (1 + n / _IP_CLICKS_SCALE).
_IP_CLICKS_SCALE = 20.0
#: Spread of the per-app download rate (lognormal sigma).
_APP_RATE_SIGMA = 1.0
#: Clicks per visit of one (ip, device, os) on average (geometric), each on an app drawn
#: afresh, this many seconds apart on average (exponential).
_VISIT_CLICKS = 2.5
_VISIT_GAP_S = 40.0
#: Share of rows that repeat an earlier row's (ip, app, device, os, channel), this many
#: seconds after it on average (exponential): never attributed.
_REPEAT_SHARE = 0.2
_REPEAT_GAP_S = 90.0


def _ranked(rng: np.random.Generator, n: int, exponent: float, size: int) -> npt.NDArray[np.int64]:
    """Ids 1..n, id r drawn with probability proportional to r^-exponent."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return rng.choice(n, size, p=weights / weights.sum()) + 1


def synthetic_frame(rows: int, *, seed: int = 7, days: float = 3.0) -> pd.DataFrame:
    """``rows`` clicks over ``days`` from 14:00 on 2017-11-06, sorted by click time."""
    rng = np.random.default_rng(seed)
    span = int(days * 86400)
    base = rows - int(rows * _REPEAT_SHARE)
    # Visits: one (ip, device, os) clicking ads of a few different apps, seconds apart.
    visit = np.repeat(np.arange(base), rng.geometric(1.0 / _VISIT_CLICKS, base))[:base]
    visits = int(visit[-1]) + 1
    first = np.r_[True, visit[1:] != visit[:-1]]
    step = np.where(first, 0.0, rng.exponential(_VISIT_GAP_S, base))
    within = np.add.accumulate(step) - np.add.accumulate(step)[first][visit]
    seconds = (rng.uniform(0, span, visits)[visit] + within).astype(np.int64) % span
    ip = _ranked(rng, _IPS, _IP_EXPONENT, visits)[visit]
    device = rng.choice(_DEVICES, visits, p=_DEVICE_SHARES)[visit]
    os_ = rng.choice(_OSES, visits, p=_OS_SHARES)[visit]
    app = _ranked(rng, _APPS, _APP_EXPONENT, base)
    channel = _ranked(rng, _CHANNELS, _CHANNEL_EXPONENT, base) + 100
    farm = (rng.random(visits) < _FARM_SHARE)[visit]
    ip[farm] = rng.integers(1, _N_FARMS + 1, visits)[visit][farm] + _IPS
    device[farm] = 1
    # Click spam: rows again, a little later, with the same (ip, app, device, os, channel).
    source = rng.integers(0, base, rows - base)
    later = seconds[source] + rng.exponential(_REPEAT_GAP_S, rows - base).astype(np.int64)
    seconds = np.concatenate([seconds, np.minimum(later, span - 1)])
    ip, device, os_, app, channel = (
        np.concatenate([v, v[source]]) for v in (ip, device, os_, app, channel)
    )
    farm = np.concatenate([farm, farm[source]])
    repeat = np.arange(rows) >= base
    _, where, per_ip = np.unique(ip, return_inverse=True, return_counts=True)
    app_rate = rng.lognormal(0.0, _APP_RATE_SIGMA, _APPS + 1)
    rate = app_rate[app] / (1.0 + per_ip[where] / _IP_CLICKS_SCALE)
    rate[farm | repeat] = 0.0
    rate *= _ATTRIBUTED_SHARE * rows / rate.sum()
    attributed = rng.random(rows) < np.clip(rate, 0.0, 1.0)
    delay = np.exp(rng.normal(np.log(1800), 1.5, rows)).astype(np.int64)
    order = np.argsort(seconds, kind="stable")
    seconds, ip, app, device, os_, channel, attributed, delay = (
        v[order] for v in (seconds, ip, app, device, os_, channel, attributed, delay)
    )
    click_time = pd.to_datetime(seconds + int(START.timestamp()), unit="s")
    attributed_time = click_time + pd.to_timedelta(delay, unit="s")
    return pd.DataFrame(
        {
            "ip": ip,
            "app": app,
            "device": device,
            "os": os_,
            "channel": channel,
            "click_time": click_time.strftime("%Y-%m-%d %H:%M:%S"),
            "attributed_time": np.where(
                attributed, attributed_time.strftime("%Y-%m-%d %H:%M:%S"), ""
            ),
            "is_attributed": attributed.astype(np.int8),
        },
        columns=list(TRAIN_COLUMNS),
    )


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """The frame as a train file: header, comma-separated, LF line ends, no quoting."""
    frame.to_csv(path, index=False, lineterminator="\n")


def main(
    path: Annotated[Path, typer.Argument(dir_okay=False, help="CSV file to write.")],
    rows: Annotated[int, typer.Option("--rows", min=1, help="Data rows.")] = 1_000_000,
    days: Annotated[float, typer.Option("--days", min=0.05, help="Span of click times.")] = 3.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed => same file.")] = 7,
) -> None:
    """Write a synthetic TalkingData train file."""
    write_csv(synthetic_frame(rows, seed=seed, days=days), path)


if __name__ == "__main__":
    typer.run(main)
