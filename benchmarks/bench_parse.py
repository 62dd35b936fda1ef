"""CPU cost of parsing one clicks-topic message (``parse_click_message``), printed as a table.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_parse.py [--clicks 20000] [--repeat 5]

Valid clicks are the simulator's own bytes (distinct ids, user agents, times; its IPs repeat,
as real ones do); the "new IP" cases give every message of every pass an address not seen
before (IPv4, IPv6 or IPv4-mapped IPv6). Every message is keyed by its click_id, as the
contract asks, but for the "no key" and "key_mismatch" cases. Each bad case is a valid click
broken in one way, as the dead-letter reasons name them. Each case is the best of
``--repeat`` passes over ``--clicks`` messages, single thread. No services needed.
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


def raw_change(find: bytes, replace: bytes) -> Callable[[bytes], bytes]:
    return lambda value: value.replace(find, replace, 1)


BAD: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing_field (no ip)": lambda e: e.pop("ip"),
    "wrong_type (logged_in 'maybe')": lambda e: e.update(logged_in="maybe"),
    "unknown_enum (device_type)": lambda e: e.update(device_type="fridge"),
    "invalid_value (ip 999.1.1.1)": lambda e: e.update(ip="999.1.1.1"),
    "invalid_value (unknown field)": lambda e: e.update(is_bot=True),
    "invalid_value (naive time)": lambda e: e.update(event_time=e["event_time"][:-1]),
    "too_old": lambda e: e.update(event_time="2025-01-01T00:00:00Z"),
    "invalid_value (NUL in session_id)": lambda e: e.update(session_id=e["session_id"] + "\0"),
}

#: Byte-level changes: what a JSON encoder cannot write from a dict.
BAD_BYTES: dict[str, Callable[[bytes], bytes]] = {
    "duplicate_key (ad_id twice)": lambda v: v[:-1] + b',"ad_id":"ad-2"}',
    "duplicate_key (escaped, first)": raw_change(b'"ad_id"', b'"ad\\u005fid":"x","ad_id"'),
}


def quoted(event: dict[str, Any]) -> None:
    # Valid, but an escaped quote defeats the cheap duplicate-key test: the exact one runs.
    event["user_agent"] += ' "q"'


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


def mapped(run: int) -> Callable[[int], str]:
    return lambda i: f"::ffff:10.{run}.{i >> 8}.{i & 255}"


#: One pass: (value, key) of each message; the key is the click's click_id, as the contract asks.
Messages = Sequence[tuple[bytes | None, bytes | None]]
Passes = Sequence[Messages]


def keyed(values: Sequence[bytes | None], keys: Sequence[bytes]) -> Messages:
    return list(zip(values, keys, strict=True))


def per_message_us(passes: Passes, now: datetime) -> tuple[float, str]:
    """Best µs per message over the passes, and the outcome of the first message."""
    best = float("inf")
    for messages in passes:
        started = time.perf_counter()
        for value, key in messages:
            # Not contextlib.suppress: it would add its own cost to every message.
            try:  # noqa: SIM105
                parse_click_message(value, key, LIMITS, now)
            except InvalidEvent:
                pass
        best = min(best, (time.perf_counter() - started) / len(messages) * 1e6)
    try:
        parse_click_message(*passes[0][0], LIMITS, now)
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
    keys = [orjson.loads(v)["click_id"].encode() for v in valid]
    now = START + timedelta(days=1)
    runs = range(args.repeat)

    def same(values: Sequence[bytes | None]) -> Passes:
        return [keyed(values, keys)] * args.repeat

    def new_ips(ip: Callable[[int], Callable[[int], str]]) -> Passes:
        return [keyed(with_new_ips(valid, ip(k)), keys) for k in runs]

    cases: list[tuple[str, Passes]] = [
        ("valid click (simulator)", same(valid)),
        ("valid click, new IPv4", new_ips(ipv4)),
        ("valid click, new IPv6", new_ips(ipv6)),
        ("valid click, new IPv4-mapped IPv6", new_ips(mapped)),
        ("valid click, an escape (\\/)", same([v.replace(b"/", b"\\/") for v in valid])),
        ("valid click, a quote in user_agent", same([broken(v, quoted) for v in valid])),
        ("valid click, no key", [list(zip(valid, [None] * len(valid), strict=True))] * args.repeat),
        ("key_mismatch", [keyed(valid, keys[1:] + keys[:1])] * args.repeat),
        *((name, same([broken(v, change) for v in valid])) for name, change in BAD.items()),
        *((name, same([change(v) for v in valid])) for name, change in BAD_BYTES.items()),
        ("malformed_json (cut in half)", same([v[: len(v) // 2] for v in valid])),
        ("tombstone (null value)", same([None] * len(valid))),
    ]
    size = sum(map(len, valid)) / len(valid)
    print(f"{len(valid):,} messages per case, {size:.0f} bytes on average, best of {args.repeat}")
    print(f"{'case':<36} {'outcome':<18} {'us/msg':>7}")
    for name, passes in cases:
        us, outcome = per_message_us(passes, now)
        print(f"{name:<36} {outcome:<18} {us:>7.2f}")


if __name__ == "__main__":
    main()
