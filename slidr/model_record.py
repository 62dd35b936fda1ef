"""Which model version serves, and with which per-slice thresholds.

On disk, beside Triton's version directories:
- ``<repo>/<model>/serving.json``: ``{"version": N}``, the serving pointer (promotion and
  rollback rewrite it atomically); without it the newest version serves;
- ``<repo>/<model>/<N>/metadata.json``: the feature hash the version was trained on;
- ``<repo>/<model>/<N>/calibration.json``: ``{"id": ..., "thresholds": {slice: t},
  "slice_fields": [...], ...}``, optional (written by ``slidr calibrate``, see calibration/).

A click's slice is ``slice_name`` of the record's slice fields; a slice without a threshold
(pooled at calibration, or unseen) takes its nearest ancestor's: "desktop/in" -> "desktop" ->
"all", then the default threshold.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slidr.errors import SlidrError
from slidr.features import FEATURE_HASH
from slidr.slices import DEFAULT_SLICE_FIELDS, SLICE_FIELDS, lookup_threshold

# A model's folder and its version folders (triton_repo/slidr/model.py, which runs inside
# Triton without slidr, spells the artefacts' names again; tests/test_onnx_serving.py checks).
SERVING_POINTER = "serving.json"
#: Per version: what it was trained on and how (every version).
METADATA_FILE = "metadata.json"
#: Per version: its per-slice thresholds (optional, ``slidr calibrate``).
CALIBRATION_FILE = "calibration.json"
#: Per version: the artefact Triton serves, trained (models/export.py) or day-zero.
ONNX_FILE = "model.onnx"
#: Per trained version: the same network as TorchScript (offline scoring, the benchmark).
TORCHSCRIPT_FILE = "model.pt"
#: Per day-zero version: the velocity heuristic's limits.
HEURISTIC_FILE = "heuristic.json"


class ModelMismatch(SlidrError):
    """The model cannot be served by this code: wrong features, missing files, bad version."""


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: int
    feature_hash: str
    kind: str
    default_threshold: float
    thresholds: dict[str, float] = field(default_factory=dict)
    calibration_id: str | None = None
    #: The click fields the thresholds' slices are named by (from the calibration record).
    slice_fields: tuple[str, ...] = DEFAULT_SLICE_FIELDS

    def threshold(self, slice_name: str) -> float:
        return lookup_threshold(self.thresholds, slice_name, self.default_threshold)


def model_dir(repository: Path, name: str) -> Path:
    return Path(repository) / name


def versions(repository: Path, name: str) -> list[int]:
    root = model_dir(repository, name)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def serving_version(repository: Path, name: str, pinned: int | None = None) -> int:
    """The pinned version, else the serving pointer, else the newest version."""
    if pinned is not None:
        return pinned
    pointer = model_dir(repository, name) / SERVING_POINTER
    if pointer.exists():
        return int(json.loads(pointer.read_text())["version"])
    kept = versions(repository, name)
    if not kept:
        raise ModelMismatch(
            f"no version of model {name!r} in {repository}: run `slidr stack up` to install "
            "the day-zero model"
        )
    return kept[-1]


def write_serving_pointer(repository: Path, name: str, version: int) -> None:
    """Atomically point serving at ``version`` (rename is atomic on one filesystem)."""
    pointer = model_dir(repository, name) / SERVING_POINTER
    staging = pointer.with_suffix(".partial")
    staging.write_text(json.dumps({"version": version}) + "\n")
    os.replace(staging, pointer)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelMismatch(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelMismatch(f"{path} must hold a JSON object")
    return data


def read_optional(path: Path) -> dict[str, Any]:
    """A version file's JSON object, or {} when it is missing, unreadable or not an object
    (for the registry's metadata and the expected figures, which may be absent)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def load_record(repository: Path, name: str, version: int, default_threshold: float) -> ModelRecord:
    """Read a version's metadata and calibration; refuse features this code does not make."""
    vdir = model_dir(repository, name) / str(version)
    if not vdir.is_dir():
        raise ModelMismatch(f"model {name!r} has no version {version} in {repository}")
    meta = _read_json(vdir / METADATA_FILE)
    if meta.get("feature_hash") != FEATURE_HASH:
        raise ModelMismatch(
            f"model {name!r} version {version} was trained on features "
            f"{meta.get('feature_hash')!r} but this worker computes {FEATURE_HASH!r}; "
            "serve a version trained on the current feature list"
        )
    thresholds: dict[str, float] = {}
    calibration_id = None
    slice_fields = DEFAULT_SLICE_FIELDS
    calibration_path = vdir / CALIBRATION_FILE
    if calibration_path.exists():
        calibration = _read_json(calibration_path)
        thresholds = {str(k): float(v) for k, v in calibration["thresholds"].items()}
        calibration_id = str(calibration.get("id", calibration_path.stat().st_mtime_ns))
        slice_fields = tuple(calibration.get("slice_fields", DEFAULT_SLICE_FIELDS))
        unknown = sorted(set(slice_fields) - set(SLICE_FIELDS))
        if unknown:
            raise ModelMismatch(
                f"{calibration_path} slices by {', '.join(unknown)}; a slice field must be one "
                f"of {', '.join(SLICE_FIELDS)}: recalibrate with `slidr calibrate`"
            )
    return ModelRecord(
        name=name,
        version=version,
        feature_hash=FEATURE_HASH,
        kind=str(meta.get("kind", "unknown")),
        default_threshold=default_threshold,
        thresholds=thresholds,
        calibration_id=calibration_id,
        slice_fields=slice_fields,
    )


def record_fingerprint(repository: Path, name: str) -> tuple[int, ...]:
    """Changes whenever the pointer or any version's calibration changes (cheap stat calls)."""
    root = model_dir(repository, name)
    stamps: list[int] = []
    for path in [root / SERVING_POINTER, *sorted(root.glob(f"[0-9]*/{CALIBRATION_FILE}"))]:
        try:
            stamps.append(path.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)
