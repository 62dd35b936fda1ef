"""The registry's Triton side: make exactly a set of a model's versions loaded.

The registry depends on :class:`VersionLoader` only (a fake in unit tests, ``None`` to move
the pointer without Triton); :class:`TritonVersions` is the real one, over gRPC, every call
with a deadline, and is also what ``slidr models`` asks which versions are loaded.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

import tritonclient.grpc as triton_grpc
from google.protobuf import json_format, text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from slidr.model_record import model_dir
from slidr.registry.errors import RegistryError
from slidr.settings import TritonSettings
from slidr.triton_config import explain, grpc_options

#: The status of a gRPC call that ran past its ``client_timeout``.
_DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"


class VersionLoader(Protocol):
    """Makes exactly ``versions`` of the model loaded (Triton, or a fake in tests)."""

    def load(self, versions: Collection[int]) -> None: ...


class TritonVersions:
    """Loads exactly a set of versions in Triton (explicit model-control mode).

    The load request overrides the model's whole config, so it is built from the config the
    server runs (the Python backend locally, onnxruntime under docker-compose's
    ``--model-config-name=onnx``), or from the committed ``config.pbtxt`` when nothing is
    loaded yet, with its version policy replaced by ``specific``: Triton then loads the listed
    versions and unloads the others, without touching any that stay.

    Every call has a deadline (``control_timeout_s``, ``load_timeout_s`` for the load itself),
    so a Triton that accepts connections but never answers holds a registry move that long at
    most (the registry calls it holding its move lock, never the book lock the monitor reads).
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
