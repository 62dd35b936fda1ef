"""Triton Python-backend model for SLIDR; copied into every version directory.

A version directory holds either ``model.pt`` (a TorchScript network whose standardisation is
built in) or ``heuristic.json`` (the day-zero velocity heuristic), plus ``metadata.json``.
This file is self-contained on purpose: the official Triton image has no slidr installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils


class VelocityHeuristic:
    """Score = how far the fastest velocity counter is past its limit, squashed to [0, 1].

    ``limits`` maps a feature index to the count at which a click is called robotic; a click
    exactly at a limit scores 0.5, so the natural threshold is 0.5.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.index = np.asarray([int(i) for i in spec["limits"]], dtype=np.int64)
        self.limit = np.asarray(list(spec["limits"].values()), dtype=np.float32)

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        ratio = (x[:, self.index] / self.limit).max(axis=1)
        score: npt.NDArray[np.float32] = np.clip(ratio / 2.0, 0.0, 1.0).astype(np.float32)
        return score.reshape(-1, 1)


class TorchNetwork:
    def __init__(self, path: Path) -> None:
        import torch  # only trained versions need torch

        torch.set_num_threads(1)
        self._torch = torch
        self.module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(x))
        score: npt.NDArray[np.float32] = out.numpy().astype(np.float32)
        return score.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.n_features = int(config["input"][0]["dims"][0])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        meta_path = version_dir / "metadata.json"
        self.metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if (version_dir / "model.pt").exists():
            self.model: Any = TorchNetwork(version_dir / "model.pt")
        elif (version_dir / "heuristic.json").exists():
            self.model = VelocityHeuristic(json.loads((version_dir / "heuristic.json").read_text()))
        else:
            raise pb_utils.TritonModelException(
                f"{version_dir} holds neither model.pt nor heuristic.json"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        # Exactly one response per request; a bad request gets an error, not a crash.
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            if x.ndim != 2 or x.shape[1] != self.n_features or not np.isfinite(x).all():
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(
                            f"features must be a finite [batch, {self.n_features}] array"
                        )
                    )
                )
                continue
            score = self.model(np.ascontiguousarray(x, dtype=np.float32))
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("score", score)])
            )
        return responses
