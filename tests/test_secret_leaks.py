"""Secrets never leak (issue 18 item 6): a stack, a worker and a signed replay run with canary
secrets, then every output, log, written file and process command line is searched for them."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from slidr.settings import KafkaSettings, RedisSettings, Settings, TritonSettings
from slidr.stack.process import MASK, redact, secret_values
from tests.factories import mixed_traffic
from tests.stack_fixtures import free_ports, private_settings, settings_env
from tests.worker_harness import SLIDR, WorkerProcess, consume, isolated, produce

_TAG = uuid.uuid4().hex
#: Distinctive values (no character the local broker refuses in a SCRAM password).
CANARIES = {
    "kafka.sasl_password": f"leak-canary-{_TAG}-kafka",
    "redis.password": f"leak-canary-{_TAG}-redis",
    "triton.repository_key": f"leak-canary-{_TAG}-triton",
    "replay.signing_key": f"leak-canary-{_TAG}-replay",
}


def _forms(secret: str) -> list[bytes]:
    """The secret and its base64 (standard and URL-safe) at each of the 3 byte alignments it
    can have inside a longer encoded string (a SASL PLAIN message, a basic-auth header)."""
    raw = secret.encode()
    forms = [raw, raw.hex().encode()]
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + raw)
            # Drop the characters the neighbouring bytes and the padding also decide.
            forms.append(encoded[4 if shift else 0 : -4])
    return forms


def _leaks(where: str, data: bytes) -> list[str]:
    return [
        f"{name} in {where}"
        for name, secret in CANARIES.items()
        if any(form in data for form in _forms(secret))
    ]


def _with_canaries(base: Settings) -> Settings:
    kafka = KafkaSettings(
        port=base.kafka.port,
        controller_port=base.kafka.controller_port,
        security_protocol="SASL_PLAINTEXT",
        sasl_username="slidr-leak-test",
        sasl_password=SecretStr(CANARIES["kafka.sasl_password"]),
    )
    redis = RedisSettings(
        **{**base.redis.model_dump(), "password": SecretStr(CANARIES["redis.password"])}
    )
    triton = TritonSettings(
        **{
            **base.triton.model_dump(),
            "repository_key": SecretStr(CANARIES["triton.repository_key"]),
        }
    )
    replay = base.replay.model_copy(
        update={
            "signing_key": SecretStr(CANARIES["replay.signing_key"]),
            "metrics_port": free_ports(1)[0],
        }
    )
    settings = base.model_copy(
        update={"kafka": kafka, "redis": redis, "triton": triton, "replay": replay}
    )
    assert sorted(secret_values(settings)) == sorted(CANARIES.values())  # every secret set
    return settings


def _session_pids(leader: int) -> list[int]:
    """``leader`` and every process of its session: a service started with its own session,
    so Triton's backend stubs and the JVM's children are found too."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader:  # field 6, the session id
            pids.append(int(stat.parent.name))
    return pids or [leader]


def _cmdlines(pids: list[int]) -> dict[str, bytes]:
    out = {}
    for pid in pids:
        try:
            out[f"/proc/{pid}/cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
    return out


def test_redact_masks_every_secret_in_a_command_line() -> None:
    argv = ["tritonserver", "--http-restricted-api=model-repository:key=abc-def", "--port=1"]
    assert redact(argv, ["abc", "abc-def", ""]) == [
        "tritonserver",
        f"--http-restricted-api=model-repository:key={MASK}",
        "--port=1",
    ]


def test_no_help_text_shows_a_secret(tmp_path: Path) -> None:
    """Every command's --help, with the secrets in the environment (option defaults)."""
    settings = _with_canaries(Settings(state_dir=tmp_path))
    script = (
        "import typer.main\n"
        "from typer.testing import CliRunner\n"
        "from slidr.cli.main import _register, app\n"
        "_register()\n"
        "def walk(cmd, path):\n"
        "    result = CliRunner().invoke(app, [*path, '--help'])\n"
        "    assert result.exit_code == 0, (path, result.output)\n"
        "    print(result.output)\n"
        "    for name, sub in getattr(cmd, 'commands', {}).items():\n"
        "        walk(sub, [*path, name])\n"
        "walk(typer.main.get_command(app), [])\n"
    )
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=240, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"replay-agent" in result.stdout and b"--model-version" in result.stdout
    assert _leaks("--help", result.stdout + result.stderr) == []


@pytest.fixture(scope="module")
def canary_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Settings]]:
    root = tmp_path_factory.mktemp("leaks")
    settings = _with_canaries(private_settings(root))
    yield root, settings
    # Whatever the test left running; its own `stack down` is what is checked.
    from slidr.stack import LocalStack

    LocalStack(settings).down()


def _run(root: Path, env: dict[str, str], name: str, *args: str, timeout: float = 600) -> str:
    """Run `slidr args`, its output kept under ``root`` (so the file sweep reads it too)."""
    result = subprocess.run(
        [SLIDR, *args], env=env, capture_output=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    (root / f"{name}.out").write_bytes(output)
    assert result.returncode == 0, (args, output.decode(errors="replace")[-3000:])
    return output.decode(errors="replace")


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_stack_worker_and_replay_leak_no_secret(canary_stack: tuple[Path, Settings]) -> None:
    from slidr.stack import LocalStack

    root, settings = canary_stack
    env = {**os.environ, **settings_env(settings)}
    up = _run(root, env, "stack-up", "-v", "stack", "up")
    assert "DEBUG" in up and "started triton" in up, up[-2000:]  # the debug lines were written

    cmdlines: dict[str, bytes] = {}
    for status in LocalStack(settings).status():
        assert status.healthy and status.pid, status
        cmdlines |= _cmdlines(_session_pids(status.pid))

    # A worker deciding clicks through the SASL broker and the password-protected Redis.
    live = isolated(settings)
    worker = WorkerProcess(live, root / "worker.log")
    worker.start()
    try:
        assert worker.proc is not None
        clicks = mixed_traffic(40, f"leak-{_TAG[:8]}-", datetime.now(UTC) - timedelta(hours=1))
        produce(live, clicks)
        decisions = consume(live, live.topics.decisions, len(clicks))
        assert {d["click_id"] for d in decisions} == {c.click_id for c in clicks}, worker.log()
        cmdlines |= _cmdlines(_session_pids(worker.proc.pid))
    finally:
        worker.stop()

    # A signed replay of those clicks, run by the agent.
    replay_env = {**os.environ, **settings_env(live)}
    offsets: dict[int, list[int]] = {}
    for d in decisions:
        offsets.setdefault(d["source_partition"], []).append(d["source_offset"])
    bounds = [f"--from-offset={p}:{min(o)}" for p, o in offsets.items()]
    bounds += [f"--to-offset={p}:{max(o)}" for p, o in offsets.items()]
    with (root / "replay-agent.log").open("wb") as log:
        agent = subprocess.Popen(
            [SLIDR, "-v", "replay-agent"], env=replay_env, stdout=log, stderr=log
        )
    try:
        cmdlines |= _cmdlines(_session_pids(agent.pid))
        done = _run(
            root,
            replay_env,
            "replay-submit",
            "-v", "replay", "--submit", "--wait-s", "180", "--model-version", "1", *bounds,
        )  # fmt: skip
        assert f"published {len(clicks)}" in done, done[-2000:]
    finally:
        agent.terminate()
        agent.wait(timeout=30)

    _run(root, env, "stack-down", "-v", "stack", "down")

    leaks = [leak for where, data in cmdlines.items() for leak in _leaks(where, data)]
    # Triton reads its restricted-API key from its command line only (docs/security.md): the
    # one place a secret may be, and only that secret.
    allowed = {"triton.repository_key"}
    triton_pids = {
        where for where, data in cmdlines.items() if b"tritonserver" in data.split(b"\0")[0]
    }
    leaks = [
        leak
        for leak in leaks
        if not (leak.split(" in ")[0] in allowed and leak.split(" in ")[1] in triton_pids)
    ]
    # Files that must hold a secret to do their job; each readable by its owner only.
    private = {"redis.conf": "redis.password", "server.properties": "kafka.sasl_password"}
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        found = _leaks(str(path.relative_to(root)), path.read_bytes())
        if path.name in private:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
            found = [f for f in found if not f.startswith(private[path.name] + " ")]
        leaks += found
    assert leaks == []
    # The sweep saw the logs, and the password went to the config file.
    names = {p.name for p in files}
    assert {"redis.conf", "redis.log", "triton.log", "worker.log", "stack-up.out"} <= names
