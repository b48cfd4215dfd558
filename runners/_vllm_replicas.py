"""``-R replicas=N``: N local vLLM servers for one model, started, health-waited and stopped together.

Each replica is a :class:`~longctx.runners._vllm_server.VLLMServer` on its own port with its own
log (``vllm-server-<i>.log``), placed on its own share of the machine:

* CPU (vLLM's CPU platform): the cores this process may run on (or the user's
  ``VLLM_CPU_OMP_THREADS_BIND`` list) are split into N contiguous shares, one per replica
  (``VLLM_CPU_OMP_THREADS_BIND=0`` and ``=1`` for two replicas on two cores);
* GPU: the visible GPUs (``CUDA_VISIBLE_DEVICES``, else all the probe counts) in groups of
  ``tensor_parallel`` (``--tensor-parallel-size``), one replica per group
  (``CUDA_VISIBLE_DEVICES`` set per replica).

vLLM is probed once; every replica is spawned before any is waited for, so N replicas start in
about the time of one (memory and CPU permitting). A replica that fails to start stops them all;
the error names its log. The replicas are served through the endpoint pool
(:mod:`longctx.runners._endpoint_pool`): one that dies during the run is taken out and its requests
go to the others; the sweep stops only when every replica is gone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from longctx.runners._vllm_server import ServerConfig, VLLMServer, _cpu_list, free_port, probe_vllm

from longctx._errors import EngineGone, LongctxError
from longctx._protocols import NullProgress, Progress


def parse_cpu_list(text: str) -> list[int]:
    """``0-2,5`` -> ``[0, 1, 2, 5]``."""
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus += list(range(int(lo), int(hi or lo) + 1))
    return cpus


def split_cpus(cpus: Sequence[int], n: int) -> list[list[int]]:
    """``cpus`` in ``n`` contiguous shares as even as possible (the first ones get the extra core)."""
    if n > len(cpus):
        raise LongctxError(f"-R replicas={n} needs at least {n} cores; this process may use {len(cpus)}")
    size, extra = divmod(len(cpus), n)
    shares, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        shares.append(list(cpus[start:end]))
        start = end
    return shares


def gpu_groups(devices: Sequence[str], n: int, tensor_parallel: int) -> list[list[str]]:
    """``n`` groups of ``tensor_parallel`` devices from ``devices``, in order."""
    need = n * tensor_parallel
    if need > len(devices):
        raise LongctxError(
            f"-R replicas={n} x tensor_parallel={tensor_parallel} needs {need} GPUs; {len(devices)} visible"
        )
    return [list(devices[i * tensor_parallel:(i + 1) * tensor_parallel]) for i in range(n)]


def placements(device_type: str | None, device_count: int, n: int, tensor_parallel: int,
               environ: dict[str, str]) -> list[dict[str, str]]:
    """The environment each of ``n`` replicas gets (its cores or GPUs)."""
    if device_type == "cpu":
        bound = environ.get("VLLM_CPU_OMP_THREADS_BIND", "")
        if bound and bound != "auto" and "|" not in bound:
            cpus = parse_cpu_list(bound)
        elif hasattr(os, "sched_getaffinity"):
            cpus = sorted(os.sched_getaffinity(0))
        else:
            cpus = list(range(os.cpu_count() or 1))
        return [{"VLLM_CPU_OMP_THREADS_BIND": _cpu_list(set(share))} for share in split_cpus(cpus, n)]
    if device_type in ("cuda", "rocm"):
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else [
            str(i) for i in range(device_count)]
        return [{"CUDA_VISIBLE_DEVICES": ",".join(group)} for group in gpu_groups(devices, n, tensor_parallel)]
    if n > 1:
        raise LongctxError(f"-R replicas={n}: placing replicas on {device_type!r} devices is not supported")
    return [{}]


class ReplicaSet:
    """N vLLM servers for one model folder. ``start()`` / ``stop()``; ``servers`` once started."""

    def __init__(self, config: ServerConfig, replicas: int, tensor_parallel: int | None = None,
                 progress: Progress | None = None):
        if replicas < 1:
            raise LongctxError("-R replicas must be at least 1")
        if tensor_parallel is not None and tensor_parallel < 1:
            raise LongctxError("-R tensor_parallel must be at least 1")
        self.config = config
        self.replicas = replicas
        self.tensor_parallel = tensor_parallel or 1
        self.progress = progress or NullProgress()
        self.servers: list[VLLMServer] = []

    def start(self) -> ReplicaSet:
        """Probe vLLM once, spawn every replica, then wait for all of them to be healthy."""
        cfg = self.config
        self.progress.start("checking vLLM")
        try:
            info = probe_vllm(cfg.python)
        finally:
            self.progress.done()
        envs = placements(info.get("device_type"), int(info.get("device_count") or 0), self.replicas,
                          self.tensor_parallel, dict(os.environ))
        ports: set[int] = set()
        try:
            for i, env in enumerate(envs):
                port = cfg.port + i if cfg.port else free_port(cfg.host)
                while port in ports:
                    port = free_port(cfg.host)
                ports.add(port)
                server = VLLMServer(replace(cfg, port=port, env={**cfg.env, **env}, log_name=f"vllm-server-{i}.log",
                                            tensor_parallel=self.tensor_parallel if self.tensor_parallel > 1 else None),
                                    self.progress)
                server.spawn(*server.prepare(info))
                self.servers.append(server)
            for server in self.servers:
                server.wait_healthy()
                server.started()
        except BaseException:  # a replica failed to start, or Ctrl-C: stop them all (logs are kept)
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop every replica at once (SIGTERM to each group, SIGKILL after ``grace_s``)."""
        if not self.servers:
            return
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            list(pool.map(lambda s: s.stop(grace_s), self.servers))

    def failure(self, cause: EngineGone) -> EngineGone:
        """EngineGone naming each replica's fate and log (every replica is gone)."""
        parts = []
        for i, server in enumerate(self.servers):
            code = server.process.returncode if server.process else None
            fate = f"exited (code {code})" if code is not None else "stopped answering"
            log = server.process.log_path if server.process else None
            parts.append(f"replica {i} (port {server.port}) {fate}, log {log}")
        return EngineGone(f"all {len(self.servers)} vLLM replicas are gone: " + "; ".join(parts) + f" ({cause})")
