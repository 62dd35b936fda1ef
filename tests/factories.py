"""Small, explicit clicks (and model inputs) for tests that need to know exactly what went in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from slidr.events import Click, DeviceType, Platform
from slidr.features import CATEGORICAL_BUCKETS, CATEGORICAL_COLUMNS, N_FEATURES


def make_click(
    n: int,
    *,
    at: datetime | None = None,
    session: str = "s-1",
    customer: str | None = None,
    ip: str = "198.51.100.1",
    device: DeviceType = DeviceType.DESKTOP,
    user_agent: str = "Mozilla/5.0 (test)",
    prefix: str = "c",
) -> Click:
    return Click(
        click_id=f"{prefix}-{n}",
        event_time=at or datetime.now(UTC) - timedelta(minutes=5),
        session_id=session,
        customer_id=customer,
        logged_in=customer is not None,
        ip=ip,
        user_agent=user_agent,
        device_type=device,
        platform=Platform.IOS if device is DeviceType.APP else Platform.WINDOWS,
        marketplace="US",
        ad_id="ad-1",
        campaign_id="camp-1",
        advertiser_id="adv-1",
    )


def mixed_traffic(n: int, prefix: str, start: datetime) -> list[Click]:
    """One click a second over 17 sessions, 11 IPs and three devices; a third logged in."""
    devices = list(DeviceType)
    return [
        make_click(
            i,
            prefix=prefix,
            at=start + timedelta(seconds=i),
            session=f"s-{i % 17}",
            customer=f"u-{i % 5}" if i % 3 == 0 else None,
            ip=f"198.51.100.{i % 11}",
            device=devices[i % 3],
        )
        for i in range(n)
    ]


def feature_rows(n: int, seed: int, *, ids_per_field: int = 300) -> npt.NDArray[np.float32]:
    """Model inputs: heavy-tailed counters, and categorical ids drawn from the first
    ``ids_per_field`` buckets of each field."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(1.0, 5.0, size=(n, N_FEATURES)).astype(np.float32)
    for column, buckets in zip(CATEGORICAL_COLUMNS, CATEGORICAL_BUCKETS, strict=True):
        x[:, column] = rng.integers(0, min(buckets, ids_per_field), n)
    return x
