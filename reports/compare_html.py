"""The comparison page: ONE self-contained HTML file comparing runs on the same samples.

Per task: accuracy vs length (one curve per run, Wilson intervals), effective length, side-by-side
depth x length heatmaps on one colour scale (with retrieval recall next to the accuracy of ``rag``
runs and the split of their wrong answers into retrieval and reading misses), paired differences
(McNemar / paired bootstrap, Holm-adjusted over the page), cost per run (tokens, time, USD; USD
per depth x length cell), and the failing samples
side by side (each run's prediction for the same sample). Clicking any heatmap cell opens and
scrolls to that cell's side-by-side samples.

The numbers come from :func:`longctx.reports.compare.compare_runs`; plotly.js is inlined once and
the page references no URL, like the single-run report (:mod:`longctx.reports.html`).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from longctx._records import Result
from longctx._versions import dist_version
from longctx.reports import figures
from longctx.reports.aggregate import DepthAxis, length_label, sort_bins
from longctx.reports.compare import (
    Comparison,
    EffectiveLength,
    PairedTest,
    RetrievalSplit,
    compare_runs,
    side_by_side,
)
from longctx.reports.cost_html import USD_METHODS, cost_section
from longctx.reports.html import CSS, PLOTLY_CONFIG
from longctx.reports.runs import RunData, results_by_run


#: characters of a prediction / reference shown inline; the full text is one click away
INLINE_CHARS = 200
#: significance level the tables mark (on Holm-adjusted p-values)
ALPHA = 0.05

EXTRA_CSS = """
table.sbs { border-collapse:collapse; width:100%; font-size:12.5px; table-layout:fixed; margin:4px 0 10px; }
table.sbs th, table.sbs td { border-bottom:1px solid var(--line); padding:5px 8px; text-align:left;
                             vertical-align:top; overflow-wrap:anywhere; }
table.sbs th { background:var(--soft); }
table.sbs td.ok { background:#eef8f0; } table.sbs td.fail { background:#fdf0ef; }
table.sbs td.none { color:var(--muted); }
tr.sig td { background:#fff8e1; }
.kind-identical { color:#067647; font-weight:600; } .kind-equivalent { color:var(--warn); font-weight:600; }
"""

JS = """
(function () {
  const CONFIG = %(config)s;
  const figs = JSON.parse(document.getElementById('figure-data').textContent);
  function openCell(id) {
    const el = document.getElementById(id);
    if (!el) return false;
    for (let p = el; p; p = p.parentElement) { if (p.tagName === 'DETAILS') p.open = true; }
    el.scrollIntoView({block: 'start'});
    el.classList.remove('flash'); void el.offsetWidth; el.classList.add('flash');
    history.replaceState(null, '', '#' + id);
    return true;
  }
  window.longctxOpenCell = openCell;
  for (const f of figs) {
    const div = document.getElementById(f.id);
    Plotly.newPlot(div, f.figure.data, f.figure.layout, CONFIG).then(function (gd) {
      if (f.kind !== 'heatmap') return;
      const hint = document.getElementById(f.id + '-hint');
      gd.on('plotly_click', function (ev) {
        const pt = ev && ev.points && ev.points[0];
        if (!pt) return;
        const anchor = pt.customdata ? pt.customdata[0] : '';
        if (anchor && openCell(anchor)) { hint.textContent = ''; return; }
        hint.textContent = 'No run fails in ' + pt.x + ' / ' + pt.y + '.';
      });
    });
  }
  if (location.hash.length > 1) openCell(decodeURIComponent(location.hash.slice(1)));
})();
"""

METHODS = """
<p><b>Pairing.</b> Runs are paired by (task, sample id). Samples are <i>identical</i> when their content
hashes (messages and references) are equal, <i>equivalent</i> when ids, references, task options and seed
agree but the text differs (a haystack cut by another tokenizer) or older folders recorded no hash.
Runs on other samples are refused. Heatmaps, curves and cost use every result of a run; the paired
tests use only the samples both runs scored.</p>
<p><b>Errors</b> (the runner failed: timeout, server error, context overflow) are never scored: they are
left out of accuracy, its interval and every paired test, and counted in their own columns.</p>
<p><b>Accuracy</b> is the mean primary score over scored samples with its Wilson 95% interval
(Wilson 1927). <b>Paired tests</b>: for tasks whose scores are all 0/1, McNemar's exact test (McNemar 1947),
the two-sided binomial test on the discordant pairs (<i>only A</i> vs <i>only B</i>); for graded scores
(F1) a paired bootstrap (Efron &amp; Tibshirani 1993) of the mean difference, 10,000 seeded resamples of the
samples, p-value from the resampled differences shifted to mean 0. The interval of the difference is the
95% paired-bootstrap percentile interval in both cases (unadjusted; for 0/1 scores significance is
McNemar's, which can disagree with the interval on few discordant pairs). <b>Holm</b>: every p-value on this
page is
adjusted together with Holm's step-down procedure (Holm 1979), controlling the family-wise error rate;
highlighted rows have Holm-adjusted p &lt; 0.05 (a task with one length has one test, shown in both its
rows). <i>Right</i> in the counts means full credit (score 1).</p>
<p><b>Effective length</b> follows RULER (Hsieh et al. 2024): the longest tested length up to which the
accuracy stays at or above the threshold (RULER: Llama-2-7B's 85.6% at 4K), with the Wilson interval at
that length; <i>&ge;L</i> means every tested length passed, <i>&lt;L</i> that the shortest did not.
<i>Conservative</i> applies the same rule to the lower end of the Wilson interval: with few samples per
length the plain rule is noisy (9 of 10 right passes 85.6% with a lower bound of 60%).</p>
<p><b>Retrieval</b> (<code>rag</code> runs): recall is the share of needles inside the retrieved chunks; a
wrong answer with recall &lt; 1 is a <i>retrieval miss</i>, with recall 1 a <i>reading miss</i>.
<b>Cost</b> is per sample, errors included: prompt tokens sent (all LM calls for <code>rlm</code>),
computed (not served from the prefix cache), generated, LM calls, retrieved tokens, wall time, and
tokens/s = (computed + generated) / wall time; memory state is the largest recurrent state (HOPE).
Columns no run reports are left out.</p>
<p>""" + USD_METHODS + """</p>
"""


# ---- small formatting helpers --------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None, digits: int = 1) -> str:
    return "&ndash;" if x is None else f"{100 * x:.{digits}f}%"


def _p(x: float | None) -> str:
    if x is None:
        return "&ndash;"
    return "&lt;0.0001" if x < 1e-4 else f"{x:.4f}" if x < 0.01 else f"{x:.3f}"


def _clip(text: str, what: str) -> str:
    if len(text) <= INLINE_CHARS:
        return f"<pre>{_e(text)}</pre>"
    return (
        f"<pre>{_e(text[:INLINE_CHARS])}&hellip;</pre><details><summary class='muted'>full {what} "
        f"({len(text):,} chars)</summary><pre>{_e(text)}</pre></details>"
    )


def _json_for_script(value: Any) -> str:
    return (
        json.dumps(value, separators=(",", ":"))
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )


def _table(head: Sequence[str], rows: Sequence[str], left: int = 1) -> str:
    ths = "".join(f"<th{' class=l' if i < left else ''}>{h}</th>" for i, h in enumerate(head))
    return f"<table class='data'><tr>{ths}</tr>{''.join(rows)}</table>"


def _row(cols: Sequence[str], left: int = 1, cls: str = "") -> str:
    tds = "".join(f"<td{' class=l' if i < left else ''}>{c}</td>" for i, c in enumerate(cols))
    return f"<tr{f' class={cls!r}' if cls else ''}>{tds}</tr>"


# ---- sections -----------------------------------------------------------------------------------
def _runs_section(comp: Comparison) -> str:
    rows = [
        _row(
            [
                f"<b>{_e(r.label)}</b><br><span class='muted'>{_e(r.path)}</span>",
                _e(r.model),
                _e(r.runner),
                f"{r.samples:,}",
                f"<span class='{'bad' if r.errors else ''}'>{r.errors:,}</span>",
            ],
            left=3,
        )
        for r in comp.runs
    ]
    pairs = [
        _row(
            [
                _e(p.run_a),
                _e(p.run_b),
                f"<span class='kind-{p.kind}'>{p.kind}</span>",
                _e(p.note),
                f"{p.shared:,}",
                f"{p.same_hash:,}",
                f"{p.only_a:,}",
                f"{p.only_b:,}",
            ],
            left=4,
        )
        for p in comp.pairs
    ]
    return (
        "<h2 id='runs'>Runs and samples</h2>"
        + _table(["run", "model", "runner", "results", "errors"], rows, left=3)
        + "<h3>Sample identity per pair of runs</h3>"
        + _table(
            ["run A", "run B", "samples are", "why", "shared", "same content hash", "only in A", "only in B"],
            pairs,
            left=4,
        )
    )


def _effective_table(rows: Sequence[EffectiveLength]) -> str:
    body = []
    for e in rows:
        ci = "&ndash;" if e.ci_low is None else f"{_pct(e.ci_low)} &ndash; {_pct(e.ci_high)}"
        below = (
            "&ndash;"
            if e.first_below is None
            else f"{length_label(e.first_below)} ({_pct(e.first_below_accuracy)})"
        )
        body.append(
            _row(
                [
                    _e(e.run),
                    f"<b>{_e(e.label)}</b>",
                    _e(e.conservative),
                    _pct(e.accuracy),
                    ci,
                    f"{e.scored:,}",
                    below,
                    ", ".join(length_label(n) for n in e.tested),
                ],
                left=3,
            )
        )
    return _table(
        [
            "run",
            "effective length",
            "conservative (CI low &ge; threshold)",
            "accuracy there",
            "95% CI (Wilson)",
            "scored",
            "first below",
            "tested",
        ],
        body,
        left=3,
    )


def _tests_table(tests: Sequence[PairedTest]) -> str:
    body = []
    for t in tests:
        ci = "&ndash;" if t.ci_low is None else f"{100 * t.ci_low:+.1f} &ndash; {100 * t.ci_high:+.1f}"
        sig = t.p_holm is not None and t.p_holm < ALPHA
        errs = f"{t.errors_a:,} / {t.errors_b:,}"
        body.append(
            _row(
                [
                    _e(t.run_a),
                    _e(t.run_b),
                    "all" if t.length is None else length_label(t.length),
                    f"{t.pairs:,}",
                    f"{t.both_right:,}",
                    f"{t.only_a:,}",
                    f"{t.only_b:,}",
                    f"{t.both_wrong:,}",
                    f"<span class='{'bad' if t.errors_a or t.errors_b else ''}'>{errs}</span>",
                    _pct(t.mean_a),
                    _pct(t.mean_b),
                    "&ndash;" if t.diff is None else f"<b>{100 * t.diff:+.1f}</b>",
                    ci,
                    t.test,
                    _p(t.p_value),
                    f"<b>{_p(t.p_holm)}</b>" if sig else _p(t.p_holm),
                ],
                left=3,
                cls=" ".join(c for c, on in (("sig", sig), ("total", t.length is None)) if on),
            )
        )
    return _table(
        [
            "run A",
            "run B",
            "length",
            "pairs",
            "both right",
            "only A",
            "only B",
            "both wrong",
            "errors A / B (excluded)",
            "acc. A",
            "acc. B",
            "A &minus; B (points)",
            "95% CI",
            "test",
            "p",
            "p (Holm)",
        ],
        body,
        left=3,
    )


def _retrieval_table(rows: Sequence[RetrievalSplit]) -> str:
    body = [
        _row(
            [
                _e(s.run),
                "all" if s.length is None else length_label(s.length),
                f"{s.scored:,}",
                _pct(s.recall),
                f"{s.right:,}",
                f"{s.scored - s.right:,}",
                f"{s.retrieval_miss:,}",
                f"{s.reading_miss:,}",
                f"{s.unknown:,}",
            ],
            left=2,
            cls="total" if s.length is None else "",
        )
        for s in rows
        if s.pooled
    ]
    return _table(
        [
            "run",
            "length",
            "scored",
            "needle recall",
            "right",
            "wrong",
            "retrieval miss (recall &lt; 1)",
            "reading miss (recall = 1)",
            "recall unknown",
        ],
        body,
        left=2,
    )


def _fail_counts(results: Sequence[Result | None]) -> str:
    """``3 wrong, 1 error`` (or ``all right``) for one run's results of a side-by-side group."""
    wrong = sum(
        1 for r in results if r is not None and r.error is None and r.score is not None and r.score < 1
    )
    errors = sum(1 for r in results if r is not None and (r.error is not None or r.score is None))
    missing = sum(r is None for r in results)
    parts = [f"{wrong} wrong"] if wrong else []
    parts += [f"{errors} error{'s' * (errors != 1)}"] if errors else []
    parts += [f"{missing} not run"] if missing else []
    return ", ".join(parts) if parts else "all right"


def _cell_order(key: tuple[int, float | None]) -> tuple:
    return key[0], key[1] is None, key[1] or 0.0


def _result_cell(r: Result | None) -> str:
    if r is None:
        return "<td class='none'>not in this run</td>"
    if r.error is not None:
        return f"<td class='fail'><span class='err'>error</span>{_clip(r.error, 'error')}</td>"
    score = "&ndash;" if r.score is None else f"{r.score:.2f}"
    cls = "ok" if r.score is not None and r.score >= 1.0 else "fail"
    rag = r.extra.get("rag") if isinstance(r.extra.get("rag"), dict) else None
    recall = ""
    if rag is not None and isinstance(rag.get("recall"), (int, float)):
        recall = f" &middot; recall {100 * rag['recall']:.0f}%"
    pred = _clip(r.prediction or "", "prediction")
    return f"<td class='{cls}'><b>{score}</b><span class='muted'>{recall}</span>{pred}</td>"


def _side_by_side_section(
    groups: dict, runs: Sequence[str], axis: DepthAxis, anchors: dict, limit: int
) -> str:
    parts = []
    width = max(10, 70 // max(1, len(runs)))
    cols = "<col style='width:14%'><col style='width:16%'>" + f"<col style='width:{width}%'>" * len(runs)
    head = "<tr><th>sample</th><th>reference</th>" + "".join(f"<th>{_e(r)}</th>" for r in runs) + "</tr>"
    for key in sorted(groups, key=_cell_order):
        rows = groups[key]
        shown = rows[:limit]
        body = "".join(
            f"<tr><td><code>{_e(s.sample_id)}</code></td>"
            f"<td>{''.join(_clip(x, 'reference') for x in s.references)}"
            f"</td>{''.join(_result_cell(s.results.get(run)) for run in runs)}</tr>"
            for s in shown
        )
        counts = "; ".join(f"{_e(run)}: {_fail_counts([s.results.get(run) for s in rows])}" for run in runs)
        more = (
            f"<p class='muted'>{len(rows) - limit:,} more samples not shown (raise --max-failures)</p>"
            if len(rows) > limit
            else ""
        )
        length, depth = key
        where = {"requested": "depth ", "evidence": "evidence at "}.get(axis.kind, "") + axis.label(depth)
        parts.append(
            f"<details class='cell' id='{anchors[key]}'><summary>"
            f"{length_label(length)} &middot; {_e(where)}: "
            f"{len(rows)} sample{'s' * (len(rows) != 1)} failing in some run ({counts})</summary>"
            f"<table class='sbs'><colgroup>{cols}</colgroup>{head}{body}</table>{more}</details>"
        )
    if not parts:
        return "<p class='muted'>No run fails any sample of this task.</p>"
    summary = "<summary>failing samples, side by side</summary>"
    return f"<details class='run-fails'>{summary}{''.join(parts)}</details>"


# ---- the page -----------------------------------------------------------------------------------
def render_compare(
    runs: Sequence[RunData],
    comparison: Comparison | None = None,
    title: str = "longctx comparison",
    max_failures_per_cell: int = 25,
) -> str:
    """The comparison page as one HTML string (computes :func:`compare_runs` unless given)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    comp = comparison if comparison is not None else compare_runs(runs)
    by_run = results_by_run(runs)
    labels = list(by_run)
    figs: list[dict[str, Any]] = []

    def add_figure(fig_id: str, kind: str, fig) -> str:
        figs.append({"id": fig_id, "kind": kind, "figure": json.loads(pio.to_json(fig, validate=False))})
        hint = f"<div class='hint' id='{fig_id}-hint'></div>" if kind == "heatmap" else ""
        return f"<div><div class='fig' id='{fig_id}'></div>{hint}</div>"

    tasks = list(comp.depth_axes)
    body = [_runs_section(comp)]
    nav = ["<a href='#runs'>Runs</a>"]
    for ti, task in enumerate(tasks):
        axis = DepthAxis(comp.depth_axes[task])
        task_cells = [c for c in comp.cells if c.task == task]
        lengths = sorted({c.length for c in task_cells})
        depths = sort_bins(c.depth_bin for c in task_cells)
        task_runs = [run for run in labels if any(c.run == run for c in task_cells)]
        groups = side_by_side(by_run, task, axis)
        anchors = {key: f"sbs-{ti}-{k}" for k, key in enumerate(sorted(groups, key=_cell_order))}
        nav.append(f"<a href='#task-{ti}'>{_e(task)}</a>")
        sec = [f"<h2 id='task-{ti}'>{_e(task)}</h2><p class='muted'>Depth axis: {_e(axis.title)}.</p>"]
        margins = [m for m in comp.lengths if m.task == task and m.length is not None]
        sec.append(
            add_figure(
                f"curve-{ti}",
                "curve",
                figures.length_curves(margins, task_runs, f"{_e(task)}: accuracy vs context length"),
            )
        )
        sec.append(f"<h3>Effective length <span class='muted'>(threshold {comp.threshold:g}%)</span></h3>")
        sec.append(_effective_table([e for e in comp.effective if e.task == task]))

        sec.append(
            "<h3>Accuracy by depth and length <span class='muted'>(one colour scale; click a cell for "
            "its failing samples side by side)</span></h3>"
        )
        heat = []
        models = {r.label: f"{r.runner}, {r.model}" for r in comp.runs}
        for ri, run in enumerate(labels):
            run_cells = [c for c in task_cells if c.run == run]
            if not run_cells:
                continue
            fig = figures.heatmap(
                run_cells,
                lengths,
                depths,
                axis,
                f"<b>{_e(run)}</b> accuracy  ({_e(models[run])})",
                lambda c: anchors.get((c.length, c.depth_bin), ""),
            )
            heat.append(add_figure(f"heat-{ti}-{ri}", "heatmap", fig))
            splits = [s for s in comp.retrieval if s.run == run and s.task == task]
            if splits:
                rfig = figures.recall_heatmap(
                    splits,
                    lengths,
                    depths,
                    axis,
                    f"<b>{_e(run)}</b> retrieval recall",
                    lambda n, d: anchors.get((n, d), ""),
                )
                heat.append(add_figure(f"recall-{ti}-{ri}", "heatmap", rfig))
        sec.append(f"<div class='grid'>{''.join(heat)}</div>")
        splits = [s for s in comp.retrieval if s.task == task]
        if splits:
            sec.append(
                "<h3>Retrieval: why <code>rag</code> answers were wrong</h3>" + _retrieval_table(splits)
            )

        tests = [t for t in comp.tests if t.task == task]
        sec.append(
            "<h3>Paired differences <span class='muted'>(shared scored samples; highlighted: Holm-adjusted "
            f"p &lt; {ALPHA:g})</span></h3>"
        )
        if tests:
            sec.append(
                add_figure(
                    f"diff-{ti}",
                    "curve",
                    figures.difference_curves(tests, f"{_e(task)}: paired accuracy difference"),
                )
            )
            sec.append(_tests_table(tests))
        else:
            sec.append("<p class='muted'>No two runs share samples of this task.</p>")
        sec.append(cost_section([c for c in comp.costs if c.task == task],
                                [c for c in comp.cell_costs if c.task == task], task_runs, lengths, depths,
                                axis, comp.prices or "no price table"))
        sec.append(
            "<h3>Failing samples</h3>"
            + _side_by_side_section(groups, task_runs, axis, anchors, max_failures_per_cell)
        )
        body.append(f"<section>{''.join(sec)}</section>")
    if not tasks:
        body.append("<p class='muted'>These runs have no results yet.</p>")
    nav.append("<a href='#methods'>Methods</a>")
    per_length = [
        (t.run_a, t.run_b, t.task) for t in comp.tests if t.length is not None and t.p_value is not None
    ]
    n_tests = len(per_length) + sum(
        1
        for t in comp.tests
        if t.length is None and t.p_value is not None and per_length.count((t.run_a, t.run_b, t.task)) > 1
    )
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{CSS}{EXTRA_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div class='muted'>{len(runs)} runs, {len(tasks)} "
        f"task{'s' * (len(tasks) != 1)}, {n_tests:,} paired tests &middot; "
        f"generated {generated} by longctx {_e(dist_version('longctx') or 'dev')}</div></header>"
        f"<nav>{''.join(nav)}</nav><main>{''.join(body)}"
        f"<footer id='methods'><h2>Methods</h2>{METHODS}</footer></main>"
        f"<script type='application/json' id='figure-data'>{_json_for_script(figs)}</script>"
        f"<script>{get_plotlyjs()}</script>"
        f"<script>{JS % {'config': json.dumps(PLOTLY_CONFIG)}}</script>"
        "</body></html>"
    )


def write_compare(
    runs: Sequence[RunData],
    path: str | Path,
    comparison: Comparison | None = None,
    title: str = "longctx comparison",
    max_failures_per_cell: int = 25,
) -> Path:
    """Write :func:`render_compare` to ``path`` (atomically) and return the absolute path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_compare(runs, comparison, title, max_failures_per_cell), encoding="utf-8")
    tmp.replace(path)
    return path.resolve()
