"""Export a trained network as a new Triton model version: ONNX, TorchScript, metadata.

``model.onnx`` is what every backend serves (the local Python backend with ONNX Runtime, Triton's
ONNX Runtime backend on a GPU); ``model.pt`` stays for in-process scoring (models/scoring.py).
A version directory is staged under a hidden name and renamed into place, so Triton never sees
half a version, and an existing version is never overwritten. Both artefacts are checked
against the in-process module before the rename.

``python -m models.export DIR...`` upgrades versions written before this layout: it adds the
missing ``model.onnx`` (from ``model.pt`` or ``heuristic.json``, checked the same way) and
copies the model's current ``model.py`` in; load the model again afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.day_zero import write_heuristic
from models.heuristic import ONNX_OPSET
from models.network import SlidrNet, predict
from slidr.errors import SlidrError
from slidr.features import FEATURE_HASH, FEATURES, N_FEATURES
from slidr.model_record import (
    CALIBRATION_FILE,
    HEURISTIC_FILE,
    METADATA_FILE,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    model_dir,
    versions,
)

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


def _write_onnx(module: torch.nn.Module, path: Path) -> None:
    """``module`` (a network or its TorchScript) as ONNX with a dynamic batch dimension."""
    with warnings.catch_warnings():
        # The legacy exporter is the one that needs no onnxscript; its deprecation is expected,
        # and so is its note that a TorchScript module's forward has no Python signature.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "no signature found", UserWarning)
        torch.onnx.export(
            module,
            (torch.zeros(2, N_FEATURES),),
            str(path),
            input_names=["features"],
            output_names=["score"],
            dynamic_axes={"features": {0: "batch"}, "score": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


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
    scripted.save(str(staging / TORCHSCRIPT_FILE))
    _write_onnx(net, staging / ONNX_FILE)
    want = predict(net, sample)
    reloaded = torch.jit.load(str(staging / TORCHSCRIPT_FILE))  # type: ignore[no-untyped-call]
    gaps = {
        "torchscript": _check("TorchScript", predict(reloaded, sample), want),
        "onnx": _check("ONNX", _onnx_scores(staging / ONNX_FILE, sample), want),
    }
    shutil.copy(root / "model.py", staging / "model.py")
    meta = {
        "kind": "slidr_mlp",
        "architecture": net.describe(),
        "feature_hash": FEATURE_HASH,
        "features": list(FEATURES),
        "export_check": {"rows": len(sample), "max_abs_diff": gaps},
        **metadata,
    }
    (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if calibration is not None:
        (staging / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2) + "\n")
    target = root / str(version)
    if target.exists():
        shutil.rmtree(staging)
        raise ExportError(f"version {version} appeared while exporting; run the export again")
    staging.rename(target)
    return version, target


def upgrade_version(version_dir: Path, seed: int = 0) -> list[str]:
    """Give an older version directory ``model.onnx`` and the current ``model.py``.

    Returns what was written. A trained version's ONNX is exported from its ``model.pt`` and
    checked against it; a heuristic's is built from its ``heuristic.json``.
    """
    written: list[str] = []
    onnx_path = version_dir / ONNX_FILE
    if (version_dir / HEURISTIC_FILE).exists():
        if not onnx_path.exists():
            write_heuristic(version_dir, json.loads((version_dir / HEURISTIC_FILE).read_text()))
            written.append(ONNX_FILE)
    elif not onnx_path.exists():
        pt_path = version_dir / TORCHSCRIPT_FILE
        if not pt_path.exists():
            raise ExportError(f"{version_dir} holds neither {TORCHSCRIPT_FILE} nor a heuristic")
        module = torch.jit.load(str(pt_path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        rng = np.random.default_rng(seed)
        sample = rng.gamma(1.0, 5.0, size=(512, N_FEATURES)).astype(np.float32)
        want = predict(module, sample)  # before exporting: the export traces it with autograd
        partial = version_dir / f".{ONNX_FILE}.partial"
        _write_onnx(module, partial)
        _check("ONNX", _onnx_scores(partial, sample), want)
        os.replace(partial, onnx_path)
        written.append(ONNX_FILE)
    current = (version_dir.parent / "model.py").read_bytes()
    if (version_dir / "model.py").read_bytes() != current:
        partial = version_dir / ".model.py.partial"
        partial.write_bytes(current)
        os.replace(partial, version_dir / "model.py")
        written.append("model.py")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m models.export",
        description="Add model.onnx and the current model.py to older Triton version directories.",
    )
    parser.add_argument(
        "version_dirs", nargs="+", type=Path, metavar="DIR", help="e.g. triton_repo/slidr/2"
    )
    for version_dir in parser.parse_args(argv).version_dirs:
        try:
            written = upgrade_version(version_dir)
        except SlidrError as exc:
            parser.exit(2, f"{version_dir}: {exc}\n")
        print(f"{version_dir}: {', '.join(written) or 'up to date'}")


if __name__ == "__main__":
    main()
