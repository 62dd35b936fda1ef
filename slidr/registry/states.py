"""The registry's state machine: the states of a version, its history, and the rules of each move.

Pure: no file, no lock, no Triton. A promotion or a rollback is first *planned* on one reading
of the book (:func:`plan_promotion`, :func:`plan_rollback`: which version serves after it,
which served before, which versions Triton must have loaded before the pointer switches), then
*applied* to the book (:func:`apply_promotion`, :func:`apply_rollback`) once Triton has them.

States: ``candidate`` (registered, not served) -> ``serving`` -> ``stable`` (the last known-good
version, the target of a rollback) -> ``retired``; ``refused`` for a version the guardrails
turned down or a rollback removed. At most one version serves and at most one is stable.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from slidr.registry.errors import RegistryError
from slidr.serving_figures import ServingFigures

#: The book's file, named in the message that says how to rebuild it.
REGISTRY_FILE = "registry.json"


class State(StrEnum):
    CANDIDATE = "candidate"
    SERVING = "serving"
    STABLE = "stable"
    RETIRED = "retired"
    REFUSED = "refused"


class Transition(BaseModel):
    at: datetime
    state: State
    why: str


class Entry(BaseModel):
    version: int
    state: State
    registered_at: datetime
    #: What training recorded: kind, feature hash, data window, guardrail results, "expected".
    metadata: dict[str, Any] = {}
    #: Why the version was refused, and the guardrail report that says more.
    reason: str | None = None
    report: str | None = None
    #: What the monitor observed while the version served healthily.
    observed: ServingFigures | None = None
    #: False once retention deleted the version directory.
    on_disk: bool = True
    history: list[Transition] = []

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind", "unknown"))

    def move(self, state: State, why: str) -> None:
        self.state = state
        self.history.append(Transition(at=_now(), state=state, why=why))


class Book(BaseModel):
    """Every registered version of one model: what ``registry.json`` holds."""

    model: str
    entries: dict[int, Entry] = {}

    def serving(self) -> Entry:
        for entry in self.entries.values():
            if entry.state is State.SERVING:
                return entry
        raise RegistryError(
            f"no version of {self.model!r} is serving: delete {REGISTRY_FILE} to rebuild it "
            "from the version directories and the serving pointer"
        )

    def stable(self) -> Entry | None:
        return next((e for e in self.entries.values() if e.state is State.STABLE), None)

    def get(self, version: int) -> Entry:
        if version not in self.entries:
            known = ", ".join(str(v) for v in sorted(self.entries)) or "none"
            raise RegistryError(
                f"model {self.model!r} has no version {version} (registered: {known})"
            )
        return self.entries[version]

    def pinned(self, pinned: Collection[int]) -> set[int]:
        """The pinned versions that are registered and still on disk."""
        return {v for v in pinned if v in self.entries and self.entries[v].on_disk}

    def kept(self, pinned: Collection[int]) -> set[int]:
        """Versions Triton must have loaded: serving, stable and pinned (those on disk)."""
        kept = {self.serving().version} | self.pinned(pinned)
        if (stable := self.stable()) is not None and stable.on_disk:
            kept.add(stable.version)
        return kept


@dataclass(frozen=True)
class Move:
    """A promotion or rollback as planned on one reading of the book."""

    #: The version that serves after the move.
    target: int
    #: The version that serves before it (stable after a promotion, refused after a rollback).
    replaced: int
    #: What Triton must have loaded before the pointer switches: both, and the pinned ones.
    load: frozenset[int]


def new_entry(version: int, metadata: dict[str, Any], state: State, why: str) -> Entry:
    now = _now()
    return Entry(
        version=version,
        state=state,
        registered_at=now,
        metadata=metadata,
        history=[Transition(at=now, state=state, why=why)],
    )


def register(book: Book, version: int, metadata: dict[str, Any]) -> Entry:
    """Record ``version`` as a candidate; a version number is registered once."""
    if version in book.entries:
        raise RegistryError(
            f"version {version} of {book.model!r} is already registered "
            f"({book.entries[version].state}); export a new version number"
        )
    entry = book.entries[version] = new_entry(version, metadata, State.CANDIDATE, "registered")
    return entry


def refuse(book: Book, version: int, reason: str, report: str | None) -> Entry:
    """Turn a candidate down; it is never served unless forced."""
    entry = book.get(version)
    if entry.state is not State.CANDIDATE:
        raise RegistryError(f"only a candidate can be refused; version {version} is {entry.state}")
    entry.reason, entry.report = reason, report
    entry.move(State.REFUSED, reason)
    return entry


def switch(book: Book, entry: Entry, why: str) -> None:
    """``entry`` serves; the serving version becomes stable, the stable one retired."""
    current = next((e for e in book.entries.values() if e.state is State.SERVING), None)
    stable = book.stable()
    if stable is not None and stable is not entry and current is not None:
        stable.move(State.RETIRED, f"replaced as stable by {current.version}")
    if current is not None:
        current.move(State.STABLE, f"version {entry.version} serves")
    entry.move(State.SERVING, why)


def plan_promotion(book: Book, version: int, pinned: Collection[int], force: bool) -> Move:
    """Serve ``version`` instead of the serving one; a refused version only when forced."""
    entry = book.get(version)
    current = book.serving()
    if entry is current:
        raise RegistryError(f"version {version} is already serving")
    if entry.state is State.REFUSED and not force:
        raise RegistryError(
            f"version {version} was refused ({entry.reason}); pass --force to serve it anyway"
        )
    return Move(
        version, current.version, frozenset({version, current.version, *book.pinned(pinned)})
    )


def apply_promotion(book: Book, move: Move, why: str) -> Entry:
    entry = book.get(move.target)
    switch(book, entry, why)
    return entry


def plan_rollback(book: Book, to: int | None, expect: int | None, pinned: Collection[int]) -> Move:
    """Serve ``to`` (default: the stable version) instead of the serving one. ``expect``:
    refuse unless this version still serves (a monitor must not undo a later promotion)."""
    bad = book.serving()
    if expect is not None and bad.version != expect:
        raise RegistryError(
            f"version {expect} is no longer serving (version {bad.version} is); nothing rolled back"
        )
    target = book.stable() if to is None else book.get(to)
    if target is None:
        raise RegistryError(
            f"{book.model!r} has no stable version to roll back to; pass --to VERSION"
        )
    if target is bad:
        raise RegistryError(f"version {to} is already serving")
    if target.state not in (State.STABLE, State.RETIRED):
        raise RegistryError(
            f"version {to} is {target.state}, not a version that served well; choose a "
            "stable or retired one (`slidr models`), or `slidr promote` a candidate"
        )
    load = frozenset({target.version, bad.version, *book.pinned(pinned)})
    return Move(target.version, bad.version, load)


def apply_rollback(book: Book, move: Move, why: str) -> tuple[Entry, Entry]:
    """The serving version is refused with ``why``; returns (removed, restored)."""
    bad, target = book.get(move.replaced), book.get(move.target)
    bad.reason = why
    bad.move(State.REFUSED, why)
    target.move(State.SERVING, f"rollback from {bad.version}: {why}")
    return bad, target


def _now() -> datetime:
    return datetime.now(UTC)
