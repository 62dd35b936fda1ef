"""Scores of a model version directory, computed in-process (no Triton needed).

Calibration, evaluation and the daily cycle score held-out days with the exact artefact Triton
serves: ``model.pt`` (TorchScript) or ``heuristic.json`` (the day-zero heuristic).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from models.heuristic import limit_scores
from models.network import predict
from slidr.features import FEATURES
from slidr.model_record import HEURISTIC_FILE, TORCHSCRIPT_FILE, ModelMismatch, model_dir


def feature_rows(frame: pd.DataFrame) -> npt.NDArray[np.float32]:
    """The feature matrix of a labelled frame, in FEATURES order."""
    return np.ascontiguousarray(frame[list(FEATURES)].to_numpy(dtype=np.float32))


def version_scorer(
    repository: Path, model: str, version: int
) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    """A function from feature rows to P(robotic), as Triton serves ``version``."""
    vdir = model_dir(repository, model) / str(version)
    if (vdir / TORCHSCRIPT_FILE).exists():
        net = torch.jit.load(str(vdir / TORCHSCRIPT_FILE), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        return lambda x: predict(net, x)
    if (vdir / HEURISTIC_FILE).exists():
        spec = json.loads((vdir / HEURISTIC_FILE).read_text())
        return lambda x: limit_scores(spec, x)
    raise ModelMismatch(f"{vdir} holds neither model.pt nor heuristic.json")


def score_version(
    repository: Path, model: str, version: int, frame: pd.DataFrame
) -> npt.NDArray[np.float32]:
    """P(robotic) of every row of ``frame`` by the given version, as Triton would serve it."""
    return version_scorer(repository, model, version)(feature_rows(frame))
