"""Chunking a sample's context, bookkeeping of what was retrieved, and the rebuilt prompt.

Everything here works on token spans ``(start, end)`` relative to the prompt's start (the
coordinates of ``Sample.needle_positions``), on the ids of the tokenizer the sample was built with
(the generator's). Nothing here imports a heavy library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from longctx._protocols import Tokenizer
from longctx._records import Message, Prompt, Sample

Span = tuple[int, int]


def chunk_spans(start: int, end: int, size: int, overlap: int) -> list[Span]:
    """Windows of ``size`` tokens over ``[start, end)``, each starting ``size - overlap`` after the
    previous one; the last window ends at ``end`` (and may be shorter). Empty range, no chunks."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("need size >= 1 and 0 <= overlap < size")
    spans: list[Span] = []
    s = start
    while s < end:
        e = min(s + size, end)
        spans.append((s, e))
        if e == end:
            break
        s += size - overlap
    return spans


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """``spans`` in document order with overlapping or adjacent ones merged (no token twice)."""
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def needles_inside(positions: Sequence[int], spans: Sequence[Span]) -> list[bool]:
    """For each needle position (its first token), whether it lies inside one of ``spans``."""
    return [any(s <= p < e for s, e in spans) for p in positions]


def target_recall(retrieved: Sequence[bool], n_targets: int | None) -> float | None:
    """Fraction of the first ``n_targets`` needles (the targets; all when None) that were retrieved;
    None when the sample has no needle positions."""
    if not retrieved:
        return None
    targets = retrieved[: n_targets] if n_targets else retrieved
    return sum(targets) / len(targets)


def ids_key(ids: Sequence[int]) -> bytes:
    """A content key of a chunk's token ids (caches of decoded texts and embeddings)."""
    import array

    return hashlib.blake2b(array.array("q", ids).tobytes(), digest_size=16).digest()


def rag_sample(sample: Sample, spans: Sequence[Span], tokenizer: Tokenizer) -> Sample:
    """``sample`` with its context replaced by the tokens of ``spans`` (merged, document order).

    Token ids: the original ids before the context (template), the retrieved ids, the original ids
    after it (question, end of turn, answer prefix), so both ends are kept token for token. Text is
    the decoded ids; the last message has its context character span replaced by the decoded
    retrieved ids (chat mode). Same id, references, budget; needle bookkeeping stays with ``rag``
    (the new sample carries no needle positions).
    """
    prompt = sample.prompt
    assert prompt.token_ids is not None and prompt.context_token_span is not None
    ids = prompt.token_ids
    start, end = prompt.context_token_span
    merged = merge_spans(spans)
    retrieved = [t for s, e in merged for t in ids[s:e]]
    new_ids = (*ids[:start], *retrieved, *ids[end:])
    context_text = tokenizer.decode(retrieved) if retrieved else ""
    messages: tuple[Message, ...] = prompt.messages
    context_span = None
    if prompt.context_span is not None and messages:
        c0, c1 = prompt.context_span
        last = messages[-1]
        messages = (*messages[:-1], Message(last.role, last.content[:c0] + context_text + last.content[c1:]))
        context_span = (c0, c0 + len(context_text))
    new_prompt = Prompt(
        messages=messages,
        text=tokenizer.decode(new_ids),
        answer_prefix=prompt.answer_prefix,
        token_ids=new_ids,
        context_span=context_span,
        context_token_span=(start, start + len(retrieved)),
        question=prompt.question,
    )
    return msgspec.structs.replace(
        sample, prompt=new_prompt, context_tokens=len(new_ids), needle_positions=(), evidence_depth=None
    )


def rag_record(
    *,
    retriever: str,
    k: int,
    chunk_tokens: int,
    overlap: int,
    spans: Sequence[Span],
    ranking: Sequence[tuple[int, float]],
    sample: Sample,
) -> dict[str, Any]:
    """``Generation.extra["rag"]`` of one sample (the schema the compare page reads).

    ``ranking`` is ``(chunk index, score)`` of the retrieved chunks, best first.
    """
    chosen = [spans[i] for i, _ in ranking]
    flags = needles_inside(sample.needle_positions, chosen)
    n_targets = sample.metadata.get("n_targets")
    return {
        "retriever": retriever,
        "k": k,
        "chunk_tokens": chunk_tokens,
        "overlap": overlap,
        "n_chunks": len(spans),
        "chunks": [
            {"start": spans[i][0], "end": spans[i][1], "rank": r, "score": float(score)}
            for r, (i, score) in enumerate(ranking, 1)
        ],
        "needles_retrieved": flags,
        "recall": target_recall(flags, int(n_targets) if n_targets else None),
        "retrieved_tokens": sum(e - s for s, e in merge_spans(chosen)),
    }
