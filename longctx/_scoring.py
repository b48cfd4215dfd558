"""Shared scorers. Each benchmark family's official metric lives with its task unless shared.

RULER (NVIDIA/RULER ``scripts/eval/synthetic/constants.py`` and ``scripts/eval/evaluate.py``):

- predictions are post-processed: control characters ``[\\x00-\\x1f]`` become ``"\\n"``, then
  ``strip()``;
- ``string_match_all``: per sample, the fraction of references ``r`` with ``r.lower()`` in
  ``pred.lower()`` (the benchmark reports the mean x 100; here scores are in [0, 1]);
- ``string_match_part``: per sample, the max over references of that indicator (QA tasks).

Because a substring test counts ``1234567`` inside ``12345678``, a stricter ``whole_match`` is also
reported: the reference must stand as a whole token (no letter or digit right before or after it).

Corpus metrics (the optional :class:`~longctx._protocols.CorpusScorer` hook): :func:`corpus_hook`
finds a task's ``corpus_scores`` and :func:`corpus_rows` applies it per length, the one place the
sweep summary and the HTML report group results for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import msgspec

from longctx._records import Result, Sample

CorpusHook = Callable[[Sequence[Result]], dict[str, float | None]]
"""A scorer's bound ``corpus_scores`` method."""

_CONTROL = re.compile(r"[\x00-\x1f]")


def ruler_postprocess(prediction: str) -> str:
    """RULER's prediction clean-up."""
    return _CONTROL.sub("\n", prediction).strip()


def _contains_whole(pred: str, ref: str) -> bool:
    pattern = r"(?<![0-9A-Za-z])" + re.escape(ref.lower()) + r"(?![0-9A-Za-z])"
    return re.search(pattern, pred) is not None


class RulerMatch:
    """RULER's string_match_all / string_match_part, plus the whole-token variant."""

    def __init__(self, mode: str = "all"):
        if mode not in ("all", "part"):
            raise ValueError(mode)
        self.mode = mode
        primary = f"string_match_{mode}"
        self.metrics = (primary, f"whole_match_{mode}")

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        """Both metrics in [0, 1]."""
        pred = ruler_postprocess(prediction).lower()
        refs = [r.lower() for r in sample.references]
        if not refs:
            raise ValueError(f"sample {sample.id} has no references")
        sub = [1.0 if r in pred else 0.0 for r in refs]
        whole = [1.0 if _contains_whole(pred, r) else 0.0 for r in refs]
        combine = (lambda xs: sum(xs) / len(xs)) if self.mode == "all" else max
        return {self.metrics[0]: combine(sub), self.metrics[1]: combine(whole)}


# ---- corpus metrics --------------------------------------------------------------------------
class CorpusRow(msgspec.Struct, frozen=True):
    """A task's corpus metrics over one group of results."""

    length: int | None
    """Context budget of the group; None = every length pooled (each result one item)."""
    n: int
    """Results in the group (errors left out)."""
    metrics: dict[str, float | None]
    """What the scorer's ``corpus_scores`` returned (None = undefined for this group)."""


def scorer_corpus_hook(scorer: object) -> CorpusHook | None:
    """``scorer.corpus_scores`` when the scorer has that optional hook, else None."""
    hook = getattr(scorer, "corpus_scores", None)
    return hook if callable(hook) else None


def corpus_hook(task_name: str) -> CorpusHook | None:
    """The ``corpus_scores`` hook of registered task ``task_name`` (built with default options), or
    None when the task is unknown here, cannot be built without options, or has no such hook."""
    from longctx._registry import get_task

    try:
        task = get_task(task_name)
    except Exception:  # an unregistered or option-requiring task: no corpus metrics, not an error
        return None
    return scorer_corpus_hook(getattr(task, "scorer", None))


def corpus_rows(results: Iterable[Result], hook: CorpusHook) -> list[CorpusRow]:
    """``hook`` over one task's results: one row per length (ascending), then all lengths pooled
    when there are several. Errors are left out (never scored); no rows when nothing was scored."""
    by_length: dict[int, list[Result]] = {}
    for r in results:
        if r.error is None:
            by_length.setdefault(r.length, []).append(r)
    rows = [CorpusRow(n, len(v), hook(v)) for n, v in sorted(by_length.items())]
    if len(rows) > 1:
        pooled = [r for n in sorted(by_length) for r in by_length[n]]
        rows.append(CorpusRow(None, len(pooled), hook(pooled)))
    return rows
