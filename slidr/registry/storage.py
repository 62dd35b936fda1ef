"""The registry's storage: the book as ``<repo>/<model>/registry.json`` beside the versions,
under file locks, reconciled with the version directories on disk; and retention.

Two locks, always taken in this order, never the other way round:

- the **move lock** (``.moves.lock``): one promotion, rollback, Triton sync or retention at a
  time, held across the Triton call, so that two moves never load conflicting version sets and
  retention never deletes a directory Triton is loading from. Readers never take it.
- the **book lock** (``.registry.lock``): held only while the book is read, changed and
  rewritten (milliseconds, no network). Every call takes it, the monitor on every evaluation;
  nothing that calls Triton holds it.

The book is re-read under the lock on every call and rewritten atomically (write, then rename)
only when it changed, so the daily cycle, the monitor and the CLI can all change it at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from slidr.model_record import (
    METADATA_FILE,
    SERVING_POINTER,
    model_dir,
    read_optional,
    serving_version,
    versions,
    write_serving_pointer,
)
from slidr.registry.errors import RegistryError
from slidr.registry.states import REGISTRY_FILE, Book, Entry, State, new_entry, switch

log = logging.getLogger(__name__)

LOCK_FILE = ".registry.lock"
MOVE_LOCK_FILE = ".moves.lock"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: between processes, and between threads (each open
    is a lock of its own)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class BookStore:
    """One model's book on disk."""

    def __init__(self, repository: Path, name: str) -> None:
        self.repository = repository
        self.name = name
        self.root = model_dir(repository, name)

    def version_dir(self, version: int) -> Path:
        return self.root / str(version)

    @contextmanager
    def moving(self) -> Iterator[None]:
        """The move lock: take it before the book lock, and hold it across the Triton call."""
        self._require_model()
        with _locked(self.root / MOVE_LOCK_FILE):
            yield

    @contextmanager
    def book(self) -> Iterator[Book]:
        """The book, reconciled with the disk, under the book lock; rewritten on the way out
        if it changed. Never call Triton inside."""
        self._require_model()
        path = self.root / REGISTRY_FILE
        with _locked(self.root / LOCK_FILE):
            before = path.read_text() if path.exists() else ""
            try:
                book = Book.model_validate_json(before) if before else Book(model=self.name)
            except ValidationError as exc:
                raise RegistryError(
                    f"{path} is corrupt ({exc.error_count()} errors); restore it from a "
                    "backup or delete it to rebuild it from the version directories"
                ) from exc
            self._reconcile(book)
            yield book
            after = book.model_dump_json(indent=2) + "\n"
            if after != before:  # readers leave the file (and its mtime) alone
                staging = path.with_suffix(".partial")
                staging.write_text(after)
                os.replace(staging, path)

    def metadata(self, version: int) -> dict[str, Any]:
        """What the version's ``metadata.json`` holds ({} when it cannot be read)."""
        return read_optional(self.version_dir(version) / METADATA_FILE)

    def require_on_disk(self, entry: Entry) -> None:
        if not entry.on_disk or not self.version_dir(entry.version).is_dir():
            raise RegistryError(
                f"version {entry.version} is no longer on disk (retention deleted it); "
                "choose a kept version (`slidr models`)"
            )

    def enforce_retention(self, keep: int, pinned: Collection[int]) -> list[int]:
        """Delete the directories of retired and refused versions beyond the newest ``keep``
        (never a pinned one); their entries stay, marked deleted. Returns those deleted."""
        with self.moving(), self.book() as book:
            removable = sorted(
                v
                for v, e in book.entries.items()
                if e.on_disk and e.state in (State.RETIRED, State.REFUSED) and v not in pinned
            )
            doomed = removable[: max(len(removable) - keep, 0)]
            for version in doomed:
                shutil.rmtree(self.version_dir(version))
                book.entries[version].on_disk = False
                log.info("retention: deleted %s version %d", self.name, version)
            return doomed

    def _require_model(self) -> None:
        if not self.root.is_dir():
            raise RegistryError(
                f"no model {self.name!r} in {self.repository}: run `slidr stack up` first"
            )

    def _adopt(self, version: int, state: State, why: str) -> Entry:
        return new_entry(version, self.metadata(version), state, why)

    def _reconcile(self, book: Book) -> None:
        """Adopt what happened outside the registry: the versions found at first use (the
        day-zero install), deleted directories, a serving pointer moved by hand."""
        on_disk = versions(self.repository, self.name)
        if not on_disk and not book.entries:
            raise RegistryError(
                f"no version of model {self.name!r} in {self.repository}: run `slidr stack up` "
                "to install the day-zero model"
            )
        for version, entry in book.entries.items():
            entry.on_disk = entry.on_disk and version in on_disk
        serving = serving_version(self.repository, self.name)
        if not book.entries:
            for version in on_disk:
                state = (
                    State.SERVING
                    if version == serving
                    else State.CANDIDATE
                    if version > serving
                    else State.RETIRED
                )
                book.entries[version] = self._adopt(version, state, "found at first use")
        current = next((e for e in book.entries.values() if e.state is State.SERVING), None)
        if serving in on_disk and (current is None or current.version != serving):
            why = "serving pointer moved outside the registry"
            if serving not in book.entries:
                book.entries[serving] = self._adopt(serving, State.CANDIDATE, why)
            switch(book, book.entries[serving], why)
        if not (self.root / SERVING_POINTER).exists():
            # Pin what serves now: a new directory must not start serving by being the newest.
            write_serving_pointer(self.repository, self.name, serving)
