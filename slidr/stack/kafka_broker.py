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
from slidr.kafka_config import client_config
from slidr.settings import KafkaSettings, Settings
from slidr.stack.process import ManagedProcess, wait_until, write_private
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
        # The client listener is named after its protocol; the controller's stays plaintext on
        # loopback (only this process uses it).
        listener = k.security_protocol
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{k.host}:{k.controller_port}",
            "listeners": f"{listener}://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
            "advertised.listeners": f"{listener}://{k.host}:{k.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": listener,
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
            **self._security_props(),
        }
        path = self.proc.workdir / "server.properties"
        # It may hold the SASL password (JAAS): readable by this user only.
        write_private(path, "".join(f"{key}={value}\n" for key, value in props.items()))
        return path

    def _security_props(self) -> dict[str, str]:
        k = self.kafka
        props: dict[str, str] = {}
        if k.security_protocol.startswith("SASL_"):
            user, password = _stack_credentials(self.kafka)
            mech = k.sasl_mechanism
            if mech == "PLAIN":  # PLAIN keeps its users in the JAAS entry itself
                module = "org.apache.kafka.common.security.plain.PlainLoginModule"
                users = f" user_{user}={_jaas_quote(password)}"
            else:  # SCRAM users live in the cluster metadata (added at format time)
                module = "org.apache.kafka.common.security.scram.ScramLoginModule"
                users = ""
            jaas = (
                f"{module} required username={_jaas_quote(user)} "
                f"password={_jaas_quote(password)}{users};"
            )
            name = f"listener.name.{k.security_protocol.lower()}.{mech.lower()}.sasl.jaas.config"
            props |= {
                "sasl.enabled.mechanisms": mech,
                "sasl.mechanism.inter.broker.protocol": mech,
                name: jaas,
            }
        if k.uses_ssl:
            if k.broker_certfile is None or k.broker_keyfile is None or k.ssl_cafile is None:
                raise StackError(
                    f"a local {k.security_protocol} broker needs SLIDR_KAFKA__BROKER_CERTFILE, "
                    "SLIDR_KAFKA__BROKER_KEYFILE (its certificate chain and unencrypted PEM "
                    "key) and SLIDR_KAFKA__SSL_CAFILE (the CA that signed it)"
                )
            # A PEM keystore is the key followed by the chain, in one file.
            keystore = self.proc.workdir / "broker-keystore.pem"
            write_private(
                keystore, Path(k.broker_keyfile).read_text() + Path(k.broker_certfile).read_text()
            )
            props |= {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(k.ssl_cafile),
                # A client certificate in the settings means the broker requires one (mTLS).
                "ssl.client.auth": "required" if k.ssl_certfile is not None else "none",
            }
        return props

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
        args = ["format", f"--cluster-id={cluster_id}", "-c", str(config)]
        if (
            self.kafka.security_protocol.startswith("SASL_")
            and self.kafka.sasl_mechanism != "PLAIN"
        ):
            user, password = _stack_credentials(self.kafka)
            args += [
                "--add-scram",
                f"{self.kafka.sasl_mechanism}=[name={user},password={password}]",
            ]
        # The arguments go in a private @argfile: on the command line the SCRAM password would
        # show in the process list.
        argfile = self.proc.workdir / "format.args"
        write_private(
            argfile,
            "\n".join(_argfile_quote(a) for a in self._java("kafka.tools.StorageTool", *args)[1:]),
        )
        try:
            result = subprocess.run(
                [require_program("java", "", _JAVA_INSTALL), f"@{argfile}"],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            argfile.unlink()
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
        producer = Producer(client_config(self.kafka))
        producer.produce(_HEALTH_TOPIC, token)
        if producer.flush(timeout_s) != 0:
            raise StackError("Kafka did not acknowledge a produced message")
        consumer = Consumer(
            client_config(
                self.kafka, {"group.id": "slidr-stack-health", "enable.auto.commit": False}
            )
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


# Characters that would end a value in the storage tool's SCRAM argument or a JAAS entry.
_UNSAFE = frozenset('"\\,[]=\n\r\t ')


def _stack_credentials(kafka: KafkaSettings) -> tuple[str, str]:
    assert kafka.sasl_username is not None and kafka.sasl_password is not None
    user, password = kafka.sasl_username, kafka.sasl_password.get_secret_value()
    if _UNSAFE & set(user + password):
        raise StackError(
            "the local broker's SASL user and password (SLIDR_KAFKA__SASL_USERNAME, "
            "SLIDR_KAFKA__SASL_PASSWORD) may not contain quotes, backslashes, commas, "
            "brackets, '=' or whitespace"
        )
    return user, password


def _jaas_quote(value: str) -> str:
    return f'"{value}"'  # no escaping needed: _stack_credentials refuses quotes and backslashes


def _argfile_quote(arg: str) -> str:
    """One argument of a java @argfile (quoted: the classpath's '*' and '[' stay literal)."""
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
