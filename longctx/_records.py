"""Typed records: what tasks produce, what runners consume and return, what goes to disk.

Every record that goes to disk is a :class:`msgspec.Struct` and is written and read only through
:func:`encode` / :func:`decode` (one encoder). Context length and needle depth are fields, never
parts of metric names; reports group by them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Message(msgspec.Struct, frozen=True):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    """Speaker."""
    content: str
    """Text."""


class Prompt(msgspec.Struct, frozen=True):
    """What a runner sends to a model, in the forms runners need.

    Completion runners send ``token_ids`` when present (exact length, no re-tokenization), else
    ``text``. Chat-only runners send ``messages`` and cannot prefill ``answer_prefix``.
    """

    messages: tuple[Message, ...]
    """The conversation without the chat template (chat endpoints, RLM runners)."""
    text: str = ""
    """The fully rendered prompt: chat template applied, generation prompt, then ``answer_prefix``."""
    answer_prefix: str = ""
    """Text prefilled after the assistant turn starts (RULER's answer prefix); part of ``text``."""
    token_ids: tuple[int, ...] | None = None
    """``text`` as token ids of the tokenizer the sample was built with, when known."""
    context_span: tuple[int, int] | None = None
    """Character span ``(start, end)`` of the context inside the last message's content, when the
    task built the prompt around a context slot (RLM runners keep the context out of the prompt)."""
    context_token_span: tuple[int, int] | None = None
    """Token span ``(start, end)`` of the context inside ``token_ids``: what comes before is the
    task's template up to the context, what comes after is the question, end of turn and answer
    prefix (the ``rag`` runner swaps the context for retrieved chunks there)."""
    question: str | None = None
    """The task's question (with its options, for multiple choice) as text, separate from the
    context: what a retriever searches with. None when the task cannot separate it."""


class Choices(msgspec.Struct, frozen=True):
    """A closed answer set for forced-choice scoring (``longctx sweep --scoring choice``,
    :mod:`longctx._choice`)."""

    candidates: tuple[str, ...]
    """Distinct continuations of the prompt (after its answer prefix), each scored by the sum of
    its tokens' log-probabilities (tokenized on its own and appended to the prompt's ids)."""
    correct: int
    """Index of the true continuation in ``candidates``."""


class Sample(msgspec.Struct, frozen=True):
    """One evaluation item, built by a task for one (length, depth) cell of a sweep."""

    id: str
    """Stable id: same task, parameters and seed give the same id (used for resume)."""
    task: str
    """Registered task name, e.g. ``ruler/niah_single_1``."""
    prompt: Prompt
    """What the model sees."""
    references: tuple[str, ...]
    """Gold answers; the scorer decides how they combine (all / any / max)."""
    length: int
    """Requested context budget in tokens (prompt + generation budget <= length); 0 = no haystack."""
    context_tokens: int
    """Prompt length in tokens of the tokenizer the sample was built with."""
    max_new_tokens: int
    """Generation budget in tokens (RULER: 128 for NIAH)."""
    depth: float | None = None
    """Requested depth of the target evidence, percent of the context (0 = start); None if the
    task does not control placement."""
    needle_positions: tuple[int, ...] = ()
    """Token offset from the prompt's start of every inserted needle / evidence piece (the first
    token of its inserted text, separator included), targets first."""
    evidence_depth: float | None = None
    """Achieved depth of the first target, percent of the context (the document/haystack part of
    the prompt, 0 = its first token), comparable with ``depth``."""
    metadata: dict[str, Any] = {}
    """Task-specific extras (query keys, haystack kind, options, answer type, ...)."""
    choices: Choices | None = None
    """The candidates of forced-choice scoring: set by tasks with a closed answer set when the
    sweep asks for them (``Grid.choices > 0``), None otherwise."""


class Generation(msgspec.Struct):
    """A runner's answer to one sample; ``error`` set means the model/engine failed."""

    sample_id: str
    """The sample this answers."""
    prediction: str | None
    """Generated text; None when ``error`` is set."""
    error: str | None = None
    """One-line failure description (timeout, HTTP 500, context overflow, ...)."""
    latency_s: float = 0.0
    """Wall time of the request, seconds."""
    prompt_tokens: int | None = None
    """Prompt tokens as counted by the engine."""
    cached_tokens: int | None = None
    """Prompt tokens served from the engine's prefix cache."""
    completion_tokens: int | None = None
    """Generated tokens."""
    extra: dict[str, Any] = {}
    """Runner-specific details (finish reason, trajectory, retrieved passages, ...)."""
    thinking: str | None = None
    """What a reasoning model thought before answering (between its thinking markers, or the
    server's ``reasoning`` field), kept out of ``prediction``, which is scored alone; None for a
    model that did not think."""
    thinking_tokens: int | None = None
    """Tokens of ``thinking`` (part of ``completion_tokens``, which counts every generated token)."""
    thinking_truncated: bool = False
    """True when a budget cut the thinking short: the thinking budget (``--max-thinking-tokens``;
    the thinking was then closed for the model and the answer generated after it), or, for a reply
    of one request that never closed its thinking, the generation budget (no answer then)."""


class Result(msgspec.Struct):
    """One line of ``results.jsonl``: a sample, its generation and its scores."""

    sample_id: str
    """``Sample.id``."""
    task: str
    """Task name."""
    runner: str
    """Runner name."""
    model: str
    """Model identity (name or path)."""
    length: int
    """Requested context budget (tokens); reports group by it."""
    context_tokens: int
    """Prompt length in tokens (task's tokenizer)."""
    depth: float | None
    """Requested evidence depth (percent) or None; reports group by it."""
    needle_positions: tuple[int, ...]
    """Token offsets of needles / evidence, targets first."""
    evidence_depth: float | None
    """Achieved depth of the first target (percent)."""
    prediction: str | None
    """Model output; None when ``error`` is set."""
    references: tuple[str, ...]
    """Gold answers."""
    score: float | None
    """Primary metric in [0, 1]; None when ``error`` is set (errors are never scored)."""
    scores: dict[str, float]
    """Every metric of the task's scorer, primary first; empty on error."""
    error: str | None
    """Runner failure, if any."""
    latency_s: float
    """Request wall time, seconds."""
    prompt_tokens: int | None
    """Prompt tokens as counted by the engine."""
    cached_tokens: int | None
    """Prompt tokens served from the prefix cache."""
    completion_tokens: int | None = None
    """Generated tokens."""
    finished_at: float = 0.0
    """Unix time the result was written."""
    extra: dict[str, Any] = {}
    """Runner extras (e.g. RLM trajectory) and task metadata worth keeping."""
    sample_hash: str | None = None
    """Content hash of what the model was given (:func:`sample_hash`: messages, i.e. context and
    question, and references). Equal across runs = the same sample; None in older run folders."""
    attempts: int = 1
    """Results recorded for this sample in its run folder, this one included. Greater than 1 when
    earlier attempts ended in an error and a rerun retried the sample; those lines stay in
    ``results.jsonl`` and the last line wins."""
    previous_error: str | None = None
    """The error of the attempt before this one (None on a first attempt)."""
    session: int | None = None
    """Index into ``manifest.json``'s ``sessions`` of the sweep invocation that produced this
    result; None in older run folders."""
    conditions: dict[str, Any] = {}
    """What can change this result besides the sample and the model, as its session ran:
    ``engine_version``, ``dtype`` the engine ran, ``concurrency`` (requests in flight),
    ``max_num_seqs`` (sequences per engine step), ``deterministic``. None = not known; empty in
    older run folders and for runners that do not say."""
    thinking: str | None = None
    """A reasoning model's thinking (``Generation.thinking``), not scored; None when it did not
    think and in older run folders."""
    thinking_tokens: int | None = None
    """Tokens of ``thinking`` (included in ``completion_tokens``)."""
    thinking_truncated: bool = False
    """The thinking budget cut the thinking short (``Generation.thinking_truncated``)."""
    scoring: Literal["generate", "choice"] = "generate"
    """How the sample was scored: ``generate`` (the task's scorer on the generated text) or
    ``choice`` (forced choice among ``Sample.choices``: ``scores`` holds ``choice_accuracy`` only and
    ``extra["choice"]`` every candidate's log-likelihood); reports keep the two apart."""


_encoder = msgspec.json.Encoder()


def sample_hash(sample: Sample) -> str:
    """Content hash of ``sample``: its messages (context, question, instructions) and references.

    Independent of the tokenizer's chat template and of the runner, so a full-context run and a
    retrieval run over the same samples share hashes; a haystack cut by another tokenizer gives
    another hash (the same sample id then marks an *equivalent*, not an identical, sample).
    """
    import hashlib

    payload = [[m.role, m.content] for m in sample.prompt.messages], list(sample.references)
    return hashlib.sha256(_encoder.encode(payload)).hexdigest()[:16]


def encode(record: msgspec.Struct) -> bytes:
    """The one encoder for on-disk records (compact JSON, no trailing newline)."""
    return _encoder.encode(record)


def decode(data: bytes | str, type_: type) -> Any:
    """Decode and validate ``data`` as ``type_``; raises ``msgspec.ValidationError``/``DecodeError``."""
    return msgspec.json.decode(data, type=type_)


def to_builtins(record: Any) -> Any:
    """A record as plain dicts/lists (for manifests and reports)."""
    return msgspec.to_builtins(record)
