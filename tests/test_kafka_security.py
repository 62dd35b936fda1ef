"""Kafka security: one settings block, mapped once per client library, used by every client,
and end to end against real SASL (SCRAM-SHA-512) and TLS (mutual) brokers."""

from __future__ import annotations

import ast
import datetime as dt
import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from slidr.errors import StackError
from slidr.kafka_config import client_config, faust_credentials
from slidr.settings import ArchiveSettings, KafkaSettings, MonitorSettings, Settings
from slidr.stack.kafka_broker import KafkaService
from slidr.topics import ensure_topics, missing_topics
from streams.archive.consumer import Archiver
from tests.client_sites import called_name, construction_sites
from tests.factories import mixed_traffic
from tests.pki import make_pki
from tests.stack_fixtures import free_ports, running, settings_env
from tests.worker_harness import SLIDR, WorkerProcess, consume, isolated, watermarks

PASSWORD = f"pw-{uuid.uuid4().hex}"
_CONSTRUCTORS = {"Producer", "Consumer", "AdminClient"}
_BUILDERS = {"client_config", "with_error_recorder"}


# --- every client goes through client_config ---------------------------------------------------


def _client_constructions(path: Path) -> list[tuple[int, bool]]:
    """(line, built from client_config) for each Producer/Consumer/AdminClient call in a file.

    An argument counts if it is a client_config(...) call, or a name assigned from one (or from
    with_error_recorder) in the same function.
    """
    tree = ast.parse(path.read_text())
    built: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and func.id in _BUILDERS:
                for target in node.targets:
                    for leaf in ast.walk(target):
                        if isinstance(leaf, ast.Name):
                            built.add(leaf.id)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if called_name(node) not in _CONSTRUCTORS or not node.args:
            continue
        arg = node.args[0]
        ok = (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Name)
            and arg.func.id in _BUILDERS
        ) or (isinstance(arg, ast.Name) and arg.id in built)
        found.append((node.lineno, ok))
    return found


def test_every_kafka_client_in_the_project_is_built_from_the_security_settings() -> None:
    sites = construction_sites(_client_constructions, also=["tests/worker_harness.py"])
    # The enumeration itself must see the clients this issue is about, or it proves nothing.
    expected = [
        "streams/produce.py", "slidr/topics.py", "streams/archive/consumer.py",
        "streams/monitor/consumer.py", "replay/ranges.py", "slidr/cli/replay.py",
        "slidr/cli/topics.py", "slidr/topic_reader.py", "slidr/simulate/sinks.py",
        "slidr/stack/kafka_broker.py",
    ]  # fmt: skip
    for module in expected:
        assert any(site.startswith(module + ":") for site in sites), module
    assert [site for site, ok in sites.items() if not ok] == []


def test_faust_apps_get_the_credentials(tmp_path: Path) -> None:
    from faust.auth import SASLCredentials

    from replay.agent import create_replay_app
    from streams.app import create_app

    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="slidr", sasl_password=PASSWORD
    )
    settings = Settings(state_dir=tmp_path, kafka=kafka)
    for app in (create_app(settings), create_replay_app(settings)):
        credentials = app.conf.broker_credentials
        assert isinstance(credentials, SASLCredentials)
        assert (credentials.username, credentials.password) == ("slidr", PASSWORD)
        assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_each_protocol_maps_to_both_libraries(tmp_path: Path) -> None:
    ca, cert, key = _pki(tmp_path)
    plain = KafkaSettings(port=9092)
    assert client_config(plain) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }
    assert faust_credentials(plain) is None

    sasl_ssl = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password=PASSWORD,
        ssl_cafile=ca,
        ssl_certfile=cert["client"],
        ssl_keyfile=key["client"],
    )
    config = client_config(sasl_ssl, {"group.id": "g"})
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanisms"] == "PLAIN"
    assert (config["sasl.username"], config["sasl.password"]) == ("u", PASSWORD)
    assert config["ssl.ca.location"] == str(ca) and config["group.id"] == "g"
    assert config["ssl.certificate.location"] == str(cert["client"])
    credentials = faust_credentials(sasl_ssl)
    assert credentials is not None and credentials.protocol.value == "SASL_SSL"

    ssl_only = KafkaSettings(security_protocol="SSL", ssl_cafile=ca)
    assert "sasl.password" not in client_config(ssl_only)
    credentials = faust_credentials(ssl_only)
    assert credentials is not None and credentials.protocol.value == "SSL"


def test_incomplete_security_settings_are_refused_naming_the_variables() -> None:
    with pytest.raises(ValidationError, match="SLIDR_KAFKA__SASL_PASSWORD"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="u")
    with pytest.raises(ValidationError, match="SLIDR_KAFKA__SSL_KEYFILE"):
        KafkaSettings(security_protocol="SSL", ssl_certfile=Path("c.pem"))
    secret = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=PASSWORD
    )
    assert PASSWORD not in repr(secret) and PASSWORD not in str(secret.model_dump())
    # A subprocess gets the value itself, not pydantic's mask.
    env = settings_env(Settings(kafka=secret))
    assert env["SLIDR_KAFKA__SASL_PASSWORD"] == PASSWORD


# --- real brokers -------------------------------------------------------------------------------


def _pki(root: Path) -> tuple[Path, dict[str, Path], dict[str, Path]]:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate (PEM)."""
    return make_pki(root, ("broker", "client"))


def _secure_broker(stack: Settings, root: Path, **security: object) -> Iterator[Settings]:
    """A broker of its own with ``security``; Redis and Triton are the session stack's."""
    port, controller = free_ports(2)
    kafka = KafkaSettings(port=port, controller_port=controller, **security)
    settings = stack.model_copy(update={"kafka": kafka, "state_dir": root / "state"})
    with running(KafkaService(settings)):
        yield settings


@pytest.fixture(scope="module")
def sasl_settings(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    yield from _secure_broker(
        stack_settings,
        tmp_path_factory.mktemp("kafka-sasl"),
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="slidr-worker",
        sasl_password=SecretStr(PASSWORD),
    )


@pytest.fixture(scope="module")
def ssl_settings(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("kafka-ssl")
    ca, certs, keys = _pki(root)
    yield from _secure_broker(
        stack_settings,
        root,
        security_protocol="SSL",
        ssl_cafile=ca,
        ssl_certfile=certs["client"],
        ssl_keyfile=keys["client"],
        broker_certfile=certs["broker"],
        broker_keyfile=keys["broker"],
    )


def _decide_and_archive(secure: Settings, tmp_path: Path) -> None:
    """Topics created, a `slidr worker` deciding clicks, the archiver reading them back."""
    settings = isolated(secure)
    clicks = mixed_traffic(60, "sec", dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    decisions = worker.decide(clicks)
    assert {d["click_id"] for d in decisions} == {c.click_id for c in clicks}, worker.log()
    archive = ArchiveSettings(root=tmp_path / "archive", consumer_group=f"archive-{uuid.uuid4()}")
    stats = Archiver(settings.model_copy(update={"archive": archive})).run(
        threading.Event(), until_idle_s=0.5
    )
    assert stats["clicks"].rows == len(clicks) and stats["decisions"].rows == len(clicks)
    assert PASSWORD not in worker.log_path.read_text()


@pytest.mark.integration
def test_worker_and_archiver_run_through_a_scram_broker(
    sasl_settings: Settings, tmp_path: Path
) -> None:
    config = Path(sasl_settings.state_dir) / "kafka" / "server.properties"
    assert config.stat().st_mode & 0o077 == 0  # it holds the broker's JAAS password
    assert not (config.parent / "format.args").exists()
    broker_log = KafkaService(sasl_settings).proc.log_file.read_text()
    assert broker_log and PASSWORD not in broker_log
    _decide_and_archive(sasl_settings, tmp_path)


def _metric(port: int, name: str) -> float:
    """The sum of a Prometheus metric's samples on a local endpoint (0 while it is down)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith((name + "{", name + " "))
    )


@pytest.mark.integration
def test_replay_agent_and_monitor_run_through_a_scram_broker(
    sasl_settings: Settings, tmp_path: Path
) -> None:
    """Decisions of a worker, read by `slidr monitor`; a signed `slidr replay --submit` served
    by `slidr replay-agent`, which publishes the replayed decisions: all through SCRAM."""
    base = isolated(sasl_settings)
    tag = base.worker.consumer_group
    monitor_port, agent_port = free_ports(2)
    replay = base.replay.model_copy(
        update={
            "requests_topic": f"{tag}.replay.requests",
            "progress_topic": f"{tag}.replay.progress",
            "agent_group": f"{tag}-agent",
            "metrics_port": agent_port,
        }
    )
    monitor = MonitorSettings(
        consumer_group=f"{tag}-monitor", from_beginning=True, metrics_port=monitor_port
    )
    settings = base.model_copy(update={"replay": replay, "monitor": monitor})
    ensure_topics(settings)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    clicks = mixed_traffic(40, "scram-replay", start)
    decided = WorkerProcess(settings, tmp_path / "worker.log").decide(clicks)
    version = decided[0]["model_version"]
    key = f"sign-{uuid.uuid4().hex}"
    env = {**os.environ, **settings_env(settings), "SLIDR_REPLAY__SIGNING_KEY": key}
    logs = {name: tmp_path / f"{name}.log" for name in ("monitor", "agent")}
    procs = []
    for name, command in (("monitor", "monitor"), ("agent", "replay-agent")):
        with logs[name].open("wb") as log:
            procs.append(subprocess.Popen([SLIDR, command], env=env, stdout=log, stderr=log))
    try:
        deadline = time.monotonic() + 90
        while _metric(monitor_port, "slidr_monitor_decisions_total") < len(clicks):
            assert time.monotonic() < deadline, logs["monitor"].read_text()[-3000:]
            time.sleep(0.5)
        submit = [SLIDR, "replay", "--submit", "--wait-s", "120", "--model-version", str(version)]
        for partition, (low, high) in watermarks(settings).items():
            submit += [f"--from-offset={partition}:{low}", f"--to-offset={partition}:{high - 1}"]
        done = subprocess.run(
            submit,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr + logs["agent"].read_text()[-3000:]
        replayed = consume(settings, settings.topics.replayed_decisions, len(clicks), 60)
        assert {d["click_id"] for d in replayed} == {c.click_id for c in clicks}
        assert _metric(agent_port, "slidr_replay_runs_total") >= 1
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    for path in logs.values():
        text = path.read_text(errors="replace")
        assert PASSWORD not in text and key not in text


@pytest.mark.integration
def test_a_worker_with_a_wrong_password_says_which_setting_and_exits(
    sasl_settings: Settings,
) -> None:
    wrong = sasl_settings.kafka.model_copy(update={"sasl_password": SecretStr("not-it")})
    env = {**os.environ, **settings_env(sasl_settings.model_copy(update={"kafka": wrong}))}
    done = subprocess.run([SLIDR, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "authentication as 'slidr-worker' (SCRAM-SHA-512) failed" in done.stderr, done.stderr
    assert "SLIDR_KAFKA__SASL_PASSWORD" in done.stderr
    assert "not-it" not in done.stderr + done.stdout and "Traceback" not in done.stderr


@pytest.mark.integration
def test_worker_and_archiver_run_through_a_mutual_tls_broker(
    ssl_settings: Settings, tmp_path: Path
) -> None:
    _decide_and_archive(ssl_settings, tmp_path)


@pytest.mark.integration
def test_a_client_trusting_another_ca_is_told_which_setting(
    ssl_settings: Settings, tmp_path: Path
) -> None:
    other_ca, _, _ = _pki(tmp_path)
    kafka = ssl_settings.kafka.model_copy(update={"ssl_cafile": other_ca})
    with pytest.raises(StackError, match="SLIDR_KAFKA__SSL_CAFILE"):
        missing_topics(ssl_settings.model_copy(update={"kafka": kafka}), ["x"], timeout_s=5)
