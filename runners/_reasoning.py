"""Reasoning models: the thinking split from the answer, and a thinking budget apart from the answer's.

A reasoning model writes its thinking before the answer, either between markers in the text
(``<think>...</think>``: DeepSeek-R1, Qwen3, QwQ) or, behind a vLLM server started with
``--reasoning-parser``, in a separate field of the chat completion message. Only the answer is
scored; the thinking is recorded (``Generation.thinking``) with its token count.

Field names, from the installed vLLM 0.32 source (``vllm/entrypoints/openai/chat_completion/
protocol.py``): the response message carries the thinking as ``reasoning`` (``ChatMessage.reasoning``,
"vLLM-specific fields that are not in OpenAI spec"); older vLLM releases and DeepSeek's API call it
``reasoning_content`` (vLLM 0.32 still accepts that name in request messages and renames it to
``reasoning``). Both are read, ``reasoning`` first. A choice's ``stop_reason`` (vLLM, "not part of
the OpenAI spec") names the stop string that ended it, None for an end-of-sequence token.

The thinking budget is *budget forcing* as in s1 (Muennighoff et al., "s1: Simple test-time
scaling", arXiv:2501.19393, 2025, section 3.1: "we simply append the end-of-thinking token
delimiter ... to early exit the thinking stage and make the model provide its current best
answer"), done with two ordinary requests so it works on any OpenAI-compatible server:

1. the thinking: the prompt without the answer prefix, ``max_tokens`` = the thinking budget,
   ``stop`` = the end marker;
2. the answer: the same prompt, the thinking, the end marker (and, with ``prefill_answer``, the
   task's answer prefix), ``max_tokens`` = the sample's own answer budget.

When request 1 ends on ``finish_reason == "length"`` the budget cut the thinking short:
``thinking_truncated``. A model that answers without thinking (no start marker, ended by its
end-of-sequence token) gets no second request. vLLM 0.32 also has a server-side budget
(``thinking_token_budget`` in the request, ``vllm/sampling_params.py``), but it is refused unless
the server was started with ``--reasoning-parser``/``--reasoning-config``
(``vllm/v1/engine/input_processor.py``) and exists on no other engine, so it is not used.

Nothing here imports an engine; the requests go through :class:`~longctx.runners._openai_client.
AsyncOpenAIClient`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longctx._records import Generation, Sample

if TYPE_CHECKING:
    from longctx.runners._openai_client import AsyncOpenAIClient, RequestSpec

THINK_START = "<think>"
THINK_END = "</think>"
DEFAULT_THINKING_TOKENS = 2048
"""The thinking budget of a reasoning model when ``max_thinking_tokens`` is not given."""
WINDOW_MARGIN = 16
"""Tokens kept free in the window for the end marker and the newlines after it."""


@dataclass(frozen=True)
class ThinkingSpec:
    """How to let a reasoning model think: its budget and its markers."""

    budget: int
    """Thinking tokens at most (request 1's ``max_tokens``)."""
    start: str = THINK_START
    """The marker opening the thinking."""
    end: str = THINK_END
    """The marker closing it (request 1's stop string)."""
    prefill_answer: bool = False
    """Put the task's answer prefix after the closed thinking (completions mode only)."""


def split_thinking(text: str, start: str = THINK_START, end: str = THINK_END,
                   opened: bool = False) -> tuple[str | None, str, bool]:
    """``(thinking, answer, closed)`` of a generated text.

    The thinking is what lies between ``start`` (or the text's beginning when the prompt already
    ``opened`` the thinking, or the text holds ``end`` without ``start``) and ``end``; the answer is
    what follows ``end``. A thinking never closed takes the whole text (``closed`` False, answer
    empty). A text without markers is all answer (thinking None).
    """
    head, sep_start, tail = text.partition(start)
    if sep_start and not head.strip():
        body = tail
    elif opened or end in text:
        body = text
    else:
        return None, text, True
    thinking, sep_end, answer = body.partition(end)
    if not sep_end:
        return body.strip(), "", False
    return thinking.strip(), answer.strip(), True


def template_mentions(folder: str | Path, marker: str = THINK_START) -> bool:
    """True when the chat template of the model (or tokenizer) folder mentions ``marker``.

    Looks in ``chat_template.jinja``, ``chat_template.json`` and ``tokenizer_config.json``'s
    ``chat_template`` (a string or a list of named templates), as transformers does.
    """
    root = Path(folder).expanduser()
    texts: list[str] = []
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        texts.append(jinja.read_text(encoding="utf-8", errors="replace"))
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = root / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, str):
            texts.append(template)
        elif isinstance(template, list):
            texts += [t.get("template", "") for t in template if isinstance(t, dict)]
    return any(marker in t for t in texts)


def prompt_without_prefix(sample: Sample) -> str:
    """The sample's rendered prompt (chat template, generation prompt) without its answer prefix."""
    text, prefix = sample.prompt.text, sample.prompt.answer_prefix
    return text[: len(text) - len(prefix)] if prefix and text.endswith(prefix) else text


def message_text(message: dict[str, Any]) -> tuple[str, str | None]:
    """``(content, reasoning)`` of a chat completion message (vLLM: ``reasoning``; older vLLM and
    DeepSeek: ``reasoning_content``)."""
    reasoning = message.get("reasoning")
    if reasoning is None:
        reasoning = message.get("reasoning_content")
    return message.get("content") or "", reasoning if isinstance(reasoning, str) else None


def reasoning_tokens(usage: dict[str, Any]) -> int | None:
    """OpenAI's ``usage.completion_tokens_details.reasoning_tokens``, when the server reports it."""
    details = usage.get("completion_tokens_details") or {}
    value = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return value if isinstance(value, int) else None


def _choice(data: dict[str, Any], mode: str) -> tuple[str, str | None, dict[str, Any]]:
    """``(text, server reasoning, choice)`` of a response; KeyError/IndexError/TypeError if malformed."""
    choice = data["choices"][0]
    if mode == "chat":
        text, reasoning = message_text(choice["message"])
    else:
        text, reasoning = choice["text"] or "", None
    return text, reasoning, choice


def _joined(*parts: str | None) -> str | None:
    kept = [p.strip() for p in parts if p and p.strip()]
    return "\n".join(kept) if kept else None


def continuation(generated: str, server_thinking: str | None, think: ThinkingSpec, mode: str) -> str:
    """What request 2 continues from, after the prompt: the thinking as generated (completions:
    verbatim; chat: opened by the start marker, a server-split thinking put back), then the
    closing marker."""
    if mode == "chat" and not generated.lstrip().startswith(think.start):
        generated = think.start + "\n" + (server_thinking or "") + generated
    newline = "" if not generated or generated.endswith("\n") else "\n"
    return generated + newline + think.end + "\n\n"


async def generate_with_thinking(client: AsyncOpenAIClient, sample: Sample, spec: RequestSpec) -> Generation:
    """``sample``'s generation by budget forcing (module docstring): the thinking within
    ``spec.thinking.budget`` tokens, then the answer within ``sample.max_new_tokens``.

    ``completion_tokens`` counts both requests' generated tokens, ``thinking_tokens`` request 1's;
    ``prompt_tokens`` / ``cached_tokens`` are request 1's (request 2's prompt, which holds the
    thinking, is ``extra["answer_prompt_tokens"]``). Failures become ``Generation.error`` naming
    the request that failed, never exceptions; ``EngineGone`` propagates.
    """
    from longctx.runners._openai_client import (
        RequestFailed,
        answer_request_body,
        one_line,
        thinking_request_body,
    )

    think = spec.thinking
    assert think is not None
    start = time.monotonic()

    async def ask(what: str, path: str, body: dict[str, Any]) -> tuple[Any, ...] | Generation:
        try:
            data, latency, attempts = await client.post_json(path, body)
        except RequestFailed as exc:
            return Generation(sample.id, None, error=f"{what}: {exc}", latency_s=time.monotonic() - start)
        try:
            text, reasoning, choice = _choice(data, spec.mode)
        except (KeyError, IndexError, TypeError):
            return Generation(sample.id, None, latency_s=time.monotonic() - start,
                              error=f"{what}: malformed response: {one_line(repr(data), 200)}")
        return text, reasoning, choice, data.get("usage") or {}, latency, attempts

    try:
        first = await ask("thinking request", *thinking_request_body(sample, spec))
    except ValueError as exc:  # unknown mode, unencodable body
        return Generation(sample.id, None, error=one_line(str(exc)), latency_s=time.monotonic() - start)
    if isinstance(first, Generation):
        return first
    text, server_thinking, choice, usage1, latency1, attempts1 = first
    prompt_tokens, cached_tokens, generated1 = _usage(usage1)
    opened = spec.mode != "chat" and prompt_without_prefix(sample).rstrip().endswith(think.start)
    thought, answer, closed = split_thinking(text, think.start, think.end, opened=opened)
    finish = choice.get("finish_reason")
    truncated = finish == "length"
    extra: dict[str, Any] = {"thinking_finish_reason": finish} if finish else {}
    if truncated:
        done = None
    elif thought is not None:  # markers in the text: answered already only if the stop was ignored
        done = answer if closed and answer else None
    elif server_thinking is not None:  # a reasoning parser split it: answered if there is content
        done = answer if answer.strip() else None
    elif "stop_reason" in choice:  # vLLM says which stop ended it: None = end of sequence
        done = answer if choice.get("stop_reason") != think.end else None
    else:  # no markers, no reasoning field, no stop_reason: it answered without thinking
        done = None if opened else answer
    if done is not None:
        if finish:
            extra["finish_reason"] = finish
        thinking = _joined(server_thinking, thought)
        return Generation(
            sample.id, done, latency_s=latency1, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
            completion_tokens=generated1, extra=extra, thinking=thinking,
            thinking_tokens=reasoning_tokens(usage1) if thinking is not None else None,
        )
    second = await ask("answer request", *answer_request_body(
        sample, spec, continuation(text, server_thinking, think, spec.mode)))
    if isinstance(second, Generation):
        return second
    text2, server_more, choice2, usage2, latency2, attempts2 = second
    if not text2.strip() and server_more:  # a reasoning parser took the whole answer for reasoning
        text2, server_more = server_more, None
    more, answer2, closed2 = split_thinking(text2, think.start, think.end)
    if more is None or not closed2:
        more, answer2 = None, text2.strip()
    _, _, generated2 = _usage(usage2)
    if usage2.get("prompt_tokens") is not None:
        extra["answer_prompt_tokens"] = usage2["prompt_tokens"]
    if choice2.get("finish_reason"):
        extra["finish_reason"] = choice2["finish_reason"]
    if attempts1 + attempts2 > 2:
        extra["attempts"] = attempts1 + attempts2 - 1
    total = generated1 + generated2 if generated1 is not None and generated2 is not None else None
    return Generation(
        sample.id, answer2, latency_s=latency1 + latency2, prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens, completion_tokens=total, extra=extra,
        thinking=_joined(server_thinking, answer if thought is None else thought, more, server_more) or "",
        thinking_tokens=generated1, thinking_truncated=truncated,
    )


def _usage(usage: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """``(prompt_tokens, cached_tokens, completion_tokens)`` of a response's ``usage``."""
    details = usage.get("prompt_tokens_details") or {}
    return usage.get("prompt_tokens"), details.get("cached_tokens"), usage.get("completion_tokens")
