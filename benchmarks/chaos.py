"""Chaos run of the live path: `python benchmarks/chaos.py [--clicks N] [--json]`.

Starts a private stack on free ports with a 3-broker Kafka cluster (replication factor 3,
``min.insync.replicas`` 2; every producer uses ``acks=all``), two `slidr worker` processes in
one consumer group, and `slidr simulate` sending ``--clicks`` simulated clicks at a steady rate
over ``--duration`` seconds. Meanwhile, one after another, each once the previous one has
recovered:

1. ``worker``: kill -9 one worker, start it again;
2. ``kafka``: kill -9 one broker of three (the leader of clicks partition 0), start it again;
3. ``redis``: stop Redis and start it again (in memory: the counters start from nothing);
4. ``triton``: stop Triton and start it again (the registry's versions loaded again);

each down for ``--outage`` seconds (5) before it is started again.

A worker that exits on its own is counted and started again (as a supervisor would). Once every
click is sent and decided (or a timeout passed), the workers stop and the run reads back the
clicks, decisions and dead-letters topics and reports:

- clicks without any decision (target 0), clicks decided more than once, and clicks with more
  than one distinct decision (target 0: a redelivery must give the first decision back);
- degraded (fail-open) decisions, per fault;
- the recovery time after each fault: from the fault until the rate of non-degraded decisions
  stays at or above 80 % of the offered rate for 5 s (each second's rate the mean over the
  10 s around it: the simulator sends in bursts a few seconds apart);
- the degraded ranges the workers logged, replayed with `slidr replay --features recompute`
  through the serving version, and the clicks whose final decision is still degraded after
  that (target 0). The final decision per click is the one billing keeps (``final_decisions``).

Clients, three brokers, Redis, Triton, two workers and the simulator share the machine; the
report gives how busy it was, and how much of that was not this run. About 6 minutes at the
defaults on 2 cores; `--clicks 20000 --duration 150` for a quicker look.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slidr.kafka_config import client_config
from slidr.settings import Settings, WorkerSettings
from slidr.stack import LocalStack
from slidr.topics import admin_client
from tests.stack_fixtures import kafka_cluster, private_settings, settings_env
from tests.worker_harness import private_topics

SLIDR = str(Path(sys.executable).parent / "slidr")
PARTITIONS = 4
WORKERS = 2
#: Recovered: the non-degraded decision rate at or above this share of the offered rate...
RECOVERED_SHARE = 0.8
#: ... for this many consecutive seconds, each second's rate the mean over WINDOW_S seconds
#: around it.
SUSTAIN_S = 5
WINDOW_S = 10
FAULTS = ("worker", "kafka", "redis", "triton")
_RANGE = re.compile(r"degraded range to replay: partition (\d+) offsets (\d+)-(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def note(message: str) -> None:
    print(f"[chaos] {message}", file=sys.stderr, flush=True)


# --- the final decision per click: the one place where billing's fold plugs in -------------


def final_decisions(payloads: Iterable[bytes]) -> dict[str, dict[str, Any]]:
    """click_id -> its final decision, as billing folds them (slidr.billing.Ledger).

    Without slidr.billing (an older tree), the rule of docs/contracts.md inline: the highest
    ``revision`` (a replay over the live decision), then a judged decision over a degraded one,
    then the earliest ``decided_at``.
    """
    try:
        from slidr.billing import Ledger
    except ImportError:  # only on a tree without the billing module
        best: dict[str, tuple[tuple[int, bool, float], dict[str, Any]]] = {}
        for payload in payloads:
            d = orjson.loads(payload)
            decided = datetime.fromisoformat(d["decided_at"].replace("Z", "+00:00"))
            rank = (int(d.get("revision", 0)), not d["degraded"], -decided.timestamp())
            if d["click_id"] not in best or rank > best[d["click_id"]][0]:
                best[d["click_id"]] = (rank, d)
        return {click_id: d for click_id, (_, d) in best.items()}
    ledger = Ledger().extend(payloads)
    return {d.click_id: d.model_dump(mode="json") for d in ledger.final()}


# --- the stack and the processes ---------------------------------------------------------


def chaos_settings(root: Path, heap: str) -> Settings:
    """A private stack with a 3-broker cluster, and topics, group and prefix of this run."""
    base = private_settings(root)
    tag = uuid.uuid4().hex[:6]
    topics = private_topics(f"chaos{tag}", PARTITIONS)
    worker = WorkerSettings(consumer_group=f"chaos-{tag}", metrics_port=0)
    return base.model_copy(
        update={"kafka": kafka_cluster(heap), "topics": topics, "worker": worker}
    )


class Worker:
    """One `slidr worker` process in its own session; started again when it exits."""

    def __init__(self, index: int, settings: Settings, log: Path) -> None:
        self.index = index
        self.env = {**os.environ, **settings_env(settings)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.unplanned_exits: list[int] = []

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SLIDR, "worker"], env=self.env, stdout=out, stderr=out, start_new_session=True
            )

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def restart_if_exited(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.unplanned_exits.append(self.proc.returncode)
            note(f"worker {self.index} exited with {self.proc.returncode}: started again")
            self.start()

    def stop(self) -> None:
        # A Faust worker can hang in shutdown: SIGTERM, a bounded wait, then SIGKILL.
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


class Supervisor(threading.Thread):
    """Starts a worker again when it exits without being told to."""

    def __init__(self, workers: list[Worker]) -> None:
        super().__init__(daemon=True)
        self.workers = workers
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            with self.lock:
                for worker in self.workers:
                    worker.restart_if_exited()


def wait_group(settings: Settings, members: int, timeout_s: float = 120) -> None:
    """Until the worker group is stable with ``members`` members sharing every partition."""
    admin = admin_client(settings)
    group = settings.worker.consumer_group
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # no group until a member joins
            found = admin.describe_consumer_groups([group])[group].result(timeout=5)
            assigned = sum(
                len(m.assignment.topic_partitions) for m in found.members if m.assignment
            )
            stable = found.state == ConsumerGroupState.STABLE
            if stable and len(found.members) == members and assigned >= PARTITIONS:
                return
        time.sleep(0.5)
    raise TimeoutError(f"group {group} never had {members} stable members")


class Watermarks:
    """Messages on a topic so far (sum of high watermarks), asked of the partition leaders."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer = self._consumer()
        self.last = 0

    def _consumer(self) -> Consumer:
        config = {"group.id": "chaos-watermarks", "logger": logging.getLogger("chaos.librdkafka")}
        return Consumer(client_config(self.settings.kafka, config))

    def total(self) -> int:
        try:
            self.last = sum(
                self.consumer.get_watermark_offsets(tp, timeout=3)[1] for tp in self.partitions
            )
        except KafkaException:
            # A leader that moved: a consumer that is not assigned the partitions keeps asking
            # the old one, so start afresh (it reads the metadata anew); keep the last figure.
            self.consumer.close()
            self.consumer = self._consumer()
        return self.last

    def close(self) -> None:
        self.consumer.close()


def wait_flowing(marks: Watermarks, rate: float, max_s: float) -> float:
    """Wait until decisions have come at RECOVERED_SHARE of ``rate`` for SUSTAIN_S seconds (at
    most ``max_s``); the seconds waited."""
    start = time.monotonic()
    history: list[tuple[float, int]] = []
    while (now := time.monotonic()) - start < max_s:
        history.append((now, marks.total()))
        old = [(t, n) for t, n in history if now - t >= SUSTAIN_S]
        if old:
            t0, n0 = old[-1]
            if (history[-1][1] - n0) / (now - t0) >= RECOVERED_SHARE * rate:
                break
        time.sleep(1.0)
    return time.monotonic() - start


# --- the faults ------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    #: Wall-clock seconds (time.time()) when the fault began, and when the restart returned.
    started: float
    restarted: float
    detail: str
    recovery_s: float | None = None
    degraded: int = 0
    decisions: int = 0


def inject(
    name: str,
    stack: LocalStack,
    workers: list[Worker],
    supervisor: Supervisor,
    settings: Settings,
    outage_s: float,
) -> Fault:
    """One fault: the component goes down, stays down ``outage_s``, and is started again."""
    started = time.time()
    down = f"down {outage_s:g} s"
    if name == "worker":
        with supervisor.lock:  # not an unplanned exit
            workers[0].kill()
            time.sleep(outage_s)
            workers[0].start()
        detail = f"kill -9 worker 0, {down}, started again"
    elif name == "kafka":
        meta = admin_client(settings).list_topics(timeout=10)
        leader = meta.topics[settings.topics.clicks].partitions[0].leader
        stack.kafka.kill_node(leader - 1)
        time.sleep(outage_s)
        stack.kafka.start_node(leader - 1)
        detail = f"kill -9 broker {leader} of 3 (leader of clicks/0), {down}, started again"
    elif name == "redis":
        stack.redis.proc.stop()
        time.sleep(outage_s)
        stack.up(on_progress=lambda _: None)
        detail = f"Redis stopped, {down}, started (counters lost)"
    elif name == "triton":
        stack.triton.proc.stop()
        time.sleep(outage_s)
        stack.up(on_progress=lambda _: None)
        detail = f"Triton stopped, {down}, started, registry versions loaded"
    else:
        raise ValueError(name)
    restarted = time.time()
    note(f"{name}: {detail} in {restarted - started:.1f} s")
    return Fault(name, started, restarted, detail)


# --- reading the topics back ------------------------------------------------------------


def read_all(settings: Settings, topic: str, timeout_s: float = 120) -> list[tuple[int, bytes]]:
    """Every (timestamp ms, value) of ``topic``, read by assignment up to the end offsets."""
    consumer = Consumer(
        client_config(
            settings.kafka, {"group.id": f"chaos-read-{uuid.uuid4()}", "enable.auto.commit": False}
        )
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {}
    for p in meta.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(2000, timeout=0.5):
                if msg.error() is not None:
                    continue
                out.append((msg.timestamp()[1], msg.value() or b""))
                offset, partition = msg.offset(), msg.partition()
                if offset is not None and partition is not None and offset + 1 >= ends[partition]:
                    ends.pop(partition, None)
    finally:
        consumer.close()
    return out


def keys_of(settings: Settings, topic: str) -> list[str]:
    """The click_ids of every click sent (the clicks' keys)."""
    ids = []
    for _, value in read_all(settings, topic):
        ids.append(orjson.loads(value)["click_id"])
    return ids


def recovery(fault: Fault, bins: dict[int, int], rate: float, until: float) -> float | None:
    """Seconds from the fault to the first second from which the non-degraded decision rate
    (a centred WINDOW_S mean of 1-s bins: the simulator sends in bursts a few seconds apart)
    stays at RECOVERED_SHARE of ``rate`` for SUSTAIN_S seconds; None if that never happened
    before ``until`` (the next fault, or the end of sending)."""
    half = WINDOW_S // 2

    def smoothed(second: int) -> float:
        return sum(bins.get(second + k, 0) for k in range(-half, WINDOW_S - half)) / WINDOW_S

    for start in range(int(fault.started), int(until) - SUSTAIN_S - half):
        if all(smoothed(s) >= RECOVERED_SHARE * rate for s in range(start, start + SUSTAIN_S)):
            return max(0.0, start - fault.started)
    return None


# --- the replay of the logged degraded ranges ------------------------------------------------


def logged_ranges(logs: Iterable[Path]) -> list[tuple[int, int, int]]:
    ranges = set()
    for log in logs:
        for match in _RANGE.finditer(log.read_text(errors="replace")):
            ranges.add((int(match[1]), int(match[2]), int(match[3])))
    return sorted(ranges)


def replay_rounds(ranges: list[tuple[int, int, int]]) -> list[dict[int, tuple[int, int]]]:
    """The ranges as replay runs, each at most one range per partition (the k-th of each)."""
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for partition, first, last in ranges:
        by_partition[partition].append((first, last))
    rounds: list[dict[int, tuple[int, int]]] = []
    for partition, spans in sorted(by_partition.items()):
        for k, span in enumerate(sorted(spans)):
            if len(rounds) <= k:
                rounds.append({})
            rounds[k][partition] = span
    return rounds


def run_replays(
    settings: Settings, rounds: list[dict[int, tuple[int, int]]], version: int, log: Path
) -> list[float]:
    env = {**os.environ, **settings_env(settings)}
    took = []
    for spans in rounds:
        argv = [SLIDR, "replay", "--model-version", str(version), "--features", "recompute"]
        for partition, (first, last) in sorted(spans.items()):
            argv += ["--from-offset", f"{partition}:{first}", "--to-offset", f"{partition}:{last}"]
        start = time.monotonic()
        with log.open("ab") as out:
            done = subprocess.run(argv, env=env, stdout=out, stderr=out, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:])} failed ({done.returncode}); see {log}")
        took.append(time.monotonic() - start)
        note(f"replayed {spans} in {took[-1]:.1f} s")
    return took


# --- machine load ----------------------------------------------------------------------


def machine_busy() -> float:
    """CPU seconds the machine spent not idle since boot (all cores)."""
    jiffies = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(jiffies[:8]) - jiffies[3] - jiffies[4]) / CLK_TCK


def ours_busy() -> float:
    """CPU seconds of this process and every descendant still running (the stack, workers)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    tree = {os.getpid()}
    while more := {pid for pid, s in stats.items() if int(s[1]) in tree} - tree:
        tree |= more
    # utime, stime, and the children this process already reaped (cutime, cstime)
    ticks = sum(int(stats[p][11]) + int(stats[p][12]) for p in tree if p in stats)
    own = stats.get(os.getpid())
    if own is not None:
        ticks += int(own[13]) + int(own[14])
    return ticks / CLK_TCK


@dataclass
class Load:
    started: float = field(default_factory=time.time)
    machine0: float = field(default_factory=machine_busy)
    ours0: float = field(default_factory=ours_busy)
    loadavg0: float = field(default_factory=lambda: os.getloadavg()[0])

    def report(self) -> dict[str, float]:
        seconds = time.time() - self.started
        machine = (machine_busy() - self.machine0) / seconds
        ours = (ours_busy() - self.ours0) / seconds
        return {
            "seconds": round(seconds, 1),
            "machine_cores_busy": round(machine, 2),
            "others_cores_busy": round(max(machine - ours, 0.0), 2),
            "loadavg1_start": round(self.loadavg0, 2),
            "loadavg1_end": round(os.getloadavg()[0], 2),
            "cores": float(os.cpu_count() or 0),
        }


# --- the run ---------------------------------------------------------------------------


@dataclass
class Report:
    command: str
    clicks_sent: int
    offered_rate: float
    #: Non-degraded decisions per second over the 10 s before the first fault.
    baseline_rate: float
    dead_letters: int
    decisions: int
    clicks_without_decision: int
    clicks_decided_more_than_once: int
    clicks_with_distinct_decisions: int
    clicks_with_distinct_verdicts: int
    degraded_decisions: int
    degraded_clicks_before_replay: int
    degraded_ranges_logged: int
    degraded_clicks_outside_logged_ranges: int
    replay_runs: int
    replay_seconds: float
    degraded_clicks_after_replay: int
    unplanned_worker_exits: int
    faults: list[Fault]
    load: dict[str, float]
    final_fold: str
    #: Per second from 10 s before the first fault: [seconds since it, judged, degraded].
    timeline: list[tuple[int, int, int]]


def simulate(settings: Settings, clicks: int, rate: float, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    argv = [
        SLIDR, "simulate", "--to", "kafka", "--days", "1", "--clicks-per-day", str(clicks),
        "--rate", f"{rate:.1f}", "--no-truth-topic", "--no-progress",
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)


def run(args: argparse.Namespace, root: Path, command: str) -> Report:
    settings = chaos_settings(root, args.heap)
    stack = LocalStack(settings)
    note(f"starting a private stack (3 brokers) under {root}")
    try:
        stack.up(on_progress=note)
        return _run(args, root, command, settings, stack)
    finally:
        stack.down()


def _run(
    args: argparse.Namespace, root: Path, command: str, settings: Settings, stack: LocalStack
) -> Report:
    workers = [Worker(i, settings, root / f"worker-{i}.log") for i in range(WORKERS)]
    supervisor = Supervisor(workers)
    sim: subprocess.Popen[bytes] | None = None
    marks = Watermarks(settings, settings.topics.decisions)
    faults: list[Fault] = []
    try:
        for worker in workers:
            worker.start()
        wait_group(settings, WORKERS)
        supervisor.start()
        load = Load()
        rate = args.clicks / args.duration
        sim_started = time.time()
        sim = simulate(settings, args.clicks, rate, root / "simulate.log")
        note(f"sending ~{args.clicks:,} clicks at {rate:.0f}/s")
        wait_flowing(marks, rate, max_s=90)
        time.sleep(args.gap)
        for name in FAULTS:
            faults.append(inject(name, stack, workers, supervisor, settings, args.outage))
            waited = wait_flowing(marks, rate, max_s=120)
            note(f"{name}: decisions flowing again {waited:.0f} s after the restart")
            time.sleep(args.gap)  # normal flow before the next fault: the recovery's window
        if sim.wait(timeout=args.duration * 3) != 0:
            raise RuntimeError(f"slidr simulate failed; see {root / 'simulate.log'}")
        sim_ended = time.time()
        sent = Watermarks(settings, settings.topics.clicks)
        clicks_sent = sent.total()
        sent.close()
        took = sim_ended - sim_started
        note(f"{clicks_sent:,} clicks sent in {took:.0f} s; waiting for the decisions")
        # Until there are as many decisions as clicks and no more come for 5 s (redeliveries
        # add decisions, dead letters take some away; the read-back counts exactly).
        deadline, last, still = time.monotonic() + 180, -1, 0
        while time.monotonic() < deadline and still < 5:
            total = marks.total()
            still = still + 1 if total == last and total >= clicks_sent else 0
            last = total
            time.sleep(1)
    finally:
        supervisor.done.set()
        if sim is not None and sim.poll() is None:
            os.killpg(sim.pid, signal.SIGKILL)
            sim.wait()
        for worker in workers:
            worker.stop()
        marks.close()
    return _measure(
        settings, stack, root, command, faults, workers, clicks_sent, rate, sim_ended,
        load.report(),
    )  # fmt: skip


def _measure(
    settings: Settings,
    stack: LocalStack,
    root: Path,
    command: str,
    faults: list[Fault],
    workers: list[Worker],
    clicks_sent: int,
    rate: float,
    sim_ended: float,
    load: dict[str, float],
) -> Report:
    note("reading the topics back")
    click_ids = keys_of(settings, settings.topics.clicks)
    live = read_all(settings, settings.topics.decisions)
    dead = read_all(settings, settings.topics.dead_letters)
    by_click: dict[str, set[bytes]] = defaultdict(set)
    verdicts: dict[str, set[str]] = defaultdict(set)
    counts: Counter[str] = Counter()
    bins: Counter[int] = Counter()
    degraded_at: list[tuple[float, str, int, int]] = []
    for ts, payload in live:
        d = orjson.loads(payload)
        counts[d["click_id"]] += 1
        by_click[d["click_id"]].add(payload)
        verdicts[d["click_id"]].add(d["verdict"])
        if d["degraded"]:
            degraded_at.append(
                (ts / 1000, d["click_id"], d["source_partition"], d["source_offset"])
            )
        else:
            bins[int(ts // 1000)] += 1
    first = int(faults[0].started) if faults else min(bins, default=0)
    baseline = sum(bins.get(s, 0) for s in range(first - 10, first)) / 10
    degraded_bins = Counter(int(t) for t, *_ in degraded_at)
    timeline = [
        (s - first, bins.get(s, 0), degraded_bins.get(s, 0))
        for s in range(first - 10, int(sim_ended))
    ]
    for i, fault in enumerate(faults):
        until = faults[i + 1].started if i + 1 < len(faults) else sim_ended
        fault.recovery_s = recovery(fault, bins, rate, until)
        fault.degraded = sum(fault.started <= t < until for t, *_ in degraded_at)
    before = final_decisions(p for _, p in live)
    ranges = logged_ranges(w.log for w in workers)
    covered = {
        click_id
        for _, click_id, partition, offset in degraded_at
        if any(p == partition and a <= offset <= b for p, a, b in ranges)
    }
    degraded_clicks = {click_id for _, click_id, *_ in degraded_at}
    rounds = replay_rounds(ranges)
    replay_s: list[float] = []
    if rounds:
        from slidr.registry import Registry, TritonVersions

        stack.up(on_progress=lambda _: None)  # the replay needs Kafka, Redis, Triton
        version = Registry(settings, TritonVersions(settings.triton)).serving().version
        replay_s = run_replays(settings, rounds, version, root / "replay.log")
    replayed = read_all(settings, settings.topics.replayed_decisions)
    after = final_decisions([p for _, p in live] + [p for _, p in replayed])
    fold = "slidr.billing.Ledger"
    try:
        import slidr.billing  # noqa: F401
    except ImportError:  # pragma: no cover
        fold = "inline rule (no slidr.billing)"
    return Report(
        command=command,
        clicks_sent=clicks_sent,
        offered_rate=round(rate, 1),
        baseline_rate=round(baseline, 1),
        dead_letters=len(dead),
        decisions=len(live),
        clicks_without_decision=len(set(click_ids) - set(before)),
        clicks_decided_more_than_once=sum(n > 1 for n in counts.values()),
        clicks_with_distinct_decisions=sum(len(v) > 1 for v in by_click.values()),
        clicks_with_distinct_verdicts=sum(len(v) > 1 for v in verdicts.values()),
        degraded_decisions=len(degraded_at),
        degraded_clicks_before_replay=sum(d["degraded"] for d in before.values()),
        degraded_ranges_logged=len(ranges),
        degraded_clicks_outside_logged_ranges=len(degraded_clicks - covered),
        replay_runs=len(rounds),
        replay_seconds=round(sum(replay_s), 1),
        degraded_clicks_after_replay=sum(d["degraded"] for d in after.values()),
        unplanned_worker_exits=sum(len(w.unplanned_exits) for w in workers),
        faults=faults,
        load=load,
        final_fold=fold,
        timeline=timeline,
    )


def print_report(report: Report) -> None:
    console = Console()
    faults = Table(
        "fault", "what", "restart took (s)", "recovery (s)", "degraded decisions",
        title=f"faults (recovered: non-degraded decisions >= {RECOVERED_SHARE:.0%} of "
        f"{report.offered_rate:.0f}/s for {SUSTAIN_S} s)",
    )  # fmt: skip
    for f in report.faults:
        faults.add_row(
            f.name,
            f.detail,
            f"{f.restarted - f.started:.1f}",
            "not recovered" if f.recovery_s is None else f"{f.recovery_s:.0f}",
            f"{f.degraded:,}",
        )
    console.print(faults)
    summary = Table("measure", "value", "target", title="clicks and decisions")
    rows: list[tuple[str, object, str]] = [
        ("clicks sent", report.clicks_sent, ""),
        ("offered / judged before the faults (clicks/s)",
         f"{report.offered_rate:.0f} / {report.baseline_rate:.0f}", ""),
        ("dead letters", report.dead_letters, "0"),
        ("decisions (live topic)", report.decisions, ""),
        ("clicks without any decision", report.clicks_without_decision, "0"),
        ("clicks decided more than once", report.clicks_decided_more_than_once, ""),
        ("clicks with more than one distinct decision", report.clicks_with_distinct_decisions,
         "0"),
        ("... of which with different verdicts", report.clicks_with_distinct_verdicts, "0"),
        ("degraded decisions", report.degraded_decisions, ""),
        ("clicks whose final decision is degraded", report.degraded_clicks_before_replay, ""),
        ("degraded ranges logged by the workers", report.degraded_ranges_logged, ""),
        ("degraded clicks outside the logged ranges",
         report.degraded_clicks_outside_logged_ranges, "0"),
        ("replay runs (recompute) / seconds", f"{report.replay_runs} / {report.replay_seconds}",
         ""),
        ("clicks whose final decision is degraded after the replays",
         report.degraded_clicks_after_replay, "0"),
        ("worker exits not caused by the run", report.unplanned_worker_exits, "0"),
    ]  # fmt: skip
    for name, value, target in rows:
        summary.add_row(name, f"{value:,}" if isinstance(value, int) else str(value), target)
    console.print(summary)
    load = report.load
    console.print(
        f"{load['seconds']:.0f} s under chaos; machine {load['machine_cores_busy']:.2f} of "
        f"{load['cores']:.0f} cores busy, {load['others_cores_busy']:.2f} of them by processes "
        f"not of this run; load average {load['loadavg1_start']} -> {load['loadavg1_end']}; "
        f"final decisions by {report.final_fold}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=100_000, help="clicks to send (about)")
    parser.add_argument(
        "--duration", type=float, default=240, help="seconds over which they are sent"
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=12,
        help="seconds of normal flow before each fault, once decisions flow again",
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=5,
        help="seconds each faulty component stays down before it is started again",
    )
    parser.add_argument("--heap", default="256m", help="heap of each Kafka broker")
    parser.add_argument("--keep", action="store_true", help="keep the state and logs")
    parser.add_argument("--json", action="store_true", help="only a JSON object on stdout")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/chaos.py", *(argv or sys.argv[1:])])
    with _workdir(args.keep) as root:
        report = run(args, root, command)
    if args.json:
        print(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(report)


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    if keep:
        root = Path(tempfile.mkdtemp(prefix="slidr-chaos-"))
        note(f"state and logs kept in {root}")
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="slidr-chaos-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    main()
