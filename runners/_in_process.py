"""What the in-process runners (``hf``, ``hope``) share: prompt ids, the window check, the loop.

Both run one sample at a time in the order given; a failure of one sample (out of memory, a
prompt longer than the window, ...) becomes ``Generation.error`` and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from longctx._records import Generation, Sample
from longctx.runners._openai_client import one_line


def prompt_ids(tokenizer: Any, sample: Sample, mode: str) -> list[int]:
    """The token ids a local model is fed for ``sample``.

    ``chat``: the messages rendered with the tokenizer's chat template. Otherwise the sample's
    token ids when it carries them, else its text (which already holds any template) encoded
    without special tokens. ``tokenizer``: a ``transformers`` tokenizer, or longctx's own
    (:class:`~longctx._tokenizer.HFTokenizer`: ``render_chat`` and ``encode``, no ``transformers``).
    """
    prompt, ours = sample.prompt, hasattr(tokenizer, "render_chat")
    if mode == "chat":
        if ours:
            return tokenizer.encode(tokenizer.render_chat(prompt.messages))
        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))
    if prompt.token_ids is not None:
        return list(prompt.token_ids)
    return list(tokenizer.encode(prompt.text) if ours else tokenizer.encode(prompt.text, add_special_tokens=False))


def window_error(sample: Sample, n_prompt: int, window: int | None) -> Generation | None:
    """An error generation when prompt + ``max_new_tokens`` exceed ``window``, else None."""
    if window and n_prompt + sample.max_new_tokens > window:
        return Generation(sample.id, None, prompt_tokens=n_prompt, error=(
            f"prompt of {n_prompt} tokens + {sample.max_new_tokens} new tokens exceeds the "
            f"context window of {window}"))
    return None


def failed_generation(sample_id: str, exc: Exception) -> Generation:
    """The generation of a sample whose run raised ``exc`` (OOM, shape errors, ...): its error, one line."""
    return Generation(sample_id, None, error=one_line(f"{type(exc).__name__}: {exc}"))


def generate_each(samples: Sequence[Sample], generate_one: Callable[[Sample], Generation]) -> Iterator[Generation]:
    """``generate_one`` over ``samples`` in order, timing each; an exception becomes its error."""
    for sample in samples:
        start = time.monotonic()
        try:
            generation = generate_one(sample)
        except Exception as exc:  # OOM, shape errors, ...: this sample failed, the run goes on
            generation = failed_generation(sample.id, exc)
        generation.latency_s = time.monotonic() - start
        yield generation
