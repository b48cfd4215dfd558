"""Fixtures for runner tests: a scriptable fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from longctx._records import Message, Prompt, Sample


@dataclass
class Reply:
    """One scripted answer: status, JSON body (None = the default echo completion), delay, headers;
    ``drop`` closes the connection after the delay without answering (a reset / dying server)."""

    status: int = 200
    body: Any = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


@dataclass
class Received:
    """A request the fake server got."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]


class FakeOpenAI:
    """A tiny OpenAI-compatible server. Scripted replies (``push``) are served first, in order, to
    POSTs on any path; after that every completion echoes its prompt (after ``completion_delay_s``).

    The echo: ``text`` = ``"echo:" + prompt`` (token-id prompts as comma-separated ints),
    ``prompt_tokens`` = number of ids or of whitespace words, ``cached_tokens`` = ``cached_tokens``
    attribute (settable), ``completion_tokens`` = ``max_tokens``.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Reply] = []
        self.cached_tokens = 0
        self.list_models = True
        self.models: list[dict[str, Any]] = [{"id": "fake-model", "object": "model", "max_model_len": 4096}]
        self.in_flight = 0
        self.max_in_flight = 0
        self.completion_delay_s = 0.0
        self.delay_for: Any = None
        """``delay_for(body) -> seconds | None``: the delay of an unscripted POST chosen by its body
        (one request slow whatever order the client's threads send them in); None = the default."""
        self.responder: Any = None
        """``responder(path, body) -> dict``: answers every unscripted POST instead of the echo
        (a scripted model, e.g. one that thinks)."""
        self.dead = False
        self.health_status = 200
        """What ``GET /health`` answers (vLLM: 503 once its engine is dead)."""
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                fake.received.append(Received("GET", self.path, None, dict(self.headers)))
                if self.path == "/v1/models" and fake.list_models:
                    self._send(200, {"object": "list", "data": fake.models})
                elif self.path == "/version":
                    self._send(200, {"version": "0.0-fake"})
                elif self.path == "/health":
                    self._send(fake.health_status, {})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                fake.received.append(Received("POST", self.path, body, dict(self.headers)))
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    if fake.script:
                        reply = fake.script.pop(0)
                    else:
                        chosen = fake.delay_for(body) if fake.delay_for is not None else None
                        reply = Reply(delay_s=fake.completion_delay_s if chosen is None else chosen)
                try:
                    time.sleep(reply.delay_s)
                    if reply.drop or fake.dead:  # no answer: the client sees the connection close
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self._send(
                        reply.status,
                        reply.body if reply.body is not None else fake.answer(self.path, body),
                        reply.headers,
                    )
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._closed = False
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def push(
        self,
        status: int = 200,
        body: Any = None,
        delay_s: float = 0.0,
        headers: dict[str, str] | None = None,
        times: int = 1,
        drop: bool = False,
    ) -> None:
        """Queue ``times`` scripted replies (body None = the echo completion; ``drop``: no answer)."""
        self.script.extend(Reply(status, body, delay_s, headers or {}, drop) for _ in range(times))

    def die(self) -> None:
        """The server goes away: requests in flight get no answer, new connections are refused."""
        self.dead = True
        self.close()

    def posts(self) -> list[Received]:
        """POST requests received so far."""
        return [r for r in self.received if r.method == "POST"]

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to an unscripted POST: the ``responder``'s, else the echo."""
        return self.responder(path, body) if self.responder is not None else self.echo(path, body)

    def echo(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The default completion answer."""
        if path.endswith("/chat/completions"):
            last = body["messages"][-1]["content"]
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": "echo:" + last},
                "finish_reason": "stop",
            }
            prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        else:
            prompt = body["prompt"]
            shown = ",".join(map(str, prompt)) if isinstance(prompt, list) else prompt
            choice = {"index": 0, "text": "echo:" + shown, "finish_reason": "length"}
            prompt_tokens = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": body.get("max_tokens", 0),
            "total_tokens": prompt_tokens + body.get("max_tokens", 0),
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
        return {
            "id": "cmpl-fake",
            "object": "text_completion",
            "model": body.get("model"),
            "choices": [choice],
            "usage": usage,
        }

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()


def completion_body(
    path: str,
    text: str,
    *,
    reasoning: str | None = None,
    reasoning_field: str = "reasoning",
    finish_reason: str = "stop",
    stop_reason: Any = None,
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
) -> dict[str, Any]:
    """An OpenAI-compatible response body for ``path`` (chat or completions) with ``text``; chat
    messages carry ``reasoning`` under ``reasoning_field`` (vLLM 0.32: ``reasoning``; older vLLM and
    DeepSeek: ``reasoning_content``). ``stop_reason`` as vLLM reports it (omitted when ``...``);
    ``completion_tokens`` defaults to the whitespace words of text and reasoning."""
    words = len(text.split()) + len((reasoning or "").split())
    generated = words if completion_tokens is None else completion_tokens
    if path.endswith("/chat/completions"):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning is not None:
            message[reasoning_field] = reasoning
        choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason}
    if stop_reason is not ...:
        choice["stop_reason"] = stop_reason
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
             "total_tokens": prompt_tokens + generated, "prompt_tokens_details": {"cached_tokens": 0}}
    return {"id": "cmpl-fake", "object": "text_completion", "model": "fake-model", "choices": [choice],
            "usage": usage}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI-compatible server for one test."""
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.close()


NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.\n"


def _niah_sample(
    tokenizer,
    sample_id: str,
    needle: int,
    key: str = "brave-apple",
    repeats: int = 5,
    with_ids: bool = True,
    haystack: str = NOISE,
) -> Sample:
    """A short RULER-style single-needle prompt (chat template + answer prefix prefilled)."""
    question = (
        "A special magic number is hidden within the following text. Make sure to memorize it. "
        "I will quiz you about the number afterwards.\n"
        + haystack * repeats
        + f"One of the special magic numbers for {key} is: {needle}.\n"
        + haystack * repeats
        + f"What is the special magic number for {key} mentioned in the provided text?"
    )
    messages = (Message("user", question),)
    prefix = f" The special magic number for {key} mentioned in the provided text is"
    text = tokenizer.render_chat(messages) + prefix
    ids = tuple(tokenizer.encode(text))
    return Sample(
        id=sample_id,
        task="test/niah",
        prompt=Prompt(messages, text, prefix, ids if with_ids else None),
        references=(str(needle),),
        length=len(ids) + 32,
        context_tokens=len(ids),
        max_new_tokens=16,
    )


@pytest.fixture
def niah_sample():
    """``niah_sample(tokenizer, id, needle, key=..., repeats=5, with_ids=True, haystack=NOISE)``: a
    short RULER-style single-needle Sample (chat template applied, answer prefix prefilled)."""
    return _niah_sample
