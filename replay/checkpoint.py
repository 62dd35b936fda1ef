"""Where a replay run stands, so an interrupted run resumes instead of starting over.

One small JSON file per run id under ``<state_dir>/replay/``, rewritten atomically after each
producer flush: per partition, the next click offset to replay (everything before it has been
published and acknowledged by the broker, or skipped as unreadable).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from replay.ranges import PartitionRange


class Checkpoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    #: The run's ranges as ``partition:first-last``; a checkpoint of other ranges is ignored.
    ranges: list[str]
    next_offsets: dict[int, int]
    published: int
    complete: bool = False
    #: The run's decisions' revision (slidr.events.Decision.revision).
    revision: int = 0


def checkpoint_path(state_dir: Path, run_id: str) -> Path:
    return Path(state_dir) / "replay" / f"{run_id}.json"


def resumable(path: Path, ranges: Sequence[PartitionRange]) -> Checkpoint | None:
    """The checkpoint of an interrupted run of these ranges; None to start from the beginning
    (no checkpoint, other ranges, or a run that completed: replaying it again publishes the
    same decisions)."""
    try:
        checkpoint = Checkpoint.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None
    if checkpoint.complete or checkpoint.ranges != [str(r) for r in ranges]:
        return None
    return checkpoint


def run_revision(path: Path, now_ms: int) -> int:
    """The revision of the run's decisions: the one its checkpoint holds (complete or not, so
    a resumed or repeated run publishes the same bytes), else ``now_ms``: a replay planned
    later supersedes an earlier one."""
    try:
        checkpoint = Checkpoint.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return now_ms
    return checkpoint.revision or now_ms


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    staging.write_bytes(checkpoint.model_dump_json().encode())
    os.replace(staging, path)
