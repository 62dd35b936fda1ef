"""Triton Python-backend model for SLIDR; copied into every version directory.

Every version directory holds ``model.onnx``, the artefact Triton's ONNX Runtime backend serves
on a GPU (docker-compose.yml, configs/onnx.pbtxt). This backend, the local CPU server's, scores
- a trained network's ``model.onnx`` with ONNX Runtime (no torch: one artefact everywhere);
- a day-zero heuristic from ``heuristic.json``, whose ONNX twin ``model.onnx`` is beside it.
This file is self-contained on purpose: the official Triton image has no slidr installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils

ONNX_FILE = "model.onnx"
HEURISTIC_FILE = "heuristic.json"
TORCHSCRIPT_FILE = "model.pt"


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


class OnnxNetwork:
    def __init__(self, path: Path) -> None:
        import onnxruntime  # only trained versions need it

        options = onnxruntime.SessionOptions()
        # One thread: the machine's two cores are shared by Kafka, Redis, the workers and one
        # stub process per loaded version; Triton's dynamic batcher gives the batching, and a
        # thread pool per version would only add contention (and spinning) for an MLP this size.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        (out,) = self.session.run(["score"], {"features": x})
        score: npt.NDArray[np.float32] = np.asarray(out, dtype=np.float32)
        return score.reshape(-1, 1)


def load_version(version_dir: Path) -> Any:
    """The scorer of a version directory; a heuristic's JSON is its source, its ONNX a twin."""
    if (version_dir / HEURISTIC_FILE).exists():
        return VelocityHeuristic(json.loads((version_dir / HEURISTIC_FILE).read_text()))
    if (version_dir / ONNX_FILE).exists():
        return OnnxNetwork(version_dir / ONNX_FILE)
    if (version_dir / TORCHSCRIPT_FILE).exists():
        raise pb_utils.TritonModelException(
            f"{version_dir} holds only {TORCHSCRIPT_FILE} (TorchScript), and trained versions "
            f"are served from {ONNX_FILE}: run `python -m models.export {version_dir}` in the "
            "slidr project to add it, then load the model again"
        )
    raise pb_utils.TritonModelException(
        f"{version_dir} holds neither {ONNX_FILE} nor {HEURISTIC_FILE}"
    )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.n_features = int(config["input"][0]["dims"][0])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        meta_path = version_dir / "metadata.json"
        self.metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        self.model = load_version(version_dir)

    def execute(self, requests: list[Any]) -> list[Any]:
        # Exactly one response per request; a bad request gets an error, not a crash. The good
        # ones of a dynamic batch are scored in one call, as the batcher meant them to be.
        responses: list[Any] = [None] * len(requests)
        good: dict[int, npt.NDArray[np.float32]] = {}
        for i, request in enumerate(requests):
            x = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            if x.ndim != 2 or x.shape[1] != self.n_features or not np.isfinite(x).all():
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        f"features must be a finite [batch, {self.n_features}] array"
                    )
                )
            else:
                good[i] = x
        if good:
            x = np.ascontiguousarray(np.concatenate(list(good.values())), dtype=np.float32)
            scores = np.split(self.model(x), np.cumsum([len(v) for v in good.values()])[:-1])
            for i, score in zip(good, scores, strict=True):
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("score", score)]
                )
        return responses
