"""Comparing runs on the same samples: pairing, paired tests, effective length, cost, retrieval.

Pure functions from loaded runs (:class:`~longctx.reports.runs.RunData`) to numbers; no printing,
no plotting. :func:`compare_runs` computes everything the comparison page
(:mod:`longctx.reports.compare_html`) and ``longctx compare --json`` show.

Sample identity. Runs are paired by ``(task, sample id)``. Two runs' samples are

- **identical** when every shared sample has the same :attr:`~longctx._records.Result.sample_hash`
  (content hash of the messages and references): the models were given the same text;
- **equivalent** when ids and references agree (and the manifests' task options and seed, where
  recorded) but the content differs or is unknown: the same needle at the same depth in a
  haystack cut by another tokenizer (``hope-demo``'s, say), or an older folder without hashes.

Runs that share no sample, or whose references differ for a shared id (another seed or other
task options), are refused with a :class:`~longctx._errors.LongctxError`.

Errors (score None) are never scored: a sample that errored in either run is left out of that
pair's test and counted in ``errors_a`` / ``errors_b``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any, Literal

import msgspec

from longctx._errors import LongctxError
from longctx._prices import PriceTable, load_prices
from longctx._records import Result
from longctx.reports import stats
from longctx.reports.aggregate import (
    Cell,
    DepthAxis,
    Margin,
    by_length,
    by_task,
    cells,
    depth_axes,
    group,
    is_failing,
    length_label,
    paired_scores,
    tasks_of,
)
from longctx.reports.cost import CellCost, Cost, cell_costs, costs, pricers
from longctx.reports.retrieval import RetrievalSplit, retrieval_splits
from longctx.reports.runs import RunData, results_by_run


#: RULER's threshold for effective length, percent: Llama-2-7B's average at 4K (NVIDIA/RULER,
#: README.md: "exceeding a qualitative threshold, Llama-2-7b performance at 4K (85.6%)")
RULER_THRESHOLD = 85.6

Key = tuple[str, str]  # (task, sample id)


# ---- sample identity ----------------------------------------------------------------------------
class PairIdentity(msgspec.Struct, frozen=True):
    """How the samples of two runs relate."""

    run_a: str
    """First run's label."""
    run_b: str
    """Second run's label."""
    kind: Literal["identical", "equivalent"]
    """``identical``: same content hash for every shared sample; ``equivalent``: same ids,
    references, task options and seed, content differs or is not recorded."""
    shared: int
    """Samples (task, id) present in both runs."""
    same_hash: int
    """Shared samples whose content hashes are both known and equal."""
    hash_missing: int
    """Shared samples without a content hash in at least one run (older folders)."""
    only_a: int
    """Samples only in the first run (not compared)."""
    only_b: int
    """Samples only in the second run."""
    note: str
    """One sentence saying why the pair is identical or equivalent."""


def _keyed(results: Iterable[Result]) -> dict[Key, Result]:
    return {(r.task, r.sample_id): r for r in results}


def _identity_field(run: RunData, *path: str) -> Any:
    node: Any = run.manifest.get("identity", {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


_MISSING = object()


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify_pair(a: RunData, b: RunData) -> PairIdentity:
    """Identical or equivalent samples; :class:`LongctxError` (one line) when they are neither."""
    ka, kb = _keyed(a.results), _keyed(b.results)
    shared = [k for k in ka if k in kb]
    if not shared:

        def what(keys: Mapping[Key, Result]) -> str:
            tasks = ", ".join(dict.fromkeys(k[0] for k in keys)) or "no results"
            return f"{len(keys)} samples of {tasks}"

        raise LongctxError(
            f"runs {a.label} and {b.label} share no sample ({a.label}: {what(ka)}; {b.label}: {what(kb)}); "
            "compare runs of the same tasks, lengths and depths"
        )
    differ = [k for k in shared if ka[k].references != kb[k].references]
    if differ:
        task, sid = differ[0]
        raise LongctxError(
            f"runs {a.label} and {b.label} are not on the same samples: "
            f"{len(differ)} of {len(shared)} shared "
            f"sample ids have other references (e.g. {sid}: {_clip(repr(ka[differ[0]].references))} vs "
            f"{_clip(repr(kb[differ[0]].references))}); were they built with another seed or task options?"
        )
    hashes_known = [k for k in shared if ka[k].sample_hash is not None and kb[k].sample_hash is not None]
    same = sum(ka[k].sample_hash == kb[k].sample_hash for k in hashes_known)
    missing = len(shared) - len(hashes_known)
    common = dict(
        shared=len(shared),
        same_hash=same,
        hash_missing=missing,
        only_a=len(ka) - len(shared),
        only_b=len(kb) - len(shared),
    )
    if same == len(shared):
        return PairIdentity(
            a.label,
            b.label,
            "identical",
            **common,
            note=f"all {len(shared)} shared samples have the same content hash",
        )
    # not the same text: then the recipe must be the same (seed and options of every shared task)
    other = [k for k in shared if ka[k].sample_hash is None or ka[k].sample_hash != kb[k].sample_hash]
    unknown = []
    for what, path in [("grid.seed", ("grid", "seed"))] + [
        (f"task options of {t}", ("task_options", t)) for t in dict.fromkeys(k[0] for k in shared)
    ]:
        va, vb = _identity_field(a, *path), _identity_field(b, *path)
        if va is _MISSING or vb is _MISSING:
            unknown.append(what)
        elif va != vb:
            raise LongctxError(
                f"runs {a.label} and {b.label} are not on the same samples: {what} differ "
                f"({_clip(repr(va))} vs {_clip(repr(vb))}) and {len(shared) - same} of {len(shared)} shared "
                f"samples have other content (e.g. {other[0][1]})"
            )
    if missing:
        note = (
            f"{missing} of {len(shared)} shared samples have no content hash (older run folder): same ids "
            "and references, content not checked; equivalent at best"
        )
    else:
        note = (
            f"same ids and references; {len(shared) - same} of {len(shared)} shared samples have other "
            "content (built with another tokenizer: the haystack is cut at other tokens)"
        )
    if unknown:
        note += f"; {', '.join(unknown)} not recorded in both manifests"
    return PairIdentity(a.label, b.label, "equivalent", **common, note=note)


def classify_runs(runs: Sequence[RunData]) -> list[PairIdentity]:
    """:func:`classify_pair` for every two runs (display order); refuses fewer than two runs."""
    if len(runs) < 2:
        raise LongctxError("compare needs at least two run folders")
    return [classify_pair(a, b) for a, b in combinations(runs, 2)]


# ---- paired tests -------------------------------------------------------------------------------
class PairedTest(msgspec.Struct, frozen=True):
    """Run A vs run B on their shared, scored samples of one task at one length (or all lengths)."""

    task: str
    """Task name."""
    length: int | None
    """Context budget; None = all lengths pooled."""
    run_a: str
    """Label of run A."""
    run_b: str
    """Label of run B."""
    test: Literal["mcnemar", "bootstrap"]
    """``mcnemar`` (exact) for tasks whose scores are all 0/1, else the paired ``bootstrap``."""
    pairs: int
    """Shared samples scored in both runs (the test's n)."""
    errors_a: int
    """Shared samples left out because run A errored on them."""
    errors_b: int
    """Shared samples left out because run B errored on them."""
    both_right: int
    """Pairs with full credit (score 1) in both runs."""
    only_a: int
    """Pairs with full credit in A only (McNemar's b)."""
    only_b: int
    """Pairs with full credit in B only (McNemar's c)."""
    both_wrong: int
    """Pairs with score < 1 in both runs."""
    mean_a: float | None
    """Mean score of A over the pairs."""
    mean_b: float | None
    """Mean score of B over the pairs."""
    diff: float | None
    """``mean_a - mean_b``."""
    ci_low: float | None
    """Lower end of the 95% paired-bootstrap percentile interval of ``diff``."""
    ci_high: float | None
    """Upper end of that interval."""
    p_value: float | None
    """Unadjusted two-sided p-value (McNemar exact, or bootstrap); None without pairs."""
    p_holm: float | None
    """``p_value`` Holm-adjusted over every test of the comparison."""


def binary_tasks(runs: Mapping[str, Sequence[Result]]) -> dict[str, bool]:
    """Per task: True when every score of every run is 0 or 1 (McNemar applies)."""
    out: dict[str, bool] = {}
    for results in runs.values():
        for r in results:
            if r.score is not None:
                out[r.task] = out.get(r.task, True) and r.score in (0.0, 1.0)
            else:
                out.setdefault(r.task, True)
    return out


def paired_test(
    task: str,
    length: int | None,
    run_a: str,
    run_b: str,
    pairs: Sequence[tuple[float | None, float | None]],
    binary: bool,
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
    seed: int = stats.BOOTSTRAP_SEED,
) -> PairedTest:
    """One :class:`PairedTest` from ``(score_a, score_b)`` pairs (None = error); ``p_holm`` unset."""
    errors_a = sum(sa is None for sa, _ in pairs)
    errors_b = sum(sb is None for _, sb in pairs)
    scored = [(sa, sb) for sa, sb in pairs if sa is not None and sb is not None]
    ra = [sa >= 1.0 for sa, _ in scored]
    rb = [sb >= 1.0 for _, sb in scored]
    counts = dict(
        both_right=sum(x and y for x, y in zip(ra, rb)),
        only_a=sum(x and not y for x, y in zip(ra, rb)),
        only_b=sum(y and not x for x, y in zip(ra, rb)),
        both_wrong=sum(not x and not y for x, y in zip(ra, rb)),
    )
    kind: Literal["mcnemar", "bootstrap"] = "mcnemar" if binary else "bootstrap"
    if not scored:
        return PairedTest(
            task,
            length,
            run_a,
            run_b,
            kind,
            0,
            errors_a,
            errors_b,
            **counts,
            mean_a=None,
            mean_b=None,
            diff=None,
            ci_low=None,
            ci_high=None,
            p_value=None,
            p_holm=None,
        )
    a = [s for s, _ in scored]
    b = [s for _, s in scored]
    boot = stats.paired_bootstrap(a, b, resamples=resamples, seed=seed)
    p = stats.mcnemar_exact(counts["only_a"], counts["only_b"]) if binary else boot.p_value
    return PairedTest(
        task,
        length,
        run_a,
        run_b,
        kind,
        len(scored),
        errors_a,
        errors_b,
        **counts,
        mean_a=sum(a) / len(a),
        mean_b=sum(b) / len(b),
        diff=boot.mean,
        ci_low=boot.ci_low,
        ci_high=boot.ci_high,
        p_value=p,
        p_holm=None,
    )


def paired_tests(
    runs: Mapping[str, Sequence[Result]],
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
    seed: int = stats.BOOTSTRAP_SEED,
) -> list[PairedTest]:
    """Every two runs, per (task, length) and per task over all lengths, Holm-adjusted together.

    The whole page is one family: ``p_holm`` controls the chance of any false "significant"
    among all the tests shown (Holm 1979), however many runs, tasks and lengths there are. A task
    with a single length has one test (its all-lengths row repeats it and is not counted twice).
    """
    binary = binary_tasks(runs)
    out: list[PairedTest] = []
    slot: list[int] = []  # out[i]'s test in the Holm family (a one-length task's pooled row repeats it)
    for la, lb in combinations(runs, 2):
        for task, task_pairs in group(paired_scores(runs[la], runs[lb]), lambda p: p.task).items():
            by_len = group(task_pairs, lambda p: p.length)
            for length in sorted(by_len):
                pairs = [(p.a, p.b) for p in by_len[length]]
                out.append(paired_test(task, length, la, lb, pairs, binary[task], resamples, seed))
                slot.append(len(out) - 1)
            if len(by_len) == 1:  # all lengths = the one length: same data, same test, counted once
                out.append(msgspec.structs.replace(out[-1], length=None))
                slot.append(slot[-1])
            else:
                pairs = [(p.a, p.b) for p in task_pairs]
                out.append(paired_test(task, None, la, lb, pairs, binary[task], resamples, seed))
                slot.append(len(out) - 1)
    family = sorted({j for j in slot if out[j].p_value is not None})
    adjusted = dict(zip(family, stats.holm([out[j].p_value for j in family])))
    return [msgspec.structs.replace(t, p_holm=adjusted.get(j)) for t, j in zip(out, slot)]


# ---- effective length ---------------------------------------------------------------------------
class EffectiveLength(msgspec.Struct, frozen=True):
    """RULER's effective length of one run on one task."""

    run: str
    """Run label."""
    task: str
    """Task name."""
    threshold: float
    """Threshold, percent (RULER: 85.6)."""
    length: int | None
    """Longest tested length up to which accuracy stays at or above the threshold at every tested
    length; None when the shortest tested length is already below it."""
    label: str
    """``4K``; ``>=8K`` when every tested length passes (the longest tested is a lower bound);
    ``<1K`` when none does."""
    accuracy: float | None
    """Accuracy at ``length``."""
    ci_low: float | None
    """Wilson 95% interval of ``accuracy`` (lower end)."""
    ci_high: float | None
    """Upper end."""
    scored: int
    """Scored samples at ``length``."""
    first_below: int | None
    """Shortest tested length below the threshold (None if none is)."""
    first_below_accuracy: float | None
    """Accuracy there (None if none, or if every sample there errored)."""
    tested: list[int]
    """Lengths with results."""
    conservative: str = "n/a"
    """The same rule on the lower end of the Wilson interval instead of the accuracy: the lengths
    at which the data rule out falling below the threshold (95%); same label format."""


def _stays_above(points: Sequence[Margin], value, threshold: float) -> tuple[Margin | None, Margin | None]:
    """(last length passing, first length failing) for ``value(stats)`` vs ``threshold`` (percent)."""
    best = None
    for m in points:
        v = value(m.stats)
        if v is None or 100 * v < threshold - 1e-9:
            return best, m
        best = m
    return best, None


def _label(best: Margin | None, below: Margin | None, tested: Sequence[int]) -> str:
    if best is None:
        return f"<{length_label(tested[0])}" if tested else "n/a"
    return f">={length_label(best.length)}" if below is None else length_label(best.length)


def effective_length(
    margins: Sequence[Margin], run: str, task: str, threshold: float = RULER_THRESHOLD
) -> EffectiveLength:
    """RULER's effective length (Hsieh et al. 2024, NVIDIA/RULER README.md): the maximum length at
    which the score exceeds the threshold, Llama-2-7B's 85.6% at 4K by default.

    Read as "stays above": lengths ascending, the last one before the first length whose accuracy
    is below the threshold (a length where every sample errored counts as below). "Exceeds" is
    taken as ``>=``: RULER underlines Qwen3-32B's 85.6 at 128K as passing 85.6. The interval is
    Wilson's at the effective length, from :func:`~longctx.reports.aggregate.summarize`;
    ``conservative`` applies the rule to the interval's lower end (few samples per length make the
    plain rule noisy: 9 of 10 right passes 85.6% with a lower bound of 60%).
    """
    points = sorted(
        (m for m in margins if m.run == run and m.task == task and m.length is not None),
        key=lambda m: m.length,
    )
    tested = [m.length for m in points]
    best, below = _stays_above(points, lambda st: st.accuracy, threshold)
    safe = _stays_above(points, lambda st: st.ci_low, threshold)
    s = best.stats if best else None
    return EffectiveLength(
        run=run,
        task=task,
        threshold=threshold,
        length=best.length if best else None,
        label=_label(best, below, tested),
        accuracy=s.accuracy if s else None,
        ci_low=s.ci_low if s else None,
        ci_high=s.ci_high if s else None,
        scored=s.scored if s else 0,
        first_below=below.length if below else None,
        first_below_accuracy=below.stats.accuracy if below else None,
        tested=tested,
        conservative=_label(*safe, tested),
    )


# ---- side-by-side samples -----------------------------------------------------------------------
class SideBySide(msgspec.Struct, frozen=True):
    """One sample that fails in at least one run, with every run's result for it."""

    sample_id: str
    """Shared sample id."""
    references: tuple[str, ...]
    """Gold answers (the same in every run: see :func:`classify_pair`)."""
    results: dict[str, Result | None]
    """Run label -> its result for this sample (None = the run has no such sample)."""


def side_by_side(
    runs: Mapping[str, Sequence[Result]], task: str, axis: DepthAxis
) -> dict[tuple[int, float | None], list[SideBySide]]:
    """Per (length, depth bin) of ``task``: the samples failing (error or score < 1) in any run, in
    order of first appearance, each with every run's result."""
    keyed = {label: {r.sample_id: r for r in results if r.task == task} for label, results in runs.items()}
    seen: dict[str, Result] = {}
    for table in keyed.values():
        for sid, r in table.items():
            seen.setdefault(sid, r)
    out: dict[tuple[int, float | None], list[SideBySide]] = {}
    for sid, first in seen.items():
        row = {label: table.get(sid) for label, table in keyed.items()}
        if any(r is not None and is_failing(r) for r in row.values()):
            out.setdefault((first.length, axis.bin(first)), []).append(SideBySide(sid, first.references, row))
    return out


# ---- everything ---------------------------------------------------------------------------------
class RunSummary(msgspec.Struct, frozen=True):
    """A compared run, as the page and the JSON name it."""

    label: str
    """Run label."""
    path: str
    """Run folder."""
    model: str
    """Model (manifest, else results)."""
    runner: str
    """Runner (manifest, else results)."""
    samples: int
    """Results (one per sample)."""
    errors: int
    """Results whose runner failed."""


class Comparison(msgspec.Struct, frozen=True):
    """Every number of a comparison (``longctx compare --json`` writes this)."""

    runs: list[RunSummary]
    """Compared runs, in command-line order (run A of a pair comes first)."""
    pairs: list[PairIdentity]
    """Sample identity of every two runs."""
    threshold: float
    """Effective-length threshold, percent."""
    lengths: list[Margin]
    """Accuracy with Wilson interval per (run, task, length); ``length`` None = all lengths."""
    cells: list[Cell]
    """Accuracy per (run, task, length, depth bin)."""
    depth_axes: dict[str, str]
    """Task -> what its depth axis means (``requested`` / ``evidence`` / ``none``)."""
    tests: list[PairedTest]
    """Paired tests of every two runs, per (task, length) and per task, Holm-adjusted together."""
    effective: list[EffectiveLength]
    """Effective length per (run, task)."""
    costs: list[Cost]
    """Cost per (run, task, length) and per (run, task)."""
    retrieval: list[RetrievalSplit]
    """Recall and retrieval/reading misses of ``rag`` runs."""
    cell_costs: list[CellCost] = []
    """USD per (run, task, length, depth bin)."""
    prices: str = ""
    """Where the USD prices come from (``prices from FILE over the default table (read ...)``)."""


def compare_runs(
    runs: Sequence[RunData],
    threshold: float = RULER_THRESHOLD,
    resamples: int = stats.BOOTSTRAP_RESAMPLES,
    seed: int = stats.BOOTSTRAP_SEED,
    prices: PriceTable | None = None,
) -> Comparison:
    """Classify, test and measure ``runs`` (raises :class:`LongctxError` for runs not on the same
    samples). USD with ``prices`` (default: the shipped table only; the command line adds the
    user's file and ``--prices``: :func:`~longctx._prices.load_prices`)."""
    pairs = classify_runs(runs)
    by_run = results_by_run(runs)
    axes = depth_axes(by_run)
    prices = prices if prices is not None else load_prices(user=False)
    priced = pricers(runs, prices)
    margins = by_length(by_run) + by_task(by_run)
    effective = [
        effective_length(margins, run, task, threshold)
        for run, results in by_run.items()
        for task in tasks_of({run: results})
    ]
    summaries = []
    for run in runs:
        info = run.info()
        summaries.append(
            RunSummary(
                run.label,
                run.path,
                info.get("model", ""),
                info.get("runner", ""),
                len(run.results),
                sum(r.error is not None for r in run.results),
            )
        )
    return Comparison(
        runs=summaries,
        pairs=pairs,
        threshold=threshold,
        lengths=margins,
        cells=cells(by_run, axes),
        depth_axes={task: axis.kind for task, axis in axes.items()},
        tests=paired_tests(by_run, resamples, seed),
        effective=effective,
        costs=costs(by_run, priced),
        retrieval=retrieval_splits(by_run, axes),
        cell_costs=cell_costs(by_run, axes, priced),
        prices=prices.describe(),
    )
