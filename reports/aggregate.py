"""Aggregation of results into report numbers: pure functions, no plotting, no I/O.

This is the data API every report builds on (HTML report, terminal tables, cross-run comparisons):

- :func:`summarize` turns any group of :class:`~longctx._records.Result` into :class:`Stats`
  (counts, accuracy, Wilson interval, errors, latency, cached-token share);
- :func:`depth_axis` decides what the depth axis of a task means (requested needle depth, or the
  achieved evidence position binned into deciles for tasks that do not place evidence);
- :func:`cells` / :func:`by_length` / :func:`by_task` group labelled runs into
  (run, task, length, depth bin) cells and their margins;
- :func:`failing` lists the samples worth reading (errors, or score below 1);
- :func:`paired_scores` matches samples of two runs by id (for paired comparisons).

Conventions, stated once:

- **Errors are never scored.** A result with ``error`` set has ``score`` None; it counts in ``n``
  and ``errors`` but not in ``scored``. The primary ``accuracy`` is the mean primary score over
  *scored* results only; ``accuracy_all`` counts every error as a failure (score 0) and is shown
  beside it so a run that fails loudly cannot look better than it is.
- "Accuracy" is the mean of the task's primary metric, which lies in [0, 1] and is binary for most
  tasks (NIAH string match with one reference, multiple choice); for graded metrics (token F1,
  partial string match) it is the mean score.
- **Forced choice is its own metric.** Results scored by forced choice (``Result.scoring ==
  "choice"``, metric ``choice_accuracy``: the true candidate ranks first by log-likelihood) are
  reported under their own task label, ``TASK (forced choice)`` (:func:`reported`), so their numbers get
  their own tables and curves and are never pooled with, or paired against, the accuracy of
  generated answers on the same task.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

import msgspec

from longctx._records import Result

#: two-sided 95% standard normal quantile, Phi^-1(0.975)
Z95 = 1.959963984540054

K = TypeVar("K", bound=Hashable)


# ---- intervals ----------------------------------------------------------------------------------
def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when ``n`` is 0.

    Wilson, E. B. (1927), "Probable inference, the law of succession, and statistical inference",
    JASA 22(158):209-212. With p = successes / n::

        centre    = (p + z^2 / (2n)) / (1 + z^2 / n)
        halfwidth = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at p = 0 or 1,
    which is where long-context cells usually sit. ``successes`` may be fractional (sum of graded
    scores); the interval is then the usual approximation treating the mean score as a proportion.
    """
    if n <= 0:
        return None
    p = min(max(successes / n, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---- one group ----------------------------------------------------------------------------------
class Stats(msgspec.Struct, frozen=True):
    """Summary of one group of results (a cell, a length, a whole task...)."""

    n: int
    """Results in the group, errors included."""
    scored: int
    """Results with a score (``n - errors``)."""
    errors: int
    """Results whose runner failed (never scored)."""
    failures: int
    """Scored results with score < 1."""
    score_sum: float
    """Sum of primary scores over scored results."""
    accuracy: float | None
    """Mean primary score over scored results; None if nothing was scored."""
    ci_low: float | None
    """Lower end of the Wilson 95% interval of ``accuracy``."""
    ci_high: float | None
    """Upper end of the Wilson 95% interval of ``accuracy``."""
    accuracy_all: float | None
    """Mean score counting errors as 0 (``score_sum / n``); None if ``n`` is 0."""
    latency_mean: float | None
    """Mean request latency of scored results, seconds."""
    latency_p50: float | None
    """Median request latency of scored results, seconds."""
    prompt_tokens: int
    """Engine-counted prompt tokens, over results where both prompt and cached counts are known."""
    cached_tokens: int
    """Prefix-cache tokens over the same results."""
    cached_share: float | None
    """``cached_tokens / prompt_tokens``; None when the engine reported no counts."""


def summarize(results: Iterable[Result]) -> Stats:
    """:class:`Stats` of one group of results."""
    n = errors = failures = 0
    score_sum = 0.0
    latencies: list[float] = []
    prompt = cached = 0
    known_tokens = False
    for r in results:
        n += 1
        if r.error is not None or r.score is None:
            errors += 1
        else:
            score_sum += r.score
            failures += r.score < 1.0
            latencies.append(r.latency_s)
        if r.prompt_tokens is not None and r.cached_tokens is not None:
            known_tokens = True
            prompt += r.prompt_tokens
            cached += r.cached_tokens
    scored = n - errors
    ci = wilson_interval(score_sum, scored)
    return Stats(
        n=n,
        scored=scored,
        errors=errors,
        failures=failures,
        score_sum=score_sum,
        accuracy=score_sum / scored if scored else None,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        accuracy_all=score_sum / n if n else None,
        latency_mean=statistics.fmean(latencies) if latencies else None,
        latency_p50=statistics.median(latencies) if latencies else None,
        prompt_tokens=prompt,
        cached_tokens=cached,
        cached_share=cached / prompt if known_tokens and prompt > 0 else None,
    )


def group(results: Iterable[Result], key: Callable[[Result], K]) -> dict[K, list[Result]]:
    """Results grouped by ``key`` (insertion order of first appearance)."""
    groups: dict[K, list[Result]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return dict(groups)


# ---- the depth axis -----------------------------------------------------------------------------
class DepthAxis(msgspec.Struct, frozen=True):
    """What "depth" means for a task's results, and how a result falls into a depth bin.

    - ``requested``: the task placed evidence at ``Result.depth`` percent (NIAH); bins are the
      requested depths themselves.
    - ``evidence``: the task does not control placement (BABILong, LongHealth, QASPER:
      ``Result.depth`` is None); bins are deciles of the achieved ``Result.evidence_depth``,
      keyed by their lower edge (0, 10, ..., 90).
    - ``none``: no position is known; every result falls into one bin (None).
    """

    kind: Literal["requested", "evidence", "none"]
    """Which field the bins come from."""

    @property
    def title(self) -> str:
        """Axis title for plots and tables."""
        return {
            "requested": "needle depth (% of context)",
            "evidence": "evidence position (decile of context)",
            "none": "depth (not recorded)",
        }[self.kind]

    def bin(self, r: Result) -> float | None:
        """The depth bin of ``r``; None when its position is unknown."""
        if self.kind == "requested":
            return r.depth
        if self.kind == "evidence" and r.evidence_depth is not None:
            return float(min(max(int(r.evidence_depth // 10), 0), 9) * 10)
        return None

    def label(self, value: float | None) -> str:
        """Short label of a bin: ``50%`` (requested), ``50-60%`` (evidence decile), ``n/a``."""
        if value is None:
            return "all" if self.kind == "none" else "n/a"
        if self.kind == "evidence":
            return f"{value:g}-{value + 10:g}%"
        return f"{value:g}%"


def depth_axis(results: Iterable[Result]) -> DepthAxis:
    """The depth axis for one task's results (across every run, so runs share bins)."""
    has_evidence = False
    for r in results:
        if r.depth is not None:
            return DepthAxis("requested")
        has_evidence = has_evidence or r.evidence_depth is not None
    return DepthAxis("evidence" if has_evidence else "none")


def sort_bins(values: Iterable[float | None]) -> list[float | None]:
    """Depth bins ascending, the unknown bin (None) last."""
    values = set(values)
    return sorted(v for v in values if v is not None) + ([None] if None in values else [])


# ---- lengths ------------------------------------------------------------------------------------
def length_label(tokens: int) -> str:
    """``4096 -> '4K'``, ``131072 -> '128K'``, ``1048576 -> '1M'`` (RULER's convention: K = 1024);
    lengths that are not whole multiples are shown exactly."""
    if tokens and tokens % (1 << 20) == 0:
        return f"{tokens >> 20}M"
    if tokens and tokens % 1024 == 0:
        return f"{tokens >> 10}K"
    return str(tokens)


# ---- runs, cells and margins --------------------------------------------------------------------
class Cell(msgspec.Struct, frozen=True):
    """Stats of one (run, task, length, depth bin) cell."""

    run: str
    """Run label."""
    task: str
    """Task name."""
    length: int
    """Requested context budget, tokens."""
    depth_bin: float | None
    """Depth bin (see :class:`DepthAxis`)."""
    stats: Stats
    """The numbers."""


class Margin(msgspec.Struct, frozen=True):
    """Stats of one (run, task) at one length (all depths pooled), or over all lengths (None)."""

    run: str
    """Run label."""
    task: str
    """Task name."""
    length: int | None
    """Context budget, or None for all lengths pooled."""
    stats: Stats
    """The numbers."""


RunResults = Mapping[str, Sequence[Result]]
"""Results of several runs keyed by run label (insertion order = display order)."""


def tasks_of(runs: RunResults) -> list[str]:
    """Task names across runs, in order of first appearance."""
    seen: dict[str, None] = {}
    for results in runs.values():
        for r in results:
            seen.setdefault(r.task, None)
    return list(seen)


def depth_axes(runs: RunResults) -> dict[str, DepthAxis]:
    """The depth axis of every task, decided over all runs together."""
    by_task = group((r for results in runs.values() for r in results), lambda r: r.task)
    return {task: depth_axis(results) for task, results in by_task.items()}


def cells(runs: RunResults, axes: Mapping[str, DepthAxis] | None = None) -> list[Cell]:
    """Every (run, task, length, depth bin) cell that has results, sorted by run order, task,
    length, depth."""
    axes = axes if axes is not None else depth_axes(runs)
    out: list[Cell] = []
    for run, results in runs.items():
        for task, task_results in group(results, lambda r: r.task).items():
            axis = axes[task]
            groups = group(task_results, lambda r, a=axis: (r.length, a.bin(r)))
            for length in sorted({k[0] for k in groups}):
                for depth in sort_bins(k[1] for k in groups if k[0] == length):
                    out.append(Cell(run, task, length, depth, summarize(groups[(length, depth)])))
    return out


def by_length(runs: RunResults) -> list[Margin]:
    """Every (run, task, length) with all depths pooled, sorted by run, task, length."""
    out: list[Margin] = []
    for run, results in runs.items():
        for task, task_results in group(results, lambda r: r.task).items():
            groups = group(task_results, lambda r: r.length)
            out += [Margin(run, task, length, summarize(groups[length])) for length in sorted(groups)]
    return out


def by_task(runs: RunResults) -> list[Margin]:
    """Every (run, task) with all lengths and depths pooled (``length`` None)."""
    return [
        Margin(run, task, None, summarize(task_results))
        for run, results in runs.items()
        for task, task_results in group(results, lambda r: r.task).items()
    ]


def reported(results: Iterable[Result]) -> list[Result]:
    """``results`` as reports group them: a forced-choice result's ``task`` reads ``TASK (forced choice)``
    (generated-answer results unchanged), so that every grouping by task keeps the two metrics apart."""
    from longctx._choice import report_task

    return [r if r.scoring != "choice" else msgspec.structs.replace(r, task=report_task(r.task, r.scoring))
            for r in results]


# ---- samples ------------------------------------------------------------------------------------
def is_failing(r: Result) -> bool:
    """True for a runner error or a primary score below 1."""
    return r.error is not None or r.score is None or r.score < 1.0


def failing(results: Iterable[Result]) -> list[Result]:
    """The failing results (errors first, then by ascending score), stable otherwise."""
    bad = [r for r in results if is_failing(r)]
    return sorted(bad, key=lambda r: (r.error is None, r.score if r.score is not None else -1.0))


def latest(results: Iterable[Result]) -> list[Result]:
    """One result per ``(task, sample_id)``: the last one written wins (a later retry replaces an
    earlier attempt). Order of first appearance is kept."""
    last: dict[tuple[str, str], Result] = {}
    for r in results:
        last[(r.task, r.sample_id)] = r
    return list(last.values())


class Pair(msgspec.Struct, frozen=True):
    """The primary scores of one sample in two runs (None = error)."""

    sample_id: str
    """Shared ``Sample.id``."""
    task: str
    """Task name."""
    length: int
    """Context budget."""
    a: float | None
    """Score in the first run."""
    b: float | None
    """Score in the second run."""


def paired_scores(a: Iterable[Result], b: Iterable[Result]) -> list[Pair]:
    """Samples present in both runs, matched by ``(task, sample_id)``, in the order of ``a``.

    Sample ids are deterministic in (task, parameters, seed), so two runs of the same sweep with
    different models or runners share ids; this is the input of paired tests (McNemar, paired
    bootstrap) between runs.
    """
    other = {(r.task, r.sample_id): r for r in latest(b)}
    out: list[Pair] = []
    for r in latest(a):
        match = other.get((r.task, r.sample_id))
        if match is not None:
            out.append(Pair(r.sample_id, r.task, r.length, r.score, match.score))
    return out
