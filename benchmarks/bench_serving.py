"""Serving one trained network: TorchScript vs ONNX Runtime, in-process and through Triton.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_serving.py [--json] [--no-triton]

A SlidrNet of the production shape (``learn.hidden``) with seeded random weights is exported
by models/export.py into a temporary model repository (``model.pt`` and ``model.onnx``): the
cost of serving does not depend on what the weights learnt.

- In-process, each runtime runs in a fresh interpreter so that its import counts: start-up
  (import + load, numpy already imported), RSS increase over the same span, then per-call
  latency at batch 1, 64 and 512 with one thread, as triton_repo/slidr/model.py serves.
- Through a private local Triton (Python backend, CPU; needs nothing else running): the version
  served by this repository's model.py (ONNX Runtime) and the same network served by a
  TorchScript model.py (the one before ONNX): load time and the stub's RSS one at a time, then
  sequential gRPC requests at batch 1 and 512 in alternating rounds (p50 / p99 / p99.9; client
  and server on the same cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

BATCHES = (1, 64, 512)
#: Calls per batch size in-process: enough for a stable p99 in a few seconds.
CALLS = {1: 5000, 64: 2000, 512: 500}
TRITON_BATCHES = (1, 512)
ROUNDS = 10
WARM_UP = 50

#: A Python-backend model.py that serves model.pt with torch: what served trained versions
#: before model.onnx did, kept here only to measure the difference.
TORCH_MODEL_PY = """
import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        torch.set_num_threads(1)
        path = Path(args["model_repository"]) / args["model_version"] / "{torchscript}"
        self.module = torch.jit.load(str(path), map_location="cpu").eval()

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            with torch.inference_mode():
                score = self.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("score", score.reshape(-1, 1))])
            )
        return responses
"""


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentiles(seconds: list[float], *qs: float) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {f"p{q:g}_ms": float(np.percentile(ms, q)) for q in qs}


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(WARM_UP):
        fn()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def rows(batch: int, seed: int = 0) -> npt.NDArray[np.float32]:
    from slidr.features import N_FEATURES

    x = np.random.default_rng(seed).gamma(1.0, 5.0, size=(batch, N_FEATURES))
    return x.astype(np.float32)


# --- in-process, in a child interpreter per runtime ---


def measure_in_process(runtime: str, path: str) -> dict[str, Any]:
    """Runs in a fresh interpreter: start-up, RSS increase and per-call latency of one runtime."""
    before = rss_mib()
    started = time.perf_counter()
    run: Callable[[npt.NDArray[np.float32]], object]
    if runtime == "torchscript":
        import torch

        torch.set_num_threads(1)
        module = torch.jit.load(path, map_location="cpu").eval()  # type: ignore[no-untyped-call]

        def run(x: npt.NDArray[np.float32]) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
    else:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def run(x: npt.NDArray[np.float32]) -> object:
            return session.run(["score"], {"features": x})[0]

    startup_s = time.perf_counter() - started
    loaded = rss_mib()
    result: dict[str, Any] = {"startup_ms": startup_s * 1000, "rss_increase_mib": loaded - before}
    for batch in BATCHES:
        x = rows(batch)
        times = time_calls(partial(run, x), CALLS[batch])
        result[f"batch_{batch}"] = percentiles(times, 50, 99)
    return result


def in_process(runtime: str, path: Path) -> dict[str, Any]:
    here = Path(__file__).resolve()
    env = {**os.environ, "PYTHONPATH": str(here.parent.parent)}
    done = subprocess.run(
        [sys.executable, str(here), "--measure", runtime, str(path)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- through the local Triton ---


def through_triton(root: Path, net: Any, requests: int) -> dict[str, Any]:
    import tritonclient.grpc as triton_grpc

    from models.export import export_version
    from slidr.model_record import TORCHSCRIPT_FILE
    from slidr.registry import TritonVersions
    from slidr.stack.triton_server import TritonService
    from slidr.triton_config import grpc_options
    from tests.stack_fixtures import private_settings, stub_pid  # from the repository root

    settings = private_settings(root)  # a private repository holding the day-zero version
    repo, name = settings.triton.model_repository, settings.triton.model_name
    versions = TritonVersions(settings.triton, timeout_s=120)
    service = TritonService(settings)
    service.check_prerequisites()
    service.start()  # serves the day-zero version only
    results: dict[str, Any] = {}
    client = triton_grpc.InferenceServerClient(
        settings.triton.grpc_url, **grpc_options(settings.triton)
    )
    try:
        onnx_version, onnx_dir = export_version(net, repo, name, {}, rows(256))
        torch_dir = onnx_dir.parent / str(onnx_version + 1)
        shutil.copytree(onnx_dir, torch_dir)
        served = TORCH_MODEL_PY.replace("{torchscript}", TORCHSCRIPT_FILE)
        (torch_dir / "model.py").write_text(served)
        dirs = {"onnx": onnx_dir, "torchscript": torch_dir}
        for runtime, vdir in dirs.items():
            started = time.perf_counter()
            versions.load({1, int(vdir.name)})  # one network version at a time
            load_ms = (time.perf_counter() - started) * 1000
            results[runtime] = {"load_ms": load_ms, "stub_rss_mib": rss_mib(stub_pid(vdir))}
        versions.load({1, *(int(vdir.name) for vdir in dirs.values())})
        for batch in TRITON_BATCHES:
            request = triton_grpc.InferInput("features", [batch, rows(1).shape[1]], "FP32")
            request.set_data_from_numpy(rows(batch))
            n = requests if batch == 1 else max(requests // 2, 1000)
            times: dict[str, list[float]] = {runtime: [] for runtime in dirs}
            # Rounds alternate the runtimes, so that whatever else the shared cores run
            # meanwhile falls on both alike.
            for _ in range(ROUNDS):
                for runtime, vdir in dirs.items():

                    def infer(request: Any = request, version: str = vdir.name) -> object:
                        return client.infer(name, [request], model_version=version)

                    times[runtime] += time_calls(infer, n // ROUNDS)
            for runtime in dirs:
                results[runtime][f"batch_{batch}"] = percentiles(times[runtime], 50, 99, 99.9)
        results["heuristic_stub_rss_mib"] = rss_mib(stub_pid(onnx_dir.parent / "1"))
    finally:
        client.close()
        service.proc.stop()
    return results


# --- the run ---


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "?",
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1)}


def measure(with_triton: bool, requests: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    from models.day_zero import ensure_day_zero_version
    from models.export import export_version
    from models.network import SlidrNet
    from slidr.model_record import ONNX_FILE, TORCHSCRIPT_FILE
    from slidr.settings import PROJECT_ROOT, LearnSettings, TritonSettings

    hidden = LearnSettings().hidden
    torch.manual_seed(0)
    net = SlidrNet(hidden)
    net.fit_standardisation(torch.from_numpy(rows(4096, seed=1)))
    report: dict[str, Any] = {
        "machine": machine(),
        "network": f"SlidrNet {rows(1).shape[1]}-{hidden[0]}-{hidden[1]}-1, random weights",
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = root / "in-process" / "slidr"
        model.mkdir(parents=True)
        shutil.copy(PROJECT_ROOT / "triton_repo" / "slidr" / "model.py", model / "model.py")
        ensure_day_zero_version(TritonSettings(model_repository=model.parent))
        _, vdir = export_version(net.eval(), model.parent, "slidr", {}, rows(256))
        report["in_process"] = {
            "torchscript": in_process("torchscript", vdir / TORCHSCRIPT_FILE),
            "onnx": in_process("onnx", vdir / ONNX_FILE),
        }
        if with_triton:
            report["triton"] = through_triton(root / "triton", net, requests)
    return report


def print_tables(report: dict[str, Any]) -> None:
    from rich.table import Table

    from slidr.console import make_console

    console = make_console()
    m = report["machine"]
    console.print(
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {report['network']}; "
        f"torch {report['versions']['torch']}, onnxruntime {report['versions']['onnxruntime']}"
    )
    table = Table(title="in-process, one thread (fresh interpreter per runtime)")
    columns = ["runtime", "start-up ms", "RSS +MiB"]
    columns += [f"b{b} {p}" for b in BATCHES for p in ("p50 ms", "p99 ms")]
    for column in columns:
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for runtime, r in report["in_process"].items():
        cells = [runtime, f"{r['startup_ms']:.0f}", f"{r['rss_increase_mib']:.0f}"]
        for b in BATCHES:
            cells += [f"{r[f'batch_{b}']['p50_ms']:.3f}", f"{r[f'batch_{b}']['p99_ms']:.3f}"]
        table.add_row(*cells)
    console.print(table)
    if "triton" not in report:
        return
    table = Table(title="local Triton, Python backend, sequential gRPC requests")
    columns = ["model.py serves", "load ms", "stub RSS MiB"]
    columns += [f"b{b} {p}" for b in TRITON_BATCHES for p in ("p50", "p99", "p99.9")]
    for column in columns:
        table.add_column(column, justify="left" if column == "model.py serves" else "right")
    for runtime in ("onnx", "torchscript"):
        r = report["triton"][runtime]
        cells = [runtime, f"{r['load_ms']:.0f}", f"{r['stub_rss_mib']:.0f}"]
        for b in TRITON_BATCHES:
            cells += [f"{r[f'batch_{b}'][k]:.3f}" for k in ("p50_ms", "p99_ms", "p99.9_ms")]
        table.add_row(*cells)
    console.print(table)
    console.print(
        f"day-zero heuristic stub (numpy only): {report['triton']['heuristic_stub_rss_mib']:.0f}"
        " MiB RSS; latencies in ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-triton", action="store_true", help="in-process figures only")
    parser.add_argument("--requests", type=int, default=5000, help="Triton requests at batch 1")
    parser.add_argument("--measure", nargs=2, metavar=("RUNTIME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child interpreter of in_process()
        print(json.dumps(measure_in_process(*args.measure)))
        return
    report = measure(not args.no_triton, args.requests)
    if args.json:
        print(json.dumps(report))
    else:
        print_tables(report)


if __name__ == "__main__":
    main()
