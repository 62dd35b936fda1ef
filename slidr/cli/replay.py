"""``slidr replay`` and ``slidr replay-agent``: reprocess a range of the clicks topic through a
pinned model version and publish delayed decisions (docs/replay.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from replay.errors import ReplayError
from replay.request import parse_partition_offsets, parse_request
from replay.signing import sign
from slidr.console import make_console
from slidr.errors import StackError
from slidr.kafka_config import client_config
from slidr.replay_messages import (
    FeatureMode,
    ReplayProgress,
    ReplayRequest,
    ReplayState,
    ReplaySummary,
)
from slidr.settings import Settings, get_settings
from slidr.stack.service import kafka_reachable

console = make_console(stderr=True)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} clicks/s" if speed else "- clicks/s", style="cyan")


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO-8601 time, e.g. 2026-11-21T10:00Z", param_hint=option
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _offsets(values: list[str] | None, option: str) -> dict[int, int] | None:
    if not values:
        return None
    try:
        return parse_partition_offsets(values, option)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _require_kafka(settings: Settings) -> None:
    if not kafka_reachable(settings.kafka):
        raise StackError(f"no Kafka broker at {settings.kafka.bootstrap}: run `slidr stack up`")


def _print_summary(summary: ReplaySummary) -> None:
    table = Table(
        "slice", "clicks", "invalid", "IVR", "degraded before", title=f"replay {summary.run_id}"
    )
    for row in summary.slices:
        table.add_row(
            row.slice,
            f"{row.clicks:,}",
            f"{row.invalid:,}",
            f"{row.ivr:.1%}",
            f"{row.degraded_before:,}",
        )
    console.print(table)
    verb = "would publish" if summary.dry_run else "published"
    console.print(
        f"model {summary.model_name} v{summary.model_version}, {summary.features} features: "
        f"{summary.decided:,} clicks decided in {summary.elapsed_s:.1f} s "
        f"({summary.clicks_per_s:,.0f} clicks/s); {verb} "
        f"{summary.decided if summary.dry_run else summary.published:,}"
        + (
            f"; counters warmed on {summary.context_clicks:,} clicks"
            if summary.context_clicks
            else ""
        )
        + (f"; {summary.unreadable:,} unreadable events skipped" if summary.unreadable else "")
    )
    if summary.missing_features:
        console.print(
            f"[yellow]{summary.missing_features:,} clicks have no logged feature vector "
            "(degraded or never decided) and were not replayed: use --features recompute[/]"
        )
    for note in summary.notes:
        console.print(f"[yellow]note: {note}[/]")
    if summary.diff is not None:
        _print_diff(summary)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _print_diff(summary: ReplaySummary) -> None:
    assert summary.diff is not None
    table = Table(
        "slice",
        "clicks",
        "valid->invalid",
        "invalid->valid",
        "degraded before",
        "purchasing",
        "IVR before",
        "IVR after",
        "FPR before",
        "FPR after",
        title="dry run: replay vs original decisions (nothing published)",
    )
    for d in summary.diff:
        table.add_row(
            d.slice,
            f"{d.clicks:,}",
            f"{d.to_invalid:,}",
            f"{d.to_valid:,}",
            f"{d.degraded_before:,}",
            f"{d.purchasing:,}",
            _pct(d.ivr_before),
            _pct(d.ivr_after),
            _pct(d.fpr_before),
            _pct(d.fpr_after),
            style="bold" if d.slice == "all" else None,
        )
    console.print(table)


def _run_here(settings: Settings, request: ReplayRequest) -> ReplaySummary:
    from replay.plan import plan_replay
    from replay.runner import run_replay

    plan = plan_replay(settings, request)
    console.print(
        f"replay {plan.run_id}: {plan.to_publish:,} clicks of {plan.clicks_topic} "
        f"({', '.join(map(str, plan.ranges))}) through {plan.record.name} "
        f"v{plan.record.version}, {plan.mode.value} features"
        + (f", resuming after {plan.resumed.published:,} published" if plan.resumed else "")
    )
    with _bar() as bar:
        task = bar.add_task("replay", total=plan.to_publish)

        def on_progress(update: ReplayProgress) -> None:
            warm = f" (counters warmed on {update.context:,} clicks)" if update.context else ""
            bar.update(task, completed=update.done, description=f"replay{warm}")

        return asyncio.run(run_replay(settings, plan, on_progress))


def _submit(settings: Settings, request: ReplayRequest, timeout_s: float) -> ReplaySummary:
    """Send the request, signed, to the replay agent and follow its progress messages."""
    r = settings.replay
    request_id = uuid.uuid4().hex
    payload = request.to_json()
    headers: list[tuple[str, str | bytes | None]] = []
    if r.signing_key is not None:
        headers += sign(r.signing_key, request_id, payload, time.time())
    elif not r.allow_unsigned:  # the agent would refuse it: say so before sending anything
        raise ReplayError(
            "set SLIDR_REPLAY__SIGNING_KEY (the agent's key) to sign the request: the agent "
            "runs only signed requests (SLIDR_REPLAY__ALLOW_UNSIGNED=true on a local stack only)"
        )
    consumer = Consumer(
        client_config(
            settings.kafka,
            {"group.id": f"slidr-replay-submit-{request_id}", "enable.auto.commit": False},
        )
    )
    try:
        # Listen from the current end before sending, so no answer is missed.
        meta = consumer.list_topics(r.progress_topic, timeout=10).topics[r.progress_topic]
        if meta.error is not None:
            raise StackError(f"topic {r.progress_topic} is missing: run `slidr stack up`")
        ends = []
        for p in meta.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(r.progress_topic, p), 10)
            ends.append(TopicPartition(r.progress_topic, p, high))
        consumer.assign(ends)
        producer = Producer(client_config(settings.kafka))
        producer.produce(r.requests_topic, payload, request_id.encode(), headers=headers)
        if producer.flush(30):
            raise StackError(f"could not send the request to {r.requests_topic}")
        console.print(f"request {request_id} sent to {r.requests_topic}; waiting for the agent")
        deadline = time.monotonic() + timeout_s
        with _bar() as bar:
            task = bar.add_task("replay (agent)", total=None)
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None or msg.key() != request_id.encode():
                    continue
                update = ReplayProgress.model_validate(orjson.loads(msg.value() or b"{}"))
                bar.update(task, completed=update.done, total=update.total or None)
                if update.state is ReplayState.DONE and update.summary is not None:
                    return update.summary
                if update.state in (ReplayState.REFUSED, ReplayState.FAILED):
                    raise ReplayError(f"the agent {update.state.value} the replay: {update.error}")
        raise ReplayError(
            f"no result from the replay agent within {timeout_s:.0f} s: is `slidr replay-agent` "
            f"running? It reports on {r.progress_topic} (key {request_id})"
        )
    finally:
        consumer.close()


def _offset_option(end: str, help: str) -> Any:
    """``--from-offset`` or ``--to-offset``: one end of the range, per partition."""
    return typer.Option(
        f"--{end}-offset",
        metavar="PARTITION:OFFSET",
        envvar=f"SLIDR_REPLAY_{end.upper()}_OFFSET",
        help=help,
    )


def replay(
    model_version: Annotated[
        int,
        typer.Option(
            "--model-version",
            envvar="SLIDR_REPLAY_MODEL_VERSION",
            min=1,
            help="The model version to score with (its own calibration applies).",
        ),
    ],
    from_offset: Annotated[
        list[str] | None,
        _offset_option("from", "First offset to replay on a partition (repeat per partition)."),
    ] = None,
    to_offset: Annotated[
        list[str] | None,
        _offset_option("to", "Last offset to replay on a partition, included (same partitions)."),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from-time",
            envvar="SLIDR_REPLAY_FROM_TIME",
            help="Start of a time range, ISO-8601 (resolved to offsets by the clicks' "
            "timestamps, which are their event times).",
        ),
    ] = None,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time", envvar="SLIDR_REPLAY_TO_TIME", help="End of the time range, excluded."
        ),
    ] = None,
    features: Annotated[
        FeatureMode,
        typer.Option(
            "--features",
            envvar="SLIDR_REPLAY_FEATURES",
            help="logged: re-score the vectors logged with the original decisions; "
            "recompute: rebuild the counters in a private Redis namespace from a "
            "warm-up window (corrects decisions degraded by an outage).",
        ),
    ] = FeatureMode.LOGGED,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            envvar="SLIDR_REPLAY_DRY_RUN",
            help="Publish nothing; compare with the original decisions per slice "
            "(flips, IVR, FPR).",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            envvar="SLIDR_REPLAY_FORCE",
            help="Allow a range over SLIDR_REPLAY__MAX_CLICKS clicks.",
        ),
    ] = False,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            envvar="SLIDR_REPLAY_RUN_ID",
            help="Name the run (default: derived from range, version and mode, so "
            "running the same replay again resumes or repeats it).",
        ),
    ] = None,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit",
            envvar="SLIDR_REPLAY_SUBMIT",
            help="Do not run here: send the request, signed with SLIDR_REPLAY__SIGNING_KEY, "
            "to `slidr replay-agent` through the requests topic and follow its progress.",
        ),
    ] = False,
    wait_s: Annotated[
        float,
        typer.Option(
            "--wait-s",
            envvar="SLIDR_REPLAY_WAIT_S",
            help="With --submit: how long to wait for the agent's result.",
        ),
    ] = 3600.0,
) -> None:
    """Replay a range of the clicks topic through a pinned model version.

    Publishes delayed decisions, marked with the run id and the clicks' partition and offset,
    to the replayed-decisions topic. Give the range as offsets per partition
    (--from-offset 0:1200 --to-offset 0:5000, both included) or as times
    (--from-time/--to-time). Never moves a consumer group's offsets or touches the live
    counters. An interrupted run resumes when started again with the same arguments.
    """
    settings = get_settings()
    request = parse_request(
        {
            "from_offsets": _offsets(from_offset, "--from-offset"),
            "to_offsets": _offsets(to_offset, "--to-offset"),
            "from_time": _time(from_time, "--from-time"),
            "to_time": _time(to_time, "--to-time"),
            "model_version": model_version,
            "features": features,
            "dry_run": dry_run,
            "force": force,
            "run_id": run_id,
        }
    )
    _require_kafka(settings)
    summary = _submit(settings, request, wait_s) if submit else _run_here(settings, request)
    _print_summary(summary)


def replay_agent(
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="SLIDR_REPLAY__METRICS_PORT",
            show_default=False,
            help="Prometheus port; 0 disables (default 19102).",
        ),
    ] = None,
) -> None:
    """Serve replay requests from the requests topic (Faust agent), one at a time.

    Progress and results go to the progress topic under each request's key; `slidr replay
    --submit` sends a request and follows it. Runs until interrupted.
    """
    import faust

    from replay.agent import create_replay_app
    from slidr.topics import ensure_topics

    settings = get_settings().overriding("replay", metrics_port=metrics_port)
    _require_kafka(settings)
    ensure_topics(settings)
    app = create_replay_app(settings)
    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()
