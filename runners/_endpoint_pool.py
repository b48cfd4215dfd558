"""Several OpenAI-compatible servers behind one stream of samples: spreading, prefix affinity,
per-server limits, failover and health checks.

Used by the ``vllm`` runner (``--endpoint`` given several times, ``-R replicas=N``, and one server
too) through :func:`generate_pooled`; :func:`longctx.runners._openai_client.generate_all` is the
one-server, plain-order case.

Scheduling (:class:`Scheduler`, plain Python, no I/O):

* Each server takes at most ``concurrency`` requests and, with ``max_tokens_in_flight``, at most
  that many prompt tokens at once (a prompt larger than the cap still runs, alone).
* Samples sharing a haystack prefix (same task and ``Sample.metadata["prefix_group"]``, which
  :func:`longctx._plan.order_for_prefix_cache` puts back to back) form a group. A group prefers
  one server, chosen by rendezvous hashing of the group over the servers (stable across runs,
  processes and Ray workers, and only the groups of a server that leaves move). A server that has
  nothing of its own takes work from other groups rather than idle (a large group ends up on
  several servers; each computes the shared prefix once).
* With ``prefix_scheduler`` (default for the runner): on each server a group's first request
  runs alone (the *leader*); the rest of the group is sent there only once the leader finished and
  its prefix is in that server's cache. The server's other slots take leaders of other groups
  meanwhile. Without it, samples go out in the order given, as one server's plain client does
  (with ``concurrency > 1`` the requests of one group then prefill the same prefix side by side).

Failures (:class:`PoolRun`): a server is *taken out* when its process is gone (``alive()``),
``gone_after`` connection failures in a row (refused, reset, dropped; over all its requests), one
request failed to connect on every attempt, or after repeated HTTP 5xx / a timeout its ``/health``
does not answer OK. Its requests in flight are cancelled and go back to the queue for the other
servers: a server's failure never becomes a sample's error. A server taken out is probed
(``/health``, else ``/v1/models``) every ``probe_s`` seconds and put back when it answers (unless
its process is gone). When every server is out, the run raises
:class:`~longctx._errors.EngineGone` (what was in flight stays pending). Every generation names
the server that answered it in ``extra["server"]`` (and ``extra["moved_from"]`` lists servers
that failed while holding it).
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from longctx.runners._openai_client import (
    AsyncOpenAIClient,
    ClientConfig,
    RequestSpec,
    is_local,
    one_line,
    parse_generation,
    request_body,
    server_root,
)

from longctx._errors import EngineGone
from longctx._records import Generation, Sample


@dataclass(frozen=True)
class PoolPolicy:
    """How requests are spread (the same limits for every server)."""

    concurrency: int = 4
    """Requests in flight per server."""
    max_tokens_in_flight: int | None = None
    """Prompt tokens in flight per server (None: no cap). A larger prompt runs alone."""
    prefix_scheduler: bool = False
    """Send a group's first request alone to a server and the rest of the group after it."""
    probe_s: float = 15.0
    """Seconds between health checks of a server that was taken out."""
    lookahead: int | None = None
    """Samples read ahead of the ones in flight (to find work for each server); default
    ``max(64, 8 * servers * concurrency)``."""


@dataclass
class PoolServer:
    """One server of the pool, as given."""

    config: ClientConfig
    """How to reach it (and retry it)."""
    alive: Callable[[], bool] | None = None
    """False once its engine is gone for good (a launched process that exited); None: unknown."""
    up: bool = True
    """False to start it taken out (unreachable when the run began); it is probed like the rest."""
    down_reason: str = ""
    """Why it starts taken out."""

    @property
    def name(self) -> str:
        """What records name it by: its API base URL."""
        return self.config.base_url


@dataclass
class ServerState:
    """A server while the pool runs."""

    index: int
    spec: PoolServer
    up: bool = True
    in_flight: int = 0
    tokens: int = 0
    connection_failures: int = 0
    """Connection failures in a row (any answer resets it)."""
    server_errors: int = 0
    """HTTP 5xx answers in a row (any other answer resets it)."""
    down_reason: str = ""
    next_probe: float = 0.0
    probing: bool = False
    warm: set[Any] = field(default_factory=set)
    """Groups whose leader finished here (their prefix is in this server's cache)."""
    leading: set[Any] = field(default_factory=set)
    """Groups whose leader is in flight here."""

    @property
    def name(self) -> str:
        return self.spec.name


def group_key(sample: Sample) -> tuple[str, str] | None:
    """The prefix group of ``sample`` (task, ``metadata["prefix_group"]``), None when it shares none."""
    group = sample.metadata.get("prefix_group") if sample.metadata else None
    return None if group in (None, "") else (sample.task, str(group))


def rendezvous_rank(key: Any, names: Sequence[str]) -> list[int]:
    """Indices of ``names`` by rendezvous (highest-random-weight) score for ``key``, best first."""
    def score(name: str) -> bytes:
        return hashlib.blake2b(f"{key!r}\x00{name}".encode(), digest_size=8).digest()

    return sorted(range(len(names)), key=lambda i: score(names[i]), reverse=True)


def prompt_cost(sample: Sample) -> int:
    """Prompt tokens of ``sample`` as the token cap counts them."""
    if sample.context_tokens:
        return int(sample.context_tokens)
    ids = sample.prompt.token_ids
    return len(ids) if ids is not None else len(sample.prompt.text.split())


@dataclass
class _Group:
    key: Any
    shared: bool
    """False for a sample without a prefix group (a group of its own)."""
    rank: list[int]
    samples: deque[Sample] = field(default_factory=deque)
    started_on: set[int] = field(default_factory=set)


class Scheduler:
    """Which sample each server sends next (see the module docstring). Not thread-safe; no I/O."""

    def __init__(self, samples: Iterable[Sample], servers: Sequence[ServerState], policy: PoolPolicy):
        self.servers = list(servers)
        self.policy = policy
        self._source: Iterator[Sample] = iter(samples)
        self._exhausted = False
        self._groups: OrderedDict[Any, _Group] = OrderedDict()
        self._buffered = 0
        slots = len(self.servers) * max(1, policy.concurrency)
        self.lookahead = policy.lookahead or max(64, 8 * slots)
        self._names = [s.name for s in self.servers]

    # ---- the queue ----------------------------------------------------------------------------
    def _group_of(self, sample: Sample, front: bool = False) -> _Group:
        key = group_key(sample)
        shared = key is not None
        if key is None:
            key = ("", sample.id)
        group = self._groups.get(key)
        if group is None:
            group = _Group(key, shared, rendezvous_rank(key, self._names))
            self._groups[key] = group
        if front:
            self._groups.move_to_end(key, last=False)
        return group

    def _fill(self) -> None:
        while not self._exhausted and self._buffered < self.lookahead:
            try:
                sample = next(self._source)
            except StopIteration:
                self._exhausted = True
                break
            self._group_of(sample).samples.append(sample)
            self._buffered += 1

    def requeue(self, sample: Sample) -> None:
        """Put ``sample`` back at the front (its server failed while holding it)."""
        self._group_of(sample, front=True).samples.appendleft(sample)
        self._buffered += 1

    def empty(self) -> bool:
        """True when no sample waits (in flight ones aside)."""
        self._fill()
        return self._exhausted and self._buffered == 0

    # ---- choosing -----------------------------------------------------------------------------
    def _preferred(self, group: _Group) -> int | None:
        """The best-ranked server that is up (where the group goes when nothing else decides)."""
        return next((i for i in group.rank if self.servers[i].up), None)

    def _fits(self, server: ServerState, sample: Sample) -> bool:
        cap = self.policy.max_tokens_in_flight
        return cap is None or server.in_flight == 0 or server.tokens + prompt_cost(sample) <= cap

    def _may_send(self, server: ServerState, group: _Group) -> bool:
        """False while the group's leader is in flight on ``server`` (prefix scheduler)."""
        if not self.policy.prefix_scheduler or not group.shared:
            return True
        return group.key not in server.leading

    def _candidate(self, server: ServerState) -> _Group | None:
        groups = [g for g in self._groups.values() if g.samples]
        if not self.policy.prefix_scheduler:
            # the order given; a server takes its own groups first, then anything
            for group in groups:
                if server.index in group.started_on or (
                    not group.started_on and self._preferred(group) == server.index
                ):
                    return group
            return groups[0] if groups else None
        mine = [g for g in groups if self._may_send(server, g)]
        for group in mine:  # 1. groups whose prefix this server already holds
            if group.shared and group.key in server.warm:
                return group
        for group in mine:  # 2. groups nobody started that prefer this server
            if not group.started_on and self._preferred(group) == server.index:
                return group
        for group in mine:  # 3. rather than idle: a group started elsewhere, or preferring another
            return group
        return None

    def take(self, server: ServerState) -> Sample | None:
        """The next sample for ``server`` (counted in flight there), or None: nothing it may send."""
        if not server.up or server.in_flight >= max(1, self.policy.concurrency):
            return None
        self._fill()
        group = self._candidate(server)
        if group is None or not self._fits(server, group.samples[0]):
            return None
        sample = group.samples.popleft()
        self._buffered -= 1
        if not group.samples:
            del self._groups[group.key]
        group.started_on.add(server.index)
        if self.policy.prefix_scheduler and group.shared and group.key not in server.warm:
            server.leading.add(group.key)
        server.in_flight += 1
        server.tokens += prompt_cost(sample)
        self._fill()
        return sample

    def release(self, server: ServerState, sample: Sample, answered: bool) -> None:
        """``sample`` left ``server`` (``answered``: its prefix is now in the server's cache)."""
        server.in_flight -= 1
        server.tokens -= prompt_cost(sample)
        key = group_key(sample)
        if key is not None and key in server.leading:
            server.leading.discard(key)
            if answered:
                server.warm.add(key)
        elif key is not None and answered:
            server.warm.add(key)


_REQUEUE = object()


class PoolRun:
    """One pass of ``samples`` over the pool; ``emit`` gets each generation as it finishes."""

    def __init__(self, servers: Sequence[PoolServer], samples: Iterable[Sample], spec: RequestSpec,
                 policy: PoolPolicy, emit: Callable[[Generation], None]):
        if not servers:
            raise ValueError("an endpoint pool needs at least one server")
        self.states = [ServerState(i, s, up=s.up, down_reason=s.down_reason) for i, s in enumerate(servers)]
        now = time.monotonic()
        for state in self.states:
            state.next_probe = now + policy.probe_s
        self.spec = spec
        self.policy = policy
        self.emit = emit
        self.scheduler = Scheduler(samples, self.states, policy)
        self._clients: list[AsyncOpenAIClient] = []
        self._tasks: dict[asyncio.Task[Any], tuple[ServerState, Sample]] = {}
        self._probes: dict[asyncio.Task[bool], ServerState] = {}
        self._moved: dict[str, list[str]] = {}

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        workers = max(1, self.policy.concurrency)
        self._clients = [AsyncOpenAIClient(s.spec.config, max_connections=workers + 1, engine_alive=s.spec.alive)
                         for s in self.states]
        try:
            while True:
                self._dispatch()
                if not self._tasks and self.scheduler.empty():
                    return
                if not any(s.up for s in self.states):
                    raise EngineGone(self._all_gone())
                self._start_probes()
                waiting = set(self._tasks) | set(self._probes)
                timeout = self._until_next_probe()
                if not waiting:  # cannot happen while a server is up; never spin
                    await asyncio.sleep(min(timeout or 0.1, 0.1))
                    continue
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in self._probes:
                        self._probed(task)
                    else:
                        self._finished(task)
        finally:
            pending = [*self._tasks, *self._probes]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for client in self._clients:
                await client.__aexit__()

    def _dispatch(self) -> None:
        progress = True
        while progress:  # round robin, one request per server per round: spreads a burst evenly
            progress = False
            for state in self.states:
                sample = self.scheduler.take(state)
                if sample is not None:
                    task = asyncio.ensure_future(self._serve(state, sample))
                    self._tasks[task] = (state, sample)
                    progress = True

    def _finished(self, task: asyncio.Task[Any]) -> None:
        state, sample = self._tasks.pop(task)
        if task.cancelled():  # its server was taken out
            self.scheduler.release(state, sample, answered=False)
            self._requeue(state, sample)
            return
        exc = task.exception()
        if exc is not None:
            self.scheduler.release(state, sample, answered=False)
            raise exc
        outcome = task.result()
        if outcome is _REQUEUE:
            self.scheduler.release(state, sample, answered=False)
            self._requeue(state, sample)
            return
        self.scheduler.release(state, sample, answered=outcome.error is None)
        outcome.extra["server"] = state.name
        if sample.id in self._moved:
            outcome.extra["moved_from"] = self._moved.pop(sample.id)
        self.emit(outcome)

    def _requeue(self, state: ServerState, sample: Sample) -> None:
        self._moved.setdefault(sample.id, []).append(state.name)
        self.scheduler.requeue(sample)

    def _all_gone(self) -> str:
        if len(self.states) == 1:
            return self.states[0].down_reason or f"{self.states[0].name} is gone"
        reasons = "; ".join(f"{s.name}: {s.down_reason or 'gone'}" for s in self.states)
        return f"all {len(self.states)} servers are gone ({reasons})"

    # ---- servers going and coming back -----------------------------------------------------
    def take_out(self, state: ServerState, reason: str) -> None:
        """Mark ``state`` down and cancel its requests in flight (they go to the other servers)."""
        if not state.up:
            return
        state.up, state.down_reason = False, reason
        state.next_probe = time.monotonic() + self.policy.probe_s
        state.warm.clear()
        current = asyncio.current_task()
        for task, (owner, _) in self._tasks.items():
            if owner is state and task is not current:
                task.cancel()

    def _gone_for_good(self, state: ServerState) -> bool:
        alive = state.spec.alive
        return alive is not None and not alive()

    def _start_probes(self) -> None:
        now = time.monotonic()
        for state in self.states:
            if not state.up and not state.probing and now >= state.next_probe and not self._gone_for_good(state):
                state.probing = True
                self._probes[asyncio.ensure_future(healthy(state.spec.config))] = state

    def _probed(self, task: asyncio.Task[bool]) -> None:
        state = self._probes.pop(task)
        state.probing = False
        ok = not task.cancelled() and task.exception() is None and task.result()
        if ok and not self._gone_for_good(state):
            state.up, state.down_reason = True, ""
            state.connection_failures = state.server_errors = 0
        else:
            state.next_probe = time.monotonic() + self.policy.probe_s

    def _until_next_probe(self) -> float | None:
        due = [s.next_probe for s in self.states if not s.up and not s.probing and not self._gone_for_good(s)]
        return max(0.0, min(due) - time.monotonic()) if due else None

    # ---- one request ------------------------------------------------------------------------------
    async def _serve(self, state: ServerState, sample: Sample) -> Any:
        """``sample``'s generation from ``state``'s server, or ``_REQUEUE`` when the server failed."""
        client = self._clients[state.index]
        cfg = state.spec.config
        if getattr(self.spec, "thinking", None) is not None:  # two requests (``_reasoning``): its own retries
            try:
                return await client.generate(sample, self.spec)
            except EngineGone as exc:
                self.take_out(state, str(exc))
                return _REQUEUE
        start = time.monotonic()
        try:
            path, body = request_body(sample, self.spec)
        except ValueError as exc:  # unknown mode, unencodable body
            return Generation(sample.id, None, error=one_line(str(exc)), latency_s=time.monotonic() - start)
        attempt = connect_failures = 0
        while True:
            got = await client.attempt(path, body)
            if not state.up:  # taken out meanwhile (by another request): this one moves too
                return _REQUEUE
            if got.kind == "ok":
                state.connection_failures = state.server_errors = 0
                markers = (self.spec.think_markers,) if hasattr(self.spec, "think_markers") else ()
                generation = parse_generation(sample.id, self.spec.mode, got.data or {}, got.latency_s, *markers)
                if attempt:
                    generation.extra["attempts"] = attempt + 1
                return generation
            if self._gone_for_good(state):
                self.take_out(state, f"the engine at {cfg.base_url} is gone ({got.problem})")
                return _REQUEUE
            if got.kind == "connection":
                state.connection_failures += 1
                connect_failures += 1
                if state.connection_failures >= cfg.gone_after:
                    self.take_out(state, f"{cfg.base_url} unreachable: {state.connection_failures} connection "
                                         f"failures in a row (last: {got.problem})")
                    return _REQUEUE
                if attempt >= cfg.retries:  # no attempt left: the server, not the sample, failed
                    which = "all" if connect_failures == attempt + 1 else "the last of"
                    self.take_out(state, f"{cfg.base_url} unreachable: a request failed to connect on {which} "
                                         f"{attempt + 1} attempts (last: {got.problem})")
                    return _REQUEUE
            else:
                state.connection_failures = 0
                state.server_errors = state.server_errors + 1 if (got.status or 0) >= 500 else 0
                exhausted = got.kind != "retry" or attempt >= cfg.retries
                suspicious = got.kind == "timeout" or (got.status or 0) >= 500
                if suspicious and (exhausted or state.server_errors >= cfg.gone_after):
                    if not await healthy(cfg):  # the server, not the sample
                        self.take_out(state, f"{cfg.base_url} failed ({got.problem}) and its health check fails")
                        return _REQUEUE
                    state.server_errors = 0
                if exhausted:
                    suffix = f" (after {attempt + 1} attempts)" if attempt and got.kind == "retry" else ""
                    return Generation(sample.id, None, error=got.problem + suffix,
                                      latency_s=time.monotonic() - start)
            await asyncio.sleep(client.backoff(attempt, got.retry_after))
            attempt += 1


async def healthy(config: ClientConfig, timeout_s: float = 10.0) -> bool:
    """True when the server's ``/health`` (vLLM: 503 once its engine is dead) answers 200, or, for
    a server without that route, ``/v1/models`` answers below 500."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, headers=headers,
                                     trust_env=not is_local(config.base_url)) as http:
            response = await http.get(server_root(config.base_url) + "/health")
            if response.status_code == 200 or response.status_code >= 500:
                return response.status_code == 200
            response = await http.get(config.base_url.rstrip("/") + "/models")
            return response.status_code < 500
    except (httpx.HTTPError, OSError):
        return False


_DONE = object()


def generate_pooled(servers: Sequence[PoolServer], samples: Iterable[Sample], spec: RequestSpec,
                    policy: PoolPolicy) -> Iterator[Generation]:
    """Generations for ``samples`` over ``servers``, yielded as they finish.

    The requests run on an event loop in a background thread. Closing the iterator early
    (``break``, Ctrl-C) cancels what is in flight. Raises :class:`EngineGone` (after yielding what
    finished before) when every server is gone.
    """
    results: queue.Queue[Any] = queue.Queue()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        await PoolRun(servers, samples, spec, policy, results.put).run()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # EngineGone or a bug, not a request failure: re-raised in the caller
            results.put(exc)
        finally:
            started.set()
            results.put(_DONE)

    thread = threading.Thread(target=thread_main, name="longctx-endpoint-pool", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        started.wait()
        loop, task = state.get("loop"), state.get("task")
        if thread.is_alive() and loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # loop already closed
                pass
        thread.join(timeout=30)
