"""Kafka in KRaft mode, from jars that Maven resolves and caches.

One combined broker+controller process by default; with ``kafka.brokers`` = N, a cluster of N
combined processes (node ids 1..N, a static quorum of N voters), broker i on ``port + 2i`` and
its controller on ``controller_port + 2i``, each with its own directory ``kafka/node-<id>``.
Topics and the broker's internal topics get ``kafka.replication_factor`` copies and
``kafka.min_insync_replicas``.
"""

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
from confluent_kafka.admin import AdminClient, NewTopic

from slidr.errors import StackError
from slidr.kafka_config import client_config, with_error_recorder
from slidr.settings import KafkaSettings, Settings
from slidr.stack.process import ManagedProcess, ProcessGroup, wait_until, write_private
from slidr.stack.service import Health, kafka_reachable, port_open, require_program
from slidr.topics import admin_client

log = logging.getLogger(__name__)

_JAVA_INSTALL = "apt-get install -y openjdk-17-jre-headless"
_HEALTH_TOPIC = "slidr.stack.health"


class KafkaService:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.workdir = Path(settings.state_dir) / "kafka"
        if self.kafka.brokers == 1:  # the layout of a single broker, unchanged
            members: tuple[ManagedProcess, ...] = (ManagedProcess("kafka", self.workdir),)
        else:
            members = tuple(
                ManagedProcess(f"kafka-{node}", self.workdir / f"node-{node}")
                for node in range(1, self.kafka.brokers + 1)
            )
        # Processes of another layout (a single broker when a cluster is asked for, or nodes of
        # a larger cluster) would hold ports and are stopped with this one.
        names = {m.name for m in members}
        strays = tuple(
            ManagedProcess(pid_file.stem, pid_file.parent)
            for pid_file in sorted(
                [*self.workdir.glob("kafka.pid"), *self.workdir.glob("node-*/kafka-*.pid")]
            )
            if pid_file.stem not in names
        )
        self.proc = ProcessGroup("kafka", members, strays)
        self.libs = Path(settings.cache_dir) / f"kafka-{self.kafka.version}" / "libs"

    @property
    def port(self) -> int:
        return self.kafka.port

    @property
    def nodes(self) -> tuple[ManagedProcess, ...]:
        """One process per broker, broker 0 (node id 1) first."""
        return self.proc.members

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

    def _write_config(self, index: int) -> Path:
        """``server.properties`` of broker ``index`` (0-based; node id ``index + 1``)."""
        k = self.kafka
        workdir = self.nodes[index].workdir
        port, controller = k.broker_ports[index], k.controller_ports[index]
        voters = ",".join(f"{i + 1}@{k.host}:{p}" for i, p in enumerate(k.controller_ports))
        rf, isr = str(k.replication_factor), str(k.min_insync_replicas)
        # The client listener is named after its protocol; the controllers' stays plaintext on
        # loopback (only these processes use it).
        listener = k.security_protocol
        props = {
            "process.roles": "broker,controller",
            "node.id": str(index + 1),
            "controller.quorum.voters": voters,
            "listeners": f"{listener}://{k.host}:{port},CONTROLLER://{k.host}:{controller}",
            "advertised.listeners": f"{listener}://{k.host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": listener,
            "log.dirs": str(workdir / "data"),
            "num.partitions": str(self.settings.topics.partitions),
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            # Only an in-sync replica may lead: an acknowledged write is never given up.
            "unclean.leader.election.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.check.interval.ms": "60000",
            **self._security_props(workdir),
        }
        if k.brokers > 1:
            # A crashed broker is fenced, and its partitions get new leaders, after this long
            # without heartbeats (default 9 s, at 2 s beats): 6 s keeps a margin for a JVM
            # starved of CPU on a shared machine.
            props |= {"broker.session.timeout.ms": "6000", "broker.heartbeat.interval.ms": "1000"}
        path = workdir / "server.properties"
        # It may hold the SASL password (JAAS): readable by this user only.
        write_private(path, "".join(f"{key}={value}\n" for key, value in props.items()))
        return path

    def _security_props(self, workdir: Path) -> dict[str, str]:
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
            keystore = workdir / "broker-keystore.pem"
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

    def _cluster_id(self) -> str:
        """The cluster id every node is formatted with: kept beside the nodes, so a node whose
        data was lost is formatted into the same cluster again."""
        path = self.workdir / "cluster.id"
        if path.exists():
            return path.read_text().strip()
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        path.write_text(cluster_id + "\n")
        return cluster_id

    def _format_command(self, index: int, config: Path) -> list[str] | None:
        """The storage tool's command for broker ``index``, or None when already formatted."""
        workdir = self.nodes[index].workdir
        if (workdir / "data" / "meta.properties").exists():
            return None
        if self.kafka.brokers == 1:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        else:
            cluster_id = self._cluster_id()
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
        argfile = workdir / "format.args"
        write_private(
            argfile,
            "\n".join(_argfile_quote(a) for a in self._java("kafka.tools.StorageTool", *args)[1:]),
        )
        return [require_program("java", "", _JAVA_INSTALL), f"@{argfile}"]

    def _format_storage(self, configs: list[Path]) -> None:
        """Format every node not formatted yet; the nodes' storage tools run side by side."""
        commands = {
            i: command
            for i, config in enumerate(configs)
            if (command := self._format_command(i, config)) is not None
        }
        running = {
            i: subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            for i, command in commands.items()
        }
        failures = []
        for i, popen in running.items():
            output, _ = popen.communicate()
            (self.nodes[i].workdir / "format.args").unlink(missing_ok=True)
            if popen.returncode != 0:
                failures.append(f"[{self.nodes[i].name}] {output}")
            else:
                log.info("formatted Kafka storage in %s", self.nodes[i].workdir / "data")
        if failures:
            raise StackError("formatting Kafka storage failed:\n" + "\n".join(failures))

    def start(self) -> None:
        self.fetch_jars()
        configs: list[Path] = []
        for node in self.nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            configs.append(self._write_config(len(configs)))
        self._format_storage(configs)
        for node, config in zip(self.nodes, configs, strict=True):
            node.start(self._java("kafka.Kafka", str(config)))
        wait_until(lambda: self.health().ok, "Kafka metadata", 60 * len(self.nodes), self.proc)

    def start_node(self, index: int) -> None:
        """Start broker ``index`` again (after a crash or :meth:`kill_node`) and wait until the
        cluster lists it. Its data is kept: it catches up from the other replicas."""
        node = self.nodes[index]
        if not (node.workdir / "data" / "meta.properties").exists():
            raise StackError(f"{node.name} has no formatted storage: `slidr stack up` starts it")
        config = self._write_config(index)
        node.start(self._java("kafka.Kafka", str(config)))
        wait_until(lambda: self._serving(index), f"{node.name} serving metadata", 120, node)

    def kill_node(self, index: int) -> None:
        """SIGKILL broker ``index`` (a crash: no controlled shutdown, no leader hand-over)."""
        node = self.nodes[index]
        if not node.kill():
            raise StackError(f"{node.name} is not running")

    def _serving(self, index: int) -> bool:
        """Whether broker ``index`` itself answers a metadata request listing itself: it has
        caught up with the cluster metadata (the others may still list a dead one for
        ``broker.session.timeout.ms``)."""
        k = self.kafka
        port = k.broker_ports[index]
        if not port_open(k.host, port):
            return False
        config, _ = with_error_recorder(k)
        config["bootstrap.servers"] = f"{k.host}:{port}"
        try:
            meta = AdminClient(config).list_topics(timeout=2)
        except KafkaException:
            return False
        return (index + 1) in meta.brokers

    def under_replicated(self) -> int:
        """Partitions with fewer in-sync replicas than replicas (0: fully caught up)."""
        meta = admin_client(self.settings).list_topics(timeout=10)
        partitions = [p for t in meta.topics.values() for p in t.partitions.values()]
        return sum(len(p.isrs) < len(p.replicas) for p in partitions)

    def health(self) -> Health:
        if not kafka_reachable(self.kafka):
            return Health(False, "port closed")
        try:
            meta = admin_client(self.settings).list_topics(timeout=2)
        except KafkaException as exc:
            return Health(False, f"no metadata: {exc}")
        if self.kafka.brokers == 1:
            return Health(bool(meta.brokers), f"{len(meta.topics)} topics")
        k = self.kafka
        closed = [p for p in k.broker_ports if not port_open(k.host, p)]
        listed = sorted(meta.brokers)
        if closed or len(listed) < k.brokers:
            return Health(
                False,
                f"{k.brokers - len(closed)} of {k.brokers} brokers up (closed ports: "
                f"{closed or 'none'}; node ids listed: {listed})",
            )
        return Health(True, f"{k.brokers} brokers, {len(meta.topics)} topics")

    def round_trip(self, timeout_s: float = 30.0) -> float:
        """Produce one message and read it back; return the seconds it took."""
        admin = admin_client(self.settings)
        rf = self.kafka.replication_factor
        fs = admin.create_topics([NewTopic(_HEALTH_TOPIC, 1, rf)], request_timeout=10)
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
