"""Export a trained network as a new Triton model version: TorchScript, an ONNX twin, metadata.

A version directory is staged under a hidden name and renamed into place, so Triton never sees
half a version, and an existing version is never overwritten. Both artefacts are checked
against the in-process module before the rename.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.network import SlidrNet, predict
from slidr.errors import SlidrError
from slidr.features import FEATURE_HASH, FEATURES, N_FEATURES
from slidr.model_record import model_dir, versions

#: Largest difference allowed between in-process, TorchScript and ONNX scores.
TOLERANCE = 1e-5


class ExportError(SlidrError):
    """The exported artefacts do not reproduce the trained module."""


def _onnx_scores(path: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["score"], {"features": x})
    return np.asarray(out, dtype=np.float32).reshape(-1)


def _check(name: str, got: npt.NDArray[np.float32], want: npt.NDArray[np.float32]) -> float:
    gap = float(np.max(np.abs(got - want))) if len(want) else 0.0
    if gap > TOLERANCE:
        raise ExportError(f"the {name} export differs from the trained network by {gap:.2e}")
    return gap


def export_version(
    net: SlidrNet,
    repository: Path,
    model_name: str,
    metadata: dict[str, Any],
    sample: npt.NDArray[np.float32],
    calibration: dict[str, Any] | None = None,
) -> tuple[int, Path]:
    """Write the next version of ``model_name``; returns its number and directory."""
    root = model_dir(repository, model_name)
    if not (root / "model.py").exists():
        raise ExportError(f"{root} is not a slidr Triton model (no model.py)")
    version = max(versions(repository, model_name), default=0) + 1
    staging = root / f".v{version}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    net = net.eval()
    example = torch.zeros(2, N_FEATURES)
    scripted = torch.jit.trace(net, example)  # type: ignore[no-untyped-call]
    scripted.save(str(staging / "model.pt"))
    with warnings.catch_warnings():
        # The legacy exporter is the one that needs no onnxscript; its deprecation is expected.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            str(staging / "model.onnx"),
            input_names=["features"],
            output_names=["score"],
            dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    want = predict(net, sample)
    reloaded = torch.jit.load(str(staging / "model.pt"))  # type: ignore[no-untyped-call]
    gaps = {
        "torchscript": _check("TorchScript", predict(reloaded, sample), want),
        "onnx": _check("ONNX", _onnx_scores(staging / "model.onnx", sample), want),
    }
    shutil.copy(root / "model.py", staging / "model.py")
    meta = {
        "kind": "slidr_mlp",
        "feature_hash": FEATURE_HASH,
        "features": list(FEATURES),
        "export_check": {"rows": len(sample), "max_abs_diff": gaps},
        **metadata,
    }
    (staging / "metadata.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if calibration is not None:
        (staging / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    target = root / str(version)
    if target.exists():
        shutil.rmtree(staging)
        raise ExportError(f"version {version} appeared while exporting; run the export again")
    staging.rename(target)
    return version, target
