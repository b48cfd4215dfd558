"""Runner ``vllm``: a vLLM server launched for a local model, any OpenAI-compatible endpoint, or
vLLM's offline engine.

Three ways to run, chosen by the flags:

* ``--model FOLDER_OR_NAME`` (default): launch ``vllm.entrypoints.openai.api_server`` for the local
  folder on a free port, wait for ``/health``, stop it on exit (see ``_vllm_server``).
* ``--endpoint URL --model SERVED_NAME``: attach to a running OpenAI-compatible server; the API key
  comes from the environment variable named by ``api_key_env``.
* ``-O engine=offline``: ``vllm.LLM`` in this process (see ``_vllm_offline``).

Completions mode sends the sample's token ids (or text) with the answer prefix already in the
prompt; chat mode sends the messages. A reasoning model (``-R reasoning``, see :class:`VLLMOptions`)
gets the chat prompt without the answer prefix and two requests per sample, the thinking within
``max_thinking_tokens`` then the answer within the sample's budget (``_reasoning``); only the answer
is scored. Decoding is greedy (temperature 0), ``max_tokens`` is the
sample's budget. A failed request becomes a ``Generation`` with ``error``; setup problems
(missing model, server that will not start) raise :class:`LongctxError`, and an engine that is gone
during the run (the launched server died, the endpoint stopped accepting connections) raises
:class:`EngineGone` - never a sample's error.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

import msgspec
from longctx.runners._openai_client import ClientConfig, RequestSpec, normalise_base_url
from longctx.runners._reasoning import (
    DEFAULT_THINKING_TOKENS,
    THINK_END,
    THINK_START,
    WINDOW_MARGIN,
    ThinkingSpec,
    template_mentions,
)
from longctx.runners._vllm_endpoint import Endpoint, RemoteTokenizer
from longctx.runners._vllm_server import ServerConfig, VLLMServer

from longctx._errors import EngineGone, LongctxError
from longctx._models import ResolvedModel, resolve_model
from longctx._protocols import NullProgress, Progress, RunnerConfig, Tokenizer
from longctx._records import Generation, Sample
from longctx._registry import runner
from longctx._tokenizer import hf_tokenizer
from longctx._versions import dist_version


class VLLMOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``-O key=value`` options of runner ``vllm``."""

    engine: Literal["server", "offline"] = "server"
    """``server``: launch (or, with ``--endpoint``, attach to) an OpenAI-compatible server;
    ``offline``: ``vllm.LLM`` in-process (local models only; batches of ``concurrency``)."""
    enforce_eager: bool | None = None
    """Disable graph capture (``--enforce-eager``); default: on for vLLM's CPU platform only."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights/activations dtype (``--dtype``)."""
    kv_cache_gib: int | None = None
    """KV-cache size in GiB on CPU (``VLLM_CPU_KVCACHE_SPACE``; default: the environment's, else 2)."""
    max_model_len: int | None = None
    """Context window to serve (``--max-model-len``); default: the model's own window."""
    tokenizer: str | None = None
    """A local tokenizer folder to fit prompts with, instead of the endpoint's ``/tokenize``."""
    log_dir: str | None = None
    """Folder for ``vllm-server.log`` (e.g. the run folder); default: a fresh temporary folder."""
    port: int | None = None
    """Port of the launched server; default: a free one."""
    start_timeout_s: float = 900.0
    """Give up when the launched server is not healthy after this many seconds."""
    server_args: str = ""
    """Further ``vllm serve`` flags for the launched server, shell-quoted (e.g. ``--max-num-seqs 8``)."""
    max_num_seqs: int | None = None
    """Sequences per engine step (``--max-num-seqs``; offline too); default: vLLM's."""
    deterministic: bool = False
    """Greedy answers independent of ``--concurrency`` and of server vs offline (``longctx sweep
    --deterministic`` sets it). CPU: float32 unless ``dtype`` is set, and one sequence per engine
    step; CUDA: vLLM's ``VLLM_BATCH_INVARIANT=1`` (not measured here); ``--endpoint``: one request
    at a time (the server's own settings are out of reach)."""
    gone_after: int = 8
    """Connection failures in a row (refused, reset, dropped) after which the server counts as gone
    and the sweep stops (a launched server that exited counts as gone at once)."""
    reasoning: Literal["auto", "true", "false"] = "auto"
    """Is the model a reasoning model (thinks before answering)? ``auto``: yes when its chat
    template (the model folder's, or ``tokenizer``'s) mentions ``think_start``; an endpoint without
    a local tokenizer folder counts as no. A reasoning model gets the chat prompt without the
    answer prefix and a thinking budget (``max_thinking_tokens``). Whatever it says, a reply's
    ``reasoning`` field and a reply starting with ``think_start`` are kept out of the scored answer
    (``false``: the text is scored verbatim)."""
    max_thinking_tokens: int | None = None
    """Thinking budget of a reasoning model in tokens, apart from the answer's (``longctx sweep
    --max-thinking-tokens``); default 2048. Ignored (with a note) for other models."""
    think_start: str = THINK_START
    """The marker opening a reasoning model's thinking."""
    think_end: str = THINK_END
    """The marker closing it (appended for the model when the budget runs out)."""
    answer_prefix_after_thinking: bool = False
    """Completions mode, reasoning model: prefill the task's answer prefix after the closed thinking
    (default: the answer follows the thinking unprompted, as in chat)."""
    replicas: int = 1
    """Launched server: N local vLLM servers behind one pool, started and stopped together (CPU:
    each bound to its share of the cores; GPU: one per GPU, or per ``tensor_parallel`` group).
    Logs: ``vllm-server-<i>.log``. ``--concurrency`` is per replica."""
    tensor_parallel: int | None = None
    """GPUs per launched server (``--tensor-parallel-size``); replicas x tensor_parallel GPUs in all."""
    max_tokens_in_flight: int | None = None
    """Cap on prompt tokens in flight per server (a longer prompt still runs, alone); default: none."""
    prefix_scheduler: bool = True
    """Per server, send a haystack-prefix group's first sample alone and the rest of the group once
    its prefix is cached (so ``--concurrency`` does not prefill one prefix several times at once);
    false: the plan's order as is."""
    probe_s: float = 15.0
    """Seconds between health checks of a server taken out after failures (put back when healthy)."""

def installed_vllm_version() -> str | None:
    """The installed vLLM distribution's version (``vllm`` or ``vllm-cpu``), without importing it."""
    return dist_version("vllm", "vllm-cpu")

@runner("vllm")
class VLLMRunner:
    """vLLM: launch a server for a local model, attach to an OpenAI-compatible endpoint, or run offline."""

    name = "vllm"
    Options = VLLMOptions
    volatile_options = ("log_dir", "port", "start_timeout_s", "kv_cache_gib", "gone_after", "deterministic",
                        "replicas", "tensor_parallel", "max_tokens_in_flight", "prefix_scheduler", "probe_s",
                        "max_num_seqs", "reasoning", "max_thinking_tokens", "think_start",
                        "think_end", "answer_prefix_after_thinking")
    """Options left out of the run's identity, so a resume may differ: they do not change results,
    or (``deterministic``, ``max_num_seqs``, the reasoning options) they are part of each session's
    :meth:`conditions` (reasoning: also of :meth:`identity`), so run folders made before those
    options existed still resume."""

    def __init__(
        self, config: RunnerConfig, options: VLLMOptions | None = None, progress: Progress | None = None
    ):
        self.config = config
        self.options = options or VLLMOptions()
        self.progress = progress or NullProgress()
        if config.mode not in ("completions", "chat"):
            raise LongctxError(f"runner vllm: unknown mode {config.mode!r} (completions or chat)")
        if config.concurrency < 1:
            raise LongctxError("runner vllm: concurrency must be at least 1")
        self.model: ResolvedModel | None = None
        self.endpoint: Endpoint | None = None
        self.server: VLLMServer | None = None
        self._offline: Any = None
        self.endpoints: list[Endpoint] = []
        """Attached servers (``--endpoint``, repeatable); ``endpoint`` is the one asked about the model."""
        self.replicas: Any = None
        """The launched servers with ``-R replicas`` (a ``ReplicaSet``; ``server`` is the first)."""
        self._up: list[bool] = []
        if self.options.replicas < 1:
            raise LongctxError("runner vllm: replicas must be at least 1")
        if config.servers():
            if self.options.engine == "offline":
                raise LongctxError("runner vllm: engine=offline runs a local model; drop --endpoint")
            if self.options.replicas > 1:
                raise LongctxError("runner vllm: -R replicas launches servers; with --endpoint, list each server")
            api_key = os.environ.get(config.api_key_env) or None
            self.endpoints = [Endpoint(normalise_base_url(url), config.model, api_key) for url in config.servers()]
            self.endpoint = self.endpoints[0]
        else:
            self.model = resolve_model(config.model, self.progress)
            if self.model.kind != "hf":
                raise LongctxError(
                    f"runner vllm: {config.model} is a {self.model.kind} checkpoint, not a "
                    "Hugging Face model folder"
                )
        if self.options.tokenizer and not Path(self.options.tokenizer).expanduser().is_dir():
            raise LongctxError(f"-O tokenizer={self.options.tokenizer}: no such folder")
        if self.options.deterministic and "--max-num-seqs" in self.options.server_args:
            raise LongctxError("runner vllm: deterministic mode sets --max-num-seqs; drop it from server_args")
        self.thinking = self._thinking_spec()
        """The thinking budget and markers of a reasoning model; None for other models."""

    def _is_reasoning_model(self) -> bool:
        """``reasoning`` resolved: true / false, or (auto) the chat template mentions ``think_start``."""
        opts = self.options
        if opts.reasoning != "auto":
            return opts.reasoning == "true"
        folder = opts.tokenizer or (self.model.path if self.model is not None else None)
        return folder is not None and template_mentions(folder, opts.think_start)

    def _thinking_spec(self) -> ThinkingSpec | None:
        opts = self.options
        if opts.max_thinking_tokens is not None and opts.max_thinking_tokens < 1:
            raise LongctxError("runner vllm: max_thinking_tokens must be at least 1")
        if not self._is_reasoning_model():
            if opts.max_thinking_tokens is not None:
                self.progress.log(
                    f"{self.config.model} is not a reasoning model (its chat template does not mention "
                    f"{opts.think_start}): the thinking budget is ignored; -R reasoning=true forces it"
                )
            return None
        if opts.engine == "offline":
            raise LongctxError(
                f"runner vllm: {self.config.model} is a reasoning model and engine=offline has no "
                "thinking budget; use the server engine (the default), or -R reasoning=false to treat "
                "it as a plain model"
            )
        return ThinkingSpec(
            budget=opts.max_thinking_tokens or DEFAULT_THINKING_TOKENS,
            start=opts.think_start,
            end=opts.think_end,
            prefill_answer=opts.answer_prefix_after_thinking,
        )

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> VLLMRunner:
        opts = self.options
        if self.endpoints:
            from longctx.runners._vllm_endpoint import check_endpoints

            self._up = check_endpoints(self.endpoints, self.progress)
            self.endpoint = self.endpoints[self._up.index(True)]
        elif self.endpoint is not None:
            self.endpoint.check_model()
        elif opts.engine == "offline":
            from longctx.runners._vllm_offline import OfflineEngine

            assert self.model is not None and self.model.path is not None
            self.progress.start(f"loading {self.model.name} into vLLM's offline engine")
            try:
                self._offline = OfflineEngine(
                    self.model.path,
                    max_model_len=self._max_model_len(),
                    seed=self.config.seed,
                    dtype=opts.dtype,
                    enforce_eager=opts.enforce_eager,
                    kv_cache_gib=opts.kv_cache_gib,
                    max_num_seqs=opts.max_num_seqs,
                    deterministic=opts.deterministic,
                )
            finally:
                self.progress.done()
        else:
            assert self.model is not None and self.model.path is not None
            self.server = VLLMServer(
                ServerConfig(
                    model_path=self.model.path,
                    served_model_name=self.model.name,
                    max_model_len=self._max_model_len(),
                    seed=self.config.seed,
                    dtype=opts.dtype,
                    enforce_eager=opts.enforce_eager,
                    kv_cache_gib=opts.kv_cache_gib,
                    port=opts.port,
                    log_dir=Path(opts.log_dir).expanduser() if opts.log_dir else None,
                    start_timeout_s=opts.start_timeout_s,
                    extra_args=tuple(shlex.split(opts.server_args)),
                    max_num_seqs=opts.max_num_seqs,
                    deterministic=opts.deterministic,
                ),
                self.progress,
            )
            if opts.replicas > 1 or (opts.tensor_parallel or 1) > 1:
                from longctx.runners._vllm_replicas import ReplicaSet

                self.replicas = ReplicaSet(self.server.config, opts.replicas, opts.tensor_parallel,
                                           self.progress).start()
                self.server = self.replicas.servers[0]
            else:
                self.server.start()
            self.endpoint = Endpoint(self.server.base_url, self.model.name)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._offline is not None:
            self._offline.close()
            self._offline = None
        if self.server is not None:  # the endpoint was the launched server's: gone with it
            if self.replicas is not None:
                self.replicas.stop()
                self.replicas = None
            else:
                self.server.stop()
            self.server = None
            if self.endpoint is not None:
                self.endpoint.close()
                self.endpoint = None

    # ---- what the sweep asks ---------------------------------------------------------------------

    def _max_model_len(self) -> int | None:
        if self.options.max_model_len:
            return self.options.max_model_len
        return self.model.context_window if self.model else None

    def check(self, samples: Sequence[Sample]) -> None:
        """A reasoning model's longest prompt + thinking budget + answer budget must fit the window."""
        window = self.context_window() if self.thinking is not None else None
        if not window or not samples or self.thinking is None:
            return
        longest = max(s.length for s in samples)
        if longest + self.thinking.budget + WINDOW_MARGIN > window:
            raise LongctxError(
                f"length {longest} + thinking budget {self.thinking.budget} (+{WINDOW_MARGIN} for the end "
                f"marker) exceeds the context window of {self.config.model} ({window} tokens): lower "
                "--lengths or --max-thinking-tokens"
            )

    def tokenizer(self) -> Tokenizer:
        """The local folder's tokenizer, ``-O tokenizer=PATH``, or the endpoint's ``/tokenize``."""
        if self.options.tokenizer:
            return hf_tokenizer(str(Path(self.options.tokenizer).expanduser()))
        if self.model is not None and self.model.path is not None:
            return hf_tokenizer(str(self.model.path))
        assert self.endpoint is not None
        if len(self.endpoints) > 1:
            from longctx.runners._vllm_endpoint import first_reachable

            return RemoteTokenizer(first_reachable(self.endpoints))
        return RemoteTokenizer(self.endpoint)

    def context_window(self) -> int | None:
        """The served window: ``max_model_len`` for local models, ``/v1/models`` for endpoints."""
        if self.model is not None:
            return self._max_model_len()
        assert self.endpoint is not None
        if len(self.endpoints) > 1:  # a sample must fit on every server
            from longctx.runners._vllm_endpoint import served_window

            return served_window(self.endpoints)
        return self.endpoint.max_model_len()

    def identity(self) -> dict[str, Any]:
        """Model name/path/weights hash (local) or endpoint, served name and vLLM version."""
        if self.model is not None:
            ident: dict[str, Any] = dict(self.model.identity())
            ident.update(
                {
                    "engine": f"vllm-{self.options.engine}",
                    "vllm_version": self._engine_version(),
                    "max_model_len": self._max_model_len(),
                    "dtype": self.options.dtype,
                }
            )
        else:
            assert self.endpoint is not None
            ident = self.endpoint.identity()
            ident["engine"] = "endpoint"
        ident["mode"] = self.config.mode
        if self.thinking is not None:
            ident["reasoning"] = self._reasoning_conditions()
        return ident

    def _reasoning_conditions(self) -> dict[str, Any]:
        think = self.thinking
        assert think is not None
        if self.config.mode == "chat":
            prompt = "messages"
        else:
            prompt = "chat prompt, answer prefix after the thinking" if think.prefill_answer else (
                "chat prompt, no answer prefix")
        return {"max_thinking_tokens": think.budget, "think_start": think.start, "think_end": think.end,
                "prompt": prompt}

    def _engine_version(self) -> str | None:
        if self._offline is not None:
            return self._offline.version
        if self.server is not None and self.server.version:
            return self.server.version
        if self.endpoint is not None and self.model is None:
            return self.endpoint.vllm_version
        return installed_vllm_version()

    def _concurrency(self) -> int:
        """Requests in flight: ``concurrency``, or 1 for a deterministic run against an endpoint."""
        return 1 if self.options.deterministic and self.model is None else self.config.concurrency

    def conditions(self) -> dict[str, Any]:
        """What can change greedy results besides the sample and the model, for this session:
        engine version, the dtype the engine runs, requests in flight, sequences per engine step,
        deterministic mode, a reasoning model's thinking budget (known once the runner is entered; None
        where the engine does not say or the model does not think)."""
        engine = self._offline if self._offline is not None else self.server
        dtype = getattr(engine, "dtype", None)
        if dtype is None and self.options.dtype != "auto":
            dtype = self.options.dtype
        return {
            "engine_version": self._engine_version(),
            "dtype": dtype,
            "concurrency": self._concurrency(),
            "max_num_seqs": getattr(engine, "max_num_seqs", None) or self.options.max_num_seqs,
            "deterministic": self.options.deterministic,
            "max_thinking_tokens": self.thinking.budget if self.thinking is not None else None,
            "servers": self._server_urls() or None,
            "tensor_parallel": self.options.tensor_parallel,
        }

    def _server_urls(self) -> list[str]:
        """Every server requests go to this session (launched replicas once started)."""
        if self.replicas is not None:
            return [s.base_url for s in self.replicas.servers]
        if self.endpoints:
            return [e.base_url for e in self.endpoints]
        return [self.server.base_url] if self.server is not None else []

    # ---- forced choice (``--scoring choice``) ------------------------------------------------------

    def choose(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Forced choice (:mod:`longctx._choice`): every candidate's log-likelihood from vLLM's prompt
        log-probs (:mod:`longctx.runners._vllm_choice`), through the offline engine or the server
        (launched, or the one ``--endpoint``); failures become ``error``, a gone server ``EngineGone``."""
        from longctx.runners._openai_client import ClientConfig
        from longctx.runners._vllm_choice import choose_all, choose_offline

        if self._offline is not None:
            yield from choose_offline(self._offline.llm, samples, self.config.seed, batch_size=self._concurrency())
            return
        if self.endpoint is None:
            raise RuntimeError("runner vllm: use it as a context manager (`with runner: ...`)")
        client = self._client_config()
        server = self.server
        encode = self.tokenizer().encode
        yield from self._watched(
            choose_all(client, samples, encode, model=self.endpoint.model, seed=self.config.seed,
                       concurrency=self._concurrency(), engine_alive=server.alive if server is not None else None),
            server, None)

    # ---- generation -------------------------------------------------------------------------------

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Generations for ``samples`` (submitted in the order given), yielded as they finish."""
        if self._offline is not None:
            yield from self._offline.generate(
                samples, self.config.mode, self.config.seed, batch_size=self._concurrency()
            )
            return
        if self.endpoint is None:
            raise RuntimeError("runner vllm: use it as a context manager (`with runner: ...`)")
        launched_or_vllm = self.server is not None or self.endpoint.vllm_version is not None
        extra: tuple[tuple[str, Any], ...] = ()
        if self.config.mode == "completions" and launched_or_vllm:
            extra = (("add_special_tokens", False),)  # text prompts are fully rendered: no extra BOS
        client = self._client_config()
        spec = RequestSpec(
            model=self.endpoint.model, mode=self.config.mode, seed=self.config.seed, extra_body=extra,
            thinking=self.thinking,
            think_markers=None if self.options.reasoning == "false" else (self.options.think_start,
                                                                         self.options.think_end),
        )
        from dataclasses import replace

        from longctx.runners._endpoint_pool import PoolPolicy, PoolServer, generate_pooled

        opts = self.options
        launched = self.replicas.servers if self.replicas is not None else [self.server] if self.server else []
        if launched:
            pool = [PoolServer(replace(client, base_url=s.base_url), s.alive) for s in launched]
        else:
            endpoints = self.endpoints or [self.endpoint]
            up = self._up if len(self._up) == len(endpoints) else [True] * len(endpoints)
            pool = [PoolServer(replace(client, base_url=e.base_url), None, ok, "" if ok else "unreachable at start")
                    for e, ok in zip(endpoints, up, strict=True)]
        policy = PoolPolicy(concurrency=self._concurrency(), max_tokens_in_flight=opts.max_tokens_in_flight,
                            prefix_scheduler=opts.prefix_scheduler, probe_s=opts.probe_s)
        server = self.server if self.replicas is None else None  # one launched server: its death ends the run
        yield from self._watched(generate_pooled(pool, samples, spec, policy), server, self.replicas)

    def _client_config(self) -> ClientConfig:
        """The HTTP client's settings (the API key only for an attached endpoint)."""
        return ClientConfig(
            base_url=self.endpoint.base_url,
            api_key=None if self.server else os.environ.get(self.config.api_key_env) or None,
            timeout_s=self.config.timeout_s,
            retries=self.config.retries,
            gone_after=max(1, self.options.gone_after),
        )

    @staticmethod
    def _watched(generations: Iterator[Generation], server: VLLMServer | None, replicas: Any) -> Iterator[Generation]:
        """Yield ``generations``; an error from a launched server that died, or ``EngineGone``, ends
        the run as ``EngineGone`` naming the server (or the replicas), never as a sample's error."""
        try:
            with closing(generations):
                for generation in generations:
                    # a dying server may answer HTTP 5xx before its process exits: give it a moment
                    if generation.error and server is not None and server.died(
                        wait_s=2.0 if generation.error.startswith("HTTP 5") else 0.0
                    ):
                        raise EngineGone(generation.error)
                    yield generation
        except EngineGone as exc:
            if replicas is not None:
                raise replicas.failure(exc) from None
            if server is None:
                raise
            if server.died():
                raise server.failure(
                    f"died during the run (code {server.process.returncode})", EngineGone
                ) from None
            raise server.failure(f"stopped answering ({exc})", EngineGone) from None
