"""Where simulated hours go: hive-partitioned Parquet, or Kafka topics in event-time order."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
import pyarrow as pa

from slidr.archive import CLICKS, CUSTOMERS_FILE, PURCHASES, TRUTH, write_bytes, write_customers
from slidr.archive import write_hour as write_hour_table
from slidr.errors import SlidrError
from slidr.kafka_config import client_config
from slidr.settings import KafkaSettings
from slidr.simulate.encode import click_values, purchase_values, truth_values
from slidr.simulate.generator import HourBatch

logger = logging.getLogger(__name__)

#: The archive datasets a simulation writes (beside ``customers.parquet``).
DATASETS = (CLICKS, PURCHASES, TRUTH)
MANIFEST_FILE = "simulation.json"


class SimulationError(SlidrError):
    """The simulated traffic could not be written; the message says where and why."""


class Sink(Protocol):
    def write_customers(self, customers: pa.Table) -> None: ...

    def write_hour(self, batch: HourBatch) -> None: ...

    def close(self) -> None:
        """Flush everything; raise SimulationError if anything was lost."""


class ParquetSink:
    """One file per dataset and hour: ``DATASET/date=YYYY-MM-DD/hour=HH/part-0.parquet``,
    written atomically (``slidr.archive.write_hour``, zstd like every archive file).

    Refuses a directory that already holds simulated data unless ``overwrite``: mixing two runs
    would silently duplicate or contradict ground truth.
    """

    def __init__(
        self, root: Path, datasets: tuple[str, ...] = DATASETS, overwrite: bool = False
    ) -> None:
        self.root = root
        self.datasets = datasets
        ours = [root / d for d in DATASETS] + [root / CUSTOMERS_FILE, root / MANIFEST_FILE]
        existing = [p for p in ours if p.exists()]
        if existing and not overwrite:
            raise SimulationError(
                f"{root} already holds simulated data ({existing[0].name}); "
                "choose another directory or pass --overwrite"
            )
        for path in existing:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        root.mkdir(parents=True, exist_ok=True)

    def write_customers(self, customers: pa.Table) -> None:
        write_customers(self.root, customers, durable=False)

    def write_hour(self, batch: HourBatch) -> None:
        tables = {CLICKS: batch.clicks, PURCHASES: batch.purchases, TRUTH: batch.truth}
        day, hour = f"{batch.start:%Y-%m-%d}", f"{batch.start:%H}"
        for name in self.datasets:
            table = tables[name]
            if table.num_rows == 0:
                continue  # an absent partition reads as no rows; an empty file is just noise
            # Atomic, not fsynced: a simulation is cheaper to run again than to sync, and its
            # throughput is measured (docs/simulator.md).
            write_hour_table(self.root, name, day, hour, table, durable=False)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_bytes(
            self.root / MANIFEST_FILE,
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
        )

    def close(self) -> None:
        pass


class _Pacer:
    """Sleeps so that clicks leave at ``rate`` per second on average."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.sent = 0
        self.t0 = time.monotonic()

    def wait(self, clicks: int) -> None:
        self.sent += clicks
        ahead = self.sent / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


class KafkaSink:
    """Produces clicks, purchases and (optionally) ground truth, merged in event-time order.

    Keys: click_id for clicks and truth, the purchase's click_id for purchases (so a purchase
    lands on its click's partition). The Kafka message timestamp is the event time, which lets a
    replay look offsets up by time.
    """

    #: Clicks produced between two pacing checks / delivery-report polls.
    CHUNK = 2000

    def __init__(
        self,
        kafka: KafkaSettings,
        clicks_topic: str,
        purchases_topic: str,
        truth_topic: str | None = None,
        rate: float | None = None,
        producer_config: dict[str, Any] | None = None,
        *,
        bootstrap: str | None = None,
    ) -> None:
        from confluent_kafka import KafkaException, Producer

        self.bootstrap = bootstrap = bootstrap or kafka.bootstrap
        self.topics = (clicks_topic, purchases_topic, truth_topic)
        self.errors = 0
        self.first_error: str | None = None
        self.produced = 0
        config: dict[str, Any] = {
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "enable.idempotence": True,
            # Python callbacks per message would halve throughput; only failures are reported.
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            # librdkafka logs through Python logging instead of raw lines on stderr.
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
        }
        config.update(producer_config or {})
        self._producer = Producer(client_config(kafka, config, bootstrap=bootstrap))
        self._pacer = _Pacer(rate) if rate else None
        try:
            metadata = self._producer.list_topics(timeout=10)
        except KafkaException as exc:
            raise SimulationError(
                f"cannot reach Kafka at {bootstrap} ({exc}); is the local stack running?"
            ) from None
        missing = [t for t in self.topics if t is not None and t not in metadata.topics]
        if missing:
            raise SimulationError(
                f"topic(s) {', '.join(missing)} do not exist on {bootstrap}; create them "
                "(the local stack does) or name existing ones"
            )

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{msg.topic()}: {err}"

    def _on_error(self, err: Any) -> None:
        logger.warning("kafka: %s", err)

    def write_customers(self, customers: pa.Table) -> None:
        """Customers are not events; see ``--truth-out`` for a Parquet copy."""

    def write_hour(self, batch: HourBatch) -> None:
        clicks, purchases = batch.clicks, batch.purchases
        click_ids = clicks.column("click_id").to_pylist()
        values = click_values(clicks, batch.start) + purchase_values(purchases, batch.start)
        keys = click_ids + purchases.column("click_id").to_pylist()
        times = np.concatenate(
            [
                clicks.column("event_time").cast(pa.int64()).to_numpy(),
                purchases.column("event_time").cast(pa.int64()).to_numpy(),
            ]
        )
        order = np.argsort(times, kind="stable").tolist()  # clicks first on equal times
        n_clicks = clicks.num_rows
        clicks_topic, purchases_topic, truth_topic = self.topics
        truth = truth_values(batch.truth) if truth_topic else None
        timestamps = times.tolist()
        produce, poll = self._producer.produce, self._producer.poll
        since_check = 0
        for i in order:
            is_click = i < n_clicks
            topic = clicks_topic if is_click else purchases_topic
            self._produce(produce, poll, topic, values[i], keys[i], timestamps[i])
            if is_click:
                if truth is not None:
                    self._produce(produce, poll, truth_topic, truth[i], keys[i], timestamps[i])
                since_check += 1
                if since_check == self.CHUNK:
                    poll(0)
                    if self._pacer:
                        self._pacer.wait(since_check)
                    since_check = 0
        if self._pacer and since_check:
            self._pacer.wait(since_check)
        self.produced += len(order) + (n_clicks if truth is not None else 0)

    @staticmethod
    def _produce(produce: Any, poll: Any, topic: Any, value: bytes, key: str, ts: int) -> None:
        while True:
            try:
                produce(topic, value, key, timestamp=ts)
                return
            except BufferError:
                poll(0.05)  # local queue full: let the broker catch up

    def close(self) -> None:
        remaining = self._producer.flush(60)
        if remaining:
            raise SimulationError(
                f"{remaining} events still unsent to {self.bootstrap} after 60 s; is the broker up?"
            )
        if self.errors:
            raise SimulationError(
                f"{self.errors} of {self.produced} events were not delivered to "
                f"{self.bootstrap}; first error: {self.first_error}"
            )
