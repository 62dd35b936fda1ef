"""One artefact served everywhere: every version holds a model.onnx that the local Triton (Python
backend + ONNX Runtime) and a GPU Triton (ONNX Runtime backend, configs/onnx.pbtxt) both serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime
import pytest
import torch
import tritonclient.http as triton_http
from google.protobuf import text_format  # type: ignore[import-untyped]
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from models.day_zero import probe_rows
from models.export import export_version, upgrade_version
from models.heuristic import (
    ONNX_IR_VERSION,
    ONNX_OPSET,
    heuristic_onnx,
    heuristic_spec,
    limit_scores,
)
from models.network import SlidrNet, predict
from slidr.features import INDEX, N_FEATURES
from slidr.model_record import HEURISTIC_FILE, ONNX_FILE, TORCHSCRIPT_FILE
from slidr.settings import PROJECT_ROOT, Settings
from streams.scorer import TritonScorer
from tests.factories import feature_rows
from tests.stack_fixtures import private_model, stub_pid

MODEL_DIR = PROJECT_ROOT / "triton_repo" / "slidr"


def onnx_scores(model: bytes | Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    source = str(model) if isinstance(model, Path) else model
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    (out,) = session.run(["score"], {"features": x})
    return np.asarray(out, dtype=np.float32)


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# --- the day-zero heuristic as ONNX ---


@pytest.mark.parametrize("strict", [False, True])
def test_the_heuristic_graph_scores_exactly_like_numpy(strict: bool) -> None:
    spec = heuristic_spec()
    if strict:  # another heuristic version's limits, not just the day-zero ones
        spec["limits"] = {str(INDEX["ip_clicks_1m"]): 3.0, str(INDEX["session_clicks_1h"]): 7.5}
    x = np.vstack([probe_rows(spec, seed=1), np.full((1, N_FEATURES), 1e9, dtype=np.float32)])
    model = heuristic_onnx(spec).SerializeToString()
    got = onnx_scores(model, x)
    assert got.shape == (len(x), 1)  # Triton's config declares score as [batch, 1]
    assert np.max(np.abs(got[:, 0] - limit_scores(spec, x))) <= 1e-6
    assert {0.0, 0.5, 1.0} <= set(got[:, 0].tolist())  # below, at and far past a limit
    assert onnx_scores(model, x[:1]).shape == (1, 1)


def test_the_day_zero_version_holds_the_onnx_twin(repo: Path) -> None:
    version = repo / "slidr" / "1"
    spec = json.loads((version / "heuristic.json").read_text())
    model = onnx.load(str(version / ONNX_FILE))
    # what the ONNX Runtime (1.19) of the compose file's Triton 24.10 reads
    assert model.ir_version == ONNX_IR_VERSION and model.opset_import[0].version == ONNX_OPSET
    x = np.random.default_rng(2).poisson(8.0, size=(500, N_FEATURES)).astype(np.float32)
    got = onnx_scores(version / ONNX_FILE, x)
    assert np.max(np.abs(got[:, 0] - limit_scores(spec, x))) <= 1e-6


# --- the GPU config agrees with the local one ---


def test_the_onnx_config_serves_what_the_local_config_declares() -> None:
    local = read_config(MODEL_DIR / "config.pbtxt")
    gpu = read_config(MODEL_DIR / "configs" / "onnx.pbtxt")
    for field in ("name", "max_batch_size", "input", "output", "version_policy"):
        assert getattr(gpu, field) == getattr(local, field), field
    assert gpu.dynamic_batching == local.dynamic_batching
    assert (gpu.backend, gpu.default_model_filename) == ("onnxruntime", ONNX_FILE)
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert local.backend == "python"


# --- the local Triton: ONNX Runtime in the Python backend ---


def random_network(seed: int) -> tuple[SlidrNet, npt.NDArray[np.float32]]:
    """A SlidrNet with seeded weights (embeddings and a cross layer too) and a standardisation
    fitted on heavy-tailed rows."""
    torch.manual_seed(seed)
    x = feature_rows(2000, seed)
    net = SlidrNet((32, 16), cross_layers=1)
    for table in net.embeddings:  # trained tables are not zero: make the ids matter
        assert isinstance(table, torch.nn.Embedding)
        torch.nn.init.normal_(table.weight)
    net.fit_standardisation(torch.from_numpy(x))
    return net.eval(), x


def load(settings: Settings) -> None:
    t = settings.triton
    client = triton_http.InferenceServerClient(f"{t.host}:{t.http_port}")
    try:
        client.load_model(t.model_name)
    finally:
        client.close()


async def served(settings: Settings, version: int, x: npt.NDArray[np.float32]) -> list[float]:
    """Scores through the worker's own client, one request per batch of 1 and of 256 rows."""
    scorer = TritonScorer(settings.triton, timeout_s=30)
    try:
        await scorer.check(version, 256)
        scores = [float(s) for row in x[:8] for s in await scorer.score(row[None, :], version)]
        for start in range(8, len(x), 256):
            scores += (await scorer.score(x[start : start + 256], version)).tolist()
        return scores
    finally:
        await scorer.aclose()


def private_export(
    stack_settings: Settings, seed: int, metadata: dict[str, object]
) -> tuple[Settings, SlidrNet, npt.NDArray[np.float32], int, Path]:
    """A fresh model in the session's Triton, and a random network (seeded) exported as its
    next version: the settings naming it, the network, its rows, the version and its folder."""
    settings = private_model(stack_settings)
    net, sample = random_network(seed)
    repo, name = settings.triton.model_repository, settings.triton.model_name
    version, vdir = export_version(net, repo, name, metadata, sample[:256])
    return settings, net, sample, version, vdir


@pytest.mark.integration
async def test_a_trained_version_scores_the_same_in_triton_and_in_pytorch(
    stack_settings: Settings,
) -> None:
    settings, net, _, version, vdir = private_export(stack_settings, 11, {"note": "random weights"})
    load(settings)
    x = feature_rows(520, 3)
    # The categorical ids reach the embeddings: the same rows with other ads score otherwise.
    other_ads = x.copy()
    other_ads[:, INDEX["ad_bucket"]] = (other_ads[:, INDEX["ad_bucket"]] + 1) % 300
    x = np.vstack([x, other_ads])
    got = np.asarray(await served(settings, version, x), dtype=np.float32)
    want = predict(net, x)
    assert np.max(np.abs(got - want)) <= 1e-5
    assert float(np.std(want)) > 0.01  # not a constant: the rows really went through the network
    assert float(np.max(np.abs(want[:520] - want[520:]))) > 1e-3
    assert json.loads((vdir / "metadata.json").read_text())["architecture"] == net.describe()
    stub_maps = Path(f"/proc/{stub_pid(vdir)}/maps").read_text()
    assert "libtorch" not in stub_maps  # served by ONNX Runtime, torch never loaded


@pytest.mark.integration
async def test_a_torchscript_only_version_is_refused_with_the_fix_and_serves_once_upgraded(
    stack_settings: Settings,
) -> None:
    settings, net, sample, version, vdir = private_export(stack_settings, 12, {})
    (vdir / ONNX_FILE).unlink()  # as versions exported before model.onnx was served
    with pytest.raises(InferenceServerException, match=r"python -m models\.export"):
        load(settings)

    assert upgrade_version(vdir) == [ONNX_FILE]
    load(settings)
    x = sample[:300]
    got = np.asarray(await served(settings, version, x), dtype=np.float32)
    assert np.max(np.abs(got - predict(net, x))) <= 1e-5


def test_upgrading_an_old_day_zero_version_adds_its_onnx_and_the_current_model_py(
    repo: Path,
) -> None:
    old = repo / "slidr" / "1"
    (old / ONNX_FILE).unlink()
    (old / "model.py").write_text("# the model.py of an older release\n")
    assert upgrade_version(old) == [ONNX_FILE, "model.py"]
    assert (old / "model.py").read_text() == (MODEL_DIR / "model.py").read_text()
    x = probe_rows(heuristic_spec())
    got = onnx_scores(old / ONNX_FILE, x)[:, 0]
    assert np.max(np.abs(got - limit_scores(heuristic_spec(), x))) <= 1e-6
    assert upgrade_version(old) == []  # idempotent


def test_the_triton_model_names_the_version_files_as_slidr_does() -> None:
    # model.py runs inside Triton without slidr, so it spells the names again.
    source = (PROJECT_ROOT / "triton_repo" / "slidr" / "model.py").read_text()
    names = {"ONNX_FILE": ONNX_FILE, "HEURISTIC_FILE": HEURISTIC_FILE}
    names["TORCHSCRIPT_FILE"] = TORCHSCRIPT_FILE
    for name, value in names.items():
        assert f'{name} = "{value}"' in source, name
