"""Per-click cost of the GIVT filter (streams/givt.py), printed as a table.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_givt.py [--clicks 20000]

Cases: user agents never seen (every click runs the compiled regex), user agents from a small
set (the cache answers, as in real traffic), data-centre lookups in a list of N ranges, and the
whole filter on a click. No services needed.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time
from collections.abc import Callable

from slidr.events import Click
from streams.givt import DataCentreRanges, DeclaredBots, GivtFilter, crawler_patterns
from tests.factories import make_click  # run from the repository root (PYTHONPATH=.)

BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.{n}.0 Safari/537.36"
)


def per_call_us(fn: Callable[[int], object], n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=20_000)
    n = parser.parse_args().clicks
    rng = random.Random(7)
    started = time.perf_counter()
    patterns = crawler_patterns()
    bots = DeclaredBots(patterns)
    build_ms = (time.perf_counter() - started) * 1000
    unique = [BROWSER.format(v=100 + i % 30, n=i) for i in range(n)]
    common = [BROWSER.format(v=124, n=i % 500) for i in range(n)]
    networks = [
        ipaddress.ip_network(
            f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
        )
        for _ in range(100_000)
    ]
    ranges = DataCentreRanges(networks)
    ips = [f"{rng.randrange(1, 223)}.{rng.randrange(256)}.1.{rng.randrange(256)}" for _ in range(n)]
    ips6 = [f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}" for _ in range(n)]
    whole = GivtFilter(DeclaredBots(patterns), ranges)
    clicks: list[Click] = [make_click(i, ip=ips[i], user_agent=common[i]) for i in range(n)]
    rows = [
        (
            "user agent, never seen (regex)",
            per_call_us(lambda i: bots.matches_uncached(unique[i]), n),
        ),
        ("user agent, 500 distinct (cache)", per_call_us(lambda i: bots.matches(common[i]), n)),
        ("IPv4 in 100k /24 ranges (bisect)", per_call_us(lambda i: ips[i] in ranges, n)),
        ("IPv6 (bisect)", per_call_us(lambda i: ips6[i] in ranges, n)),
        ("whole filter per click (cached UA)", per_call_us(lambda i: whole.reason(clicks[i]), n)),
    ]
    print(f"{len(patterns)} crawler patterns compiled in {build_ms:.0f} ms; {n:,} clicks per case")
    print(f"{'case':<40} {'us/click':>9}")
    for name, us in rows:
        print(f"{name:<40} {us:>9.2f}")


if __name__ == "__main__":
    main()
