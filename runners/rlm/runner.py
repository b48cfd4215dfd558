"""Runner ``rlm``: Recursive Language Models (Zhang, Kraska & Khattab, arXiv:2512.24601).

The context stays out of the prompt, in a sandboxed Python REPL variable; a root LM writes code to
inspect it and calls a sub-LM on pieces (:mod:`.agent`, :mod:`.sandbox`, :mod:`.prompts`).

The root and sub LMs are built from other runners, sharing ``RunnerConfig`` (model, endpoint, API
key variable, timeouts, retries, concurrency) in chat mode:

* ``-R root=vllm`` (default): the ``vllm`` runner, which launches a server for ``--model`` or,
  with ``--endpoint``, attaches to any OpenAI-compatible server; any registered runner name works
  (``hf``, a plug-in's), called through its ``generate()`` with chat-mode samples;
* ``-R root=openai``: a direct OpenAI-compatible client on ``--endpoint`` (key from the
  environment variable ``--api-key-env``), no runner in between;
* ``-R sub=...`` (default: the root's), ``-R sub_model=...``, ``-R sub_endpoint=...``: a separate
  sub-LM; when runner, model and endpoint match the root's, one instance serves both.

Every generation carries ``extra["trajectory"]`` (schema in :mod:`.agent`) and ``extra["rlm"]``
(usage, how the episode finished, the sandbox's isolation layers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import typing
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import msgspec

from longctx._errors import LongctxError, RunnerError
from longctx._protocols import NullProgress, Progress, RunnerConfig, Tokenizer
from longctx._records import Generation, Message, Prompt, Sample
from longctx._registry import get_runner_entry, parse_options, runner
from longctx.runners.rlm import prompts
from longctx.runners.rlm.agent import AgentSettings, Budget, ChatLM, Completion, Episode, Limits
from longctx.runners.rlm.sandbox import SandboxConfig, choose_isolation


class _LMOptions(msgspec.Struct, forbid_unknown_fields=True):
    """Which LMs play root and sub (the first ``-R`` options of runner ``rlm``)."""

    root: str = "vllm"
    """Root LM: a registered runner name (``vllm``, ``hf``, ...) or ``openai`` (a direct client on
    ``--endpoint``)."""
    sub: str | None = None
    """Sub-LM runner (same choices); default: the root's."""
    sub_model: str | None = None
    """Sub-LM model; default: ``--model``."""
    sub_endpoint: str | None = None
    """Sub-LM endpoint; default: ``--endpoint``."""


#: SandboxConfig fields that are protocol internals, not options
_SANDBOX_INTERNAL = ("max_message_mb", "start_timeout_s")


def _fields(cls: type, skip: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(name, type, default) of a dataclass's fields, for :func:`msgspec.defstruct`."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], f.default) for f in dataclasses.fields(cls) if f.name not in skip]


RLMOptions = msgspec.defstruct(
    "RLMOptions",
    [*_fields(AgentSettings), *_fields(Limits), *_fields(SandboxConfig, skip=_SANDBOX_INTERNAL)],
    bases=(_LMOptions,),
    forbid_unknown_fields=True,
    module=__name__,
)
RLMOptions.__doc__ = """``-R key=value`` options of runner ``rlm``: the LMs (root, sub, sub_model, sub_endpoint), then
every field of :class:`AgentSettings` (the loop), :class:`Limits` (budgets, enforced at every
call) and :class:`SandboxConfig` (isolation and limits of the REPL), documented there."""


def _pick(cls: type, opts: Any) -> Any:
    """The dataclass ``cls`` filled from the same-named fields of ``opts``."""
    return cls(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(cls) if hasattr(opts, f.name)})


# ---------------------------------------------------------------------------------------------
# Chat LMs built from runners or a direct client
# ---------------------------------------------------------------------------------------------


def _chat_sample(conversation: Sequence[Message], max_tokens: int, text: str) -> Sample:
    return Sample(
        id=f"rlm-{uuid.uuid4().hex}",
        task="rlm",
        prompt=Prompt(messages=tuple(conversation), text=text),
        references=(),
        length=0,
        context_tokens=0,
        max_new_tokens=max_tokens,
    )


def _completion(gen: Generation | None, chars: int) -> Completion:
    if gen is None:
        return Completion(None, error="the runner returned no generation", prompt_chars=chars)
    return Completion(
        gen.prediction, gen.prompt_tokens, gen.completion_tokens, gen.latency_s, gen.error, chars
    )


class RunnerLM:
    """A registered runner used as a chat LM (its ``generate()`` with chat-mode samples).

    Calls from concurrent episodes are serialised per runner (in-process engines are not
    thread-safe) unless the runner class sets ``concurrent_generate = True``; a batch of prompts
    (``llm_query_batched``) goes to one ``generate()`` call, so engines that batch or run requests
    concurrently still do.
    """

    def __init__(self, name: str, instance: Any):
        self.name, self.runner = name, instance
        concurrent = getattr(instance, "concurrent_generate", False) is True
        self._lock: Any = contextlib.nullcontext() if concurrent else threading.Lock()
        self._render: Any = None

    def context_window(self) -> int | None:  # noqa: D102
        try:
            return self.runner.context_window()
        except Exception:  # noqa: BLE001 - a hint only
            return None

    def _text(self, conversation: Sequence[Message]) -> str:
        """The conversation rendered with the chat template (for runners that only complete text)."""
        if self._render is None:
            try:
                self._render = self.runner.tokenizer().render_chat
            except Exception:  # noqa: BLE001 - chat-only runners need no rendering
                self._render = False
        return self._render(conversation) if self._render else ""

    def chat(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[Completion]:  # noqa: D102
        samples = [_chat_sample(c, max_tokens, self._text(c)) for c in conversations]
        try:
            with self._lock:
                got = {g.sample_id: g for g in self.runner.generate(samples)}
        except RunnerError as exc:  # a runner that raises for a failed request: that request's error
            return [Completion(None, error=str(exc)) for _ in samples]
        return [_completion(got.get(s.id), sum(len(m.content) for m in s.prompt.messages)) for s in samples]


class OpenAILM:
    """A direct OpenAI-compatible chat client (``runners/_openai_client.py``)."""

    def __init__(self, config: RunnerConfig):
        from longctx.runners._openai_client import ClientConfig, RequestSpec, normalise_base_url

        if not config.endpoint:
            raise LongctxError("runner rlm: root/sub 'openai' needs --endpoint (or -R sub_endpoint=...)")
        self.name = f"openai:{config.model}@{config.endpoint}"
        self.client = ClientConfig(
            base_url=normalise_base_url(config.endpoint),
            api_key=os.environ.get(config.api_key_env) or None,
            timeout_s=config.timeout_s,
            retries=config.retries,
        )
        self.spec = RequestSpec(model=config.model, mode="chat", seed=config.seed)
        self.concurrency = config.concurrency
        self.endpoint, self.model = config.endpoint, config.model

    def context_window(self) -> int | None:  # noqa: D102
        return None

    def chat(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[Completion]:  # noqa: D102
        from longctx.runners._openai_client import generate_all

        samples = [_chat_sample(c, max_tokens, "") for c in conversations]
        got = {g.sample_id: g for g in generate_all(self.client, samples, self.spec, self.concurrency)}
        return [_completion(got.get(s.id), sum(len(m.content) for m in s.prompt.messages)) for s in samples]

    def identity(self) -> dict[str, Any]:
        """Endpoint and served model name."""
        return {"engine": "openai", "endpoint": self.endpoint, "model": self.model}


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


@runner("rlm")
class RLMRunner:
    """Recursive Language Model: a root LM explores the context in a sandboxed REPL, sub-LMs read pieces."""

    name = "rlm"
    Options = RLMOptions
    volatile_options = ()
    """Every option can change results."""

    def __init__(
        self,
        config: RunnerConfig,
        options: RLMOptions | None = None,
        progress: Progress | None = None,
        *,
        root_lm: ChatLM | None = None,
        sub_lm: ChatLM | None = None,
    ):
        self.config = config
        self.options = opts = options or RLMOptions()
        self.progress = progress or NullProgress()
        if opts.max_iterations < 1 or opts.max_depth < 1:
            raise LongctxError("runner rlm: max_iterations and max_depth must be at least 1")
        if opts.max_cost_usd is not None and (
            opts.price_prompt_per_mtok is None or opts.price_completion_per_mtok is None
        ):
            raise LongctxError(
                "runner rlm: max_cost_usd needs price_prompt_per_mtok and price_completion_per_mtok"
            )
        self.sandbox = _pick(SandboxConfig, opts)
        self.isolation = choose_isolation(self.sandbox)  # refuse before any work when nothing isolates
        self.settings = _pick(AgentSettings, opts)
        self.limits = _pick(Limits, opts)
        self._runners: dict[tuple[str, str, str | None], Any] = {}
        self._stack = contextlib.ExitStack()
        chat_config = msgspec.structs.replace(config, mode="chat")
        sub_config = msgspec.structs.replace(
            chat_config, model=opts.sub_model or config.model, endpoint=opts.sub_endpoint or config.endpoint
        )
        self.root_lm = root_lm or self._lm(opts.root, chat_config)
        self.sub_lm = sub_lm or self._lm(opts.sub or opts.root, sub_config)

    def _lm(self, name: str, config: RunnerConfig) -> ChatLM:
        if name == "openai":
            return OpenAILM(config)
        if name == "rlm":
            raise LongctxError("runner rlm cannot wrap itself; use -R max_depth=2 for recursion")
        key = (name, config.model, config.endpoint)
        if key not in self._runners:
            entry = get_runner_entry(name)
            inner = parse_options(entry.factory, {}, f"runner {name}")
            self._runners[key] = RunnerLM(
                name, entry.factory(config=config, options=inner, progress=self.progress)
            )
        return self._runners[key]

    def __enter__(self) -> RLMRunner:
        try:
            for lm in self._runners.values():
                self._stack.enter_context(lm.runner)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def tokenizer(self) -> Tokenizer:
        """The root model's tokenizer (the context is measured in the root's tokens)."""
        if isinstance(self.root_lm, RunnerLM):
            return self.root_lm.runner.tokenizer()
        from longctx._models import resolve_model
        from longctx._tokenizer import hf_tokenizer

        model = resolve_model(self.config.model, self.progress, local_required=False)
        if model.path is None:
            raise LongctxError(
                "runner rlm with root=openai needs a local --model folder or named model for its "
                "tokenizer; use -R root=vllm to attach to the endpoint with remote tokenization"
            )
        return hf_tokenizer(str(model.path))

    def context_window(self) -> int | None:
        """None: the context lives in the REPL, not in any model's window."""
        return None

    def identity(self) -> dict[str, Any]:
        """Root and sub LMs, every option, and the sandbox isolation."""

        def ident(lm: ChatLM) -> Any:
            if isinstance(lm, RunnerLM):
                return {"runner": lm.name, **lm.runner.identity()}
            return lm.identity() if hasattr(lm, "identity") else {"name": lm.name}

        return {
            "name": "rlm",
            "root": ident(self.root_lm),
            "sub": ident(self.sub_lm),
            "options": msgspec.to_builtins(self.options),
            "sandbox": self.isolation,
        }

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """One episode per sample, ``concurrency`` at a time; yielded as they finish."""
        workers = max(1, min(self.config.concurrency, len(samples)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="longctx-rlm") as pool:
            futures = [pool.submit(self.run_sample, s) for s in samples]
            for future in as_completed(futures):
                yield future.result()

    def run_sample(self, sample: Sample) -> Generation:
        """One RLM episode over ``sample``."""
        start = time.monotonic()
        budget = Budget(self.limits)
        episode = Episode(self.root_lm, self.sub_lm, self.settings, self.sandbox, budget)
        result = episode.run(prompts.split_sample(sample))
        usage = budget.summary()
        extra = {
            "trajectory": result.trajectory,
            "rlm": {
                **usage,
                "finish": result.finish,
                "iterations": len(result.trajectory),
                "isolation": result.layers.get("isolation", self.isolation),
                "layers": result.layers,
            },
        }
        return Generation(
            sample_id=sample.id,
            prediction=None if result.error else (result.answer or ""),
            error=result.error,
            latency_s=time.monotonic() - start,
            prompt_tokens=budget.prompt_tokens,
            completion_tokens=budget.completion_tokens,
            extra=extra,
        )
