"""The model registry: every version's state and history, and the moves between states.

Stored beside the versions as ``<repo>/<model>/registry.json``, rewritten atomically under a
file lock, so the daily cycle, the monitor and the CLI can change it concurrently. The serving
pointer (``serving.json``, see :mod:`slidr.model_record`) is written only from here; workers
follow it without restart.

States: ``candidate`` (registered, not served) -> ``serving`` -> ``stable`` (the last known-good
version, the target of a rollback) -> ``retired``; ``refused`` for a version the guardrails
turned down or a rollback removed. Triton keeps the serving, the stable and the pinned versions
loaded; retired and refused ones are unloaded, and their directories deleted beyond
``RegistrySettings.keep_retired``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import tritonclient.grpc as triton_grpc
from google.protobuf import json_format, text_format  # type: ignore[import-untyped]
from pydantic import BaseModel, Field, ValidationError
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from slidr.errors import SlidrError
from slidr.model_record import (
    CALIBRATION_FILE,
    METADATA_FILE,
    SERVING_POINTER,
    model_dir,
    serving_version,
    versions,
    write_serving_pointer,
)
from slidr.settings import Settings, TritonSettings
from slidr.triton_config import explain, grpc_options

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"
#: Bins of a score histogram in expected figures.
SCORE_BINS = 10
#: The status of a gRPC call that ran past its ``client_timeout``.
_DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"


class RegistryError(SlidrError):
    """A registry move that is not allowed, or a registry that cannot be read."""


class State(StrEnum):
    CANDIDATE = "candidate"
    SERVING = "serving"
    STABLE = "stable"
    RETIRED = "retired"
    REFUSED = "refused"


class Figures(BaseModel):
    """What a version's decisions look like: IVR overall and per slice, optionally the score
    histogram (``SCORE_BINS`` equal bins over [0, 1], counts or shares). Expected figures come
    from training or calibration; observed ones are written by the monitor."""

    ivr: float = Field(ge=0.0, le=1.0)
    slices: dict[str, float] = {}
    score_histogram: list[float] | None = Field(None, min_length=SCORE_BINS, max_length=SCORE_BINS)
    decisions: int | None = None
    at: datetime | None = None


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
    observed: Figures | None = None
    #: False once retention deleted the version directory.
    on_disk: bool = True
    history: list[Transition] = []

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind", "unknown"))

    def move(self, state: State, why: str) -> None:
        self.state = state
        self.history.append(Transition(at=_now(), state=state, why=why))


class _Book(BaseModel):
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


class VersionLoader(Protocol):
    """Makes exactly ``versions`` of the model loaded (Triton, or a fake in tests)."""

    def load(self, versions: Collection[int]) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class Registry:
    """One model's registry. Every call re-reads the file under the lock: no stale state."""

    def __init__(self, settings: Settings, loader: VersionLoader | None = None) -> None:
        self.repository = Path(settings.triton.model_repository)
        self.name = settings.triton.model_name
        self.settings = settings.registry
        #: None moves the pointer only: workers refuse a version Triton has not loaded.
        self.loader = loader
        self.root = model_dir(self.repository, self.name)

    # --- reading ---

    def entries(self) -> list[Entry]:
        with self._book() as book:
            return [book.entries[v] for v in sorted(book.entries)]

    def entry(self, version: int) -> Entry:
        with self._book() as book:
            return _get(book, version)

    def serving(self) -> Entry:
        with self._book() as book:
            return book.serving()

    def stable(self) -> Entry | None:
        with self._book() as book:
            return book.stable()

    @property
    def pinned(self) -> frozenset[int]:
        return frozenset(self.settings.pinned)

    def kept(self) -> set[int]:
        """Versions Triton must have loaded: serving, stable and pinned (those on disk)."""
        with self._book() as book:
            return self._kept(book)

    def expected(self, version: int) -> Figures | None:
        """The figures predicted for ``version``: its calibration's if recorded, else training's."""
        vdir = self.root / str(version)
        for source in (_read_json(vdir / CALIBRATION_FILE), self.entry(version).metadata):
            if "expected" in source:
                try:
                    return Figures.model_validate(source["expected"])
                except ValidationError as exc:
                    log.warning("ignoring malformed expected figures of version %d: %s",
                                version, exc)  # fmt: skip
        return None

    # --- moves ---

    def register(self, version: int, metadata: dict[str, Any] | None = None) -> Entry:
        """Record an exported version as a candidate. ``metadata`` (data window, guardrail
        results, expected figures...) is added to what its metadata.json holds."""
        vdir = self.root / str(version)
        if not vdir.is_dir():
            raise RegistryError(f"no directory {vdir}: export the version before registering it")
        with self._book() as book:
            if version in book.entries:
                raise RegistryError(
                    f"version {version} of {self.name!r} is already registered "
                    f"({book.entries[version].state}); export a new version number"
                )
            entry = _new_entry(
                version,
                {**_read_json(vdir / METADATA_FILE), **(metadata or {})},
                State.CANDIDATE,
                "registered",
            )
            book.entries[version] = entry
            return entry

    def refuse(self, version: int, reason: str, report: Path | str | None = None) -> Entry:
        """Turn a candidate down (guardrails); it is never served unless forced."""
        with self._book() as book:
            entry = _get(book, version)
            if entry.state is not State.CANDIDATE:
                raise RegistryError(
                    f"only a candidate can be refused; version {version} is {entry.state}"
                )
            entry.reason, entry.report = reason, str(report) if report else None
            entry.move(State.REFUSED, reason)
            return entry

    def promote(self, version: int, why: str = "promoted", force: bool = False) -> Entry:
        """Serve ``version``: loaded in Triton first, then the pointer switches atomically.
        The serving version becomes stable, the stable one retired."""
        with self._book() as book:
            entry = _get(book, version)
            current = book.serving()
            if entry is current:
                raise RegistryError(f"version {version} is already serving")
            if entry.state is State.REFUSED and not force:
                raise RegistryError(
                    f"version {version} was refused ({entry.reason}); pass --force to serve it "
                    "anyway"
                )
            self._require_on_disk(entry)
            self._load({version, current.version} | self._pinned(book))
            write_serving_pointer(self.repository, self.name, version)
            _switch(book, entry, why)
            log.info("promoted %s version %d (stable: %d)", self.name, version, current.version)
            return entry

    def rollback(
        self, to: int | None = None, why: str = "rolled back by hand", expect: int | None = None
    ) -> tuple[Entry, Entry]:
        """Serve ``to`` (default: the stable version) instead of the serving one, which is
        refused. ``expect``: do nothing unless this version is still serving (a monitor must
        not undo a promotion that happened after it judged). Returns (removed, restored).

        The removed version stays loaded until :meth:`sync_triton` (after
        ``unload_after_s``), so workers finish the batches they started on it."""
        with self._book() as book:
            bad = book.serving()
            if expect is not None and bad.version != expect:
                raise RegistryError(
                    f"version {expect} is no longer serving (version {bad.version} is); "
                    "nothing rolled back"
                )
            target = book.stable() if to is None else _get(book, to)
            if target is None:
                raise RegistryError(
                    f"{self.name!r} has no stable version to roll back to; pass --to VERSION"
                )
            if target is bad:
                raise RegistryError(f"version {to} is already serving")
            if target.state not in (State.STABLE, State.RETIRED):
                raise RegistryError(
                    f"version {to} is {target.state}, not a version that served well; choose a "
                    "stable or retired one (`slidr models`), or `slidr promote` a candidate"
                )
            self._require_on_disk(target)
            self._load({target.version, bad.version} | self._pinned(book))
            write_serving_pointer(self.repository, self.name, target.version)
            bad.reason = why
            bad.move(State.REFUSED, why)
            target.move(State.SERVING, f"rollback from {bad.version}: {why}")
            log.warning("rolled %s back from version %d to %d: %s",
                        self.name, bad.version, target.version, why)  # fmt: skip
            return bad, target

    def record_observed(self, version: int, figures: Figures) -> None:
        with self._book() as book:
            _get(book, version).observed = figures

    # --- Triton and disk ---

    def sync_triton(self, also: Collection[int] = ()) -> set[int]:
        """Load the kept versions (plus ``also``) and unload every other one."""
        wanted = self.kept() | set(also)
        self._load(wanted)
        return wanted

    def enforce_retention(self) -> list[int]:
        """Delete the directories of retired and refused versions beyond the newest
        ``keep_retired``; their registry entries stay. Returns the versions deleted."""
        with self._book() as book:
            removable = sorted(
                v
                for v, e in book.entries.items()
                if e.on_disk and e.state in (State.RETIRED, State.REFUSED) and v not in self.pinned
            )
            doomed = removable[: max(len(removable) - self.settings.keep_retired, 0)]
            for version in doomed:
                shutil.rmtree(self.root / str(version))
                book.entries[version].on_disk = False
                log.info("retention: deleted %s version %d", self.name, version)
            return doomed

    # --- internals ---

    def _pinned(self, book: _Book) -> set[int]:
        return {v for v in self.pinned if v in book.entries and book.entries[v].on_disk}

    def _kept(self, book: _Book) -> set[int]:
        kept = {book.serving().version} | self._pinned(book)
        if (stable := book.stable()) is not None and stable.on_disk:
            kept.add(stable.version)
        return kept

    def _load(self, wanted: set[int]) -> None:
        if self.loader is not None:
            self.loader.load(sorted(wanted))

    def _require_on_disk(self, entry: Entry) -> None:
        if not entry.on_disk or not (self.root / str(entry.version)).is_dir():
            raise RegistryError(
                f"version {entry.version} is no longer on disk (retention deleted it); "
                "choose a kept version (`slidr models`)"
            )

    @contextmanager
    def _book(self) -> Iterator[_Book]:
        if not self.root.is_dir():
            raise RegistryError(
                f"no model {self.name!r} in {self.repository}: run `slidr stack up` first"
            )
        path = self.root / REGISTRY_FILE
        with (self.root / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                before = path.read_text() if path.exists() else ""
                try:
                    book = _Book.model_validate_json(before) if before else _Book(model=self.name)
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
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _adopt(self, version: int, state: State, why: str) -> Entry:
        metadata = _read_json(self.root / str(version) / METADATA_FILE)
        return _new_entry(version, metadata, state, why)

    def _reconcile(self, book: _Book) -> None:
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
            _switch(book, book.entries[serving], why)
        if not (self.root / SERVING_POINTER).exists():
            # Pin what serves now: a new directory must not start serving by being the newest.
            write_serving_pointer(self.repository, self.name, serving)


def _switch(book: _Book, entry: Entry, why: str) -> None:
    """``entry`` serves; the serving version becomes stable, the stable one retired."""
    current = next((e for e in book.entries.values() if e.state is State.SERVING), None)
    stable = book.stable()
    if stable is not None and stable is not entry and current is not None:
        stable.move(State.RETIRED, f"replaced as stable by {current.version}")
    if current is not None:
        current.move(State.STABLE, f"version {entry.version} serves")
    entry.move(State.SERVING, why)


def _new_entry(version: int, metadata: dict[str, Any], state: State, why: str) -> Entry:
    now = _now()
    return Entry(
        version=version,
        state=state,
        registered_at=now,
        metadata=metadata,
        history=[Transition(at=now, state=state, why=why)],
    )


def _get(book: _Book, version: int) -> Entry:
    if version not in book.entries:
        known = ", ".join(str(v) for v in sorted(book.entries)) or "none"
        raise RegistryError(f"model {book.model!r} has no version {version} (registered: {known})")
    return book.entries[version]


class TritonVersions:
    """Loads exactly a set of versions in Triton (explicit model-control mode).

    The load request overrides the model's whole config, so it is built from the config the
    server runs (the Python backend locally, onnxruntime under docker-compose's
    ``--model-config-name=onnx``), or from the committed ``config.pbtxt`` when nothing is
    loaded yet, with its version policy replaced by ``specific``: Triton then loads the listed
    versions and unloads the others, without touching any that stay.

    Every call has a deadline (``control_timeout_s``, ``load_timeout_s`` for the load itself):
    the registry calls these while holding its lock, which the monitor takes every second.
    The repository calls (load, index) carry ``triton.repository_key`` when it is set: Triton
    refuses them otherwise (docs/security.md).
    """

    def __init__(self, settings: TritonSettings, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.timeout_s = settings.load_timeout_s if timeout_s is None else timeout_s
        self.control_timeout_s = settings.control_timeout_s

    def _deadline(self, what: str, seconds: float, setting: str) -> str:
        return (
            f"Triton at {self.settings.grpc_url} did not answer {what} within {seconds} s "
            f"(SLIDR_TRITON__{setting.upper()})"
        )

    def _config(self, client: Any, versions: Collection[int]) -> str:
        try:
            config = client.get_model_config(
                self.settings.model_name, client_timeout=self.control_timeout_s
            ).config
        except InferenceServerException as exc:
            if exc.status() == _DEADLINE_EXCEEDED:
                raise RegistryError(
                    self._deadline("a config request", self.control_timeout_s, "control_timeout_s")
                    + "; nothing was changed"
                ) from exc
            # not loaded: the committed config
            path = model_dir(self.settings.model_repository, self.settings.model_name)
            text = (path / "config.pbtxt").read_text()
            config = text_format.Parse(text, model_config_pb2.ModelConfig())
        config.version_policy.specific.versions[:] = sorted(versions)
        return str(json_format.MessageToJson(config, preserving_proto_field_name=True))

    def _client(self) -> triton_grpc.InferenceServerClient:
        return triton_grpc.InferenceServerClient(
            self.settings.grpc_url, **grpc_options(self.settings)
        )

    def load(self, versions: Collection[int]) -> None:
        if self.loaded() == set(versions):
            return  # a load request reloads the model: seconds, under traffic
        name = self.settings.model_name
        client = self._client()
        try:
            config = self._config(client, versions)
            client.load_model(
                name,
                config=config,
                headers=self.settings.repository_headers,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            if exc.status() == _DEADLINE_EXCEEDED:
                what = f"the load of {name!r} versions {sorted(versions)}"
                raise RegistryError(
                    self._deadline(what, self.timeout_s, "load_timeout_s")
                    + "; the registry and the pointer were not changed, Triton may still "
                    "finish the load (`slidr models` shows what it has)"
                ) from exc
            raise RegistryError(
                f"Triton at {self.settings.grpc_url} did not load {name!r} versions "
                f"{sorted(versions)}: {exc.message()}; nothing was changed"
            ) from exc
        finally:
            client.close()

    def loaded(self) -> set[int]:
        client = self._client()
        try:
            index: Any = client.get_model_repository_index(
                headers=self.settings.repository_headers,
                as_json=True,
                client_timeout=self.control_timeout_s,
            )
        except InferenceServerException as exc:
            if exc.status() == _DEADLINE_EXCEEDED:
                what = "a repository index request"
                message = self._deadline(what, self.control_timeout_s, "control_timeout_s")
            else:
                answer = explain(exc.message() or str(exc), self.settings)
                message = f"Triton at {self.settings.grpc_url} did not answer: {answer}"
            raise RegistryError(message) from exc
        finally:
            client.close()
        return {
            int(m["version"])
            for m in index.get("models", [])
            if m.get("name") == self.settings.model_name and m.get("state") == "READY"
        }
