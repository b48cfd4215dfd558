"""What a running vLLM / OpenAI-compatible server says about itself, and its remote tokenizer.

Several servers (``--endpoint`` repeated): :func:`check_endpoints` says which can be used when the
run starts, :func:`first_reachable` is the one asked about the model and its tokenizer, and
:func:`served_window` the smallest window among them (a sample must fit on every server).

Synchronous ``httpx`` (these calls happen while samples are built, not during generation).
``/tokenize``, ``/detokenize`` and ``/version`` are vLLM extensions served at the server root;
``/v1/models`` is standard (vLLM adds ``max_model_len`` and ``root``, the model path).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any

import httpx

from longctx._errors import LongctxError
from longctx._records import Message
from longctx.runners._openai_client import is_local, one_line, server_root


class Endpoint:
    """A server to attach to: base URL (``.../v1``), served model name and optional API key."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.root_url = server_root(self.base_url)
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout_s, trust_env=not is_local(self.base_url))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self, method: str, url: str, body: dict[str, Any] | None = None, missing_ok: bool = False
    ) -> dict[str, Any]:
        """JSON of ``method url``; LongctxError (one line) when the server cannot be used.

        With ``missing_ok`` an HTTP 404 gives ``{}`` (an optional route the server lacks).
        """
        try:
            response = self._http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise LongctxError(
                f"cannot reach {url}: {one_line(str(exc) or type(exc).__name__, 200)}"
            ) from None
        if response.status_code == 404 and missing_ok:
            return {}
        if response.status_code >= 400:
            raise LongctxError(f"{method} {url}: HTTP {response.status_code}: {one_line(response.text, 200)}")
        try:
            return response.json()
        except ValueError:
            raise LongctxError(f"{method} {url}: not JSON: {one_line(response.text, 120)}") from None

    @cached_property
    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models`` entries ([] when the server has no such route)."""
        return list(self.request("GET", self.base_url + "/models", missing_ok=True).get("data") or [])

    def model_card(self) -> dict[str, Any] | None:
        """This endpoint's entry for ``self.model`` in ``/v1/models``, if listed."""
        return next((m for m in self.models if m.get("id") == self.model), None)

    def check_model(self) -> None:
        """LongctxError when the server is unreachable or does not serve ``self.model``."""
        served = [m.get("id") for m in self.models]
        if served and self.model not in served:
            raise LongctxError(
                f"endpoint {self.base_url} does not serve model {self.model!r}; it serves: "
                + ", ".join(str(s) for s in served)
            )

    @cached_property
    def vllm_version(self) -> str | None:
        """``GET /version`` (vLLM only; None for other servers)."""
        try:
            response = self._http.get(self.root_url + "/version")
            return str(response.json()["version"]) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def max_model_len(self) -> int | None:
        """The served context window (vLLM's ``max_model_len`` in ``/v1/models``), if reported."""
        card = self.model_card() or {}
        value = card.get("max_model_len")
        return int(value) if isinstance(value, int) else None

    def identity(self) -> dict[str, Any]:
        """Endpoint URL, served model, what it reports about the model, engine version."""
        card = self.model_card() or {}
        return {
            "name": self.model,
            "endpoint": self.base_url,
            "root": card.get("root"),
            "max_model_len": card.get("max_model_len"),
            "vllm_version": self.vllm_version,
        }


class RemoteTokenizer:
    """The :class:`~longctx.Tokenizer` of a vLLM server, through ``/tokenize`` and ``/detokenize``.

    ``render_chat`` asks ``/tokenize`` to apply the served chat template (``messages`` with
    ``add_generation_prompt``) and ``/detokenize`` to turn the ids back into text, so the template
    is exactly the one the server applies.
    """

    def __init__(self, endpoint: Endpoint):
        self._endpoint = endpoint
        self.name = f"{endpoint.base_url}#{endpoint.model}"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._endpoint.request(
            "POST", self._endpoint.root_url + path, {"model": self._endpoint.model, **body}
        )

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self._post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts (``/tokenize`` takes one text: requests overlap on threads)."""
        if len(texts) <= 1:
            return [self.encode(t) for t in texts]
        with ThreadPoolExecutor(max_workers=min(8, len(texts))) as pool:
            return list(pool.map(self.encode, texts))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens kept)."""
        return str(self._post("/detokenize", {"tokens": list(ids)})["prompt"])

    def render_chat(self, messages: Sequence[Message]) -> str:
        """The served chat template applied to ``messages`` with the generation prompt."""
        body = {
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "add_generation_prompt": True,
            "add_special_tokens": False,
        }
        return self.decode(self._post("/tokenize", body)["tokens"])



def unreachable(endpoint: Endpoint) -> str | None:
    """Why ``endpoint`` cannot be asked about its models now (one line), or None when it can."""
    try:
        endpoint.models  # noqa: B018 - cached: fetched once
    except LongctxError as exc:
        return str(exc)
    return None


def check_endpoints(endpoints: Sequence[Endpoint], progress: Any = None) -> list[bool]:
    """Which ``endpoints`` are up now. Each reachable one must serve the model (LongctxError if
    not); an unreachable one starts taken out (the pool probes it later, with a note through
    ``progress``); LongctxError when none is reachable."""
    up: list[bool] = []
    problems: list[str] = []
    for endpoint in endpoints:
        problem = unreachable(endpoint)
        if problem is None:
            endpoint.check_model()
        else:
            problems.append(problem)
            if progress is not None and len(endpoints) > 1:
                progress.log(f"{endpoint.base_url} is not reachable now; it is tried again during the run")
        up.append(problem is None)
    if not any(up):
        raise LongctxError(problems[0] if len(problems) == 1 else
                           f"none of the {len(endpoints)} endpoints is reachable (first: {problems[0]})")
    versions = {e.base_url: e.vllm_version for e, ok in zip(endpoints, up, strict=True) if ok}
    if len(set(versions.values())) > 1 and progress is not None:  # the session records the first one's
        progress.log("the endpoints run different engine versions: "
                     + ", ".join(f"{url} {v or 'unknown'}" for url, v in versions.items()))
    return up


def first_reachable(endpoints: Sequence[Endpoint]) -> Endpoint:
    """The first endpoint that answers (the first one when none does: its error is the one shown)."""
    return next((e for e in endpoints if unreachable(e) is None), endpoints[0])


def served_window(endpoints: Sequence[Endpoint]) -> int | None:
    """The smallest ``max_model_len`` the reachable endpoints report (None when none reports one)."""
    reachable = [e for e in endpoints if unreachable(e) is None]
    if not reachable:
        check_endpoints(endpoints)  # raises, naming the first problem
    windows = [w for w in (e.max_model_len() for e in reachable) if w is not None]
    return min(windows) if windows else None
