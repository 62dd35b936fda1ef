"""Integer-coded frames -> the pyarrow tables users see, with the events' field names and strings.

Column names equal the fields of :class:`slidr.events.Click` and :class:`~slidr.events.Purchase`,
so a row validates with ``msgspec.convert(row, Click)``. Ground truth is a separate table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from slidr.simulate import catalog
from slidr.simulate.bots import BotKind
from slidr.simulate.frames import Frame
from slidr.simulate.population import World

_OCTETS = pa.array([str(i) for i in range(256)], pa.string())
_TWO_DIGITS = pa.array([f"{i:02d}" for i in range(60)], pa.string())
# Exactly what Click.to_json() writes after the seconds: nothing for whole seconds, else µs.
_FRACTIONS = pa.array(["Z"] + [f".{i:03d}000Z" for i in range(1, 1000)], pa.string())
_DEVICES = pa.array(catalog.DEVICES, pa.string())
_PLATFORMS = pa.array(catalog.PLATFORMS, pa.string())
_MARKETS = pa.array(catalog.MARKETPLACES, pa.string())
_CURRENCIES = pa.array(catalog.CURRENCIES, pa.string())
_PLACEMENTS = pa.array(catalog.PLACEMENTS, pa.string())
TIMESTAMP = pa.timestamp("ms", tz="UTC")


def _nullable(codes: npt.NDArray[Any]) -> pa.Array:
    return pa.array(np.maximum(codes, 0), pa.int64(), mask=codes < 0)


def _ids(prefix: str, hours: npt.NDArray[Any], serials: npt.NDArray[Any]) -> pa.Array:
    return pa.array(
        [f"{prefix}-{h}-{s}" for h, s in zip(hours.tolist(), serials.tolist(), strict=True)],
        pa.string(),
    )


def ip_strings(ips: npt.NDArray[Any]) -> pa.Array:
    octets = [_OCTETS.take(pa.array((ips >> shift) & 255)) for shift in (24, 16, 8, 0)]
    return pc.binary_join_element_wise(*octets, ".")


def iso_times(t_ms: npt.NDArray[Any], hour_start: datetime) -> pa.Array:
    """ISO-8601 strings as ``Click.to_json()`` writes them; all times lie in the given hour."""
    prefix = hour_start.strftime("%Y-%m-%dT%H")
    minutes = _TWO_DIGITS.take(pa.array((t_ms // 60_000) % 60))
    seconds = _TWO_DIGITS.take(pa.array((t_ms // 1000) % 60))
    text = pc.binary_join_element_wise(prefix, minutes, seconds, ":")
    return pc.binary_join_element_wise(text, _FRACTIONS.take(pa.array(t_ms % 1000)), "")


def click_id_strings(frame: Frame, seed: int, epoch_hour: int) -> pa.Array:
    return _ids(f"c{seed}", frame["gen_hour"] + epoch_hour, frame["serial"])


def click_table(frame: Frame, world: World, seed: int, epoch_hour: int) -> pa.Table:
    customer = _nullable(frame["customer"])
    ad = pa.array(frame["ad"])
    n = len(frame["t_ms"])
    return pa.table(
        {
            "schema_version": pa.array(np.ones(n, dtype=np.int8)),
            "event_time": pa.array(frame["t_ms"], TIMESTAMP),
            "click_id": click_id_strings(frame, seed, epoch_hour),
            "session_id": _ids(f"s{seed}", frame["sess_hour"] + epoch_hour, frame["sess"]),
            "customer_id": world.customer_ids.take(customer),
            "logged_in": pa.array(frame["customer"] >= 0),
            "ip": ip_strings(frame["ip"]),
            "user_agent": world.user_agents.take(pa.array(frame["ua"])),
            "device_type": _DEVICES.take(pa.array(frame["device"])),
            "platform": _PLATFORMS.take(pa.array(frame["platform"])),
            "marketplace": _MARKETS.take(pa.array(frame["market"])),
            "ad_id": world.ad_ids.take(ad),
            "campaign_id": world.campaign_ids.take(ad),
            "advertiser_id": world.advertiser_ids.take(ad),
            "placement": _PLACEMENTS.take(_nullable(frame["placement"])),
        }
    )


def purchase_table(frame: Frame, world: World, seed: int, epoch_hour: int) -> pa.Table:
    n = len(frame["t_ms"])
    return pa.table(
        {
            "schema_version": pa.array(np.ones(n, dtype=np.int8)),
            "event_time": pa.array(frame["t_ms"], TIMESTAMP),
            "purchase_id": _ids(f"p{seed}", frame["gen_hour"] + epoch_hour, frame["serial"]),
            # A purchase is generated in the hour of its click: same gen_hour.
            "click_id": _ids(f"c{seed}", frame["gen_hour"] + epoch_hour, frame["click_serial"]),
            "session_id": _ids(f"s{seed}", frame["sess_hour"] + epoch_hour, frame["sess"]),
            "customer_id": world.customer_ids.take(_nullable(frame["customer"])),
            "amount": pa.array(frame["amount"], pa.float64()),
            "currency": _CURRENCIES.take(pa.array(frame["currency"])),
        }
    )


def truth_table(frame: Frame, click_ids: pa.Array, kinds: Sequence[BotKind]) -> pa.Table:
    names = pa.array(["human", *(k.value for k in kinds)], pa.string())
    return pa.table(
        {
            "click_id": click_ids,
            "event_time": pa.array(frame["t_ms"], TIMESTAMP),
            "is_bot": pa.array(frame["kind"] > 0),
            "bot_kind": names.take(pa.array(frame["kind"])),
        }
    )
