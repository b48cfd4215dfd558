"""An async client for OpenAI-compatible servers: bounded concurrency, retries, timeouts.

Used by the ``vllm`` runner (launched or attached servers) and reusable by any runner that talks to
an OpenAI-compatible endpoint. Plain ``httpx`` (no ``openai`` package).

Rules:

* Samples are *submitted in the order given* (a fixed pool of ``concurrency`` workers pulls from one
  iterator), so samples the sweep ordered to share a haystack prefix reach the server back to back
  and hit its prefix cache. With ``concurrency > 1`` they *finish* in any order.
* Transient failures (connection errors, HTTP 429, HTTP 5xx) are retried with exponential backoff
  (``backoff_s * 2**attempt``, jittered, capped; a 429's ``Retry-After`` is honoured). Other HTTP
  errors (400: prompt longer than the context, ...) and timeouts are not retried: a request that
  ran for ``timeout_s`` would most likely time out again.
* One bad request never raises: it becomes a :class:`Generation` with a one-line ``error`` and
  ``prediction=None``.
* A connection failure (refused, reset, closed without a response, connect timeout) is a failure
  of the engine, not of the sample: it is never turned into a ``Generation``. Once the engine is
  gone - ``engine_alive()`` says so, ``gone_after`` attempts in a row (over all requests in
  flight) failed to connect, or one request failed to connect on every attempt - the whole run
  raises :class:`~longctx._errors.EngineGone` and what was in flight is dropped (it stays pending).
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from longctx._errors import EngineGone, RunnerError
from longctx._records import Generation, Sample


@dataclass(frozen=True)
class ClientConfig:
    """How to reach an OpenAI-compatible server and how hard to try."""

    base_url: str
    """API base including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer``; None sends no header."""
    timeout_s: float = 600.0
    """Wall-time limit of one attempt, seconds."""
    retries: int = 3
    """Extra attempts after a transient failure."""
    backoff_s: float = 1.0
    """First backoff delay; doubles per attempt."""
    max_backoff_s: float = 60.0
    """Cap on one backoff delay (also on a server's ``Retry-After``)."""
    gone_after: int = 8
    """Connection failures in a row (attempts over all requests in flight, none answered in
    between) after which the engine counts as gone."""


@dataclass(frozen=True)
class RequestSpec:
    """What to ask the server for each sample (everything but the sample itself)."""

    model: str
    """The served model name (``model`` field of the request)."""
    mode: str = "completions"
    """``completions``: POST /completions with token ids or text; ``chat``: /chat/completions."""
    seed: int = 42
    """Sampling seed (decoding is greedy: temperature 0)."""
    extra_body: tuple[tuple[str, Any], ...] = ()
    """Engine-specific fields added to every request body (e.g. vLLM's ``add_special_tokens``)."""


class RequestFailed(RunnerError):
    """A request that failed for good; the message is one line."""


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def normalise_base_url(endpoint: str) -> str:
    """``endpoint`` as an API base ending in ``/v1`` (``http://host:port`` gets ``/v1`` appended)."""
    url = endpoint.rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


def is_local(url: str) -> bool:
    """True for loopback URLs: those bypass HTTP proxies from the environment (``http_proxy``)."""
    return httpx.URL(url).host in ("127.0.0.1", "localhost", "::1")


def server_root(base_url: str) -> str:
    """The server root of an API base (``.../v1`` stripped): where vLLM serves /tokenize, /health."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def request_body(sample: Sample, spec: RequestSpec) -> tuple[str, dict[str, Any]]:
    """The path and JSON body asking for ``sample``'s generation.

    Completions mode sends ``prompt.token_ids`` when present (exact prompt, no re-tokenization; vLLM
    accepts a list of ints) else ``prompt.text``. Chat mode sends ``prompt.messages``.
    """
    body: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": sample.max_new_tokens,
        "temperature": 0.0,
        "seed": spec.seed,
    }
    if spec.mode == "chat":
        path = "/chat/completions"
        body["messages"] = [{"role": m.role, "content": m.content} for m in sample.prompt.messages]
    elif spec.mode == "completions":
        path = "/completions"
        ids = sample.prompt.token_ids
        body["prompt"] = list(ids) if ids is not None else sample.prompt.text
    else:
        raise ValueError(f"unknown request mode {spec.mode!r} (completions or chat)")
    body.update(dict(spec.extra_body))
    return path, body


def parse_generation(sample_id: str, mode: str, data: dict[str, Any], latency_s: float) -> Generation:
    """A :class:`Generation` from a (chat) completion response body."""
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if mode == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        return Generation(
            sample_id, None, error=f"malformed response: {one_line(repr(data), 200)}", latency_s=latency_s
        )
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    extra = {"finish_reason": choice.get("finish_reason")} if choice.get("finish_reason") else {}
    return Generation(
        sample_id,
        text if text is not None else "",
        latency_s=latency_s,
        prompt_tokens=usage.get("prompt_tokens"),
        cached_tokens=details.get("cached_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        extra=extra,
    )


def _error_detail(response: httpx.Response) -> str:
    """The server's error message (OpenAI ``{"error": {"message"}}`` or vLLM's variants)."""
    try:
        data = response.json()
    except ValueError:
        return one_line(response.text or response.reason_phrase, 200)
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and err.get("message"):
            return one_line(err["message"], 200)
        if isinstance(err, str):
            return one_line(err, 200)
        if data.get("message") or data.get("detail"):
            return one_line(str(data.get("message") or data.get("detail")), 200)
    return one_line(response.text, 200)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class AsyncOpenAIClient:
    """An ``httpx.AsyncClient`` with retries, backoff and per-attempt timeouts. Use ``async with``."""

    def __init__(
        self,
        config: ClientConfig,
        max_connections: int = 16,
        engine_alive: Callable[[], bool] | None = None,
    ):
        self.config = config
        self.engine_alive = engine_alive
        self.connection_failures = 0
        """Connection failures since the server last answered (any HTTP status resets it)."""
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            trust_env=not is_local(config.base_url),
        )

    async def __aenter__(self) -> AsyncOpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
        """POST ``body``; returns (response JSON, latency of the successful attempt, attempts).

        Raises :class:`RequestFailed` (one-line message) when the request fails for good, and
        :class:`EngineGone` when the server cannot be reached any more.
        """
        cfg = self.config
        attempt = 0
        while True:
            start = time.monotonic()
            retry_after: float | None = None
            connection_lost = False
            try:
                response = await asyncio.wait_for(self._http.post(path, json=body), cfg.timeout_s)
            except httpx.ConnectTimeout:
                problem, connection_lost = "connect timeout", True
            except (asyncio.TimeoutError, httpx.TimeoutException):
                raise RequestFailed(f"timeout after {cfg.timeout_s:g} s") from None
            except httpx.TransportError as exc:  # refused, reset, closed without a response
                problem = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 160)
                connection_lost = True
            else:
                self.connection_failures = 0
                latency = time.monotonic() - start
                status = response.status_code
                if status < 400:
                    try:
                        return response.json(), latency, attempt + 1
                    except ValueError:
                        raise RequestFailed(f"non-JSON response: {one_line(response.text, 160)}") from None
                problem = f"HTTP {status}: {_error_detail(response)}"
                if status != 429 and status < 500:
                    raise RequestFailed(problem)
                retry_after = _retry_after(response) if status == 429 else None
            if connection_lost:
                self.connection_failures += 1
            self._check_engine(problem, connection_lost, attempt)
            if attempt >= cfg.retries:
                suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                raise RequestFailed(problem + suffix)
            delay = cfg.backoff_s * (2**attempt) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = max(delay, retry_after)
            await asyncio.sleep(min(delay, cfg.max_backoff_s))
            attempt += 1

    def _check_engine(self, problem: str, connection_lost: bool, attempt: int) -> None:
        """Raise :class:`EngineGone` when a failed attempt means the engine is gone."""
        cfg = self.config
        if self.engine_alive is not None and not self.engine_alive():
            raise EngineGone(f"the engine at {cfg.base_url} is gone ({problem})")
        if not connection_lost:
            return
        if self.connection_failures >= cfg.gone_after:
            raise EngineGone(
                f"{cfg.base_url} unreachable: {self.connection_failures} connection failures in a row "
                f"(last: {problem})"
            )
        if attempt >= cfg.retries:
            raise EngineGone(
                f"{cfg.base_url} unreachable: a request failed to connect on all {attempt + 1} "
                f"attempts (last: {problem})"
            )

    async def generate(self, sample: Sample, spec: RequestSpec) -> Generation:
        """``sample``'s generation; failures become ``Generation.error``, never exceptions."""
        start = time.monotonic()
        try:
            path, body = request_body(sample, spec)
            data, latency, attempts = await self.post_json(path, body)
        except RequestFailed as exc:
            return Generation(sample.id, None, error=str(exc), latency_s=time.monotonic() - start)
        except ValueError as exc:  # unknown mode, unencodable body
            return Generation(sample.id, None, error=one_line(str(exc)), latency_s=time.monotonic() - start)
        generation = parse_generation(sample.id, spec.mode, data, latency)
        if attempts > 1:
            generation.extra["attempts"] = attempts
        return generation


_DONE = object()


def generate_all(
    config: ClientConfig,
    samples: Iterable[Sample],
    spec: RequestSpec,
    concurrency: int = 4,
    engine_alive: Callable[[], bool] | None = None,
) -> Iterator[Generation]:
    """Generations for ``samples``, yielded as they finish.

    The requests run on an event loop in a background thread, ``concurrency`` at a time, submitted
    in the order given. Closing the iterator early (``break``, Ctrl-C) cancels what is in flight.
    Raises :class:`EngineGone` (after yielding what finished before) when the server cannot be
    reached any more; ``engine_alive`` (e.g. "the launched process still runs") is asked after
    every failed attempt.
    """
    workers = max(1, int(concurrency))
    results: queue.Queue[Any] = queue.Queue()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def run_all() -> None:
        state["loop"], state["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        pending = iter(samples)  # shared: each worker takes the next sample, so submission is in order

        async def worker() -> None:
            for sample in pending:
                results.put(await client.generate(sample, spec))

        async with AsyncOpenAIClient(config, max_connections=workers, engine_alive=engine_alive) as client:
            tasks = [asyncio.create_task(worker()) for _ in range(workers)]
            try:  # the first failure (EngineGone, a bug) cancels the requests still in flight
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def thread_main() -> None:
        try:
            asyncio.run(run_all())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # EngineGone or a bug, not a request failure: re-raised in the caller
            results.put(exc)
        finally:
            started.set()
            results.put(_DONE)

    thread = threading.Thread(target=thread_main, name="longctx-openai-client", daemon=True)
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
