"""The model version the worker scores with, followed without restart.

Promotion and rollback rewrite the serving pointer; calibration writes a version's
``calibration.json``. The worker stat()s those files every ``reload_every_s`` and switches only
after the new version passes the same start-up checks, so a bad pointer never takes it down.
"""

from __future__ import annotations

import logging
import time

from slidr.errors import SlidrError
from slidr.model_record import ModelRecord, load_record, record_fingerprint, serving_version
from slidr.settings import Settings
from streams.scorer import Scorer

log = logging.getLogger(__name__)


class ServingModel:
    def __init__(self, settings: Settings, scorer: Scorer) -> None:
        self.settings = settings
        self.scorer = scorer
        self._repo = settings.triton.model_repository
        self._name = settings.triton.model_name
        self._fingerprint: tuple[int, ...] = ()
        self._checked_at = 0.0
        self.record: ModelRecord | None = None

    async def load(self) -> ModelRecord:
        """Resolve, check and adopt the serving version; raises on any mismatch."""
        w = self.settings.worker
        fingerprint = record_fingerprint(self._repo, self._name)
        version = serving_version(self._repo, self._name, w.model_version)
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
        self.record = record
        self._fingerprint = fingerprint
        self._checked_at = time.monotonic()
        return record

    async def current(self) -> ModelRecord:
        """The record to score with; reloads when the pointer or a calibration changed."""
        if self.record is None:
            return await self.load()
        now = time.monotonic()
        if now - self._checked_at < self.settings.worker.reload_every_s:
            return self.record
        self._checked_at = now
        if record_fingerprint(self._repo, self._name) == self._fingerprint:
            return self.record
        previous = self.record
        try:
            return await self.load()
        except SlidrError as exc:
            log.error("keeping version %d: the new serving record was refused: %s",
                      previous.version, exc)  # fmt: skip
            self._fingerprint = record_fingerprint(self._repo, self._name)
            return previous
