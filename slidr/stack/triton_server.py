"""Triton Inference Server from the nvidia-pytriton wheel, Python backend, CPU only.

The bundled ``tritonserver`` is run directly against the project's model repository in explicit
model-control mode. Its Python-backend stub embeds the first ``python3`` on PATH, so the
virtual environment's bin comes first, and it links ``libpython3.11.so.1.0`` by name, so the
interpreter's own lib directory goes first on LD_LIBRARY_PATH (a different libpython fails with
``'_thread.RLock' object has no attribute '_recursion_count'``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from slidr.errors import PrerequisiteMissing, StackError
from slidr.settings import REPOSITORY_KEY_HEADER, Settings, TritonSettings
from slidr.stack.process import ManagedProcess, secret_values, wait_until
from slidr.stack.service import Health

_STUB_PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise PrerequisiteMissing(
            "nvidia-pytriton is not installed (it ships the tritonserver binary): "
            "pip install -c constraints.txt nvidia-pytriton"
        )
    return Path(spec.origin).parent / "tritonserver"


#: The APIs only the registry may call: loading a Python-backend model runs its code, unloading
#: the model fails every worker open; shared memory, logging and trace settings reach the host.
RESTRICTED_APIS = ("model-repository", "shared-memory", "logging", "trace")


def restricted_api_flags(settings: TritonSettings) -> list[str]:
    """tritonserver flags closing ``RESTRICTED_APIS`` to callers without the repository key.

    Triton reads the value from its command line only, so it shows in the server's process
    title to local users who can read /proc (docs/security.md).
    """
    if settings.repository_key is None:
        return []
    spec = (
        f"{','.join(RESTRICTED_APIS)}:{REPOSITORY_KEY_HEADER}="
        f"{settings.repository_key.get_secret_value()}"
    )
    return [f"--grpc-restricted-protocol={spec}", f"--http-restricted-api={spec}"]


def grpc_tls_flags(settings: TritonSettings) -> list[str]:
    """tritonserver flags serving gRPC over TLS (mutual when the clients have a certificate)."""
    if not settings.grpc_tls:
        return []
    if settings.grpc_server_certfile is None or settings.grpc_server_keyfile is None:
        raise StackError(
            "a TLS Triton needs its certificate: set SLIDR_TRITON__GRPC_SERVER_CERTFILE and "
            "SLIDR_TRITON__GRPC_SERVER_KEYFILE"
        )
    flags = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={settings.grpc_server_certfile}",
        f"--grpc-server-key={settings.grpc_server_keyfile}",
    ]
    if settings.grpc_tls_certfile is not None:
        if settings.grpc_tls_cafile is None:
            raise StackError(
                "mutual TLS to Triton needs the CA of the client certificates: set "
                "SLIDR_TRITON__GRPC_TLS_CAFILE"
            )
        flags += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={settings.grpc_tls_cafile}"]
    return flags


class TritonService:
    name = "triton"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.triton
        self.proc = ManagedProcess("triton", Path(settings.state_dir) / "triton")

    @property
    def port(self) -> int:
        return self.settings.grpc_port

    def check_prerequisites(self) -> None:
        binary = pytriton_root() / "bin" / "tritonserver"
        if not binary.exists():
            raise PrerequisiteMissing(f"{binary} is missing; reinstall nvidia-pytriton")
        config = self.settings.model_repository / self.settings.model_name / "config.pbtxt"
        if not config.exists():
            raise StackError(f"no Triton model config at {config}")

    def _backend_dir(self) -> Path:
        """A backends/python directory with the library, utils and stub side by side."""
        root = pytriton_root()
        target = self.proc.workdir / "backends" / "python"
        target.mkdir(parents=True, exist_ok=True)
        sources = {
            "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
            "triton_python_backend_utils.py": root
            / "backends"
            / "python"
            / "triton_python_backend_utils.py",
            "triton_python_backend_stub": root
            / "python_backend_stubs"
            / _STUB_PY
            / "triton_python_backend_stub",
        }
        for name, source in sources.items():
            link = target / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
        return target.parent

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        libdir = str(sysconfig.get_config_var("LIBDIR") or "")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
        )
        env.pop("PYTHONPATH", None)
        return env

    def start(self) -> None:
        s = self.settings
        argv = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={s.model_repository}",
            f"--backend-directory={self._backend_dir()}",
            "--model-control-mode=explicit",
            f"--load-model={s.model_name}",
            "--disable-auto-complete-config",
            f"--http-address={s.host}",
            f"--http-port={s.http_port}",
            f"--grpc-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--metrics-address={s.host}",
            f"--metrics-port={s.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--cuda-memory-pool-byte-size=0:0",
            "--log-verbose=0",
            *restricted_api_flags(s),
            *grpc_tls_flags(s),
        ]
        self.proc.start(argv, env=self._env(), secrets=secret_values(s))
        wait_until(lambda: self.health().ok, "Triton model readiness", 120, self.proc)

    def _get(self, path: str) -> tuple[int, bytes]:
        url = f"http://{self.settings.host}:{self.settings.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), b""
        except (urllib.error.URLError, OSError):
            return 0, b""

    def health(self) -> Health:
        status, _ = self._get("/v2/health/ready")
        if status != 200:
            return Health(False, "server not ready")
        name = self.settings.model_name
        status, body = self._get(f"/v2/models/{name}")
        if status != 200:
            return Health(False, f"model {name} not loaded")
        versions = json.loads(body).get("versions", [])
        return Health(True, f"model {name} versions {','.join(versions) or '?'}")

    def serving(self) -> set[int] | None:
        """The model versions Triton serves, or None while the server is not ready."""
        if not self.health().ok:
            return None
        _, body = self._get(f"/v2/models/{self.settings.model_name}")
        return {int(v) for v in json.loads(body or b"{}").get("versions", [])}

    def wait_serving(self, versions: set[int], timeout_s: float = 120.0) -> None:
        """Return once Triton is ready and serves exactly ``versions``.

        A load request returns before the versions it drops are unloaded, and the server
        reports itself not ready until they are: without this wait `slidr stack status` right
        after `up` can see Triton down.
        """
        name = self.settings.model_name
        what = f"Triton (model {name} versions {sorted(versions)})"
        wait_until(lambda: self.serving() == versions, what, timeout_s, self.proc)
