"""Launch, health-check and stop a vLLM OpenAI-compatible server for a local model folder.

:class:`ServerProcess` owns one server process: it runs in its own process group (so Ctrl-C in the
terminal does not reach it and stopping it also stops vLLM's engine-core child), logs to a file, and
stops with SIGTERM to the whole group, then SIGKILL after a grace period. :class:`VLLMServer` builds
the vLLM command line and environment and waits for ``/health`` while reporting progress.

Whether the machine is GPU-less is decided by vLLM itself (``vllm.platforms.current_platform``,
asked once in a short subprocess so the caller never imports torch); on the CPU platform the server
gets ``--enforce-eager`` by default (no graph capture; starts in ~40 s instead of minutes) and the
CPU environment variables below unless the user set them.

Deterministic mode (:func:`deterministic_settings`): greedy answers that do not depend on how many
requests are in flight. vLLM's batch-invariant kernels (``VLLM_BATCH_INVARIANT``) exist for CUDA,
ROCm and XPU only (vllm 0.32 ``model_executor/determinism/batch_invariant.py`` installs Triton
overrides, and the CPU build ships without Triton), so on the CPU platform the mode runs float32
(the CPU path otherwise downcasts a float32 model to bfloat16) with one sequence per engine step
(``--max-num-seqs 1``): every request then sees the same batch shape whatever the client sends.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from longctx._errors import LongctxError
from longctx._protocols import NullProgress, Progress


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def log_tail(path: Path | None, lines: int = 25, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` non-empty lines of a log file ('' when there is none)."""
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - max_bytes))
        text = fh.read().decode("utf-8", errors="replace")
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _set_parent_death_signal() -> None:
    """Linux: SIGTERM the server if the process that launched it dies without stopping it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_LIVE: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        proc.stop(grace_s=5.0)


class ServerProcess:
    """A long-running child in its own process group, logging to ``log_path``."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], log_path: Path):
        self.cmd = list(cmd)
        self.env = env
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the process (returns at once)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(self.cmd)}\n".encode())
            log.flush()
            # PDEATHSIG fires when the launching *thread* exits, so only set it from the main thread.
            on_parent_death = (
                _set_parent_death_signal if threading.current_thread() is threading.main_thread() else None
            )
            self._popen = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=on_parent_death,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        """Process id (= process group id) once started."""
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has exited."""
        return self._popen.poll() if self._popen else None

    def alive(self) -> bool:
        """True while the main process runs."""
        return self._popen is not None and self._popen.poll() is None

    def group_alive(self) -> bool:
        """True while any process of the group (server or its engine children) exists."""
        if self._popen is None:
            return False
        self._popen.poll()  # reap the leader if it exited
        try:
            os.killpg(self._popen.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def tail(self, lines: int = 25) -> str:
        """The last lines of the log."""
        return log_tail(self.log_path, lines)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL what is left."""
        if self._popen is None:
            return
        _LIVE.discard(self)
        pgid = self._popen.pid
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self.group_alive():
                time.sleep(0.1)
            if not self.group_alive():
                break
        try:
            self._popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def probe_vllm(python: str = sys.executable) -> dict[str, Any]:
    """vLLM's own view of this machine: ``{"version", "device_type", "device_count"}`` (device type
    e.g. ``cpu``, ``cuda``; GPUs counted by torch, 0 on CPU).

    Raises :class:`LongctxError` when vLLM is not installed or cannot start.
    """
    code = (
        "import json, vllm\n"
        "from vllm.platforms import current_platform as p\n"
        "try:\n"
        "    import torch\n"
        "    n = torch.cuda.device_count() if p.device_type in ('cuda', 'rocm') else 0\n"
        "except Exception:\n"
        "    n = 0\n"
        "print(json.dumps({'version': vllm.__version__, 'device_type': p.device_type, 'device_count': n}))\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LongctxError(f"cannot run {python} to check vLLM: {exc}") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "No module named 'vllm'" in out.stderr:
            raise LongctxError("runner vllm needs vLLM: pip install 'longctx[cpu]' (or 'longctx[gpu]')")
        raise LongctxError(f"vLLM does not import: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_list(cpus: set[int]) -> str:
    """``{0,1,2,5}`` -> ``0-2,5``."""
    ordered, parts = sorted(cpus), []
    start = prev = ordered[0]
    for cpu in ordered[1:] + [None]:  # type: ignore[list-item]
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def cpu_environment(environ: dict[str, str], kv_cache_gib: int | None = None) -> dict[str, str]:
    """``environ`` plus vLLM's CPU settings, where the user has not set them.

    ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; ``kv_cache_gib`` wins, else 2) and
    ``VLLM_CPU_OMP_THREADS_BIND`` (every CPU this process may run on, e.g. ``0-1``).
    """
    env = dict(environ)
    if kv_cache_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", _cpu_list(set(cpus)))
    return env


def deterministic_settings(device_type: str | None, dtype: str) -> tuple[str, int | None, dict[str, str]]:
    """``(dtype, max_num_seqs, environment)`` that make greedy results batch-independent.

    CPU: float32 unless ``dtype`` is set, one sequence per step. Other platforms: vLLM's
    batch-invariant mode (``VLLM_BATCH_INVARIANT=1``; not measured here: no GPU).
    """
    if device_type == "cpu":
        return ("float32" if dtype == "auto" else dtype), 1, {}
    return dtype, None, {"VLLM_BATCH_INVARIANT": "1"}


_DTYPE_IN_LOG = re.compile(r"with config: .*?\bdtype=torch\.(\w+)")


def engine_dtype_from_log(path: Path | None) -> str | None:
    """The dtype vLLM resolved (``dtype=torch.bfloat16`` in its engine-config log line), if logged."""
    if path is None or not path.exists():
        return None
    with open(path, "rb") as fh:
        text = fh.read(4 * 1024 * 1024).decode("utf-8", errors="replace")
    found = _DTYPE_IN_LOG.findall(text)
    return found[-1] if found else None


@dataclass
class ServerConfig:
    """How to launch a vLLM server for one local model folder."""

    model_path: Path
    """The model folder (``config.json`` inside)."""
    served_model_name: str
    """Name clients send as ``model``."""
    max_model_len: int | None = None
    """``--max-model-len`` (the model's context window); None lets vLLM decide."""
    seed: int = 42
    """``--seed``."""
    dtype: str = "auto"
    """``--dtype`` (auto, float32, bfloat16, float16)."""
    enforce_eager: bool | None = None
    """``--enforce-eager``; None = on vLLM's CPU platform only."""
    kv_cache_gib: int | None = None
    """``VLLM_CPU_KVCACHE_SPACE`` on CPU (default 2 GiB unless set in the environment)."""
    port: int | None = None
    """Port; None picks a free one."""
    host: str = "127.0.0.1"
    """Interface to bind."""
    log_dir: Path | None = None
    """Where ``vllm-server.log`` goes; None = a fresh temporary folder."""
    start_timeout_s: float = 900.0
    """Give up when ``/health`` is not OK after this long."""
    extra_args: tuple[str, ...] = ()
    """Further server flags, appended as given."""
    max_num_seqs: int | None = None
    """``--max-num-seqs`` (sequences per engine step); None = vLLM's default."""
    deterministic: bool = False
    """Batch-independent greedy results (:func:`deterministic_settings`)."""
    python: str = field(default_factory=lambda: sys.executable)
    """The interpreter that has vLLM installed."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment set for this server over the caller's (a replica's cores or GPUs)."""
    tensor_parallel: int | None = None
    """``--tensor-parallel-size`` (GPUs per server); None = vLLM's default (1)."""
    log_name: str = "vllm-server.log"
    """File name of the server's log inside ``log_dir``."""


class VLLMServer:
    """A vLLM server for a local model folder. ``with VLLMServer(cfg, progress) as server: ...``."""

    def __init__(self, config: ServerConfig, progress: Progress | None = None):
        self.config = config
        self.progress = progress or NullProgress()
        self.port = config.port or free_port(config.host)
        self.version: str | None = None
        self.device_type: str | None = None
        self.dtype: str | None = None
        """The dtype the engine runs (from its log once started; the request when not logged)."""
        self.max_num_seqs: int | None = config.max_num_seqs
        """Sequences per engine step as launched (None = vLLM's default)."""
        self._dtype_flag = config.dtype
        self._extra_env: dict[str, str] = {}
        self.process: ServerProcess | None = None
        self._temp_log_dir: Path | None = None

    @property
    def root_url(self) -> str:
        """``http://host:port`` (vLLM's /health, /tokenize, /version live here)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI API base, ``http://host:port/v1``."""
        return self.root_url + "/v1"

    def command(self, enforce_eager: bool) -> list[str]:
        """The server command line.

        ``--generation-config vllm`` makes the request alone define sampling (the model folder's
        ``generation_config.json`` could otherwise add e.g. a repetition penalty to "greedy").
        """
        cfg = self.config
        cmd = [
            cfg.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(cfg.model_path),
            "--served-model-name",
            cfg.served_model_name,
            "--host",
            cfg.host,
            "--port",
            str(self.port),
            "--seed",
            str(cfg.seed),
            "--dtype",
            self._dtype_flag,
            "--enable-prompt-tokens-details",
            "--enable-prefix-caching",
            "--generation-config",
            "vllm",
            "--disable-uvicorn-access-log",
        ]
        if cfg.max_model_len:
            cmd += ["--max-model-len", str(cfg.max_model_len)]
        if enforce_eager:
            cmd.append("--enforce-eager")
        if self.max_num_seqs:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if cfg.tensor_parallel and cfg.tensor_parallel > 1:
            cmd += ["--tensor-parallel-size", str(cfg.tensor_parallel)]
        return cmd + list(cfg.extra_args)

    def start(self) -> VLLMServer:
        """Launch the server and wait until ``/health`` answers; LongctxError (with log tail) if not."""
        self.launch(*self.prepare())
        self.started()
        return self

    def prepare(self, info: dict[str, Any] | None = None) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of this server; ``info`` is :func:`probe_vllm`'s answer
        (asked here when not given)."""
        cfg = self.config
        if not (cfg.model_path / "config.json").exists():
            raise LongctxError(f"model folder {cfg.model_path} has no config.json")
        if info is None:
            self.progress.start("checking vLLM")
            try:
                info = probe_vllm(cfg.python)
            finally:
                self.progress.done()
        self.version, self.device_type = info.get("version"), info.get("device_type")
        on_cpu = self.device_type == "cpu"
        if cfg.deterministic:
            self._dtype_flag, seqs, self._extra_env = deterministic_settings(self.device_type, cfg.dtype)
            self.max_num_seqs = seqs or self.max_num_seqs
        enforce_eager = on_cpu if cfg.enforce_eager is None else cfg.enforce_eager
        base = {**os.environ, **cfg.env}
        env = cpu_environment(base, cfg.kv_cache_gib) if on_cpu else base
        env.update(self._extra_env)
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.pop("VLLM_API_KEY", None)  # the launched server is local and keyless
        return self.command(enforce_eager), env

    def started(self) -> None:
        """Read what the healthy server logged (the dtype it runs)."""
        self.dtype = engine_dtype_from_log(self.process.log_path if self.process else None)
        self.dtype = self.dtype or (None if self._dtype_flag == "auto" else self._dtype_flag)

    def spawn(self, cmd: Sequence[str], env: dict[str, str]) -> VLLMServer:
        """Start ``cmd`` as the server process, logging to ``log_dir`` (returns at once)."""
        if self.config.log_dir is not None:
            log_dir = self.config.log_dir
        else:
            log_dir = self._temp_log_dir = Path(tempfile.mkdtemp(prefix="longctx-vllm-"))
        self.process = ServerProcess(cmd, env, log_dir / self.config.log_name)
        self.process.start()
        return self

    def launch(self, cmd: Sequence[str], env: dict[str, str]) -> VLLMServer:
        """Run ``cmd`` as the server and wait for ``/health``; stops it again on any failure or Ctrl-C."""
        self.spawn(cmd, env)
        try:
            self.wait_healthy()
        except BaseException:  # includes Ctrl-C during start-up (failure() keeps the log it names)
            self.stop()
            raise
        return self

    def wait_healthy(self) -> None:
        """Wait until ``/health`` answers OK; LongctxError (with the log's tail) when the process
        exits or ``start_timeout_s`` passes first."""
        assert self.process is not None
        cfg = self.config
        label = (
            f"starting vLLM server ({cfg.served_model_name}, port {self.port}; log {self.process.log_path})"
        )
        self.progress.start(label)
        deadline = time.monotonic() + cfg.start_timeout_s
        try:
            with httpx.Client(timeout=5.0, trust_env=False) as http:
                while True:
                    if not self.process.alive():
                        raise self.failure(f"exited during start-up (code {self.process.returncode})")
                    try:
                        if http.get(self.root_url + "/health").status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise self.failure(f"not healthy after {cfg.start_timeout_s:g} s")
                    time.sleep(1.0)
                    self.progress.advance()
        finally:
            self.progress.done()

    def failure(self, what: str, error: type[LongctxError] = LongctxError) -> LongctxError:
        """A LongctxError (or ``error``) saying what went wrong, with the log's path and tail (the
        log is kept)."""
        self._temp_log_dir = None
        log = self.process.log_path if self.process else None
        tail = self.process.tail() if self.process else ""
        indented = "\n".join("    " + line for line in tail.splitlines())
        return error(f"vLLM server {what}; log {log}; last lines:\n{indented}")

    def died(self, wait_s: float = 0.0) -> bool:
        """True when the launched process has exited, waiting up to ``wait_s`` for it to do so."""
        deadline = time.monotonic() + wait_s
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return self.process is not None

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.process is not None and self.process.alive()

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the server (SIGTERM to its group, SIGKILL after ``grace_s``).

        A temporary log folder is removed after a clean run; after a failure it is kept (the error
        message names it).
        """
        if self.process is not None:
            self.process.stop(grace_s)
            if self._temp_log_dir is not None and self.process.returncode in (0, -signal.SIGTERM, None):
                shutil.rmtree(self._temp_log_dir, ignore_errors=True)
                self._temp_log_dir = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
