"""What on-call asks a replay to do: a range of the clicks topic, a pinned model, a feature mode.

The same request comes from the CLI (``slidr replay``) or, as JSON, from the replay requests
topic (``slidr replay-agent``). A run id is derived from the resolved range, the model and the
mode, so the same replay asked twice is the same run: same checkpoint, same decisions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from replay.errors import ReplayRefused
from slidr.events import UtcTime

#: Safe in a file name, a Kafka key and a Redis key prefix (no braces: hash tags).
RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,80}$")]


class FeatureMode(StrEnum):
    #: Re-score the vectors logged with the original decisions (exact, another model).
    LOGGED = "logged"
    #: Rebuild counters in a private Redis namespace from a warm-up window (corrects outages).
    RECOMPUTE = "recompute"


class ReplayRequest(BaseModel):
    """Either per-partition offsets (inclusive) or a time range [from_time, to_time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_offsets: dict[int, Annotated[int, Field(ge=0)]] | None = None
    to_offsets: dict[int, Annotated[int, Field(ge=0)]] | None = None
    from_time: UtcTime | None = None
    to_time: UtcTime | None = None
    model_version: Annotated[int, Field(ge=1)]
    features: FeatureMode = FeatureMode.LOGGED
    dry_run: bool = False
    #: Allow a range larger than ``replay.max_clicks``.
    force: bool = False
    run_id: RunId | None = None

    @model_validator(mode="after")
    def _one_kind_of_range(self) -> ReplayRequest:
        offsets = (self.from_offsets, self.to_offsets)
        times = (self.from_time, self.to_time)
        if any(v is not None for v in offsets) and any(v is not None for v in times):
            raise ValueError("give offsets or times, not both")
        if self.from_time is not None or self.to_time is not None:
            if self.from_time is None or self.to_time is None:
                raise ValueError("a time range needs both from_time and to_time")
            if self.from_time >= self.to_time:
                raise ValueError("from_time must be before to_time")
            return self
        if self.from_offsets is None or self.to_offsets is None:
            raise ValueError("give from_offsets and to_offsets, or from_time and to_time")
        if set(self.from_offsets) != set(self.to_offsets):
            raise ValueError(
                f"from-offsets name partitions {sorted(self.from_offsets)}, to-offsets "
                f"{sorted(self.to_offsets)}: name the same partitions in both"
            )
        for p, first in self.from_offsets.items():
            if first > self.to_offsets[p]:
                raise ValueError(
                    f"partition {p}: from-offset {first} is after to-offset {self.to_offsets[p]}"
                )
        return self

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


def parse_partition_offsets(values: Sequence[str], option: str) -> dict[int, int]:
    """``["0:1200", "1:1180"]`` -> ``{0: 1200, 1: 1180}``; a clear error names the option."""
    out: dict[int, int] = {}
    for value in values:
        partition, sep, offset = value.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"{option} {value!r}: write PARTITION:OFFSET, e.g. 0:1200")
        if int(partition) in out:
            raise ValueError(f"{option} names partition {partition} twice")
        out[int(partition)] = int(offset)
    return out


def derive_run_id(
    model_name: str, version: int, mode: FeatureMode, topic: str, ranges: Sequence[object]
) -> str:
    """A readable, deterministic id: the same range, model and mode give the same run."""
    spec = orjson.dumps([model_name, version, mode.value, topic, [str(r) for r in ranges]])
    return f"{model_name}-v{version}-{mode.value}-{hashlib.sha256(spec).hexdigest()[:12]}"


def parse_request(payload: bytes | dict[str, object]) -> ReplayRequest:
    """A request from JSON bytes (the requests topic) or options (the CLI), or ReplayRefused."""
    try:
        if isinstance(payload, bytes):
            return ReplayRequest.model_validate_json(payload)
        return ReplayRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ReplayRefused(
            f"bad replay request: {where + ': ' if where else ''}{first['msg']}"
        ) from None
