"""Install the velocity heuristic as the first Triton model version, so the pipeline runs
end to end before any model has been trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.heuristic import heuristic_onnx, heuristic_spec, limit_scores
from slidr.errors import PrerequisiteMissing, SlidrError
from slidr.features import FEATURE_HASH, FEATURES, N_FEATURES
from slidr.model_record import HEURISTIC_FILE, METADATA_FILE, ONNX_FILE
from slidr.registry import Registry, TritonVersions
from slidr.settings import Settings, TritonSettings

DAY_ZERO_VERSION = 1
#: Largest difference allowed between the ONNX graph's scores and the numpy heuristic's.
TOLERANCE = 1e-6


class HeuristicExportError(SlidrError):
    """The heuristic's ONNX graph does not reproduce ``heuristic.json``'s scores."""


def version_dirs(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def probe_rows(spec: dict[str, object], seed: int = 0) -> npt.NDArray[np.float32]:
    """Rows around every limit (below, at, twice, past), zeros, negatives and random counters."""
    limits = spec["limits"]
    assert isinstance(limits, dict)
    rows = [np.zeros(N_FEATURES, dtype=np.float32), np.full(N_FEATURES, -1.0, dtype=np.float32)]
    for index, limit in limits.items():
        for factor in (0.5, 1.0, 1.5, 2.0, 3.0):
            row = np.zeros(N_FEATURES, dtype=np.float32)
            row[int(index)] = factor * float(limit)
            rows.append(row)
    noise = np.random.default_rng(seed).gamma(1.0, 20.0, size=(256, N_FEATURES))
    return np.vstack([np.stack(rows), noise]).astype(np.float32)


def write_heuristic(directory: Path, spec: dict[str, object]) -> None:
    """``heuristic.json`` (read by the Python backend) and its ONNX twin (read by Triton's
    ONNX Runtime backend) into ``directory``, checked to score alike first."""
    try:
        import onnx  # noqa: F401  (heuristic_onnx's, imported here to name the extra)
        import onnxruntime
    except ImportError as exc:
        raise PrerequisiteMissing(
            f"writing the day-zero model.onnx needs {exc.name}: "
            "pip install -c constraints.txt -e '.[learn]'"
        ) from exc

    model = heuristic_onnx(spec)
    x = probe_rows(spec)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (got,) = session.run(["score"], {"features": x})
    gap = float(np.max(np.abs(np.asarray(got).reshape(-1) - limit_scores(spec, x))))
    if gap > TOLERANCE:
        raise HeuristicExportError(f"the heuristic's ONNX graph differs from it by {gap:.2e}")
    (directory / HEURISTIC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    (directory / ONNX_FILE).write_bytes(model.SerializeToString())


def ensure_day_zero_version(triton: TritonSettings) -> int | None:
    """Write version 1 if the model has no version yet; return it, or None if none was needed."""
    model_dir = Path(triton.model_repository) / triton.model_name
    if version_dirs(model_dir):
        return None
    return _write_day_zero(model_dir, DAY_ZERO_VERSION)


def _write_day_zero(model_dir: Path, version: int) -> int:
    target = model_dir / str(version)
    staging = model_dir / ".day-zero.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copy(model_dir / "model.py", staging / "model.py")
    write_heuristic(staging, heuristic_spec())
    metadata = {
        "kind": "velocity_heuristic",
        "feature_hash": FEATURE_HASH,
        "features": list(FEATURES),
    }
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    staging.rename(target)  # atomic: Triton never sees a half-written version
    return version


def serve_current_features(settings: Settings) -> tuple[int, int] | None:
    """When the serving version was trained on another feature list than this code computes
    (slidr was upgraded), install the day-zero heuristic for the current features as the next
    version and serve it, so the local pipeline runs again; the old versions stay in the
    registry (a worker refuses them). Returns (the stale version, the new one), or None.

    For the local stack (``slidr stack up``): in production a new feature list comes with a
    trained version, and the worker refuses to start rather than serve a mismatch.
    """
    registry = Registry(settings, TritonVersions(settings.triton))
    stale = registry.serving()
    if stale.metadata.get("feature_hash") == FEATURE_HASH:
        return None
    t = settings.triton
    model_dir = Path(t.model_repository) / t.model_name
    version = _write_day_zero(model_dir, max(version_dirs(model_dir)) + 1)
    registry.register(version)
    why = (
        f"day zero for the current features {FEATURE_HASH}: version {stale.version} was "
        f"trained on {stale.metadata.get('feature_hash')}"
    )
    registry.promote(version, why=why)
    return stale.version, version
