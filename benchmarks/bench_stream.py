"""Benchmark of the scoring path on the real stack: `python benchmarks/bench_stream.py`.

Starts a private local stack (free ports, temporary state), produces one backlog of clicks
(`--clicks`, 4 partitions) and, in this order:
- a no-op Faust agent (`benchmarks/noop_agent.py`: the worker's Faust settings, an agent that
  only takes batches) drains the backlog twice: with Faust's `take_events` (the reference every
  ratio is to: Faust's consumption ceiling on this machine) and with the worker's
  `take_available`;
- `slidr worker` drains the same backlog (its own consumer group, Redis key prefix and
  decisions topic) with 1 process, and with each count of `--processes` (default 1 only: every
  count is another full drain): saturation clicks/s and the scoring latency per batch (parse,
  Redis features, Triton, thresholds: the decisions' processing_ms, one sample per batch);
- offered loads at `--fractions` of the one-process saturation (default 0.25 and 0.5) plus any
  absolute `--loads`, one worker process each on a fresh topic: click-to-decision latency (the
  click's Kafka timestamp, set by our producer, to the decision's, set by the broker when it
  stored it: both this machine's clock) over every decision.
Every row gives CPU time per click (the process tree's CPU from /proc between its first and last
decision, divided by the clicks in between) and its ratios to the no-op agent. Client, broker,
Redis, Triton and worker share the machine; the last column says how busy it was meanwhile, and
how much of that was not this benchmark (another job on a shared machine lowers every figure).
`--json` prints only a JSON object on stdout. The defaults take about 2.5 minutes on 2 cores;
`--processes 1,2` adds one more drain of the backlog (about 30 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidr.events import DeviceType
from slidr.kafka_config import client_config
from slidr.redis_config import sync_client
from slidr.settings import RedisSettings, Settings, WorkerSettings
from slidr.stack import LocalStack
from slidr.topics import admin_client, ensure_topics
from tests.factories import make_click
from tests.stack_fixtures import private_settings, settings_env
from tests.worker_harness import private_topics, read_messages

SLIDR = str(Path(sys.executable).parent / "slidr")
NOOP_AGENT = Path(__file__).with_name("noop_agent.py")
PARTITIONS = 4
QUANTILES = {"p50": 50.0, "p99": 99.0, "p99.9": 99.9}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def note(message: str) -> None:
    print(f"[bench_stream] {message}", file=sys.stderr, flush=True)


@cache
def has_processes_flag() -> bool:
    help_text = subprocess.run([SLIDR, "worker", "--help"], capture_output=True, text=True)
    return "--processes" in help_text.stdout


def worker_commands(processes: int) -> list[list[str]]:
    """What runs ``processes`` workers in one consumer group: `slidr worker --processes N` where
    the CLI has the flag, else N separate `slidr worker` processes."""
    if has_processes_flag():
        return [[SLIDR, "worker", "--processes", str(processes)]]
    return [[SLIDR, "worker"]] * processes


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


def case(settings: Settings, clicks_topic: str | None = None) -> Settings:
    """Same services, fresh decisions topic, consumer group and Redis key prefix; the clicks
    topic is ``clicks_topic`` (a shared backlog) or a fresh one."""
    tag = uuid.uuid4().hex[:8]
    topics = private_topics(f"b{tag}", PARTITIONS, clicks=clicks_topic)
    redis_settings = RedisSettings(**{**settings.redis.model_dump(), "key_prefix": f"b{tag}:"})
    # No Prometheus endpoint: nothing reads it, and N separate workers would share one port.
    worker = WorkerSettings(consumer_group=f"bench-{tag}", metrics_port=0)
    isolated = settings.model_copy(
        update={"topics": topics, "redis": redis_settings, "worker": worker}
    )
    ensure_topics(isolated)
    # A decision's timestamp is then when the broker stored it, not when the worker's producer
    # queued it: click-to-decision includes the delivery the worker waits for.
    append_time = ConfigEntry(
        "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(
        ResourceType.TOPIC, topics.decisions, incremental_configs=[append_time]
    )
    admin = admin_client(isolated)  # held until the futures resolve: its end cancels them
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    return isolated


def produce(settings: Settings, payloads: Sequence[bytes], rate: float | None) -> None:
    producer = Producer(client_config(settings.kafka, {"linger.ms": 2}))
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


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        client_config(
            settings.kafka,
            {"group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest",
             "enable.auto.commit": False},
        )
    )  # fmt: skip


def read_topic(
    settings: Settings, topic: str, n: int, timeout_s: float = 120
) -> list[tuple[int, dict[str, Any]]]:
    """The first n messages of ``topic`` as (Kafka timestamp ms, decoded JSON)."""
    return [(ts, orjson.loads(value)) for ts, value in read_messages(settings, topic, n, timeout_s)]


class Processes:
    """Commands started in their own sessions, so that each whole tree can be stopped."""

    def __init__(self, commands: list[list[str]], settings: Settings, log: Path) -> None:
        env = {**os.environ, **settings_env(settings)}
        self.log = log
        with log.open("ab") as out:
            self.procs = [
                subprocess.Popen(c, env=env, stdout=out, stderr=out, start_new_session=True)
                for c in commands
            ]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{p.args!r} exited with {p.returncode}:\n{tail}")

    def stop(self) -> None:
        # A Faust worker can hang in shutdown for minutes: SIGTERM, a bounded wait, SIGKILL.
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(deadline - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _stat(pid: int) -> list[str]:
    # Fields after the command name, which may itself hold spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) sampled from /proc every 0.1 s: of the measured process trees
    (``roots``), of everything this benchmark started (the stack, the client, the measured
    processes) and of the whole machine, so that others' work on a shared machine shows.

    Children (`--processes N`) are found by a scan of /proc once a second; those of a measured
    root already reaped count through its cutime/cstime.
    """

    WALL, MEASURED, OURS, MACHINE = range(4)

    def __init__(self, roots: Sequence[int]) -> None:
        super().__init__(daemon=True)
        self.roots = set(roots)
        self.measured = set(self.roots)
        self.ours = {os.getpid()}
        self.samples: list[tuple[float, float, float, float]] = []
        self.done = threading.Event()

    def _rescan(self) -> None:
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    parents[int(entry.name)] = int(_stat(int(entry.name))[1])

        def tree(roots: set[int]) -> set[int]:
            while more := {pid for pid, ppid in parents.items() if ppid in roots} - roots:
                roots = roots | more
            return roots

        self.measured, self.ours = tree(self.roots), tree({os.getpid()})

    def _cpu(self, pids: set[int]) -> float:
        ticks = 0
        for pid in pids:
            with contextlib.suppress(OSError, IndexError):
                fields = _stat(pid)
                ticks += int(fields[11]) + int(fields[12])
                if pid in self.roots:
                    ticks += int(fields[13]) + int(fields[14])
        return ticks / CLK_TCK

    def run(self) -> None:
        last_scan = 0.0
        while not self.done.is_set():
            if time.monotonic() - last_scan > 1:
                self._rescan()
                last_scan = time.monotonic()
            measured, ours = self._cpu(self.measured), self._cpu(self.ours)
            self.samples.append((time.time(), measured, ours, machine_busy()))
            self.done.wait(0.1)

    def between(self, t0: float, t1: float, column: int = MEASURED) -> float:
        """CPU seconds spent between wall-clock times t0 and t1 (interpolated)."""
        samples = np.array(self.samples)
        times, cpu = samples[:, self.WALL], samples[:, column]
        return float(np.interp(t1, times, cpu) - np.interp(t0, times, cpu))

    def cores(self, t0: float, t1: float) -> tuple[float, float]:
        """Cores kept busy between t0 and t1 by the whole machine, and by processes this
        benchmark did not start (another job on a shared machine)."""
        machine = self.between(t0, t1, self.MACHINE)
        others = machine - self.between(t0, t1, self.OURS)
        return machine / max(t1 - t0, 1e-9), max(others, 0.0) / max(t1 - t0, 1e-9)


def machine_busy() -> float:
    """CPU seconds the machine spent not idle since boot (all cores)."""
    jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(jiffies[:8]) - jiffies[3] - jiffies[4]) / CLK_TCK  # less idle and iowait


@contextlib.contextmanager
def running(commands: list[list[str]], settings: Settings, log: Path) -> Iterator[Processes]:
    procs = Processes(commands, settings, log)
    try:
        yield procs
    finally:
        procs.stop()


def sampled(procs: Processes) -> CpuSampler:
    sampler = CpuSampler(procs.pids)
    sampler.start()
    return sampler


def wait_decisions(settings: Settings, n: int, procs: Processes, timeout_s: float) -> int:
    """Until the decisions topic holds n messages (returns how many); the high watermarks cost
    the workers nothing, unlike a consumer reading the decisions while they run."""
    consumer = _consumer(settings)
    tps = [TopicPartition(settings.topics.decisions, p) for p in range(PARTITIONS)]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            # A topic just created may answer "not leader" for a moment: ask again.
            with contextlib.suppress(KafkaException):
                total = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
                if total >= n:
                    return total
            procs.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} decisions after {timeout_s:.0f} s")
            time.sleep(0.5)
    finally:
        consumer.close()


def decided(
    settings: Settings, n: int, procs: Processes, timeout_s: float
) -> list[tuple[int, dict[str, Any]]]:
    """The first decision of each of n clicks. A rebalance redelivers the clicks of unfinished
    batches, decided twice: those repeats neither count nor end the wait."""
    want = n
    while True:
        total = wait_decisions(settings, want, procs, timeout_s)
        first: dict[str, tuple[int, dict[str, Any]]] = {}
        for ts, d in read_topic(settings, settings.topics.decisions, total):
            first.setdefault(d["click_id"], (ts, d))
        if len(first) >= n:
            if total > len(first):
                note(f"{total - len(first)} decisions repeated (clicks redelivered)")
            return list(first.values())
        want = total + n - len(first)


def wait_stable(settings: Settings, members: int, timeout_s: float = 90) -> float | None:
    """Wall-clock time at which the worker group first had ``members`` members sharing every
    partition of the clicks topic; None if it never did (the window then starts at the first
    decision). A backlog drained by N processes is only timed from there: before, the first
    process to join drains it alone, then a rebalance pauses everyone."""
    admin = admin_client(settings)
    group = settings.worker.consumer_group
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the group does not exist until a member joins
            found = admin.describe_consumer_groups([group])[group].result(timeout=5)
            assigned = [
                tp
                for m in found.members
                if m.assignment is not None
                for tp in m.assignment.topic_partitions
                if tp.topic == settings.topics.clicks
            ]
            full = len(found.members) == members and len(assigned) == PARTITIONS
            if found.state == ConsumerGroupState.STABLE and full:
                return time.time()
        time.sleep(0.2)
    note(f"group {group} never had {members} members sharing {PARTITIONS} partitions")
    return None


def redis_calls(settings: Settings) -> int:
    with sync_client(settings.redis) as client:
        stats = client.info("commandstats")
    scripts = ("cmdstat_evalsha", "cmdstat_eval")
    return sum(int(v["calls"]) for k, v in stats.items() if k in scripts)


def triton_requests(settings: Settings) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{settings.triton.metrics_port}/metrics").read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("nv_inference_request_success")
    )


def quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(QUANTILES)
    return {k: round(float(np.percentile(values, q)), 2) for k, q in QUANTILES.items()}


@dataclass
class Result:
    """One row: a drained backlog or an offered load."""

    label: str
    clicks: int
    clicks_per_s: float
    cpu_us_per_click: float
    #: Cores the whole machine kept busy meanwhile, and of those, processes not ours.
    machine_cores: float
    other_cores: float
    processes: int = 1
    offered: float | None = None
    batches: int = 0
    scoring_ms: dict[str, float | None] = field(default_factory=lambda: quantiles([]))
    click_to_decision_ms: dict[str, float | None] = field(default_factory=lambda: quantiles([]))
    redis_calls_per_1k: float | None = None
    triton_requests_per_1k: float | None = None
    #: False when N worker processes never shared the partitions (the figure is not N's).
    group_stable: bool = True


def measure_decisions(
    label: str,
    got: list[tuple[int, dict[str, Any]]],
    sampler: CpuSampler,
    since: float | None = None,
) -> Result:
    """Throughput and CPU per click from the first decision (or ``since``, wall-clock seconds,
    if later) to the last one; scoring latency once per batch over the same decisions."""
    stamps = np.array([ts for ts, _ in got], dtype=float) / 1000
    start = max(float(stamps.min()), since or 0.0)
    kept = [d for (_, d), ts in zip(got, stamps, strict=True) if ts >= start]
    end = float(stamps.max())
    span = max(end - start, 1e-9)
    # Every decision of a batch carries the batch's processing_ms and decided_at: one sample
    # per batch, so that large batches do not outweigh small ones.
    batches = {(d["decided_at"], d["processing_ms"]) for d in kept}
    machine, others = sampler.cores(start, end)
    return Result(
        label=label,
        clicks=len(kept),
        clicks_per_s=len(kept) / span,
        cpu_us_per_click=sampler.between(start, end) * 1e6 / max(len(kept), 1),
        machine_cores=machine,
        other_cores=others,
        batches=len(batches),
        scoring_ms=quantiles([ms for _, ms in batches]),
    )


def run_noop(base: Settings, backlog: str, n: int, logs: Path, batching: str) -> Result:
    settings = case(base, clicks_topic=backlog)
    out = logs / f"noop-{uuid.uuid4().hex[:6]}.json"
    command = [sys.executable, str(NOOP_AGENT), "--messages", str(n), "--out", str(out),
               "--batching", batching]  # fmt: skip
    with running([command], settings, logs / "noop-agent.log") as procs:
        sampler = sampled(procs)
        deadline = time.monotonic() + 120 + n / 1000
        while not out.exists():
            procs.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the no-op agent did not consume {n} messages")
            time.sleep(0.2)
        sampler.done.set()
    seen = orjson.loads(out.read_bytes())
    out.unlink()
    span = max(seen["last"] - seen["first"], 1e-9)
    machine, others = sampler.cores(seen["first"], seen["last"])
    return Result(
        label=f"no-op Faust agent, take_{batching} (backlog)",
        clicks=seen["messages"],
        clicks_per_s=seen["messages"] / span,
        cpu_us_per_click=sampler.between(seen["first"], seen["last"]) * 1e6 / seen["messages"],
        machine_cores=machine,
        other_cores=others,
    )


def run_saturation(base: Settings, backlog: str, n: int, processes: int, logs: Path) -> Result:
    settings = case(base, clicks_topic=backlog)
    r0, t0 = redis_calls(settings), triton_requests(settings)
    with running(worker_commands(processes), settings, logs / "worker.log") as procs:
        sampler = sampled(procs)
        # One process never rebalances: its window starts at its first decision.
        stable = wait_stable(settings, processes) if processes > 1 else None
        got = decided(settings, n, procs, timeout_s=120 + n / 200)
        sampler.done.set()
    result = measure_decisions(f"saturation (backlog), {processes} proc", got, sampler, stable)
    result.processes = processes
    if processes > 1 and stable is None:
        # Not N processes sharing the work (a member stuck in a rebalance): say so in the row.
        result.group_stable = False
        result.label += " - NO STABLE GROUP, see worker.log"
    result.redis_calls_per_1k = (redis_calls(settings) - r0) * 1000 / len(got)
    result.triton_requests_per_1k = (triton_requests(settings) - t0) * 1000 / len(got)
    return result


def run_load(base: Settings, rate: float, seconds: float, logs: Path) -> Result:
    settings = case(base)
    warm, tag = 200, uuid.uuid4().hex[:6]
    payloads = clicks(int(rate * seconds), tag)
    with running(worker_commands(1), settings, logs / "worker.log") as procs:
        sampler = sampled(procs)
        # Warm-up clicks decided first: the worker has joined its group and loaded its model
        # before the load starts; they are left out of every figure.
        produce(settings, clicks(warm, f"warm{tag}"), None)
        wait_decisions(settings, warm, procs, timeout_s=120)
        r0, t0 = redis_calls(settings), triton_requests(settings)
        produce(settings, payloads, rate)
        total = warm + len(payloads)
        every = decided(settings, total, procs, timeout_s=120 + seconds * 4)
        sampler.done.set()
    got = [(ts, d) for ts, d in every if d["click_id"].startswith(f"{tag}-")]
    produced = {d["click_id"]: ts for ts, d in read_topic(settings, settings.topics.clicks, total)}
    result = measure_decisions(f"{rate:,.0f}/s offered", got, sampler)
    result.offered = rate
    result.click_to_decision_ms = quantiles([ts - produced[d["click_id"]] for ts, d in got])
    result.redis_calls_per_1k = (redis_calls(settings) - r0) * 1000 / len(got)
    result.triton_requests_per_1k = (triton_requests(settings) - t0) * 1000 / len(got)
    return result


def triple(q: dict[str, float | None]) -> str:
    return " / ".join("-" if v is None else f"{v:,.1f}" for v in q.values())


def table(noop: Result, available: Result, saturation: list[Result], loads: list[Result]) -> Table:
    one = saturation[0]
    out = Table(
        "run", "clicks", "clicks/s", "CPU us/click", "clicks/s worker/no-op",
        "CPU worker/no-op", "vs 1 proc", "scoring p50/p99/p99.9 ms (per batch)",
        "click->decision p50/p99/p99.9 ms", "redis calls/1k", "triton req/1k",
        f"busy cores of {os.cpu_count()}: machine / not ours",
        title=f"slidr scoring path; same-run Faust ceiling: {noop.clicks_per_s:,.0f} msg/s, "
        f"{noop.cpu_us_per_click:.0f} us CPU/msg",
    )  # fmt: skip
    for r in [noop, available, *saturation, *loads]:
        worker = r is not noop
        out.add_row(
            r.label,
            f"{r.clicks:,}",
            f"{r.clicks_per_s:,.0f}",
            f"{r.cpu_us_per_click:,.0f}",
            f"{r.clicks_per_s / noop.clicks_per_s:.2f}" if worker else "-",
            f"{r.cpu_us_per_click / noop.cpu_us_per_click:.2f}" if worker else "-",
            f"{r.clicks_per_s / one.clicks_per_s:.2f}" if r in saturation else "-",
            f"{triple(r.scoring_ms)} ({r.batches:,} batches)" if r.batches else "-",
            triple(r.click_to_decision_ms) if r.offered else "-",
            "-" if r.redis_calls_per_1k is None else f"{r.redis_calls_per_1k:.1f}",
            "-" if r.triton_requests_per_1k is None else f"{r.triton_requests_per_1k:.1f}",
            f"{r.machine_cores:.2f} / {r.other_cores:.2f}",
        )
    return out


def report(
    noop: Result, available: Result, saturation: list[Result], loads: list[Result]
) -> dict[str, Any]:
    one = saturation[0]
    return {
        "saturation_clicks_per_s": round(one.clicks_per_s, 1),
        "noop_clicks_per_s": round(noop.clicks_per_s, 1),
        "ratio": round(one.clicks_per_s / noop.clicks_per_s, 3),
        "worker_cpu_us_per_click": round(one.cpu_us_per_click, 1),
        "noop_cpu_us_per_click": round(noop.cpu_us_per_click, 1),
        "noop_machine_busy_cores": round(noop.machine_cores, 2),
        "noop_other_busy_cores": round(noop.other_cores, 2),
        # The same agent with the worker's batching (streams/batches.py) instead of take_events.
        "noop_take_available": {
            "clicks_per_s": round(available.clicks_per_s, 1),
            "cpu_us_per_click": round(available.cpu_us_per_click, 1),
            "machine_busy_cores": round(available.machine_cores, 2),
            "other_busy_cores": round(available.other_cores, 2),
        },
        "machine_cores": os.cpu_count(),
        "processes": [
            {
                "processes": r.processes,
                "group_stable": r.group_stable,
                "clicks": r.clicks,
                "clicks_per_s": round(r.clicks_per_s, 1),
                "ratio_to_1": round(r.clicks_per_s / one.clicks_per_s, 3),
                "ratio_to_noop": round(r.clicks_per_s / noop.clicks_per_s, 3),
                "cpu_us_per_click": round(r.cpu_us_per_click, 1),
                "cpu_ratio_to_noop": round(r.cpu_us_per_click / noop.cpu_us_per_click, 3),
                "scoring_ms": r.scoring_ms,
                "batches": r.batches,
                "machine_busy_cores": round(r.machine_cores, 2),
                "other_busy_cores": round(r.other_cores, 2),
            }
            for r in saturation
        ],
        "loads": [
            {
                "offered": round(r.offered or 0.0, 1),
                "clicks": r.clicks,
                "clicks_per_s": round(r.clicks_per_s, 1),
                "cpu_us_per_click": round(r.cpu_us_per_click, 1),
                "scoring_ms": r.scoring_ms,
                "click_to_decision_ms": r.click_to_decision_ms,
                "batches": r.batches,
                "machine_busy_cores": round(r.machine_cores, 2),
                "other_busy_cores": round(r.other_cores, 2),
            }
            for r in loads
        ],
    }


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=100_000, help="backlog for saturation")
    parser.add_argument(
        "--processes", default="1", help="worker process counts to drain the backlog, e.g. 1,2"
    )
    parser.add_argument(
        "--fractions", default="0.25,0.5", help="offered loads as fractions of saturation"
    )
    parser.add_argument("--loads", default="", help="more offered loads, clicks/s")
    parser.add_argument("--seconds", type=float, default=15, help="duration of each load")
    parser.add_argument("--json", action="store_true", help="only a JSON object on stdout")
    args = parser.parse_args()
    stdout = sys.stdout
    if args.json:
        # Anything the stack or a library prints goes to stderr; stdout keeps only the JSON.
        stdout = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
    processes = sorted({1, *(int(p) for p in floats(args.processes))})
    busy = machine_busy()
    time.sleep(1)
    if (busy := machine_busy() - busy) > 0.3:
        note(f"{busy:.1f} cores busy before the stack starts: others' work lowers every figure "
             "(see the busy cores column)")  # fmt: skip
    note(f"worker processes via {worker_commands(2)[0]!r} per group")
    logs = Path(tempfile.gettempdir()) / "bench-stream"
    logs.mkdir(exist_ok=True)
    note(f"worker and agent logs in {logs}")
    with tempfile.TemporaryDirectory() as tmp:
        settings = private_settings(Path(tmp))
        stack = LocalStack(settings)
        note("starting the stack")
        stack.up()
        try:
            backlog = case(settings)
            note(f"producing a backlog of {args.clicks:,} clicks to {PARTITIONS} partitions")
            produce(backlog, clicks(args.clicks, "sat"), None)
            noop, available = (
                run_noop(settings, backlog.topics.clicks, args.clicks, logs, batching)
                for batching in ("events", "available")
            )
            note(f"no-op agent: {noop.clicks_per_s:,.0f} msg/s (take_events), "
                 f"{available.clicks_per_s:,.0f} msg/s (take_available)")  # fmt: skip
            saturation = []
            for count in processes:
                saturation.append(
                    run_saturation(settings, backlog.topics.clicks, args.clicks, count, logs)
                )
                note(f"{count} worker process(es): {saturation[-1].clicks_per_s:,.0f} clicks/s")
            rates = [f * saturation[0].clicks_per_s for f in floats(args.fractions)]
            loads = []
            for rate in [*rates, *floats(args.loads)]:
                note(f"offered load {rate:,.0f} clicks/s for {args.seconds:.0f} s")
                loads.append(run_load(settings, rate, args.seconds, logs))
        finally:
            stack.down()
    Console(width=200, file=sys.stderr if args.json else sys.stdout).print(
        table(noop, available, saturation, loads)
    )
    if args.json:
        stdout.write(orjson.dumps(report(noop, available, saturation, loads)).decode() + "\n")
        stdout.flush()


if __name__ == "__main__":
    main()
