"""Triton Inference Server from the ``nvidia-pytriton`` wheel, serving the Python-backend models.

The wheel ships ``tritonserver`` and the Python backend, but its ``backends/python/`` lacks the
stub executable, so :func:`prepare_backends` assembles ``<home>/triton/backends/python/`` from
symlinks: ``libtriton_python.so`` and ``triton_python_backend_utils.py`` from the wheel plus
``python_backend_stubs/<major.minor>/triton_python_backend_stub`` for the running interpreter.

Environment of the server (see :meth:`Triton.env`): the virtual environment's ``bin`` first on
``PATH`` (the stub finds its Python there), the interpreter's ``LIBDIR`` first on
``LD_LIBRARY_PATH`` (so the stub's libpython matches the standard library), ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` = ``settings.triton.intra_op_threads`` (every instance imports torch), and
``EMOTION_HOME`` / ``EMOTION_STACK_NAME`` so models that call ``load_settings()`` see this stack.

Model control: ``--model-control-mode=explicit --load-model=*``.  Every model in the repository
is loaded at start (zero models is fine), and new or changed models are loaded without a restart
through the repository API (``tritonclient.*.InferenceServerClient.load_model(name)``, i.e.
``POST /v2/repository/models/<name>/load``), never behind the caller's back as ``poll`` would
(``poll`` can pick up a half-written model folder).

CPU-only machines (no ``nvidia-smi`` GPU, or ``settings.triton.instance_kind == "cpu"``) get
``--allow-gpu-metrics=false --pinned-memory-pool-byte-size=0 --cuda-memory-pool-byte-size=0:0``;
a GPU machine runs the same repository without them.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from shared.settings import Settings

from . import process
from .component import Component, ComponentStatus

if TYPE_CHECKING:
    from tritonclient.http import InferenceServerClient

log = logging.getLogger(__name__)


def pytriton_dir() -> Path:
    """``site-packages/pytriton/tritonserver`` of the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")  # located, not imported (importing it is slow)
    if spec is None or not spec.submodule_search_locations:
        raise process.StackError("nvidia-pytriton is not installed in this environment (it ships tritonserver)")
    root = Path(next(iter(spec.submodule_search_locations))).resolve() / "tritonserver"
    if not (root / "bin" / "tritonserver").exists():
        raise process.StackError(f"{root}/bin/tritonserver not found in the nvidia-pytriton wheel")
    return root


def backends_dir(settings: Settings) -> Path:
    """The ``--backend-directory`` assembled by :func:`prepare_backends`."""
    return settings.home / "triton" / "backends"


def prepare_backends(settings: Settings) -> Path:
    """Assemble the Python backend (library, utils, stub for this interpreter); idempotent."""
    src = pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise process.StackError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    links = {
        "libtriton_python.so": src / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": src / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": stub,
    }
    target = backends_dir(settings) / "python"
    target.mkdir(parents=True, exist_ok=True)
    with process.file_lock(backends_dir(settings) / ".install.lock"):
        for name, source in links.items():
            link = target / name
            if link.is_symlink() and Path(os.readlink(link)) == source:
                continue
            if link.exists() or link.is_symlink():
                link.unlink()
            link.symlink_to(source)
    return backends_dir(settings)


@functools.lru_cache(maxsize=1)
def gpu_present() -> bool:
    """True when ``nvidia-smi -L`` lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def uses_gpu(settings: Settings) -> bool:
    """Whether Triton runs with GPU support (``settings.triton.instance_kind`` or detection)."""
    kind = settings.triton.instance_kind
    return kind == "gpu" or (kind == "auto" and gpu_present())


def _prepend(path: str, existing: str | None) -> str:
    return f"{path}:{existing}" if existing else path


class Triton(Component):
    name = "triton"
    stop_timeout_s = 30.0
    probe_interval_s = 0.5

    @property
    def host(self) -> str:
        return self.settings.triton.host

    def ports(self) -> dict[str, int]:
        t = self.settings.triton
        return {"http": t.http_port, "grpc": t.grpc_port, "metrics": t.metrics_port}

    @property
    def startup_timeout_s(self) -> float:
        return self.settings.triton.startup_timeout_s

    def prepare(self) -> None:
        self.settings.model_repository.mkdir(parents=True, exist_ok=True)
        prepare_backends(self.settings)

    def command(self) -> list[str]:
        t = self.settings.triton
        argv = [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.settings.model_repository}",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--strict-readiness=true",
            f"--backend-directory={backends_dir(self.settings)}",
            # unique shared-memory names, so that two stacks' Python backends never collide
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix()}",
            f"--http-address={t.host}",
            f"--http-port={t.http_port}",
            f"--grpc-address={t.host}",
            f"--grpc-port={t.grpc_port}",
            "--allow-metrics=true",
            "--allow-cpu-metrics=true",
            f"--metrics-address={t.host}",
            f"--metrics-port={t.metrics_port}",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]
        if not uses_gpu(self.settings):
            argv += [
                "--allow-gpu-metrics=false",
                "--pinned-memory-pool-byte-size=0",
                "--cuda-memory-pool-byte-size=0:0",
            ]
        return argv

    def shm_prefix(self) -> str:
        """Python-backend shared-memory name prefix, unique per stack and port."""
        stack = re.sub(r"[^A-Za-z0-9_]", "_", self.settings.stack_name)
        return f"emotion_{stack}_{self.settings.triton.grpc_port}_"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.prefix) / "bin") if sys.prefix != sys.base_prefix else str(Path(sys.executable).parent)
        env["PATH"] = _prepend(venv_bin, env.get("PATH"))
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            env["LD_LIBRARY_PATH"] = _prepend(str(libdir), env.get("LD_LIBRARY_PATH"))
        threads = str(self.settings.triton.intra_op_threads)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = threads
        env["EMOTION_HOME"] = str(self.settings.home)
        env["EMOTION_STACK_NAME"] = self.settings.stack_name
        return env

    def repository_models(self) -> list[str]:
        """Models in the repository folder (a sub-folder with a ``config.pbtxt``)."""
        repo = self.settings.model_repository
        if not repo.is_dir():
            return []
        return sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())

    def _client(self) -> InferenceServerClient:
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(
            url=self.settings.triton.http_url, connection_timeout=2.0, network_timeout=5.0
        )

    def status(self) -> ComponentStatus:
        st = super().status()
        st.extra = {
            "gpu": uses_gpu(self.settings),
            "model_control_mode": "explicit",
            "models": self.repository_models(),
        }
        return st

    def healthy(self) -> bool:
        """Server ready (``/v2/health/ready``) and every model of the repository ready."""
        t = self.settings.triton
        if not process.accepts_connections(t.host, t.http_port):
            return False
        client = self._client()
        try:
            return bool(client.is_server_ready()) and all(client.is_model_ready(m) for m in self.repository_models())
        finally:
            client.close()
