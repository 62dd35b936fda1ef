"""``slidr worker``: the real-time scoring path."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

import typer

from slidr.cli.options import setting_option
from slidr.errors import StackError
from slidr.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _check_topics(settings: Settings) -> None:
    """Refuse to start on topics that do not exist (Faust would idle on them forever)."""
    from slidr.stack.service import kafka_reachable
    from slidr.topics import require_topics

    if not kafka_reachable(settings.kafka):
        raise StackError(
            f"no Kafka broker at {settings.kafka.bootstrap}: start it with `slidr stack up`"
        )
    require_topics(settings, "clicks", "decisions", "dead_letters")


async def _preflight(settings: Settings) -> str:
    """Refuse to start on a model, server or feature list that does not fit (clear message)."""
    from streams.pipeline import ClickPipeline

    pipeline = await ClickPipeline.connect(settings, triton_timeout_s=5)
    try:
        await pipeline.store.ping()
        record = await pipeline.serving.current()
    finally:
        await pipeline.aclose()
    return f"model {record.name} v{record.version} ({record.kind})"


def worker(
    processes: int = typer.Option(
        1,
        min=1,
        help="Worker processes in one consumer group, each on its own core (Prometheus on "
        "metrics-port, metrics-port+1, ...). One Ctrl-C or SIGTERM stops them all.",
    ),
    batch_size: int = setting_option(
        "worker", "batch_size", "Most clicks per micro-batch (default 500)."
    ),
    batch_wait_ms: int = setting_option(
        "worker",
        "batch_wait_ms",
        "Longest wait for a full batch while the partitions have a backlog, ms (default "
        "20). With no backlog a batch leaves at once: a click never waits for others.",
    ),
    model_version: int = setting_option(
        "worker", "model_version", "Pin a model version instead of following the serving pointer."
    ),
    metrics_port: int = setting_option(
        "worker", "metrics_port", "Prometheus port; 0 disables (default 19100)."
    ),
) -> None:
    """Consume clicks, score them on Triton with Redis features, publish decisions.

    Runs until interrupted (Ctrl-C or SIGTERM). Processes of one consumer group split the
    clicks topic's partitions, on this machine (--processes) or on others; Kafka, Redis and
    Triton addresses come from SLIDR_* settings.
    """
    settings = get_settings().overriding(
        "worker",
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        model_version=model_version,
        metrics_port=metrics_port,
    )
    _check_topics(settings)
    typer.echo(f"preflight ok: {asyncio.run(_preflight(settings))}", err=True)
    if processes > 1:
        raise typer.Exit(run_processes(settings, processes))
    import faust  # the streaming stack is only imported when the worker runs

    from streams.app import create_app

    app = create_app(settings)
    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


def _worker_env(settings: Settings) -> dict[str, str]:
    """The options this command was given, for its worker processes."""
    w = settings.worker
    chosen = {"batch_size": w.batch_size, "batch_wait_ms": w.batch_wait_ms}
    if w.model_version is not None:
        chosen["model_version"] = w.model_version
    return {f"SLIDR_WORKER__{name.upper()}": str(value) for name, value in chosen.items()}


def run_processes(settings: Settings, n: int) -> int:
    """Run ``n`` single-process workers and wait; returns the first failing exit code.

    A worker that ends on its own (exit 70: its batch was not delivered, or it cannot decide)
    stops the others too: the command then exits like a single worker would, for the service
    manager to restart, instead of running on with fewer processes than asked.
    """
    port = settings.worker.metrics_port
    children = []
    for i in range(n):
        env = {
            **os.environ,
            "SLIDR_WORKER__METRICS_PORT": str(port + i if port else 0),
            **_worker_env(settings),
        }
        command = [sys.executable, "-m", "slidr.cli.main", "worker"]
        children.append(subprocess.Popen(command, env=env))
    log.info("started %d worker processes: %s", n, ", ".join(str(c.pid) for c in children))

    def stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # Ctrl-C reaches the children too; they stop cleanly
    code = 0
    while any(c.poll() is None for c in children):
        for child in children:
            status = child.poll()
            if status not in (None, 0) and code == 0:
                code = status if status > 0 else 128 - status
                log.error("worker process %d exited with %d; stopping the rest", child.pid, status)
                stop()
        time.sleep(0.2)
    return code
