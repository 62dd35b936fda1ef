"""CPU cost of parsing one clicks-topic message (``parse_click_message``), printed as a table.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_parse.py [--clicks 20000] [--repeat 5]

Valid clicks are the simulator's own bytes (distinct ids, user agents, times; its IPs repeat,
as real ones do); the "new IP" cases give every message of every pass an address not seen
before, IPv4 or IPv6. Each bad case is a valid click broken in one way, as the dead-letter
reasons name them. Each case is the best of ``--repeat`` passes over ``--clicks`` messages,
single thread. No services needed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from slidr.errors import InvalidEvent
from slidr.events import parse_click_message
from slidr.settings import EventLimits
from slidr.simulate.config import SimConfig
from slidr.simulate.encode import click_values
from slidr.simulate.generator import Generator

LIMITS = EventLimits()
START = datetime(2026, 1, 5, tzinfo=UTC)


def simulated(n: int) -> list[bytes]:
    """``n`` click values as the simulator's Kafka sink writes them."""
    out: list[bytes] = []
    config = SimConfig(start=START, days=1, clicks_per_day=max(n * 2, 10_000))
    for batch in Generator(config).hours():
        out += click_values(batch.clicks, batch.start)
        if len(out) >= n:
            break
    return out[:n]


def broken(value: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    event = orjson.loads(value)
    change(event)
    return orjson.dumps(event)


BAD: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing_field (no ip)": lambda e: e.pop("ip"),
    "wrong_type (logged_in 'maybe')": lambda e: e.update(logged_in="maybe"),
    "unknown_enum (device_type)": lambda e: e.update(device_type="fridge"),
    "invalid_value (ip 999.1.1.1)": lambda e: e.update(ip="999.1.1.1"),
    "invalid_value (unknown field)": lambda e: e.update(is_bot=True),
    "invalid_value (naive time)": lambda e: e.update(event_time=e["event_time"][:-1]),
    "too_old": lambda e: e.update(event_time="2025-01-01T00:00:00Z"),
}


def with_new_ips(values: list[bytes], ip: Callable[[int], str]) -> list[bytes]:
    """``values`` with the i-th click's IP set to ``ip(i)``."""
    out = []
    for i, value in enumerate(values):
        event = orjson.loads(value)
        event["ip"] = ip(i)
        out.append(orjson.dumps(event))
    return out


def ipv4(run: int) -> Callable[[int], str]:
    return lambda i: f"10.{run}.{i >> 8}.{i & 255}"


def ipv6(run: int) -> Callable[[int], str]:
    return lambda i: f"2001:db8:{run:x}::{i:x}"


Passes = Sequence[Sequence[bytes | None]]


def per_message_us(passes: Passes, now: datetime) -> tuple[float, str]:
    """Best µs per message over the passes, and the outcome of the first message."""
    best = float("inf")
    for values in passes:
        started = time.perf_counter()
        for value in values:
            # Not contextlib.suppress: it would add its own cost to every message.
            try:  # noqa: SIM105
                parse_click_message(value, b"k", LIMITS, now)
            except InvalidEvent:
                pass
        best = min(best, (time.perf_counter() - started) / len(values) * 1e6)
    try:
        parse_click_message(passes[0][0], b"k", LIMITS, now)
        outcome = "accepted"
    except InvalidEvent as exc:
        outcome = exc.reason
    return best, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    valid = simulated(args.clicks)
    now = START + timedelta(days=1)
    runs = range(args.repeat)

    def same(values: Sequence[bytes | None]) -> Passes:
        return [values] * args.repeat

    cases: list[tuple[str, Passes]] = [
        ("valid click (simulator)", same(valid)),
        ("valid click, new IPv4", [with_new_ips(valid, ipv4(k)) for k in runs]),
        ("valid click, new IPv6", [with_new_ips(valid, ipv6(k)) for k in runs]),
        *((name, same([broken(v, change) for v in valid])) for name, change in BAD.items()),
        ("malformed_json (cut in half)", same([v[: len(v) // 2] for v in valid])),
        ("tombstone (null value)", same([None] * len(valid))),
    ]
    size = sum(map(len, valid)) / len(valid)
    print(f"{len(valid):,} messages per case, {size:.0f} bytes on average, best of {args.repeat}")
    print(f"{'case':<34} {'outcome':<18} {'us/msg':>7}")
    for name, passes in cases:
        us, outcome = per_message_us(passes, now)
        print(f"{name:<34} {outcome:<18} {us:>7.2f}")


if __name__ == "__main__":
    main()
