"""An async client for OpenAI-compatible servers: bounded concurrency, retries, timeouts.

Used by the ``vllm`` runner (launched or attached servers) and reusable by any runner that talks to
an OpenAI-compatible endpoint. Plain ``httpx`` (no ``openai`` package).

Rules:

* :func:`generate_all` submits samples *in the order given*, ``concurrency`` at a time, so samples
  the sweep ordered to share a haystack prefix reach the server back to back and hit its prefix
  cache. With ``concurrency > 1`` they *finish* in any order. Several servers, a cap on prompt
  tokens in flight and prefix-keeping scheduling: :mod:`longctx.runners._endpoint_pool`, which
  drives :meth:`AsyncOpenAIClient.attempt` (one POST, classified) with the rules below.
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
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from longctx._errors import EngineGone, RunnerError
from longctx._records import Generation, Sample
from longctx.runners._reasoning import (
    THINK_END,
    THINK_START,
    ThinkingSpec,
    message_text,
    split_thinking,
)


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
    thinking: ThinkingSpec | None = None
    """A reasoning model's thinking budget: each sample takes two requests (``_reasoning``'s
    budget forcing); None = one request of ``max_new_tokens``."""
    think_markers: tuple[str, str] | None = (THINK_START, THINK_END)
    """Thinking markers split off a one-request reply that starts with them (the answer alone is
    the prediction); None keeps the text verbatim. A server's reasoning field is always split."""


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


def thinking_request_body(sample: Sample, spec: RequestSpec) -> tuple[str, dict[str, Any]]:
    """Request 1 of budget forcing: the thinking, at most ``spec.thinking.budget`` tokens, stopped
    at the end marker. Completions mode sends the rendered prompt without the answer prefix (as
    text: the prefix's tokens cannot be cut off ``token_ids``); chat mode the messages."""
    from longctx.runners._reasoning import prompt_without_prefix

    assert spec.thinking is not None
    path, body = request_body(sample, spec)
    if spec.mode == "completions":
        body["prompt"] = prompt_without_prefix(sample)
    body["max_tokens"] = spec.thinking.budget
    body["stop"] = [spec.thinking.end]
    return path, body


def answer_request_body(sample: Sample, spec: RequestSpec, thought: str) -> tuple[str, dict[str, Any]]:
    """Request 2 of budget forcing: the answer, at most ``sample.max_new_tokens``, after ``thought``
    (the thinking closed by its end marker). Completions mode appends it to the prompt (then the
    answer prefix, with ``prefill_answer``); chat mode sends it as the start of the assistant's
    message to continue (``continue_final_message``, a vLLM extension of the chat API)."""
    from longctx.runners._reasoning import prompt_without_prefix

    assert spec.thinking is not None
    path, body = request_body(sample, spec)
    if spec.mode == "completions":
        prefix = sample.prompt.answer_prefix if spec.thinking.prefill_answer else ""
        body["prompt"] = prompt_without_prefix(sample) + thought + prefix
    else:
        body["messages"].append({"role": "assistant", "content": thought})
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return path, body


def parse_generation(sample_id: str, mode: str, data: dict[str, Any], latency_s: float,
                     think_markers: tuple[str, str] | None = (THINK_START, THINK_END)) -> Generation:
    """A :class:`Generation` from a (chat) completion response body.

    The thinking of a reasoning model is kept out of ``prediction``: a chat message's
    ``reasoning`` / ``reasoning_content`` field (a server's reasoning parser), and, unless
    ``think_markers`` is None, a reply starting with the start marker (all thinking when never
    closed: the generation budget ran out, ``thinking_truncated``).
    """
    reasoning: str | None = None
    try:
        choice = data["choices"][0]
        if mode == "chat":
            text, reasoning = message_text(choice["message"])
        else:
            text = choice["text"]
    except (KeyError, IndexError, TypeError):
        return Generation(
            sample_id, None, error=f"malformed response: {one_line(repr(data), 200)}", latency_s=latency_s
        )
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    extra = {"finish_reason": choice.get("finish_reason")} if choice.get("finish_reason") else {}
    text = text if text is not None else ""
    thinking, truncated = reasoning, False
    if think_markers is not None and text.lstrip().startswith(think_markers[0]):
        thought, text, closed = split_thinking(text, *think_markers)
        thinking = "\n".join(t for t in (reasoning, thought) if t)
        truncated = not closed
    completion_details = usage.get("completion_tokens_details") or {}
    return Generation(
        sample_id,
        text,
        latency_s=latency_s,
        prompt_tokens=usage.get("prompt_tokens"),
        cached_tokens=details.get("cached_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        extra=extra,
        thinking=thinking,
        thinking_tokens=completion_details.get("reasoning_tokens") if thinking is not None else None,
        thinking_truncated=truncated,
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


@dataclass
class Attempt:
    """What one POST came to."""

    kind: str
    """``ok``; ``connection`` (refused, reset, dropped, connect timeout: the engine's failure);
    ``retry`` (HTTP 429 / 5xx); ``timeout`` (no answer within ``timeout_s``); ``fatal`` (another
    HTTP error or a non-JSON answer: the sample's failure)."""
    data: dict[str, Any] | None = None
    """The response JSON (``ok``)."""
    latency_s: float = 0.0
    """Wall time of the attempt (``ok``)."""
    problem: str = ""
    """One-line description of the failure."""
    status: int | None = None
    """HTTP status, when the server answered."""
    retry_after: float | None = None
    """A 429's ``Retry-After``, seconds."""


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

    async def attempt(self, path: str, body: dict[str, Any]) -> Attempt:
        """One POST of ``body``, classified (never raises for what the server or network did)."""
        start = time.monotonic()
        try:
            response = await asyncio.wait_for(self._http.post(path, json=body), self.config.timeout_s)
        except httpx.ConnectTimeout:
            return Attempt("connection", problem="connect timeout")
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return Attempt("timeout", problem=f"timeout after {self.config.timeout_s:g} s")
        except httpx.TransportError as exc:  # refused, reset, closed without a response
            problem = one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 160)
            return Attempt("connection", problem=problem)
        self.connection_failures = 0
        latency = time.monotonic() - start
        status = response.status_code
        if status < 400:
            try:
                return Attempt("ok", data=response.json(), latency_s=latency, status=status)
            except ValueError:
                return Attempt("fatal", problem=f"non-JSON response: {one_line(response.text, 160)}", status=status)
        problem = f"HTTP {status}: {_error_detail(response)}"
        if status != 429 and status < 500:
            return Attempt("fatal", problem=problem, status=status)
        return Attempt("retry", problem=problem, status=status,
                       retry_after=_retry_after(response) if status == 429 else None)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (jittered, capped, ``Retry-After`` kept)."""
        cfg = self.config
        delay = cfg.backoff_s * (2**attempt) * (0.5 + random.random() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, cfg.max_backoff_s)

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float, int]:
        """POST ``body``; returns (response JSON, latency of the successful attempt, attempts).

        Raises :class:`RequestFailed` (one-line message) when the request fails for good, and
        :class:`EngineGone` when the server cannot be reached any more.
        """
        attempt = 0
        while True:
            got = await self.attempt(path, body)
            if got.kind == "ok":
                return got.data or {}, got.latency_s, attempt + 1
            if got.kind in ("timeout", "fatal"):
                raise RequestFailed(got.problem)
            connection_lost = got.kind == "connection"
            if connection_lost:
                self.connection_failures += 1
            self._check_engine(got.problem, connection_lost, attempt)
            if attempt >= self.config.retries:
                suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                raise RequestFailed(got.problem + suffix)
            await asyncio.sleep(self.backoff(attempt, got.retry_after))
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
        if spec.thinking is not None:  # two requests: the thinking, then the answer
            from longctx.runners._reasoning import generate_with_thinking

            return await generate_with_thinking(self, sample, spec)
        start = time.monotonic()
        try:
            path, body = request_body(sample, spec)
            data, latency, attempts = await self.post_json(path, body)
        except RequestFailed as exc:
            return Generation(sample.id, None, error=str(exc), latency_s=time.monotonic() - start)
        except ValueError as exc:  # unknown mode, unencodable body
            return Generation(sample.id, None, error=one_line(str(exc)), latency_s=time.monotonic() - start)
        generation = parse_generation(sample.id, spec.mode, data, latency, spec.think_markers)
        if attempts > 1:
            generation.extra["attempts"] = attempts
        return generation


def generate_all(
    config: ClientConfig,
    samples: Iterable[Sample],
    spec: RequestSpec,
    concurrency: int = 4,
    engine_alive: Callable[[], bool] | None = None,
) -> Iterator[Generation]:
    """Generations for ``samples`` from one server, yielded as they finish.

    The requests run on an event loop in a background thread, ``concurrency`` at a time, submitted
    in the order given. Closing the iterator early (``break``, Ctrl-C) cancels what is in flight.
    Raises :class:`EngineGone` (after yielding what finished before) when the server cannot be
    reached any more; ``engine_alive`` (e.g. "the launched process still runs") is asked after
    every failed attempt. The one-server case of
    :func:`longctx.runners._endpoint_pool.generate_pooled` (several servers, token cap, prefix
    scheduling).
    """
    from longctx.runners._endpoint_pool import PoolPolicy, PoolServer, generate_pooled

    policy = PoolPolicy(concurrency=max(1, int(concurrency)))
    return generate_pooled([PoolServer(config, engine_alive)], samples, spec, policy)
