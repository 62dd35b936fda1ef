"""Reading a replay request (``slidr.replay_messages.ReplayRequest``) from the CLI's options or
the requests topic's JSON, and naming its run.

A run id is derived from the resolved range, the model and the mode, so the same replay asked
twice is the same run: same checkpoint, same decisions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson
from pydantic import ValidationError

from replay.errors import ReplayRefused
from slidr.replay_messages import FeatureMode, ReplayRequest


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
