"""Triton gRPC over TLS (``SLIDR_TRITON__GRPC_TLS``): every gRPC client built from one settings
block (slidr/triton_config.py), and the scorer and the registry against a real tritonserver 2.51
serving gRPC over mutual TLS (the local stack's own start-up code)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from slidr.errors import StackError
from slidr.features import N_FEATURES
from slidr.registry import TritonVersions
from slidr.settings import Settings, TritonSettings
from slidr.stack.triton_server import TritonService, grpc_tls_flags
from slidr.triton_config import grpc_options
from streams.scorer import ScorerUnavailable, TritonScorer
from tests.client_sites import construction_sites, spreads_a_call_to
from tests.pki import make_pki
from tests.stack_fixtures import private_settings, running


def _grpc_constructions(path: Path) -> list[tuple[int, bool]]:
    """(line, built with **grpc_options(...)) for each gRPC InferenceServerClient in a file (the
    HTTP client, loopback plaintext, is not one)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if node.func.attr != "InferenceServerClient" or (
            isinstance(owner, ast.Name) and "http" in owner.id
        ):
            continue
        found.append((node.lineno, spreads_a_call_to(node, {"grpc_options"})))
    return found


def test_every_triton_grpc_client_in_the_project_is_built_from_the_settings() -> None:
    sites = construction_sites(_grpc_constructions)
    for module in ("streams/scorer.py", "slidr/registry/triton.py", "benchmarks/bench_serving.py"):
        assert any(site.startswith(module + ":") for site in sites), module
    assert [site for site, ok in sites.items() if not ok] == []


def test_tls_settings_map_to_tritonclient_and_tritonserver(tmp_path: Path) -> None:
    ca, certs, keys = make_pki(tmp_path, ("server", "client"))
    assert grpc_options(TritonSettings()) == {} and grpc_tls_flags(TritonSettings()) == []
    mutual = TritonSettings(
        grpc_tls=True,
        grpc_tls_cafile=ca,
        grpc_tls_certfile=certs["client"],
        grpc_tls_keyfile=keys["client"],
        grpc_server_certfile=certs["server"],
        grpc_server_keyfile=keys["server"],
    )
    assert grpc_options(mutual) == {
        "ssl": True,
        "root_certificates": str(ca),
        "private_key": str(keys["client"]),
        "certificate_chain": str(certs["client"]),
    }
    assert grpc_tls_flags(mutual) == [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={certs['server']}",
        f"--grpc-server-key={keys['server']}",
        "--grpc-use-ssl-mutual=true",
        f"--grpc-root-cert={ca}",
    ]
    with pytest.raises(StackError, match="SLIDR_TRITON__GRPC_SERVER_CERTFILE"):
        grpc_tls_flags(TritonSettings(grpc_tls=True))
    with pytest.raises(ValidationError, match="SLIDR_TRITON__GRPC_TLS_KEYFILE"):
        TritonSettings(grpc_tls=True, grpc_tls_certfile=certs["client"])


@pytest.fixture(scope="module")
def tls_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    root = tmp_path_factory.mktemp("triton-tls")
    settings = private_settings(root)
    ca, certs, keys = make_pki(root / "pki", ("server", "client"))
    triton = settings.triton.model_copy(
        update={
            "grpc_tls": True,
            "grpc_tls_cafile": ca,
            "grpc_tls_certfile": certs["client"],
            "grpc_tls_keyfile": keys["client"],
            "grpc_server_certfile": certs["server"],
            "grpc_server_keyfile": keys["server"],
        }
    )
    settings = settings.model_copy(update={"triton": triton})
    with running(TritonService(settings)):
        yield settings


@pytest.mark.integration
async def test_the_scorer_and_the_registry_work_over_mutual_tls(tls_triton: Settings) -> None:
    t = tls_triton.triton
    (version,) = TritonVersions(t).loaded()
    scorer = TritonScorer(t, timeout_s=10.0)
    try:
        await scorer.check(version, batch_size=8)
        scores = await scorer.score(np.zeros((3, N_FEATURES), dtype=np.float32), version)
        assert scores.shape == (3,)
    finally:
        await scorer.aclose()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("update", "named"),
    [
        ({"grpc_tls_cafile": None}, "SLIDR_TRITON__GRPC_TLS_CAFILE"),
        ({"grpc_tls_certfile": None, "grpc_tls_keyfile": None}, "SLIDR_TRITON__GRPC_TLS_CERTFILE"),
        ({"grpc_tls": False}, "SLIDR_TRITON__GRPC_TLS"),
    ],
    ids=["no-ca", "no-client-cert", "plaintext"],
)
async def test_a_client_without_the_tls_settings_is_told_which(
    tls_triton: Settings, update: dict[str, object], named: str
) -> None:
    wrong = tls_triton.triton.model_copy(update={**update, "control_timeout_s": 3.0})
    scorer = TritonScorer(wrong)
    try:
        with pytest.raises(ScorerUnavailable, match=named):
            await scorer.check(1, batch_size=8)
    finally:
        await scorer.aclose()
