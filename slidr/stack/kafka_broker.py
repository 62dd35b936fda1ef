"""A single-node Kafka broker in KRaft mode, from jars that Maven resolves and caches."""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import subprocess
import time
import uuid
from importlib import resources
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from slidr.errors import StackError
from slidr.settings import Settings
from slidr.stack.process import ManagedProcess, wait_until
from slidr.stack.service import Health, port_open, require_program
from slidr.topics import admin_client

log = logging.getLogger(__name__)

_JAVA_INSTALL = "apt-get install -y openjdk-17-jre-headless"
_HEALTH_TOPIC = "slidr.stack.health"


class KafkaService:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.proc = ManagedProcess("kafka", Path(settings.state_dir) / "kafka")
        self.libs = Path(settings.cache_dir) / f"kafka-{self.kafka.version}" / "libs"

    @property
    def port(self) -> int:
        return self.kafka.port

    def check_prerequisites(self) -> None:
        require_program("java", "the local Kafka broker runs on the JVM (17+)", _JAVA_INSTALL)
        if not self._jars_cached():
            require_program(
                "mvn", "Maven fetches the Kafka broker's jars once", "apt-get install -y maven"
            )

    def _jars_cached(self) -> bool:
        return self.libs.is_dir() and any(self.libs.glob("kafka_2.13-*.jar"))

    def fetch_jars(self) -> Path:
        """Resolve the broker's jars from Maven Central once; later stacks reuse the cache."""
        if self._jars_cached():
            return self.libs
        staging = self.libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        pom = resources.files("slidr.stack") / "kafka-pom.xml"
        log.info("fetching Kafka %s jars into %s (once)", self.kafka.version, self.libs)
        with resources.as_file(pom) as pom_path:
            result = subprocess.run(
                [
                    require_program("mvn", "", "apt-get install -y maven"),
                    "-q", "-B", "-f", str(pom_path),
                    "dependency:copy-dependencies",
                    f"-Dkafka.version={self.kafka.version}",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staging}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise StackError(
                f"Maven could not fetch Kafka {self.kafka.version}:\n{result.stdout[-2000:]}"
            )
        staging.rename(self.libs)
        return self.libs

    def _write_config(self) -> Path:
        k = self.kafka
        data = self.proc.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{k.host}:{k.controller_port}",
            "listeners": f"PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{k.host}:{k.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.settings.topics.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "60000",
        }
        path = self.proc.workdir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        log_config = resources.files("slidr.stack") / "log4j2.properties"
        return [
            require_program("java", "", _JAVA_INSTALL),
            f"-Xmx{self.kafka.heap}",
            f"-Xms{self.kafka.heap}",
            "-XX:+UseSerialGC",  # two cores: a parallel collector only competes with the pipeline
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _format_storage(self, config: Path) -> None:
        if (self.proc.workdir / "data" / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # One id in 64 starts with "-": as a separate argument it would be read as an option.
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
        log.info("formatted Kafka storage in %s", self.proc.workdir / "data")

    def start(self) -> None:
        self.fetch_jars()
        self.proc.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format_storage(config)
        self.proc.start(self._java("kafka.Kafka", str(config)))
        wait_until(lambda: self.health().ok, "Kafka metadata", 60, self.proc)

    def health(self) -> Health:
        if not port_open(self.kafka.host, self.kafka.port):
            return Health(False, "port closed")
        try:
            meta = admin_client(self.settings).list_topics(timeout=2)
        except KafkaException as exc:
            return Health(False, f"no metadata: {exc}")
        return Health(bool(meta.brokers), f"{len(meta.topics)} topics")

    def round_trip(self, timeout_s: float = 30.0) -> float:
        """Produce one message and read it back; return the seconds it took."""
        admin = admin_client(self.settings)
        fs = admin.create_topics([NewTopic(_HEALTH_TOPIC, 1, 1)], request_timeout=10)
        for future in fs.values():
            with contextlib.suppress(KafkaException):  # already there
                future.result(timeout=10)
        start = time.monotonic()
        token = uuid.uuid4().hex.encode()
        producer = Producer({"bootstrap.servers": self.kafka.bootstrap})
        producer.produce(_HEALTH_TOPIC, token)
        if producer.flush(timeout_s) != 0:
            raise StackError("Kafka did not acknowledge a produced message")
        consumer = Consumer(
            {
                "bootstrap.servers": self.kafka.bootstrap,
                "group.id": "slidr-stack-health",
                "enable.auto.commit": False,
            }
        )
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(_HEALTH_TOPIC, 0), timeout=10)
            consumer.assign([TopicPartition(_HEALTH_TOPIC, 0, max(high - 1, 0))])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None and msg.value() == token:
                    return time.monotonic() - start
        finally:
            consumer.close()
        raise StackError(f"Kafka round trip did not complete in {timeout_s:.0f} s")
