"""The Faust settings every slidr app shares (the worker, the replay agent)."""

from __future__ import annotations

from typing import Any

import faust

from slidr.kafka_config import faust_credentials
from slidr.settings import Settings


def slidr_app(settings: Settings, group: str, kind: str, **options: Any) -> faust.App:
    """A Faust app named by its consumer group, its data under the state directory.

    Nothing connects until it starts. Topics are never declared by Faust: `slidr stack up`
    creates them with their partitions and retention.
    """
    datadir = settings.state_dir / kind / group
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        group,
        broker=f"kafka://{settings.kafka.bootstrap}",
        broker_credentials=faust_credentials(settings.kafka),
        datadir=str(datadir),
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        **options,
    )


def raw_topic(app: faust.App, name: str) -> Any:
    """A topic of untouched bytes: parsing (and dead-lettering) is ours, not Faust's."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
