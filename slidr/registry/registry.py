"""The model registry: every version's state and history, and the moves between states.

:class:`Registry` puts the three parts together: the state machine
(:mod:`slidr.registry.states`) decides a move, the storage (:mod:`slidr.registry.storage`)
keeps the book under its locks, the loader (:mod:`slidr.registry.triton`) makes Triton hold
what the move needs. The serving pointer (``serving.json``, see :mod:`slidr.model_record`) is
written only from here; workers follow it without restart.

**No Triton call under the book lock.** A promotion or rollback runs in three steps, all under
the move lock (one move at a time) but with the book lock held only in steps 1 and 3:

1. plan the move on the book (the rules; nothing written);
2. ask Triton to load what the move needs (the book lock is free: the monitor and every reader
   go on, however long Triton takes);
3. plan it again on the book as it is now; if it is the same, write the pointer, then the book.

The book never claims a state Triton has not confirmed: the pointer and the book change only in
step 3, after Triton loaded the versions. If the load fails or times out, nothing is switched
(Triton may keep part of the load; the next move or :meth:`Registry.sync_triton` sets its set
again). If the book changed during step 2 (a pointer moved by hand, the candidate refused), the
move is abandoned with an error and Triton is set back to the versions the book keeps. A crash
between the pointer and the book is adopted by the next reconcile (a pointer moved outside the
registry), with the version Triton already has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

from slidr.model_record import write_serving_pointer
from slidr.registry import states
from slidr.registry.errors import RegistryError
from slidr.registry.states import Book, Entry, Move
from slidr.registry.storage import BookStore
from slidr.registry.triton import VersionLoader
from slidr.serving_figures import ServingFigures, expected_figures
from slidr.settings import Settings

log = logging.getLogger(__name__)

_Result = TypeVar("_Result")


class Registry:
    """One model's registry. Every call re-reads the book under its lock: no stale state."""

    def __init__(self, settings: Settings, loader: VersionLoader | None = None) -> None:
        self.repository = Path(settings.triton.model_repository)
        self.name = settings.triton.model_name
        self.settings = settings.registry
        #: None moves the pointer only: workers refuse a version Triton has not loaded.
        self.loader = loader
        self.store = BookStore(self.repository, self.name)
        self.root = self.store.root

    # --- reading ---

    def entries(self) -> list[Entry]:
        with self.store.book() as book:
            return [book.entries[v] for v in sorted(book.entries)]

    def entry(self, version: int) -> Entry:
        with self.store.book() as book:
            return book.get(version)

    def serving(self) -> Entry:
        with self.store.book() as book:
            return book.serving()

    def stable(self) -> Entry | None:
        with self.store.book() as book:
            return book.stable()

    @property
    def pinned(self) -> frozenset[int]:
        return frozenset(self.settings.pinned)

    def kept(self) -> set[int]:
        """Versions Triton must have loaded: serving, stable and pinned (those on disk)."""
        with self.store.book() as book:
            return book.kept(self.pinned)

    def expected(self, version: int) -> ServingFigures | None:
        """The figures predicted for ``version``: its calibration's if recorded, else training's."""
        return expected_figures(self.store.version_dir(version), self.entry(version).metadata)

    # --- moves ---

    def register(self, version: int, metadata: dict[str, Any] | None = None) -> Entry:
        """Record an exported version as a candidate. ``metadata`` (data window, guardrail
        results, expected figures...) is added to what its metadata.json holds."""
        vdir = self.store.version_dir(version)
        if not vdir.is_dir():
            raise RegistryError(f"no directory {vdir}: export the version before registering it")
        with self.store.book() as book:
            return states.register(
                book, version, {**self.store.metadata(version), **(metadata or {})}
            )

    def refuse(self, version: int, reason: str, report: Path | str | None = None) -> Entry:
        """Turn a candidate down (guardrails); it is never served unless forced."""
        with self.store.book() as book:
            return states.refuse(book, version, reason, str(report) if report else None)

    def promote(self, version: int, why: str = "promoted", force: bool = False) -> Entry:
        """Serve ``version``: loaded in Triton first, then the pointer switches atomically.
        The serving version becomes stable, the stable one retired."""

        def plan(book: Book) -> Move:
            return states.plan_promotion(book, version, self.pinned, force)

        move, entry = self._move(plan, lambda book, m: states.apply_promotion(book, m, why))
        log.info("promoted %s version %d (stable: %d)", self.name, version, move.replaced)
        return entry

    def rollback(
        self, to: int | None = None, why: str = "rolled back by hand", expect: int | None = None
    ) -> tuple[Entry, Entry]:
        """Serve ``to`` (default: the stable version) instead of the serving one, which is
        refused. ``expect``: do nothing unless this version is still serving (a monitor must
        not undo a promotion that happened after it judged). Returns (removed, restored).

        The removed version stays loaded until :meth:`sync_triton` (after
        ``unload_after_s``), so workers finish the batches they started on it."""

        def plan(book: Book) -> Move:
            return states.plan_rollback(book, to, expect, self.pinned)

        _, (bad, target) = self._move(plan, lambda book, m: states.apply_rollback(book, m, why))
        log.warning("rolled %s back from version %d to %d: %s",
                    self.name, bad.version, target.version, why)  # fmt: skip
        return bad, target

    def record_observed(self, version: int, figures: ServingFigures) -> None:
        with self.store.book() as book:
            book.get(version).observed = figures

    # --- Triton and disk ---

    def sync_triton(self, also: Collection[int] = ()) -> set[int]:
        """Load the kept versions (plus ``also``) and unload every other one."""
        with self.store.moving():
            wanted = self.kept() | set(also)
            self._load(wanted)
        return wanted

    def enforce_retention(self) -> list[int]:
        """Delete the directories of retired and refused versions beyond the newest
        ``keep_retired``; their registry entries stay. Returns the versions deleted."""
        return self.store.enforce_retention(self.settings.keep_retired, self.pinned)

    # --- internals ---

    def _move(
        self, plan: Callable[[Book], Move], apply: Callable[[Book, Move], _Result]
    ) -> tuple[Move, _Result]:
        """Plan under the book lock, load in Triton without it, switch under it (the module's
        docstring says why, and what a failure leaves)."""
        with self.store.moving():
            with self.store.book() as book:
                move = plan(book)
                self.store.require_on_disk(book.get(move.target))
            self._load(move.load)  # the book lock is free: readers and the monitor go on
            try:
                with self.store.book() as book:
                    if plan(book) != move:
                        raise RegistryError(
                            f"the registry of {self.name!r} changed while Triton loaded versions "
                            f"{sorted(move.load)}; nothing was switched: look (`slidr models`) "
                            "and try again"
                        )
                    self.store.require_on_disk(book.get(move.target))
                    write_serving_pointer(self.repository, self.name, move.target)
                    return move, apply(book, move)
            except RegistryError:
                self._restore_kept()
                raise

    def _restore_kept(self) -> None:
        """After an abandoned move: Triton back to what the book keeps (best effort)."""
        try:
            self._load(self.kept())
        except RegistryError as exc:
            log.warning("Triton keeps what the abandoned move loaded until the next move: %s", exc)

    def _load(self, wanted: Collection[int]) -> None:
        if self.loader is not None:
            self.loader.load(sorted(wanted))
