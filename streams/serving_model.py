"""The model version the worker scores with, followed without restart.

Promotion and rollback rewrite the serving pointer; calibration writes a version's
``calibration.json``. The worker stat()s those files every ``reload_every_s`` and switches only
after the new version passes the same start-up checks, so a bad pointer never takes it down.

A switch that fails keeps the last good version and is retried, after ``reload_backoff_s``
doubling up to ``reload_backoff_max_s``, until it succeeds or the pointer moves again; a streak
of failures is logged once and counted in ``slidr_model_reload_failures_total``. When Triton no
longer has the version being served (unloaded under the worker: every batch fails open), the
pipeline calls :meth:`ServingModel.lost` and the worker follows the pointer again the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from slidr.errors import SlidrError
from slidr.model_record import ModelRecord, load_record, record_fingerprint, serving_version
from slidr.settings import Settings
from streams.metrics import WorkerMetrics
from streams.scorer import Scorer

log = logging.getLogger(__name__)

#: What a failed switch can raise: refused checks and Triton errors (SlidrError), and a
#: pointer or calibration file that cannot be read or lacks a field.
_REFUSED = (SlidrError, OSError, ValueError, KeyError)


class ServingModel:
    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.scorer = scorer
        self.metrics = metrics
        self.clock = clock
        self._repo = settings.triton.model_repository
        self._name = settings.triton.model_name
        #: The pointer and calibration files as they were when ``record`` was read.
        self._fingerprint: tuple[int, ...] = ()
        self._next_check = 0.0
        #: Failed switches in a row to the files as they are in ``_failed``; a new pointer
        #: or calibration starts a new streak (and the backoff from its start).
        self.failures = 0
        self._failed: tuple[int, ...] | None = None
        self._retry_at = 0.0
        #: Triton no longer has ``record``'s version: follow the pointer though it did not move.
        self._lost = False
        self.record: ModelRecord | None = None

    async def load(self) -> ModelRecord:
        """Resolve, check and adopt the serving version; raises on any mismatch."""
        w = self.settings.worker
        fingerprint = record_fingerprint(self._repo, self._name)
        version = serving_version(self._repo, self._name, w.model_version)
        if self.metrics is not None:
            self.metrics.pointer_version.set(version)
        record = load_record(self._repo, self._name, version, w.global_threshold)
        await self.scorer.check(version, w.batch_size)
        if self.record is None or record != self.record:
            log.info(
                "serving model %s version %d (%s), %s",
                record.name,
                record.version,
                record.kind,
                f"{len(record.thresholds)} slice thresholds"
                if record.thresholds
                else f"global threshold {record.default_threshold}",
            )
        if self.failures or self._lost:
            log.warning("model reload recovered: serving version %d after %d failed attempts",
                        record.version, self.failures)  # fmt: skip
        self.record = record
        self._fingerprint = fingerprint
        self._lost = False
        self.failures, self._failed = 0, None
        self._next_check = self.clock() + w.reload_every_s
        if self.metrics is not None:
            self.metrics.model_version.set(record.version)
        return record

    async def current(self) -> ModelRecord:
        """The record to score with; reloads when the pointer or a calibration changed, when
        a failed switch is due for a retry, or when Triton lost the served version."""
        if self.record is None:
            return await self.load()
        now = self.clock()
        if now < self._next_check:
            return self.record
        self._next_check = now + self.settings.worker.reload_every_s
        fingerprint = record_fingerprint(self._repo, self._name)
        if fingerprint == self._fingerprint and not self._lost:
            if self._failed is not None:  # the pointer came back to what is served
                log.info("the serving pointer names version %d again", self.record.version)
                self.failures, self._failed = 0, None
                if self.metrics is not None:
                    self.metrics.pointer_version.set(self.record.version)
            return self.record
        if fingerprint == self._failed and now < self._retry_at:
            return self.record
        try:
            return await self.load()
        except _REFUSED as exc:
            self._failure(fingerprint, exc, now)
            return self.record

    def lost(self, version: int, why: str) -> None:
        """Triton says it does not serve ``version``: follow the pointer again at the next
        batch. Ignored for a version the worker already left (a batch still in flight)."""
        if self.record is None or version != self.record.version or self._lost:
            return
        self._lost = True
        # Retry now, even amid a backoff: every batch fails open until a version loads.
        self._next_check = self._retry_at = 0.0
        log.warning("Triton no longer serves version %d (%s); following the serving pointer",
                    version, why)  # fmt: skip
        if self.metrics is not None:
            self.metrics.model_version.set(0)  # nothing is scored until a version loads

    def _failure(self, fingerprint: tuple[int, ...], exc: Exception, now: float) -> None:
        w = self.settings.worker
        first = fingerprint != self._failed
        self.failures = 1 if first else self.failures + 1
        self._failed = fingerprint
        delay = min(w.reload_backoff_s * 2 ** (self.failures - 1), w.reload_backoff_max_s)
        self._retry_at = now + delay
        if self.metrics is not None:
            self.metrics.reload_failures.inc()
        assert self.record is not None
        if not first:
            log.debug("model reload failed again (%d in a row): %s", self.failures, exc)
        elif self._lost:
            log.error(
                "version %d is gone from Triton and the serving record cannot be loaded: %s; "
                "decisions fail open, retrying in %.1f s (backing off up to %.0f s)",
                self.record.version, exc, delay, w.reload_backoff_max_s,
            )  # fmt: skip
        else:
            log.error(
                "keeping version %d: the new serving record was refused: %s; retrying in "
                "%.1f s (backing off up to %.0f s)",
                self.record.version, exc, delay, w.reload_backoff_max_s,
            )  # fmt: skip
