"""Install the velocity heuristic as the first Triton model version, so the pipeline runs
end to end before any model has been trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from models.heuristic import heuristic_spec
from slidr.features import FEATURE_HASH, FEATURES
from slidr.settings import TritonSettings

DAY_ZERO_VERSION = 1


def version_dirs(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def ensure_day_zero_version(triton: TritonSettings) -> int | None:
    """Write version 1 if the model has no version yet; return it, or None if none was needed."""
    model_dir = Path(triton.model_repository) / triton.model_name
    if version_dirs(model_dir):
        return None
    target = model_dir / str(DAY_ZERO_VERSION)
    staging = model_dir / ".day-zero.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copy(model_dir / "model.py", staging / "model.py")
    (staging / "heuristic.json").write_text(json.dumps(heuristic_spec(), indent=2) + "\n")
    metadata = {
        "kind": "velocity_heuristic",
        "feature_hash": FEATURE_HASH,
        "features": list(FEATURES),
    }
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    staging.rename(target)  # atomic: Triton never sees a half-written version
    return DAY_ZERO_VERSION
