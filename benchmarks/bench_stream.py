"""Benchmark of the scoring path on the real stack: `python benchmarks/bench_stream.py`.

Starts a private local stack (free ports, temporary state), runs one `slidr worker` process and
prints one table:
- saturation: clicks/s of one worker draining a backlog, with the scoring-path latency per
  batch (parse, Redis features, Triton inference, thresholds: the decisions' processing_ms);
- fixed offered loads: click-to-decision latency (the click's produce time to the decision's
  produce time, both Kafka message timestamps from this machine's clock);
- Redis round trips (EVALSHA calls) and Triton requests per 1,000 clicks.
Client, broker, Redis, Triton and the worker share the machine, as in the README's figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import redis
from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidr.events import DeviceType
from slidr.settings import Settings
from slidr.stack import LocalStack
from tests.factories import make_click
from tests.stack_fixtures import private_settings, settings_env
from tests.worker_harness import isolated


def clicks(n: int, tag: str) -> list[bytes]:
    """n clicks over the last hour from ~2,000 sessions and ~500 IPs, as JSON."""
    rng = np.random.default_rng(7)
    start = datetime.now(UTC) - timedelta(hours=1)
    devices = list(DeviceType)
    return [
        make_click(
            i,
            prefix=tag,
            at=start + timedelta(milliseconds=int(3_600_000 * i / n)),
            session=f"s-{rng.integers(2000)}",
            customer=f"u-{rng.integers(800)}" if rng.random() < 0.3 else None,
            ip=f"10.0.{rng.integers(2)}.{rng.integers(250)}",
            device=devices[i % 3],
            user_agent=f"agent-{rng.integers(40)}",
        ).to_json()
        for i in range(n)
    ]


def produce(settings: Settings, payloads: list[bytes], rate: float | None) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "linger.ms": 2})
    start = time.monotonic()
    for i, payload in enumerate(payloads):
        if rate is not None and i % 50 == 0:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(settings.topics.clicks, payload)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)


def read_decisions(settings: Settings, n: int, timeout_s: float) -> list[tuple[int, dict]]:  # type: ignore[type-arg]
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"bench-{uuid.uuid4()}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([settings.topics.decisions])
    out: list[tuple[int, dict]] = []  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for msg in consumer.consume(1000, timeout=0.5):
            value = msg.value()
            if msg.error() is None and value is not None:
                out.append((msg.timestamp()[1], orjson.loads(value)))
    consumer.close()
    return out


def redis_calls(settings: Settings) -> int:
    stats = redis.Redis(port=settings.redis.port).info("commandstats")
    scripts = ("cmdstat_evalsha", "cmdstat_eval")
    return sum(int(v["calls"]) for k, v in stats.items() if k in scripts)


def triton_requests(settings: Settings) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{settings.triton.metrics_port}/metrics").read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("nv_inference_request_success")
    )


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "-"


def run(settings: Settings, n: int, rate: float | None, click_ts: bool) -> dict[str, str]:
    case = isolated(settings)
    payloads = clicks(n, uuid.uuid4().hex[:6])
    env = {**os.environ, **settings_env(case)}
    log = open(Path(tempfile.gettempdir()) / "bench-worker.log", "ab")  # noqa: SIM115
    r0, t0 = redis_calls(case), triton_requests(case)
    if rate is None:  # saturation: a backlog first, then the worker drains it
        produce(case, payloads, None)
    worker = subprocess.Popen([str(Path(sys.executable).parent / "slidr"), "worker"], env=env,
                              stdout=log, stderr=log)  # fmt: skip
    try:
        if rate is not None:
            time.sleep(8)  # the worker joins its group before the load starts
            produce(case, payloads, rate)
        got = read_decisions(case, n, timeout_s=300)
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
    decisions = [d for _, d in got]
    stamps = np.array([ts for ts, _ in got], dtype=float)
    processing = [float(d["processing_ms"]) for d in decisions]
    row = {
        "load": "saturation" if rate is None else f"{rate:,.0f}/s",
        "clicks": f"{len(decisions):,}",
        "clicks/s": f"{len(decisions) / max((stamps.max() - stamps.min()) / 1000, 1e-9):,.0f}",
        "scoring p50/p99/p99.9 ms": "/".join(pct(processing, q) for q in (50, 99, 99.9)),
        "redis calls/1k": f"{(redis_calls(case) - r0) * 1000 / max(len(decisions), 1):.1f}",
        "triton req/1k": f"{(triton_requests(case) - t0) * 1000 / max(len(decisions), 1):.1f}",
        "click->decision p50/p99/p99.9 ms": "-",
    }
    if click_ts:
        produced = read_click_times(case)
        lat = [ts - produced[d["click_id"]] for ts, d in got if d["click_id"] in produced]
        row["click->decision p50/p99/p99.9 ms"] = "/".join(pct(lat, q) for q in (50, 99, 99.9))
    return row


def read_click_times(settings: Settings) -> dict[str, float]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"bench-{uuid.uuid4()}",
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    consumer.subscribe([settings.topics.clicks])
    out: dict[str, float] = {}
    idle = time.monotonic()
    while time.monotonic() - idle < 3:
        for msg in consumer.consume(1000, timeout=0.5):
            value = msg.value()
            if msg.error() is None and value is not None:
                out[orjson.loads(value)["click_id"]] = msg.timestamp()[1]
                idle = time.monotonic()
    consumer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=60_000, help="backlog for saturation")
    parser.add_argument("--loads", default="2000,5000,8000", help="offered loads, clicks/s")
    parser.add_argument("--seconds", type=float, default=10, help="duration of each load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = private_settings(Path(tmp))
        stack = LocalStack(settings)
        stack.up()
        try:
            rows = [run(settings, args.clicks, None, click_ts=False)]
            for load in (float(x) for x in args.loads.split(",")):
                rows.append(run(settings, int(load * args.seconds), load, click_ts=True))
        finally:
            stack.down()
    table = Table(*rows[0].keys(), title="slidr scoring path, one worker process")
    for row in rows:
        table.add_row(*row.values())
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
