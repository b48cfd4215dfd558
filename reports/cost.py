"""What a run spent: tokens sent, computed and generated, LM calls, retrieved tokens, wall time,
throughput and memory-state size, per (run, task, length). Pure functions, no I/O.

Runner-specific fields are read from ``Result.extra`` when present: ``extra["rlm"]`` (``root_calls``,
``sub_calls``, ``cost_usd``: :meth:`longctx.runners.rlm.agent.Budget.summary`), ``extra["rag"]``
(``retrieved_tokens``) and ``extra["state_bytes"]`` (the ``hope`` runner's memory state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from longctx._records import Result
from longctx.reports.aggregate import group



class Cost(msgspec.Struct, frozen=True):
    """What one run spent on one task at one length (or all lengths), per sample unless noted.

    Every sample counts, errors included (a failed request cost time too). A field is None when
    no sample of the group reports it.
    """

    run: str
    """Run label."""
    task: str
    """Task name."""
    length: int | None
    """Context budget; None = all lengths."""
    samples: int
    """Results in the group."""
    prompt_tokens: float | None
    """Prompt tokens sent to the engine (summed over all LM calls for ``rlm``)."""
    computed_tokens: float | None
    """Prompt tokens computed, i.e. not served from the prefix cache (samples reporting both)."""
    cached_share: float | None
    """Share of the prompt tokens served from the prefix cache."""
    completion_tokens: float | None
    """Generated tokens."""
    root_calls: float | None
    """Root-LM calls (``rlm``: ``extra["rlm"]["root_calls"]``)."""
    sub_calls: float | None
    """Sub-LM calls (``rlm``: ``extra["rlm"]["sub_calls"]``)."""
    retrieved_tokens: float | None
    """Context tokens the retriever passed to the model (``rag``: ``extra["rag"]["retrieved_tokens"]``)."""
    latency_s: float | None
    """Wall time per sample, seconds."""
    tokens_per_s: float | None
    """(computed prompt + generated tokens) / wall time, over samples reporting all three."""
    generated_per_s: float | None
    """Generated tokens / wall time."""
    state_bytes: int | None
    """Largest memory-state size, bytes (``hope``: ``extra["state_bytes"]``)."""
    cost_usd: float | None
    """Total API cost reported by the runner (``rlm``), dollars."""
    tokens_estimated: int = 0
    """Samples whose token counts the runner estimated from characters (``rlm`` with an engine that
    reported no usage: ``extra["rlm"]["tokens_estimated"]``)."""


def _extra(r: Result, *path: str) -> Any:
    node: Any = r.extra
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def cost_of(results: Sequence[Result], run: str, task: str, length: int | None) -> Cost:
    """:class:`Cost` of one group of results."""
    prompt = [r.prompt_tokens for r in results if r.prompt_tokens is not None]
    both = [
        (r.prompt_tokens, r.cached_tokens)
        for r in results
        if r.prompt_tokens is not None and r.cached_tokens is not None
    ]
    completion = [r.completion_tokens for r in results if r.completion_tokens is not None]
    latency = [r.latency_s for r in results]
    rates = [
        (r.prompt_tokens - (r.cached_tokens or 0), r.completion_tokens, r.latency_s)
        for r in results
        if r.prompt_tokens is not None and r.completion_tokens is not None and r.latency_s > 0
    ]
    gen = [
        (r.completion_tokens, r.latency_s)
        for r in results
        if r.completion_tokens is not None and r.latency_s > 0
    ]
    state = [v for r in results if (v := _extra(r, "state_bytes")) is not None]
    usd = [v for r in results if (v := _extra(r, "rlm", "cost_usd")) is not None]
    prompt_sum = sum(p for p, _ in both)
    return Cost(
        run=run,
        task=task,
        length=length,
        samples=len(results),
        prompt_tokens=_mean(prompt),
        computed_tokens=_mean([p - c for p, c in both]),
        cached_share=sum(c for _, c in both) / prompt_sum if prompt_sum else None,
        completion_tokens=_mean(completion),
        root_calls=_mean([v for r in results if (v := _extra(r, "rlm", "root_calls")) is not None]),
        sub_calls=_mean([v for r in results if (v := _extra(r, "rlm", "sub_calls")) is not None]),
        retrieved_tokens=_mean(
            [v for r in results if (v := _extra(r, "rag", "retrieved_tokens")) is not None]
        ),
        latency_s=_mean(latency),
        tokens_per_s=sum(p + c for p, c, _ in rates) / sum(t for *_, t in rates) if rates else None,
        generated_per_s=sum(c for c, _ in gen) / sum(t for _, t in gen) if gen else None,
        state_bytes=int(max(state)) if state else None,
        cost_usd=sum(usd) if usd else None,
        tokens_estimated=sum(
            1
            for r in results
            if isinstance(r.extra.get("rlm"), dict) and r.extra["rlm"].get("tokens_estimated")
        ),
    )


def costs(runs: Mapping[str, Sequence[Result]]) -> list[Cost]:
    """Per run and task: a :class:`Cost` per length, then one over all lengths (``length`` None)."""
    out: list[Cost] = []
    for run, results in runs.items():
        for task, task_results in group(results, lambda r: r.task).items():
            by_len = group(task_results, lambda r: r.length)
            out += [cost_of(by_len[n], run, task, n) for n in sorted(by_len)]
            out.append(cost_of(task_results, run, task, None))
    return out
