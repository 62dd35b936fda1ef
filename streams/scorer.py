"""Scores feature matrices on the Triton inference server over async gRPC.

Every call has a deadline: ``timeout_s`` for an inference, ``TritonSettings.control_timeout_s``
for the readiness, metadata and config checks, so a server that accepts connections but never
answers cannot hang a worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from slidr.errors import SlidrError
from slidr.features import N_FEATURES
from slidr.model_record import ModelMismatch
from slidr.settings import TritonSettings
from slidr.triton_config import explain, grpc_options

log = logging.getLogger(__name__)

INPUT = "features"
OUTPUT = "score"
#: How Triton words a request for a model or version it does not have loaded ("Request for
#: unknown model: 'slidr' version 2 is not at ready state"); a timeout or a refused connection
#: says nothing about the version.
_UNKNOWN_MODEL = "unknown model"
_DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"


class ScorerUnavailable(SlidrError):
    """Triton did not answer in time; the worker fails open."""


class ModelUnavailable(ScorerUnavailable):
    """Triton answers but does not have the version asked for (it was unloaded): the worker
    fails open and follows the serving pointer again."""


class Scorer(Protocol):
    async def score(
        self, features: npt.NDArray[np.float32], version: int
    ) -> npt.NDArray[np.float32]: ...

    async def check(self, version: int, batch_size: int) -> None: ...

    async def aclose(self) -> None: ...


class TritonScorer:
    def __init__(self, settings: TritonSettings, timeout_s: float = 1.0) -> None:
        self.model = settings.model_name
        self.timeout_s = timeout_s
        self.control_timeout_s = settings.control_timeout_s
        self.url = settings.grpc_url
        self.settings = settings
        self.client = triton_aio.InferenceServerClient(settings.grpc_url, **grpc_options(settings))

    async def check(self, version: int, batch_size: int) -> None:
        """Refuse to start against a server or model that does not fit this worker."""
        where = f"model {self.model!r} version {version}"
        deadline = self.control_timeout_s
        try:
            ready = await self.client.is_model_ready(
                self.model, str(version), client_timeout=deadline
            )
            if not ready:
                raise ModelMismatch(
                    f"{where} is not loaded in Triton at {self.url}; load it or pin a loaded "
                    "version"
                )
            meta: Any = await self.client.get_model_metadata(
                self.model, str(version), as_json=True, client_timeout=deadline
            )
            config: Any = await self.client.get_model_config(
                self.model, str(version), as_json=True, client_timeout=deadline
            )
        except InferenceServerException as exc:
            if exc.status() == _DEADLINE_EXCEEDED:
                raise ScorerUnavailable(
                    f"Triton at {self.url} did not answer within {deadline} s while checking "
                    f"{where} (SLIDR_TRITON__CONTROL_TIMEOUT_S)"
                ) from exc
            message = explain(exc.message() or str(exc), self.settings)
            raise ScorerUnavailable(
                f"Triton at {self.url} did not answer while checking {where}: {message}"
            ) from exc
        inputs = {i["name"]: i for i in meta["inputs"]}
        outputs = {o["name"]: o for o in meta["outputs"]}
        if INPUT not in inputs or OUTPUT not in outputs:
            raise ModelMismatch(
                f"{where} has inputs {list(inputs)} and outputs {list(outputs)}; "
                f"expected input {INPUT!r} and output {OUTPUT!r}"
            )
        shape = [int(d) for d in inputs[INPUT]["shape"]]
        if shape != [-1, N_FEATURES] or inputs[INPUT]["datatype"] != "FP32":
            raise ModelMismatch(
                f"{where} takes {inputs[INPUT]['datatype']} {shape}; this worker sends "
                f"FP32 [-1, {N_FEATURES}]"
            )
        max_batch = int(config["config"].get("max_batch_size", 0))
        if max_batch < batch_size:
            raise ModelMismatch(
                f"{where} accepts batches of at most {max_batch}, the worker's batch size is "
                f"{batch_size}: set SLIDR_WORKER__BATCH_SIZE to {max_batch} or less"
            )

    async def score(
        self, features: npt.NDArray[np.float32], version: int
    ) -> npt.NDArray[np.float32]:
        request = triton_aio.InferInput(INPUT, list(features.shape), "FP32")
        request.set_data_from_numpy(features)
        try:
            result = await asyncio.wait_for(
                self.client.infer(
                    self.model,
                    [request],
                    model_version=str(version),
                    outputs=[triton_aio.InferRequestedOutput(OUTPUT)],
                ),
                timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            if _UNKNOWN_MODEL in (exc.message() or ""):
                raise ModelUnavailable(
                    f"Triton at {self.url} does not serve model {self.model!r} version "
                    f"{version}: {exc.message()}"
                ) from exc
            raise ScorerUnavailable(f"Triton inference failed: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise ScorerUnavailable(f"Triton inference failed: {exc}") from exc
        scores = result.as_numpy(OUTPUT)
        if scores is None or scores.shape[0] != features.shape[0]:
            raise ScorerUnavailable("Triton returned no or mis-sized scores")
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    async def aclose(self) -> None:
        await self.client.close()
