"""Triton's model-repository API is closed to callers without ``triton.repository_key``.

A private tritonserver (the local stack's own start-up code, nothing else of the stack) runs with
the key; a load or unload without it is refused, the registry's TritonVersions gets through.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from slidr.registry import RegistryError, TritonVersions
from slidr.settings import REPOSITORY_KEY_HEADER, Settings
from slidr.stack.triton_server import TritonService, restricted_api_flags
from tests.stack_fixtures import private_settings, running

KEY = "test-repository-key-0123456789abcdef"


def locked_settings(root: Path) -> Settings:
    settings = private_settings(root)
    triton = settings.triton.model_copy(update={"repository_key": SecretStr(KEY)})
    return settings.model_copy(update={"triton": triton})


def test_no_key_no_restriction_and_the_key_closes_both_protocols(tmp_path: Path) -> None:
    settings = locked_settings(tmp_path)
    open_settings = settings.triton.model_copy(update={"repository_key": None})
    assert restricted_api_flags(open_settings) == []
    flags = restricted_api_flags(settings.triton)
    spec = f"model-repository,shared-memory,logging,trace:{REPOSITORY_KEY_HEADER}={KEY}"
    assert flags == [f"--grpc-restricted-protocol={spec}", f"--http-restricted-api={spec}"]
    assert KEY not in repr(settings.triton)  # a SecretStr: never in a repr or a log line


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = locked_settings(tmp_path_factory.mktemp("locked"))
    with running(TritonService(settings)):
        yield settings


@pytest.mark.integration
def test_repository_calls_without_the_key_are_refused(locked: Settings) -> None:
    t = locked.triton
    grpc = triton_grpc.InferenceServerClient(t.grpc_url)
    http = triton_http.InferenceServerClient(f"{t.host}:{t.http_port}")
    try:
        calls: list[Callable[[], object]] = [
            lambda: grpc.unload_model(t.model_name),
            lambda: grpc.load_model(t.model_name),
            lambda: grpc.get_model_repository_index(),
            lambda: http.unload_model(t.model_name),
            lambda: http.load_model(t.model_name, headers={REPOSITORY_KEY_HEADER: "wrong"}),
        ]
        for call in calls:
            with pytest.raises(InferenceServerException, match="restricted"):
                call()
        # inference, readiness and config stay open to the workers
        assert grpc.is_model_ready(t.model_name, "1")
        assert grpc.get_model_config(t.model_name).config.name == t.model_name
    finally:
        grpc.close()
        http.close()


@pytest.mark.integration
def test_the_registry_loads_with_the_key(locked: Settings) -> None:
    t = locked.triton
    versions = TritonVersions(t)
    assert versions.loaded() == {1}
    model = Path(t.model_repository) / t.model_name
    shutil.copytree(model / "1", model / "2")
    versions.load({1, 2})
    assert versions.loaded() == {1, 2}
    versions.load({1})
    assert versions.loaded() == {1}
    # what an operator sees without the key: the registry's error, naming no secret
    keyless = TritonVersions(t.model_copy(update={"repository_key": None}))
    with pytest.raises(RegistryError, match="restricted") as refused:
        keyless.loaded()
    assert KEY not in str(refused.value)


@pytest.mark.integration
def test_the_server_log_holds_no_key(locked: Settings) -> None:
    log = TritonService(locked).proc.log_file
    assert log.stat().st_size and KEY not in log.read_text(errors="replace")
