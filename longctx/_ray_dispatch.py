"""Shards of a sweep on Ray: ``longctx sweep --ray [ADDRESS]``.

Part of the dispatch (where samples run). :class:`RayShards` looks to
:func:`longctx._dispatch.dispatch` like one entered runner: it splits the samples it is given into
shards, runs each shard in a Ray actor that builds the sweep's runner in-process from the same
class, :class:`~longctx.RunnerConfig` and options (an in-process runner such as ``oracle`` or
``hope``, or ``vllm`` attached to ``--endpoint`` servers), and yields the generations as the
workers send them back. The driver alone scores them (with the task, as without Ray) and writes
them into the one run folder, so the scores are those of a single-process sweep and each sample is
recorded once.

Exactly once, whatever dies:

* a worker that dies (its process killed, its node lost) is replaced by a new actor (Ray places
  it wherever there is room), which is sent again only the samples of its shard the driver has not
  received; a generation that arrives twice is dropped. The driver replaces actors itself rather
  than letting Ray restart them, so each death is counted once and no call can reach a stale
  incarnation. A shard whose worker dies more than ``restarts`` times stops the sweep with
  :class:`~longctx._errors.EngineGone` (exit code 3; the rerun resumes);
* a driver that dies takes its actors with it (Ray ties them to their owner); the rerun of the same
  command resumes from the run folder like any sweep (the planned samples not yet recorded).

Samples are built by the driver (the plan builds them when taken) and sent in chunks of
``chunk`` samples, at most two chunks ahead per worker, so memory stays bounded on long sweeps;
a worker runs its chunks back to back through its runner. Workers buffer what their runner
yields and the driver long-polls them (no streaming actor methods: those do not work through Ray
Client, ``ray://``). Ray is imported only here, and this module only when ``--ray`` is given.
"""

from __future__ import annotations

import collections
import os
import platform
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from longctx._errors import EngineGone, LongctxError
from longctx._protocols import NullProgress, Progress, RunnerConfig
from longctx._records import Generation, Sample
from longctx._store import mixed_conditions

POLL_S = 1.0
"""How long a worker's ``poll`` waits for a first generation before answering with none."""
STOP_S = 30.0
"""How long a stopping worker waits for its runner's in-flight samples before leaving them."""
READY_S = 900.0
"""How long the driver waits for the workers to start (a cluster may need to add nodes)."""


@dataclass
class RaySettings:
    """Where and how wide a sweep runs on Ray (``--ray``, ``--ray-shards``)."""

    address: str = "local"
    """``local`` (a Ray instance started for this sweep), ``auto`` (the cluster this machine is
    part of), ``ray://HOST:PORT`` (Ray Client) or a GCS address ``HOST:PORT``."""
    shards: int | None = None
    """Shards, one Ray actor each; default: as many as the cluster's CPUs (with ``num_gpus``: its
    GPUs) hold, at most one per sample."""
    restarts: int = 3
    """Times one shard's worker may die and be replaced before the sweep stops."""
    num_cpus: float = 1.0
    """CPUs each worker reserves (Ray sets its threads to match)."""
    num_gpus: float = 0.0
    """GPUs each worker reserves (an in-process runner on GPU nodes: 1)."""
    chunk: int | None = None
    """Samples sent to a worker at once; default 8 x ``--concurrency``, at least 16."""


def split_shards(todo: Sequence[Sample], n: int) -> list[list[int]]:
    """Positions in ``todo`` in at most ``n`` shards of about equal context budget.

    Samples sharing a haystack prefix (same task and prefix group) stay together, in the order
    given, so a worker's server finds the prefix cached; a group heavier than one shard's share
    (RULER's noise haystack makes a whole task one group) is cut into consecutive pieces. Nothing is
    built: a plan's todo gives its keys (``entries``), a plain list its samples."""
    entries = getattr(todo, "entries", None)
    if entries is not None:
        keys = [(task.name, key.prefix_group or key.id, max(1, key.length)) for key, task in entries]
    else:
        keys = [(s.task, str(s.metadata.get("prefix_group") or s.id), max(1, s.length)) for s in todo]
    if not keys:
        return []
    share = -(-sum(w for _, _, w in keys) // max(1, n))  # ceil(total / n)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (task, group, _) in enumerate(keys):
        groups.setdefault((task, group), []).append(i)
    pieces: list[list[int]] = []
    for members in groups.values():
        piece: list[int] = []
        weight = 0
        for i in members:
            if piece and weight + keys[i][2] > share:
                pieces.append(piece)
                piece, weight = [], 0
            piece.append(i)
            weight += keys[i][2]
        pieces.append(piece)
    n = max(1, min(n, len(pieces)))
    load = [0] * n
    shards: list[list[int]] = [[] for _ in range(n)]
    for piece in sorted(pieces, key=lambda p: -sum(keys[i][2] for i in p)):  # heaviest onto the lightest
        k = min(range(n), key=lambda j: load[j])
        load[k] += sum(keys[i][2] for i in piece)
        shards[k] += piece
    return [sorted(shard) for shard in shards if shard]


class ShardWorker:
    """The body of one Ray actor: the sweep's runner, built and entered in this process on first
    use, running the chunks it is given back to back in a thread; :meth:`poll` hands over what it
    yielded."""

    def __init__(self, factory: type, config: RunnerConfig, options: Any, shard: int):
        self._factory, self._config, self._options, self._shard = factory, config, options, shard
        self._runner: Any = None
        self._cond = threading.Condition()
        self._chunks: collections.deque[list[Sample]] = collections.deque()
        self._buffer: list[Generation] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ensure_runner(self) -> Any:
        if self._runner is None:
            runner = self._factory(config=self._config, options=self._options, progress=NullProgress())
            runner.__enter__()
            self._runner = runner
        return self._runner

    def describe(self) -> dict[str, Any]:
        """The entered runner's identity and conditions, and where this worker runs."""
        import ray

        runner = self._ensure_runner()
        conditions = getattr(runner, "conditions", None)
        return {
            "identity": runner.identity(),
            "conditions": dict(conditions()) if callable(conditions) else {},
            "host": platform.node(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }

    def add(self, samples: list[Sample]) -> None:
        """Queue ``samples`` after the chunks already given (a runner that cannot be built raises
        here and in the next :meth:`poll`)."""
        try:
            runner = self._ensure_runner()
        except BaseException as exc:
            with self._cond:
                self._error = exc
            raise
        with self._cond:
            self._chunks.append(samples)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, args=(runner,), daemon=True)
                self._thread.start()

    def _run(self, runner: Any) -> None:
        import ray

        where = {"shard": self._shard, "node_ip": ray.util.get_node_ip_address()}
        while not self._stop.is_set():
            with self._cond:
                if not self._chunks:
                    self._thread = None
                    self._cond.notify_all()
                    return
                chunk = self._chunks.popleft()
            generations = iter(runner.generate(chunk))
            try:
                for gen in generations:
                    gen.extra = {**gen.extra, "ray": where}
                    with self._cond:
                        self._buffer.append(gen)
                        self._cond.notify_all()
                    if self._stop.is_set():
                        break
            except BaseException as exc:  # handed to the driver by poll()
                with self._cond:
                    self._error = exc
                    self._chunks.clear()
            finally:
                close = getattr(generations, "close", None)
                if close is not None:
                    close()
        with self._cond:
            self._thread = None
            self._cond.notify_all()

    def poll(self, wait_s: float = POLL_S) -> tuple[list[Generation], bool]:
        """The generations yielded since the last poll (waiting up to ``wait_s`` for one) and
        whether the worker is idle (every chunk given is done); re-raises what the runner raised."""
        with self._cond:
            self._cond.wait_for(lambda: self._buffer or self._thread is None or self._error, timeout=wait_s)
            out, self._buffer = self._buffer, []
            if not out and self._error is not None:
                error, self._error = self._error, None
                raise error
            return out, self._thread is None and self._error is None

    def reset(self) -> None:
        """Drop the queued chunks and stop the one running (after the driver lost track of us)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(STOP_S)
        with self._cond:
            self._chunks.clear()
            self._buffer, self._error = [], None

    def stop(self) -> None:
        """Stop running and exit the runner (stops an engine it launched)."""
        self.reset()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.__exit__(None, None, None)


@dataclass
class _Shard:
    index: int
    actor: Any
    queue: collections.deque[int] = field(default_factory=collections.deque)
    """Positions in the todo not sent yet."""
    sent: dict[str, Sample] = field(default_factory=dict)
    """Samples sent and not received back yet, in the order sent."""
    adds: int = 0
    """Chunks sent so far (a poll answered idle after the last one means the worker is done)."""
    deaths: int = 0


class RayShards:
    """The sweep's runner on Ray workers, one per shard; used like an entered runner."""

    name = "ray"

    def __init__(self, factory: type, config: RunnerConfig, options: Any, settings: RaySettings,
                 samples: int, progress: Progress | None = None):
        self.factory, self.config, self.options, self.settings = factory, config, options, settings
        self.samples = samples
        """Samples this invocation will run (no more shards than that)."""
        self.chunk = settings.chunk or max(16, 8 * config.concurrency)
        self.progress = progress or NullProgress()
        self._ray: Any = None
        self._started_ray = False
        self._shards: list[_Shard] = []
        self._workers: list[dict[str, Any]] = []
        self._cluster: dict[str, Any] = {}
        self._deaths = 0
        self._actor_cls: Any = None

    # ---- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> RayShards:
        try:
            import ray
        except ImportError:
            raise LongctxError("--ray needs Ray: pip install 'longctx[ray]'") from None
        self._ray = ray
        self._connect()
        try:
            self._start_workers()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _connect(self) -> None:
        ray, address = self._ray, self.settings.address
        if ray.is_initialized():  # a caller (a notebook, a test) connected already: use it as it is
            self._cluster["address"] = "(connected by the caller)"
        elif address == "local":
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            cpus = max(os.cpu_count() or 1, self.settings.shards or 0)
            ctx = ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                           logging_level="WARNING")
            self._started_ray = True
            self._cluster.update(address="local", session_dir=ctx.address_info.get("session_dir"))
        else:
            kwargs: dict[str, Any] = {"logging_level": "WARNING"}
            if not address.startswith("ray://"):
                kwargs["log_to_driver"] = False
            try:
                ctx = ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LongctxError(f"--ray {address}: cannot connect to the Ray cluster ({first})") from None
            self._started_ray = True  # our connection (the cluster stays up)
            info = getattr(ctx, "address_info", None) or {}
            self._cluster.update(address=address, session_dir=info.get("session_dir"))
        resources = ray.cluster_resources()
        self._cluster.update(
            ray_version=ray.__version__, nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
            cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0),
        )

    def _start_workers(self) -> None:
        ray, s = self._ray, self.settings
        if s.num_gpus:  # as many workers as the cluster's GPUs hold, else as its CPUs
            n = s.shards or int(self._cluster["gpus"] // s.num_gpus)
        else:
            n = s.shards or int(self._cluster["cpus"] // s.num_cpus if s.num_cpus else self._cluster["cpus"])
        n = max(1, min(n, self.samples))
        self._actor_cls = ray.remote(ShardWorker).options(
            num_cpus=s.num_cpus, num_gpus=s.num_gpus, max_restarts=0, max_task_retries=0,
        )
        self.progress.log(f"ray: starting {n} workers ({self._cluster['nodes']} nodes, "
                          f"{self._cluster['cpus']:g} CPUs, {self._cluster['gpus']:g} GPUs)")
        self._shards = [_Shard(i, self._new_actor(i)) for i in range(n)]
        refs = [sh.actor.describe.remote() for sh in self._shards]
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=READY_S)
        if waiting:
            raise EngineGone(f"ray: {len(waiting)} of {n} workers did not start within {READY_S:g} s "
                             f"(the cluster has {self._cluster['cpus']:g} CPUs, {self._cluster['gpus']:g} "
                             "GPUs); fewer --ray-shards, or add nodes")
        self._workers = [self._get(ref) for ref in refs]
        for i, worker in enumerate(self._workers[1:], 1):
            self._check_alike(i, worker)

    def _new_actor(self, shard: int) -> Any:
        return self._actor_cls.remote(self.factory, self.config, self.options, shard)

    def _check_alike(self, i: int, worker: dict[str, Any]) -> None:
        """Refuse worker ``i`` when its runner would run under other conditions than worker 0's."""
        first = self._workers[0]["conditions"]
        diff = mixed_conditions([first], worker["conditions"]) or mixed_conditions([worker["conditions"]], first)
        if diff:
            raise LongctxError(f"ray: workers 0 and {i} ({worker['host']}) would run under different "
                               f"conditions ({'; '.join(diff)}); install the same versions on every node")

    def __exit__(self, *exc: object) -> None:
        ray = self._ray
        if ray is None:
            return
        stops = []
        for sh in self._shards:
            try:
                stops.append(sh.actor.stop.remote())
            except Exception:  # noqa: BLE001 - a dead actor: nothing to stop
                pass
        if stops:
            ray.wait(stops, num_returns=len(stops), timeout=STOP_S + 10)
        for sh in self._shards:
            try:
                ray.kill(sh.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self._shards = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # ---- what the sweep asks of a runner ---------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The model identity the first worker's runner reports."""
        return self._workers[0]["identity"] if self._workers else {}

    def conditions(self) -> dict[str, Any]:
        """The conditions of the workers' runners (checked equal when they started)."""
        return dict(self._workers[0]["conditions"]) if self._workers else {}

    def placement(self) -> dict[str, Any]:
        """Where this session ran, for its session record: the Ray cluster, the shards and the
        worker of each (host, node, pid, the servers its runner used), and how many times workers
        died and were replaced."""
        workers = [{**{k: w[k] for k in ("host", "node_ip", "pid")},
                    **({"servers": w["conditions"]["servers"]} if w["conditions"].get("servers") else {})}
                   for w in self._workers]  # the servers each worker's runner sends to (or launched)
        return {"ray": {**self._cluster, "shards": len(workers), "chunk": self.chunk, "workers": workers,
                        "worker_deaths": self._deaths}}

    def generate(self, todo: Sequence[Sample]) -> Iterator[Generation]:
        """Generations for ``todo``, yielded as the workers send them (each sample once)."""
        ray = self._ray
        polls: dict[Any, tuple[_Shard, int]] = {}  # poll ref -> shard, chunks sent when polled
        for sh, positions in zip(self._shards, split_shards(todo, len(self._shards))):
            sh.queue = collections.deque(positions)
            self._feed(sh, todo, ahead=2)
            polls[sh.actor.poll.remote()] = (sh, sh.adds)
        while polls:
            ready, _ = ray.wait(list(polls), num_returns=1)
            for ref in ready:
                sh, adds = polls.pop(ref)
                try:
                    gens, idle = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the runner raised: as without Ray
                    raise _cause(exc) from None
                except _died(ray) as exc:
                    self._restart(sh, exc)
                    self._feed(sh, todo, ahead=1)
                    polls[sh.actor.poll.remote()] = (sh, sh.adds)
                    continue
                for gen in gens:
                    if sh.sent.pop(gen.sample_id, None) is not None:
                        yield gen
                    # else: already received (a restarted worker's duplicate): dropped
                if len(sh.sent) <= self.chunk:  # the worker is on its last chunk: send the next
                    self._feed(sh, todo, ahead=1)
                if idle and adds == sh.adds and sh.sent:
                    raise RuntimeError(f"ray shard {sh.index}: the runner ended without answering "
                                       f"{len(sh.sent)} samples (e.g. {next(iter(sh.sent))})")
                if sh.sent or sh.queue:
                    polls[sh.actor.poll.remote()] = (sh, sh.adds)

    def _feed(self, sh: _Shard, todo: Sequence[Sample], ahead: int) -> None:
        """Send ``sh`` up to ``ahead`` more chunks of its queue (built now)."""
        for _ in range(ahead):
            if not sh.queue:
                return
            chunk = [todo[sh.queue.popleft()] for _ in range(min(self.chunk, len(sh.queue)))]
            sh.sent.update((s.id, s) for s in chunk)
            sh.actor.add.remote(chunk)
            sh.adds += 1

    def _restart(self, sh: _Shard, exc: BaseException) -> None:
        """After ``sh``'s worker died: count it, start a new worker for the shard (its runner built
        before going on) and send it the shard's samples the driver has not received."""
        ray = self._ray
        while True:
            sh.deaths += 1
            self._deaths += 1
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if sh.deaths > self.settings.restarts:
                raise EngineGone(f"ray shard {sh.index}: its worker died {sh.deaths} times (last: {reason}); "
                                 f"its {len(sh.sent) + len(sh.queue)} unrecorded samples stay pending, "
                                 "rerun to resume")
            self.progress.log(f"ray shard {sh.index}: worker died ({reason}); starting a new one for its "
                              f"{len(sh.sent) + len(sh.queue)} unrecorded samples")
            try:
                ray.kill(sh.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - gone already
                pass
            sh.actor = self._new_actor(sh.index)
            try:
                worker = ray.get(sh.actor.describe.remote())
            except ray.exceptions.RayTaskError as err:  # its runner cannot be built (any more)
                raise _cause(err) from None
            except _died(ray) as err:
                exc = err
                continue
            self._check_alike(sh.index, worker)
            self._workers[sh.index] = worker
            break
        resend = list(sh.sent.values())
        for start in range(0, len(resend), self.chunk):
            sh.actor.add.remote(resend[start:start + self.chunk])
            sh.adds += 1

    def _get(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise _cause(exc) from None
        except _died(ray) as exc:
            first = str(exc).strip().splitlines()[0]
            raise EngineGone(f"ray: a worker died while starting ({first})") from None


def _died(ray: Any) -> tuple[type[BaseException], ...]:
    """What Ray raises for a call whose worker is gone: the actor died or cannot be reached, its
    process crashed, Ray's memory monitor killed it (the node ran low on memory), its node died."""
    errors = ray.exceptions
    return (errors.RayActorError, errors.WorkerCrashedError, errors.ObjectLostError,
            errors.OutOfMemoryError, errors.NodeDiedError)


def _cause(exc: Any) -> BaseException:
    """What a worker's runner raised (a LongctxError, EngineGone, ...), as the driver raises it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
