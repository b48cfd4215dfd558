"""Runner ``hf``: transformers in this process, for models or machines without vLLM.

``AutoModelForCausalLM`` from a local folder (float32 on CPU by default), greedy ``generate`` of
the sample's ``max_new_tokens``, one sample at a time, in the order given. Prompts are the sample's
token ids when present, else its rendered text encoded without special tokens (the text already
holds the chat template), or in chat mode the messages rendered with the model's chat template.
Decoding uses an explicit greedy ``GenerationConfig``, so nothing in the folder's
``generation_config.json`` (penalties, sampling) changes what "greedy" means. A failure of one
sample (out of memory, prompt longer than the window, ...) becomes ``Generation.error``.
``RunnerConfig`` fields that concern servers (``concurrency``, ``timeout_s``, ``retries``) do not
apply; ``cached_tokens`` is always 0 (no prefix cache across samples).

A reasoning model (``-R reasoning``: auto = its chat template mentions ``<think>``) is fed the chat
prompt without the answer prefix and generates in two steps, as the ``vllm`` runner does (budget
forcing, see ``_reasoning``): the thinking within ``max_thinking_tokens`` (stopped at ``</think>``),
then, after the closed thinking, the answer within the sample's budget; only the answer is scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import msgspec
from longctx.runners._in_process import generate_each, prompt_ids, window_error
from longctx.runners._in_process_choice import continuation_logliks
from longctx.runners._openai_client import one_line
from longctx.runners._reasoning import (
    DEFAULT_THINKING_TOKENS,
    THINK_END,
    THINK_START,
    split_thinking,
    template_mentions,
)

from longctx._choice import candidate_ids, choice_generation
from longctx._choice import window_error as choice_window_error
from longctx._errors import LongctxError
from longctx._models import resolve_model
from longctx._protocols import NullProgress, Progress, RunnerConfig, Tokenizer
from longctx._records import Generation, Sample
from longctx._registry import runner
from longctx._tokenizer import hf_tokenizer
from longctx._versions import dist_version


class HFOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``-O key=value`` options of runner ``hf``."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weights dtype (``auto``: as saved in the folder)."""
    device: str = "cpu"
    """torch device (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    threads: int | None = None
    """torch intra-op threads (default: torch's choice)."""
    reasoning: Literal["auto", "true", "false"] = "auto"
    """A reasoning model? ``auto``: its chat template mentions ``<think>``. See the module docstring."""
    max_thinking_tokens: int | None = None
    """Thinking budget of a reasoning model (``--max-thinking-tokens``); default 2048."""

@runner("hf")
class HFRunner:
    """transformers in-process (greedy generate, batch size 1), for models or machines without vLLM."""

    name = "hf"
    Options = HFOptions
    volatile_options = ("threads", "reasoning", "max_thinking_tokens")
    """Options left out of the run's identity: ``threads`` does not change results; the reasoning
    options are in :meth:`identity` and :meth:`conditions` (so older run folders still resume)."""

    def __init__(
        self, config: RunnerConfig, options: HFOptions | None = None, progress: Progress | None = None
    ):
        self.config = config
        self.options = options or HFOptions()
        self.progress = progress or NullProgress()
        if config.endpoint:
            raise LongctxError("runner hf runs a local model in-process; use runner vllm for --endpoint")
        if config.mode not in ("completions", "chat"):
            raise LongctxError(f"runner hf: unknown mode {config.mode!r} (completions or chat)")
        self.model = resolve_model(config.model, self.progress)
        if self.model.kind != "hf":
            raise LongctxError(
                f"runner hf: {config.model} is a {self.model.kind} checkpoint, not a "
                "Hugging Face model folder"
            )
        assert self.model.path is not None
        self.path = self.model.path
        self._lm: Any = None
        self._tok: Any = None
        self._torch: Any = None
        reasoning = self.options.reasoning
        self.thinking_budget: int | None = None
        """A reasoning model's thinking budget; None for other models."""
        if reasoning == "true" or (reasoning == "auto" and template_mentions(self.path)):
            self.thinking_budget = self.options.max_thinking_tokens or DEFAULT_THINKING_TOKENS
        elif self.options.max_thinking_tokens is not None:
            self.progress.log(f"{config.model} is not a reasoning model: the thinking budget is ignored")

    def __enter__(self) -> HFRunner:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise LongctxError("runner hf needs torch and transformers: pip install 'longctx[hf]'") from None
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        dtype = "auto" if self.options.dtype == "auto" else getattr(torch, self.options.dtype)
        self.progress.start(f"loading {self.model.name} with transformers")
        try:
            self._tok = AutoTokenizer.from_pretrained(self.path)
            self._lm = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype).to(self.options.device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise LongctxError(f"runner hf cannot load {self.path}: {one_line(str(exc))}") from None
        finally:
            self.progress.done()
        self._lm.eval()
        self._torch = torch
        return self

    def __exit__(self, *exc: object) -> None:
        self._lm = None
        self._tok = None

    def tokenizer(self) -> Tokenizer:
        """The model folder's tokenizer."""
        return hf_tokenizer(str(self.path))

    def context_window(self) -> int | None:
        """From the folder's ``config.json``."""
        return self.model.context_window

    def identity(self) -> dict[str, Any]:
        """Name, path, weights hash, engine and versions."""
        ident = dict(self.model.identity())
        ident.update(
            {
                "engine": "transformers",
                "transformers_version": dist_version("transformers"),
                "torch_version": dist_version("torch"),
                "dtype": self.options.dtype,
                "device": self.options.device,
                "mode": self.config.mode,
            }
        )
        if self.thinking_budget is not None:
            ident["reasoning"] = {"max_thinking_tokens": self.thinking_budget,
                                  "prompt": "chat prompt, no answer prefix"}
        return ident

    def conditions(self) -> dict[str, Any]:
        """What can change results besides the sample and the model: a reasoning model's budget."""
        return {"max_thinking_tokens": self.thinking_budget}

    def _eos_ids(self) -> list[int]:
        eos = self._lm.generation_config.eos_token_id
        if eos is None:
            eos = self._tok.eos_token_id
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    def _generate_one(self, sample: Sample) -> Generation:
        from transformers import GenerationConfig

        torch = self._torch
        if self.thinking_budget is not None:
            return self._generate_thinking(sample)
        ids = prompt_ids(self._tok, sample, self.config.mode)
        if (too_long := window_error(sample, len(ids), self.model.context_window)) is not None:
            return too_long
        eos = self._eos_ids()
        gen_config = GenerationConfig(
            max_new_tokens=sample.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos or None,
            pad_token_id=eos[0] if eos else None,
        )
        torch.manual_seed(self.config.seed)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self._lm.device)  # [1, prompt_len]
        with torch.inference_mode():
            out = self._lm.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=gen_config
            )  # [1, prompt_len + new]
        new = out[0, len(ids) :].tolist()
        finish = "stop" if new and new[-1] in eos else "length"
        text = self._tok.decode(new, skip_special_tokens=True)  # as vLLM does by default
        thinking, truncated = None, False
        if self.options.reasoning != "false" and text.lstrip().startswith(THINK_START):
            thinking, text, closed = split_thinking(text)
            truncated = not closed
        return Generation(
            sample.id,
            text,
            prompt_tokens=len(ids),
            cached_tokens=0,
            completion_tokens=len(new),
            extra={"finish_reason": finish},
            thinking=thinking,
            thinking_truncated=truncated,
        )

    def _greedy(self, ids: list[int], max_new_tokens: int, stop: str | None = None) -> list[int]:
        """Greedy continuation of ``ids`` (at most ``max_new_tokens``, ending at EOS or ``stop``)."""
        from transformers import GenerationConfig

        torch = self._torch
        eos = self._eos_ids()
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=eos or None,
            pad_token_id=eos[0] if eos else None, stop_strings=[stop] if stop else None,
        )
        torch.manual_seed(self.config.seed)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self._lm.device)  # [1, prompt_len]
        with torch.inference_mode():
            out = self._lm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    generation_config=gen_config,
                                    **({"tokenizer": self._tok} if stop else {}))
        return out[0, len(ids):].tolist()

    def _generate_thinking(self, sample: Sample) -> Generation:
        """Budget forcing (``_reasoning``): the thinking, closed for the model if the budget runs out,
        then the answer after it."""
        from longctx.runners._reasoning import prompt_without_prefix

        assert self.thinking_budget is not None
        prompt = prompt_without_prefix(sample) if self.config.mode != "chat" else None
        ids = (list(self._tok.encode(prompt, add_special_tokens=False)) if prompt is not None
               else prompt_ids(self._tok, sample, "chat"))
        window = self.model.context_window
        if window and len(ids) + self.thinking_budget + sample.max_new_tokens + 16 > window:
            return Generation(sample.id, None, prompt_tokens=len(ids), error=(
                f"prompt of {len(ids)} tokens + thinking budget {self.thinking_budget} + "
                f"{sample.max_new_tokens} new tokens exceeds the context window of {window}"))
        eos = set(self._eos_ids())
        thought_ids = self._greedy(ids, self.thinking_budget, stop=THINK_END)
        raw = self._tok.decode(thought_ids, skip_special_tokens=True)
        ended_by_eos = bool(thought_ids) and thought_ids[-1] in eos
        truncated = len(thought_ids) >= self.thinking_budget and THINK_END not in raw
        opened = self._tok.decode(ids).rstrip().endswith(THINK_START)
        thought, answer, _ = split_thinking(raw, opened=opened)
        if ended_by_eos and thought is None:  # answered without thinking
            return Generation(sample.id, answer, prompt_tokens=len(ids), cached_tokens=0,
                              completion_tokens=len(thought_ids), extra={"finish_reason": "stop"})
        kept = [t for t in thought_ids if t not in eos]
        if THINK_END not in raw:
            text = self._tok.decode(kept)
            closing = ("" if text.endswith("\n") else "\n") + THINK_END
            kept += self._tok.encode(closing, add_special_tokens=False)
        kept += self._tok.encode("\n\n", add_special_tokens=False)
        answer_ids = self._greedy(ids + kept, sample.max_new_tokens)
        finish = "stop" if answer_ids and answer_ids[-1] in eos else "length"
        return Generation(
            sample.id, self._tok.decode(answer_ids, skip_special_tokens=True).strip(), prompt_tokens=len(ids),
            cached_tokens=0, completion_tokens=len(thought_ids) + len(answer_ids),
            extra={"finish_reason": finish},
            thinking=thought if thought is not None else raw.strip(), thinking_tokens=len(thought_ids),
            thinking_truncated=truncated,
        )

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Generations in the order given, one sample at a time; failures become ``error``."""
        if self._lm is None:
            raise RuntimeError("runner hf: use it as a context manager (`with runner: ...`)")
        yield from generate_each(samples, self._generate_one)

    # ---- forced choice (``--scoring choice``) ------------------------------------------------------
    def _choose_one(self, sample: Sample) -> Generation:
        """Every candidate's log-likelihood: one prefill of the prompt (KV cache), then each
        candidate's tokens on that cache, cropped back to the prompt after each."""
        torch = self._torch
        ids = prompt_ids(self._tok, sample, "completions")
        cands = candidate_ids(lambda text: self._tok.encode(text, add_special_tokens=False), sample)
        if (too_long := choice_window_error(sample, len(ids), max(map(len, cands)),
                                            self.model.context_window)) is not None:
            return too_long
        device = self._lm.device
        with torch.inference_mode():
            out = self._lm(input_ids=torch.tensor([ids], dtype=torch.long, device=device), use_cache=True,
                           logits_to_keep=1)                              # logits (1, 1, V)
            cache = out.past_key_values

            def extend(piece: list[int]) -> Any:
                more = self._lm(input_ids=torch.tensor([piece], dtype=torch.long, device=device),
                                past_key_values=cache, use_cache=True)    # logits (1, n, V)
                cache.crop(len(ids))
                return more.logits[0]

            logliks = continuation_logliks(torch, out.logits[0, -1], extend, cands)
        return choice_generation(sample, logliks, [len(c) for c in cands], prompt_tokens=len(ids), cached_tokens=0)

    def choose(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Forced choice (:mod:`longctx._choice`): every candidate's log-likelihood, in the order
        given, one sample at a time; failures become ``error``."""
        if self._lm is None:
            raise RuntimeError("runner hf: use it as a context manager (`with runner: ...`)")
        yield from generate_each(samples, self._choose_one)
