"""Retrieval runs (``rag``) in a comparison: needle recall and why answers were wrong.

A ``rag`` record carries ``extra["rag"]`` with ``retriever``, ``k``, ``chunk_tokens``, ``overlap``,
``n_chunks``, ``chunks`` (``start``, ``end``, ``rank``, ``score``), ``needles_retrieved`` (one bool
per needle), ``recall`` (share of needles inside the retrieved chunks, None when unknown) and
``retrieved_tokens``. A wrong answer is then a retrieval miss or a reading miss
(:class:`RetrievalSplit`). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec

from longctx._records import Result
from longctx.reports.aggregate import DepthAxis, group, sort_bins



def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class RetrievalSplit(msgspec.Struct, frozen=True):
    """Recall of the retriever and why answers were wrong, for one cell of a ``rag`` run.

    A wrong answer (score < 1) is a **retrieval miss** when a needle was not among the retrieved
    chunks (recall < 1), else a **reading miss**: the evidence was in the prompt and the model
    still answered wrongly.
    """

    run: str
    """Run label."""
    task: str
    """Task name."""
    length: int | None
    """Context budget; None = all lengths."""
    depth_bin: float | None
    """Depth bin (see :class:`~longctx.reports.aggregate.DepthAxis`); None with ``pooled``."""
    pooled: bool
    """True when every depth of the length (or everything) is pooled."""
    scored: int
    """Scored samples."""
    with_recall: int
    """Scored samples whose record has a recall (``extra["rag"]["recall"]`` not None)."""
    recall: float | None
    """Mean needle recall over those."""
    right: int
    """Scored samples with full credit."""
    retrieval_miss: int
    """Wrong answers with recall < 1."""
    reading_miss: int
    """Wrong answers with recall = 1."""
    unknown: int
    """Wrong answers without a recall."""


def is_rag(results: Iterable[Result]) -> bool:
    """True when any result carries ``extra["rag"]`` (a retrieval run)."""
    return any(isinstance(r.extra.get("rag"), dict) for r in results)


def retrieval_split(
    results: Iterable[Result],
    run: str,
    task: str,
    length: int | None,
    depth_bin: float | None = None,
    pooled: bool = False,
) -> RetrievalSplit:
    """:class:`RetrievalSplit` of one group (errors are not scored and not counted)."""
    scored = right = miss = reading = unknown = 0
    recalls: list[float] = []
    for r in results:
        if r.score is None:
            continue
        scored += 1
        rag = r.extra.get("rag") if isinstance(r.extra.get("rag"), dict) else {}
        recall = rag.get("recall")
        if isinstance(recall, (int, float)):
            recalls.append(float(recall))
        if r.score >= 1.0:
            right += 1
        elif not isinstance(recall, (int, float)):
            unknown += 1
        elif recall < 1.0:
            miss += 1
        else:
            reading += 1
    return RetrievalSplit(
        run,
        task,
        length,
        depth_bin,
        pooled,
        scored,
        len(recalls),
        _mean(recalls),
        right,
        miss,
        reading,
        unknown,
    )


def retrieval_splits(
    runs: Mapping[str, Sequence[Result]], axes: Mapping[str, DepthAxis]
) -> list[RetrievalSplit]:
    """For every ``rag`` run and task: per (length, depth bin), per length, and overall."""
    out: list[RetrievalSplit] = []
    for run, results in runs.items():
        if not is_rag(results):
            continue
        for task, task_results in group(results, lambda r: r.task).items():
            axis = axes[task]
            by_cell = group(task_results, lambda r, a=axis: (r.length, a.bin(r)))
            for length in sorted({k[0] for k in by_cell}):
                for depth in sort_bins(k[1] for k in by_cell if k[0] == length):
                    out.append(retrieval_split(by_cell[(length, depth)], run, task, length, depth))
                out.append(
                    retrieval_split(
                        [r for r in task_results if r.length == length], run, task, length, pooled=True
                    )
                )
            out.append(retrieval_split(task_results, run, task, None, pooled=True))
    return out
