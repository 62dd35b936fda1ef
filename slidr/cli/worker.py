"""``slidr worker``: the real-time scoring path."""

from __future__ import annotations

import asyncio
import logging

import typer

from slidr.errors import StackError
from slidr.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _check_topics(settings: Settings) -> None:
    """Refuse to start on topics that do not exist (Faust would idle on them forever)."""
    from slidr.stack.service import port_open
    from slidr.topics import require_topics

    if not port_open(settings.kafka.host, settings.kafka.port):
        raise StackError(
            f"no Kafka broker at {settings.kafka.bootstrap}: start it with `slidr stack up`"
        )
    require_topics(settings, "clicks", "decisions", "dead_letters")


async def _preflight(settings: Settings) -> str:
    """Refuse to start on a model, server or feature list that does not fit (clear message)."""
    from streams.feature_store import RedisFeatureStore
    from streams.scorer import TritonScorer
    from streams.serving_model import ServingModel

    scorer = TritonScorer(settings.triton, timeout_s=5)
    store = RedisFeatureStore(settings.redis, timeout_s=settings.worker.redis_timeout_s)
    try:
        record = await ServingModel(settings, scorer).load()
        await store.ping()
    finally:
        await scorer.aclose()
        await store.aclose()
    return f"model {record.name} v{record.version} ({record.kind})"


def worker(
    batch_size: int = typer.Option(
        None,
        help="Clicks per micro-batch (default 500).",
        envvar="SLIDR_WORKER__BATCH_SIZE",
        show_default=False,
    ),
    batch_wait_ms: int = typer.Option(
        None,
        help="Longest wait to fill a batch, ms (default 20).",
        envvar="SLIDR_WORKER__BATCH_WAIT_MS",
        show_default=False,
    ),
    model_version: int = typer.Option(
        None,
        help="Pin a model version instead of following the serving pointer.",
        envvar="SLIDR_WORKER__MODEL_VERSION",
        show_default=False,
    ),
    metrics_port: int = typer.Option(
        None,
        help="Prometheus port; 0 disables (default 19100).",
        envvar="SLIDR_WORKER__METRICS_PORT",
        show_default=False,
    ),
) -> None:
    """Consume clicks, score them on Triton with Redis features, publish decisions.

    Runs until interrupted (Ctrl-C or SIGTERM). Start several in one consumer group to split
    the partitions; Kafka, Redis and Triton addresses come from SLIDR_* settings.
    """
    import faust  # the streaming stack is only imported when the worker runs

    from streams.app import create_app

    settings = get_settings().overriding(
        "worker",
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        model_version=model_version,
        metrics_port=metrics_port,
    )
    _check_topics(settings)
    typer.echo(f"preflight ok: {asyncio.run(_preflight(settings))}", err=True)
    app = create_app(settings)
    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()
