"""The archive on disk: one writer per root, segment files named by offsets, commit markers.

A flush of one topic-partition is a *segment*: the messages at offsets ``first..last``. Its rows
are written to hidden staging files (readers skip names starting with "."), fsynced, renamed
into their hour directories as ``<topic>+<partition>+<first>+<last>.parquet``, and only then is
the partition's marker ``_offsets/<topic>/<partition>.json`` atomically replaced with
``next_offset = last + 1``. The marker is the commit: on start, staging files and segments at or
beyond it (a crash between rename and marker) are deleted, and reading resumes at the marker.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from slidr.archive import (
    STAGING_SUFFIX,
    ArchiveError,
    fsync_dir,
    hour_dir,
    stage_table,
    staging_path,
    write_bytes,
)

log = logging.getLogger(__name__)

OFFSETS_DIR = "_offsets"
LOCK_FILE = ".archive.lock"


class ArchiveLocked(ArchiveError):
    """Another archiver holds the root: two writers would duplicate events."""


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the root's lock for the block; refuse at once if another process holds it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = (root / LOCK_FILE).open("a+")
    except OSError as exc:
        raise ArchiveError(f"cannot write the archive at {root}: {exc}; choose --root") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ArchiveLocked(
                f"another `slidr archive` (pid {holder}) is writing to {root}: "
                "stop it first, or archive to another --root"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # the lock goes with the file descriptor, also when the process is killed


@dataclass(frozen=True)
class Segment:
    topic: str
    partition: int
    first: int
    last: int

    @property
    def file_name(self) -> str:
        # Kafka topic names never contain "+" (only [a-zA-Z0-9._-]).
        return f"{self.topic}+{self.partition}+{self.first}+{self.last}.parquet"

    @property
    def staging_name(self) -> str:
        return staging_path(Path(self.file_name)).name

    @classmethod
    def parse(cls, name: str) -> Segment | None:
        """The segment a file belongs to, from its final or its staging name."""
        if name.endswith(STAGING_SUFFIX):
            name = name[1 : -len(STAGING_SUFFIX)]
        topic, *numbers = name.removesuffix(".parquet").rsplit("+", 3)
        if len(numbers) != 3 or not all(n.isdigit() for n in numbers):
            return None
        partition, first, last = map(int, numbers)
        return cls(topic, partition, first, last)


def write_segment(
    root: Path, dataset: str, segment: Segment, tables: Mapping[tuple[str, str], pa.Table]
) -> list[Path]:
    """Write one segment's hour tables durably into place; return the final paths."""
    moves: list[tuple[Path, Path]] = []
    for (date, hour), table in tables.items():
        final = hour_dir(root, dataset, date, hour) / segment.file_name
        moves.append((stage_table(final, table, dataset), final))
    for staging, final in moves:
        staging.replace(final)
    for folder in {final.parent for _, final in moves}:
        fsync_dir(folder)
    return [final for _, final in moves]


def _marker(root: Path, topic: str, partition: int) -> Path:
    return root / OFFSETS_DIR / topic / f"{partition}.json"


def committed_offset(root: Path, topic: str, partition: int) -> int | None:
    """The next offset to archive of a topic-partition, or None if nothing was committed."""
    path = _marker(root, topic, partition)
    try:
        return int(json.loads(path.read_text())["next_offset"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(
            f"unreadable commit marker {path} ({exc}): restore it, or archive to a new --root"
        ) from None


def commit(root: Path, topic: str, partition: int, next_offset: int) -> None:
    """Atomically record that every offset below ``next_offset`` is archived."""
    body = {
        "topic": topic,
        "partition": partition,
        "next_offset": next_offset,
        "committed_at": datetime.now(UTC).isoformat(),
    }
    write_bytes(_marker(root, topic, partition), json.dumps(body).encode())


def discard_uncommitted(
    root: Path, dataset: str, topic: str, committed: Mapping[int, int]
) -> list[Path]:
    """Delete the topic's staging files and its segments at or past each partition's commit.

    ``committed`` maps each partition to its next offset (0 when it has no marker). Call it
    only while holding the root's lock.
    """
    removed = []
    for path in (root / dataset).glob(f"date=*/hour=*/*{topic}+*"):
        segment = Segment.parse(path.name)
        if segment is None or segment.topic != topic:
            continue
        staged = path.name.endswith(STAGING_SUFFIX)
        if staged or segment.first >= committed.get(segment.partition, 0):
            path.unlink()
            removed.append(path)
    if removed:
        log.warning("removed %d uncommitted file(s) of %s from a crashed run", len(removed), topic)
    return removed
