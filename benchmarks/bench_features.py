"""Benchmark of the feature store's Redis cost: `python benchmarks/bench_features.py [--json]`.

Simulates one day of clicks (as `slidr simulate --days 1 --clicks-per-day 200000 --seed 5`
would; the window ends at the current hour) and feeds them in event-time order, in batches of
500, through ``RedisFeatureStore.features`` on a private redis-server and then on a private
3-node Redis Cluster, each started here with RedisService (free ports, temporary state) and
stopped at the end, even on error. The servers share the machine with this client.

Per target, from the server side (``INFO``, summed over the nodes of the cluster):
- ``redis_cpu_us_per_click``: used_cpu_sys + used_cpu_user before and after the feed, per click.
  ``redis_idle_cpu_us_per_click`` is the part an idle server (cluster: gossip, cron) would have
  burnt in the same wall time, measured for 2 s before the feed; it is included above.
- ``incr_us``: server CPU per INCR of `redis-benchmark -q -n 1000000 -P 16 -t incr` run against
  the same server(s) after the feed (``--cluster`` on the cluster), as INFO cpu delta / INCRs,
  so both figures are server CPU; ``incr_wall_us`` is redis-benchmark's own 1 / rate (the
  issue's 0.68 µs). ``incr_equivalents_per_click`` = redis_cpu_us_per_click / incr_us.
- ``round_trips_per_batch``: the store's ``round_trips`` counter (requests sent) before and
  after, per batch; a store without it is counted by EVALSHA + EVAL calls (INFO commandstats).
- ``bytes_per_click_day``: see below. ``used_memory_mb`` and ``keys`` are what is left then,
  ``*_end_of_feed`` what there was right after the feed.

Memory at steady state. The store caches each click's feature row for ``row_horizon_s`` of
WALL time so that a redelivery gets the same row; a feed that compresses a day into a minute
would hold the whole day's rows, which no live pipeline does. So the store runs with
``row_horizon_s`` scaled by the replay's compression, max(1, round(600 * expected wall / event
span)) with the wall time expected at 3,000 clicks/s (`--row-horizon-s` overrides). Right after
the feed one SCAN of every node deletes the keys that have expired (Redis's own expiry only
samples), and used_memory then is ``used_memory_mb_end_of_feed``: the state plus the rows of
the last horizon. Then the benchmark waits one horizon, so that every key with a TTL within the
horizon (the row cache; velocity state lives a day and more) has expired, SCANs again and reads
used_memory: the state alone. bytes_per_click_day = (that - used_memory of the empty server) /
clicks of the last 24 h of event time, plus the live row cache: bytes per cached row (the
memory that expired in the wait / the clicks fed in the horizon before the first SCAN) x the
default 600 s horizon / 86,400 s, i.e. what a pipeline at any steady rate holds for 600 s of
clicks (``row_cache_bytes_per_click_day``). Velocity keys' TTLs are wall-clock too, so with
--days > 1 every day stays and the figure overstates a live pipeline's. Kinds kept less than a
day (``Kind.ttl_ms``: the (ip, advertiser) pair's 2 h) would not expire in the compressed
feed either, so the benchmark expires them as a live Redis would: every ``EXPIRE_EVERY``
batches, and once more after the feed, it deletes the states whose entity's last click is
more than the kind's TTL older than the feed's event time (every append renews such a TTL),
``short_lived_deleted`` in all. What the deletions cost is left out of the feed's figures (this
process's CPU and wall time, and the servers' CPU, measured around each deletion) and reported
as ``short_lived_delete_redis_us_per_click``: a live Redis pays about that to expire them.

Cluster vs single: the features of the same clicks must be identical on both
(``features_identical`` under "cluster"). A store without cluster support fails there with a
message (exit status 1); the single-node figures are still printed.

Worker CPU. ``worker_cpu_us_per_click`` is this process's CPU (``time.process_time``) during
the feed, per click: everything the worker spends in ``features`` (planning, encoding, the Redis
client, counting, filling the matrix), since Redis runs in other processes. ``--worker-cpu``
measures the store's own part alone, without the Redis client or any I/O: on a private
redis-server it feeds the day while recording every script reply of the first
``WORKER_BATCHES`` batches (cold: an empty Redis, every entity new) and of the last ones (warm:
entities seen all day, their logs and bases filled), then answers the same calls with the
recorded replies, again and again for at least ``--min-cpu-s`` of CPU, and reports CPU µs per
click (the features must equal the recorded run's). ``--profile`` adds cProfile's top functions
of one warm replay.

Small batches. ``--batch-sizes 1,10,50,500`` measures the cost per batch as the worker's
adaptive micro-batches see it: on a private redis-server it feeds the first half of the day in
batches of ``--batch-size`` (entities warm), then, for each size in turn, the next clicks of
the day in batches of that size (``SIZE_BATCHES`` batches, fewer for large sizes), timing each
batch: this process's CPU (Redis client included) and wall time, median and p99 per batch
(the first ``SIZE_SKIPPED`` batches of each size not counted). The same batches answered from
their recorded replies give the store's own CPU per batch, without the Redis client.
``--profile`` adds cProfile's top functions of the replay of the smallest size.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis_probe import RedisNodes

from models.featurize import clicks_of
from slidr.errors import SlidrError
from slidr.events import Click
from slidr.features import N_FEATURES
from slidr.settings import RedisSettings, Settings
from slidr.simulate.config import SimConfig, window_ending_now
from slidr.simulate.generator import Generator
from slidr.stack.redis_server import RedisService
from streams.feature_store import RedisFeatureStore
from streams.feature_store.batch import entity_value
from streams.feature_store.layout import LAYOUT
from streams.feature_store.nodes import Nodes, OneNode, connect
from streams.feature_store.script import Script
from tests.stack_fixtures import free_port_range, free_ports

DAY_S = 86_400
#: What the store's cache would hold live: RedisSettings' default redelivery horizon.
LIVE_ROW_HORIZON_S = RedisSettings().row_horizon_s
#: Only to scale the row horizon before the feed; the measured rate is reported.
EXPECTED_CLICKS_PER_S = 3_000
IDLE_S = 2.0
#: Batches recorded at each end of the day for --worker-cpu.
WORKER_BATCHES = 40
#: --batch-sizes: batches timed per size (at most SIZE_CLICKS clicks, at least SIZE_MIN_BATCHES
#: batches), after SIZE_SKIPPED untimed ones (first row hashes, connection warm-up).
SIZE_BATCHES = 400
SIZE_CLICKS = 20_000
SIZE_MIN_BATCHES = 40
SIZE_SKIPPED = 5
console = Console(stderr=True)


@dataclass(frozen=True)
class Traffic:
    clicks: list[Click]
    event_ms: npt.NDArray[np.int64]

    @property
    def span_s(self) -> float:
        return float(self.event_ms[-1] - self.event_ms[0]) / 1000

    def last_day(self) -> int:
        """Clicks of the last 24 h of event time."""
        return int(np.count_nonzero(self.event_ms > self.event_ms[-1] - DAY_S * 1000))


def simulate(days: int, clicks_per_day: int, seed: int) -> Traffic:
    config = SimConfig(
        start=window_ending_now(days), days=days, clicks_per_day=clicks_per_day, seed=seed
    )
    table = pa.concat_tables([batch.clicks for batch in Generator(config).hours()])
    table = table.sort_by([("event_time", "ascending"), ("click_id", "ascending")])
    event_ms = table["event_time"].cast(pa.int64()).to_numpy()
    return Traffic(clicks_of(table), np.asarray(event_ms, dtype=np.int64))


class ShortLived:
    """Expiry, by event time, of the states of kinds kept less than a day (the docstring)."""

    def __init__(self, traffic: Traffic, prefix: str, nodes: RedisNodes) -> None:
        self.traffic, self.nodes = traffic, nodes
        self.kinds = [k for k in LAYOUT.kinds if k.refresh]
        self.heads = [f"{prefix}e:{k.digest}:{{{k.entity.name}:" for k in self.kinds]
        self.last: list[dict[str, int]] = [{} for _ in self.kinds]
        self.seen = 0
        self.deleted = 0
        #: This process's CPU and wall seconds, and the servers' CPU seconds, spent deleting.
        self.cpu_s = self.wall_s = self.redis_cpu_s = 0.0

    def expire(self, fed: int) -> None:
        """The first ``fed`` clicks were fed: delete what has expired at the last one's time."""
        if not self.kinds or not fed:
            return
        cpu, wall, redis_cpu = time.process_time(), time.perf_counter(), self.nodes.cpu_s()
        clicks, event_ms = self.traffic.clicks, self.traffic.event_ms
        now = int(event_ms[fed - 1])
        gone = []
        for kind, head, last in zip(self.kinds, self.heads, self.last, strict=True):
            new = event_ms[self.seen : fed].tolist()
            for click, ms in zip(clicks[self.seen : fed], new, strict=True):
                value = entity_value(click, kind.entity.fields)
                if value is not None:
                    last[value] = ms
            old = [v for v, ms in last.items() if ms < now - kind.ttl_ms]
            for v in old:
                del last[v]
            gone += [f"{head}{v}}}" for v in old]
        self.seen = fed
        self.nodes.delete(gone)
        self.deleted += len(gone)
        self.redis_cpu_s += self.nodes.cpu_s() - redis_cpu
        self.cpu_s += time.process_time() - cpu
        self.wall_s += time.perf_counter() - wall


@dataclass(frozen=True)
class Feed:
    features: npt.NDArray[np.float32]
    wall_s: float
    #: perf_counter() at the end of each batch, and the batch sizes.
    done_at: npt.NDArray[np.float64]
    sizes: npt.NDArray[np.int64]
    #: Requests the store says it sent, or None when it does not count them.
    round_trips: int | None
    #: This process's CPU seconds during the feed.
    cpu_s: float


#: Batches between two expiries of short-lived states (ShortLived).
EXPIRE_EVERY = 20


async def feed(
    settings: RedisSettings,
    clicks: Sequence[Click],
    batch_size: int,
    short_lived: ShortLived | None = None,
) -> Feed:
    out = np.empty((len(clicks), N_FEATURES), dtype=np.float32)
    starts = range(0, len(clicks), batch_size)
    done_at = np.empty(len(starts))
    async with RedisFeatureStore(settings, timeout_s=30.0) as store:
        sent_before = getattr(store, "round_trips", None)
        began = time.perf_counter()
        cpu = time.process_time()
        for b, start in enumerate(starts):
            out[start : start + batch_size] = await store.features(
                clicks[start : start + batch_size]
            )
            if short_lived is not None and b % EXPIRE_EVERY == EXPIRE_EVERY - 1:
                short_lived.expire(min(start + batch_size, len(clicks)))
            done_at[b] = time.perf_counter()
        if short_lived is not None:
            short_lived.expire(len(clicks))
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu
        if short_lived is not None:
            wall, cpu = wall - short_lived.wall_s, cpu - short_lived.cpu_s
        sent_after = getattr(store, "round_trips", None)
    sent = None
    if isinstance(sent_before, int) and isinstance(sent_after, int):
        sent = sent_after - sent_before
    sizes = np.minimum(batch_size, len(clicks) - np.asarray(starts, dtype=np.int64))
    return Feed(out, wall, done_at, sizes, sent, cpu)


@dataclass(frozen=True)
class Memory:
    """used_memory and keys right after the feed and once the row cache has expired."""

    end_of_feed: int
    keys_end_of_feed: int
    state: int
    keys: int
    #: Clicks whose rows were in ``end_of_feed`` (fed within one horizon of it).
    live_rows: int


def settle(nodes: RedisNodes, fed: Feed, horizon_s: int) -> Memory:
    """Memory with the last horizon's rows, then without them (see the docstring)."""
    fed_at = float(fed.done_at[-1])
    nodes.purge_expired()
    end_of_feed, keys_end_of_feed = nodes.used_memory(), nodes.keys()
    # Rows expire during the SCAN too: count those of the horizon before its middle.
    live_since = (fed_at + time.perf_counter()) / 2 - horizon_s
    time.sleep(max(0.0, fed_at + horizon_s + 0.05 - time.perf_counter()))
    nodes.purge_expired()
    live_rows = int(fed.sizes[fed.done_at > live_since].sum())
    return Memory(end_of_feed, keys_end_of_feed, nodes.used_memory(), nodes.keys(), live_rows)


def measure(
    service: RedisService, traffic: Traffic, batch_size: int, incr_requests: int
) -> tuple[dict[str, Any], npt.NDArray[np.float32]]:
    nodes = RedisNodes(service)
    try:
        empty_memory = nodes.used_memory()
        idle_cpu = nodes.cpu_s()
        time.sleep(IDLE_S)
        idle_cpu_per_s = (nodes.cpu_s() - idle_cpu) / IDLE_S
        calls, cpu = nodes.script_calls(), nodes.cpu_s()
        short_lived = ShortLived(traffic, service.settings.key_prefix, nodes)
        fed = asyncio.run(feed(service.settings, traffic.clicks, batch_size, short_lived))
        cpu, calls = nodes.cpu_s() - cpu - short_lived.redis_cpu_s, nodes.script_calls() - calls
        mem = settle(nodes, fed, service.settings.row_horizon_s)
        incr_us, incr_wall_us = nodes.incr_reference(incr_requests)
        version = nodes.version()
    finally:
        nodes.close()
    n, batches = len(traffic.clicks), len(fed.sizes)
    cpu_us = cpu * 1e6 / n
    expired = mem.end_of_feed - mem.state
    row_bytes = (
        expired / mem.live_rows if mem.keys_end_of_feed > mem.keys and mem.live_rows else 0.0
    )
    row_cache = row_bytes * LIVE_ROW_HORIZON_S / DAY_S
    result: dict[str, Any] = {
        "nodes": len(service.ports),
        "redis_version": version,
        "clicks": n,
        "clicks_per_s": n / fed.wall_s,
        "worker_cpu_us_per_click": fed.cpu_s * 1e6 / n,
        "redis_cpu_us_per_click": cpu_us,
        "redis_idle_cpu_us_per_click": idle_cpu_per_s * fed.wall_s * 1e6 / n,
        "incr_us": incr_us,
        "incr_wall_us": incr_wall_us,
        "incr_equivalents_per_click": cpu_us / incr_us,
        "bytes_per_click_day": (mem.state - empty_memory) / traffic.last_day() + row_cache,
        "row_cache_bytes_per_click_day": row_cache,
        "row_cache_bytes_per_row": row_bytes,
        "clicks_last_24h": traffic.last_day(),
        "round_trips_per_batch": (fed.round_trips if fed.round_trips is not None else calls)
        / batches,
        "round_trips_source": "store.round_trips" if fed.round_trips is not None else "EVAL*",
        "used_memory_mb": (mem.state - empty_memory) / 1e6,
        "keys": mem.keys,
        "used_memory_mb_end_of_feed": (mem.end_of_feed - empty_memory) / 1e6,
        "keys_end_of_feed": mem.keys_end_of_feed,
        "short_lived_deleted": short_lived.deleted,
        "short_lived_delete_redis_us_per_click": short_lived.redis_cpu_s
        * 1e6
        / len(traffic.clicks),
    }
    return result, fed.features


def run_target(
    root: Path, nodes: int, traffic: Traffic, args: argparse.Namespace, horizon_s: int
) -> tuple[dict[str, Any], npt.NDArray[np.float32]]:
    """Start a private Redis (one node or a cluster), measure, stop it whatever happens."""
    port = free_port_range(nodes) if nodes else free_ports(1)[0]
    redis = RedisSettings(
        port=port, cluster_nodes=nodes, key_prefix="slidr-bench:", row_horizon_s=horizon_s
    )
    service = RedisService(Settings(state_dir=root, redis=redis))
    service.check_prerequisites()
    try:
        service.start()
        return measure(service, traffic, args.batch_size, args.incr_requests)
    finally:
        service.proc.stop()


class Recorder:
    """The store's Redis, keeping every script reply while ``on``."""

    def __init__(self, inner: Nodes) -> None:
        self.inner = inner
        self.on = False
        self.replies: list[Any] = []

    async def ready(self) -> None:
        await self.inner.ready()

    def node_of(self, key: str) -> Hashable:
        return self.inner.node_of(key)

    def row_tag(self, node: Hashable) -> str:
        return self.inner.row_tag(node)

    async def evalsha(
        self, node: Hashable, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        reply = await self.inner.evalsha(node, script, keys, args)
        if self.on:
            self.replies.append(reply)
        return reply

    async def each(self, *command: Any) -> dict[str, Any]:
        return await self.inner.each(*command)

    async def refresh(self) -> None:
        await self.inner.refresh()

    async def drop(self, prefix: str) -> int:
        return await self.inner.drop(prefix)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Replay(OneNode):
    """One Redis node that answers the store's script calls with recorded replies, in order,
    at no cost: what remains is the worker's own work."""

    def __init__(self, replies: list[Any]) -> None:
        self._replies = iter(replies)

    async def evalsha(
        self, node: Hashable, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        return next(self._replies)

    async def each(self, *command: Any) -> dict[str, Any]:
        raise NotImplementedError("a replay answers script calls only")

    async def refresh(self) -> None:
        return None

    async def drop(self, prefix: str) -> int:
        return 0

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class Segment:
    """Batches fed through a real Redis, with its replies and the features they gave."""

    batches: list[list[Click]]
    replies: list[Any]
    features: list[npt.NDArray[np.float32]]

    @property
    def clicks(self) -> int:
        return sum(map(len, self.batches))


async def record(
    settings: RedisSettings, clicks: Sequence[Click], batch_size: int
) -> tuple[Segment, Segment, float]:
    """The first and the last WORKER_BATCHES full batches of the feed, recorded, and the
    worker CPU µs per click of the batches between them (Redis client included)."""
    batches = [list(clicks[i : i + batch_size]) for i in range(0, len(clicks), batch_size)]
    if len(batches[-1]) < batch_size:
        batches.pop()
    ends = min(WORKER_BATCHES, len(batches) // 3)
    recorder = Recorder(connect(settings, 30.0))
    segments = []
    async with RedisFeatureStore(settings, nodes=recorder) as store:
        for i, part in enumerate((batches[:ends], batches[ends:-ends], batches[-ends:])):
            recorder.on, recorder.replies = i != 1, []
            began = time.process_time()
            features = [await store.features(b) for b in part]
            cpu = time.process_time() - began
            if recorder.on:
                segments.append(Segment(part, recorder.replies, features))
            else:
                middle = cpu * 1e6 / max(1, sum(map(len, part)))
    return segments[0], segments[1], middle


async def replay(settings: RedisSettings, segment: Segment, min_cpu_s: float) -> float:
    """Worker CPU µs per click of ``segment``'s batches answered by its recorded replies."""
    return await replay_s(settings, segment, min_cpu_s) * 1e6 / segment.clicks


async def replay_s(settings: RedisSettings, segment: Segment, min_cpu_s: float) -> float:
    """Worker CPU seconds of one pass over ``segment``'s batches answered by its recorded
    replies (the mean of as many passes as ``min_cpu_s`` of CPU takes)."""
    cpu, rounds = 0.0, 0
    while cpu < min_cpu_s or not rounds:
        store = RedisFeatureStore(settings, nodes=Replay(segment.replies))
        began = time.process_time()
        features = [await store.features(b) for b in segment.batches]
        cpu += time.process_time() - began
        rounds += 1
        if not all(map(np.array_equal, features, segment.features)):
            raise RuntimeError("replayed features differ from the recorded run's")
    return cpu / rounds


def profile(
    settings: RedisSettings, segment: Segment, top: int = 25, min_cpu_s: float = 0.0
) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(replay_s(settings, segment, min_cpu_s))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def worker_cpu(root: Path, traffic: Traffic, args: argparse.Namespace) -> dict[str, Any]:
    """--worker-cpu: the store's own CPU per click, cold and warm (see the docstring)."""
    redis = RedisSettings(port=free_ports(1)[0], key_prefix="slidr-bench:")
    service = RedisService(Settings(state_dir=root, redis=redis))
    service.check_prerequisites()
    try:
        service.start()
        cold, warm, middle = asyncio.run(record(redis, traffic.clicks, args.batch_size))
    finally:
        service.proc.stop()
    result: dict[str, Any] = {
        "batches_per_segment": len(cold.batches),
        "batch_size": args.batch_size,
        "cold_us_per_click": asyncio.run(replay(redis, cold, args.min_cpu_s)),
        "warm_us_per_click": asyncio.run(replay(redis, warm, args.min_cpu_s)),
        "feed_with_redis_client_us_per_click": middle,
    }
    if args.profile:
        print(profile(redis, warm), file=sys.stderr)
    return result


def worker_table(result: dict[str, Any]) -> Table:
    out = Table("state", "batches", "worker CPU µs/click", title="feature store, worker side")
    n = str(result["batches_per_segment"])
    out.add_row("cold: first batches, empty Redis", n, f"{result['cold_us_per_click']:.1f}")
    out.add_row("warm: last batches of the day", n, f"{result['warm_us_per_click']:.1f}")
    out.add_row(
        "the day between, Redis client included",
        "-",
        f"{result['feed_with_redis_client_us_per_click']:.1f}",
    )
    out.caption = f"batches of {result['batch_size']}; replayed replies, no I/O (cold, warm)"
    return out


async def timed_sizes(
    settings: RedisSettings, clicks: Sequence[Click], sizes: Sequence[int], warm_batch: int
) -> list[tuple[Segment, npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """--batch-sizes: the first half of the day fed in batches of ``warm_batch``, then per size
    its batches of the next clicks, recorded, with each timed batch's CPU and wall seconds."""
    half = len(clicks) // 2
    recorder = Recorder(connect(settings, 30.0))
    out = []
    async with RedisFeatureStore(settings, nodes=recorder) as store:
        for start in range(0, half, warm_batch):
            await store.features(clicks[start : min(start + warm_batch, half)])
        at = half
        for size in sizes:
            n = SIZE_SKIPPED + max(SIZE_MIN_BATCHES, min(SIZE_BATCHES, SIZE_CLICKS // size))
            batches = [list(clicks[at + i * size : at + (i + 1) * size]) for i in range(n)]
            if len(batches[-1]) < size:
                raise SystemExit(f"--batch-sizes: too few clicks for {n} batches of {size}")
            at += n * size
            cpu, wall = np.empty(n), np.empty(n)
            recorder.on, recorder.replies = True, []
            features = []
            for i, batch in enumerate(batches):
                c, w = time.process_time(), time.perf_counter()
                features.append(await store.features(batch))
                wall[i], cpu[i] = time.perf_counter() - w, time.process_time() - c
            recorder.on = False
            segment = Segment(batches, recorder.replies, features)
            out.append((segment, cpu[SIZE_SKIPPED:], wall[SIZE_SKIPPED:]))
    return out


def batch_sizes(root: Path, traffic: Traffic, args: argparse.Namespace) -> list[dict[str, Any]]:
    """--batch-sizes: CPU and wall per batch of each size (see the docstring)."""
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    redis = RedisSettings(port=free_ports(1)[0], key_prefix="slidr-bench:")
    service = RedisService(Settings(state_dir=root, redis=redis))
    service.check_prerequisites()
    try:
        service.start()
        timed = asyncio.run(timed_sizes(redis, traffic.clicks, sizes, args.batch_size))
    finally:
        service.proc.stop()
    rows = []
    for size, (segment, cpu, wall) in zip(sizes, timed, strict=True):
        store_s = asyncio.run(replay_s(redis, segment, args.min_cpu_s / len(sizes)))
        ms = 1e3
        rows.append(
            {
                "batch_size": size,
                "batches": len(cpu),
                "cpu_ms_median": float(np.median(cpu)) * ms,
                "cpu_ms_p99": float(np.percentile(cpu, 99)) * ms,
                "wall_ms_median": float(np.median(wall)) * ms,
                "wall_ms_p99": float(np.percentile(wall, 99)) * ms,
                "cpu_us_per_click": float(cpu.mean()) * 1e6 / size,
                # The replayed segment includes the untimed first batches: per batch, on average.
                "store_cpu_ms": store_s * ms / len(segment.batches),
                "store_cpu_us_per_click": store_s * 1e6 / segment.clicks,
            }
        )
    if args.profile:
        print(profile(redis, timed[0][0], min_cpu_s=1.0), file=sys.stderr)
    return rows


def sizes_table(rows: list[dict[str, Any]]) -> Table:
    out = Table(
        "clicks/batch",
        "batches",
        "CPU ms/batch median",
        "p99",
        "wall ms/batch median",
        "p99",
        "CPU µs/click",
        "store alone ms/batch",
        "store alone µs/click",
        title="feature store per batch, warm entities, private redis-server",
    )
    for r in rows:
        out.add_row(
            str(r["batch_size"]),
            str(r["batches"]),
            f"{r['cpu_ms_median']:.3f}",
            f"{r['cpu_ms_p99']:.3f}",
            f"{r['wall_ms_median']:.3f}",
            f"{r['wall_ms_p99']:.3f}",
            f"{r['cpu_us_per_click']:.1f}",
            f"{r['store_cpu_ms']:.3f}",
            f"{r['store_cpu_us_per_click']:.1f}",
        )
    out.caption = "CPU: this process (Redis client included); store alone: replayed replies, no I/O"
    return out


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return round(value, 3) if isinstance(value, float) else value


def table(results: dict[str, dict[str, Any]]) -> Table:
    columns = {
        "clicks/s": ("clicks_per_s", "{:,.0f}"),
        "worker CPU µs/click": ("worker_cpu_us_per_click", "{:.1f}"),
        "Redis µs/click": ("redis_cpu_us_per_click", "{:.2f}"),
        "INCR µs": ("incr_us", "{:.3f}"),
        "INCR-eq/click": ("incr_equivalents_per_click", "{:.1f}"),
        "B/click-day": ("bytes_per_click_day", "{:.0f}"),
        "round trips/batch": ("round_trips_per_batch", "{:.2f}"),
        "used MB": ("used_memory_mb", "{:.1f}"),
        "keys": ("keys", "{:,}"),
        "identical": ("features_identical", "{}"),
    }
    out = Table("target", *columns, title="slidr feature store on Redis, one simulated day")
    for name, result in results.items():
        if "error" in result:
            out.add_row(name, "[red]failed[/]")
            continue
        out.add_row(
            name, *(fmt.format(result[k]) if k in result else "-" for k, fmt in columns.values())
        )
    out.caption = (
        "targets: ≤ 15 INCR-eq/click on one node, ≤ 150 B/click-day, "
        "cluster CPU/click ≤ 1.3x one node's, identical features"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--clicks-per-day", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--targets", default="single,cluster", help="single, cluster or both")
    parser.add_argument("--row-horizon-s", type=int, help="default: scaled (see the docstring)")
    parser.add_argument("--incr-requests", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print only one JSON object")
    parser.add_argument(
        "--worker-cpu", action="store_true", help="the store's worker CPU alone (docstring)"
    )
    parser.add_argument("--min-cpu-s", type=float, default=3.0, help="--worker-cpu: per state")
    parser.add_argument(
        "--profile", action="store_true", help="--worker-cpu, --batch-sizes: and cProfile"
    )
    parser.add_argument(
        "--batch-sizes", help="e.g. 1,10,50,500: CPU and wall per batch of each size (docstring)"
    )
    args = parser.parse_args()
    targets = {"single": 0, "cluster": 3}
    chosen = [t.strip() for t in args.targets.split(",")]
    if not chosen or any(t not in targets for t in chosen):
        parser.error("--targets takes single, cluster or single,cluster")

    began = time.perf_counter()
    traffic = simulate(args.days, args.clicks_per_day, args.seed)
    console.print(
        f"simulated {len(traffic.clicks):,} clicks over {timedelta(seconds=traffic.span_s)} "
        f"in {time.perf_counter() - began:.1f} s"
    )
    if args.batch_sizes:
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            rows = batch_sizes(Path(tmp), traffic, args)
        report = {"batch_sizes": rows, "machine": machine(), "params": vars(args)}
        if args.json:
            print(json.dumps(rounded(report)))
        else:
            Console(width=160).print(sizes_table(rows))
        return
    if args.worker_cpu:
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            worker = worker_cpu(Path(tmp), traffic, args)
        report = {"worker": worker, "machine": machine(), "params": vars(args)}
        if args.json:
            print(json.dumps(rounded(report)))
        else:
            Console(width=160).print(worker_table(worker))
        return
    expected_wall_s = len(traffic.clicks) / EXPECTED_CLICKS_PER_S
    horizon_s = args.row_horizon_s or max(
        1, round(LIVE_ROW_HORIZON_S * expected_wall_s / traffic.span_s)
    )
    results: dict[str, dict[str, Any]] = {}
    features: dict[str, npt.NDArray[np.float32]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        for name in chosen:
            console.print(f"{name}: feeding {len(traffic.clicks):,} clicks")
            try:
                results[name], features[name] = run_target(
                    Path(tmp) / name, targets[name], traffic, args, horizon_s
                )
            except (SlidrError, RedisError) as exc:
                results[name] = {"error": _failure(name, exc)}
    if "cluster" in features and "single" in features:
        same = np.array_equal(features["single"], features["cluster"])
        results["cluster"]["features_identical"] = same
        results["cluster"]["cpu_vs_single"] = (
            results["cluster"]["redis_cpu_us_per_click"]
            / results["single"]["redis_cpu_us_per_click"]
        )
    report = results | {
        "machine": machine(),
        "params": vars(args) | {"clicks": len(traffic.clicks), "row_horizon_s": horizon_s},
    }
    if args.json:
        print(json.dumps(rounded(report)))
    else:
        Console(width=160).print(table(results))
    for name, result in results.items():
        if "error" in result:
            console.print(f"[red]{name}: {result['error']}[/]")
    if any("error" in r for r in results.values()):
        sys.exit(1)


def _failure(name: str, exc: Exception) -> str:
    hint = (
        " (does streams.feature_store support Redis Cluster yet? It must declare its keys and "
        "call each node for the keys it owns.)"
        if name == "cluster"
        else ""
    )
    return f"the feature store failed: {type(exc).__name__}: {exc}{hint}"


if __name__ == "__main__":
    main()
