"""The HTML report: ONE self-contained file that opens offline.

Layout, per task: accuracy-vs-length curves comparing runs, a table (counts, Wilson 95% interval,
errors, latency, cached-token share), the corpus metrics of tasks whose scorer has the optional
``corpus_scores`` hook (QASPER's official Answer F1 by type and Evidence F1; per run and length),
a count of samples whose answer key is ambiguous (``metadata["ambiguous_answer"]``, LongHealth),
a depth x length heatmap per run, and the failing samples (prediction vs reference, RLM
trajectories when present, an ambiguous answer key flagged) in collapsible sections. Clicking a
heatmap cell opens and scrolls to that cell's failing samples.

plotly.js is inlined once; figures are plotly JSON drawn with ``Plotly.newPlot``. The page itself
references no URL (the plotly.js bundle contains URL strings for map tiles and fonts that heatmaps
and line charts never load).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longctx._records import Result
from longctx._scoring import corpus_hook, corpus_rows
from longctx._versions import dist_version
from longctx.reports import figures
from longctx.reports.aggregate import (
    Cell,
    DepthAxis,
    Stats,
    by_length,
    by_task,
    cells,
    depth_axes,
    failing,
    group,
    length_label,
    sort_bins,
    tasks_of,
)
from longctx.reports.runs import RunData, results_by_run

if TYPE_CHECKING:
    from longctx._prices import PriceTable

#: characters of a prediction / reference shown inline; the full text is one click away
INLINE_CHARS = 240
#: characters of one trajectory field shown before it is cut (the full results stay in results.jsonl)
TRAJECTORY_FIELD_CHARS = 8000
#: characters of a reasoning model's thinking shown before it is cut (all of it is in results.jsonl)
THINKING_CHARS = 20000

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "showLink": False, "showSendToCloud": False}

CSS = """
:root { --fg:#1d1d1f; --muted:#6e6e73; --line:#e3e3e8; --bg:#fff; --soft:#f6f7f9; --accent:#0b63c5;
        --bad:#b42318; --warn:#9a6700; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding:18px 28px 10px; border-bottom:1px solid var(--line); }
header h1 { margin:0 0 4px; font-size:22px; }
nav { position:sticky; top:0; z-index:10; background:rgba(255,255,255,.96); border-bottom:1px solid var(--line);
      padding:6px 28px; display:flex; flex-wrap:wrap; gap:4px 14px; font-size:13px; }
nav a { color:var(--accent); text-decoration:none; } nav a:hover { text-decoration:underline; }
main { padding:8px 28px 40px; max-width:1500px; }
h2 { font-size:19px; margin:28px 0 6px; padding-top:8px; border-top:2px solid var(--line); }
h3 { font-size:15px; margin:18px 0 6px; }
.muted { color:var(--muted); } .bad { color:var(--bad); } .warn { color:var(--warn); }
table.data { border-collapse:collapse; font-size:13px; font-variant-numeric:tabular-nums; margin:6px 0 10px; }
table.data th, table.data td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:right;
                               vertical-align:top; }
table.data th { background:var(--soft); font-weight:600; position:sticky; top:33px; }
table.data td.l, table.data th.l { text-align:left; }
table.data tr.total td { font-weight:600; border-bottom:2px solid #cfd0d6; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(520px,1fr)); gap:10px 22px; }
.fig { min-height:260px; }
.hint { font-size:12px; color:var(--muted); min-height:1.4em; margin:-2px 0 6px 8px; }
details { margin:4px 0; }
details > summary { cursor:pointer; padding:3px 0; }
details.run-fails { border:1px solid var(--line); border-radius:6px; padding:4px 12px; margin:8px 0; }
details.run-fails > summary { font-weight:600; }
details.run-fails, details.cell { scroll-margin-top:44px; }
details.cell { margin-left:6px; border-left:3px solid var(--line); padding-left:10px; }
details.cell.flash { animation: flash 1.6s ease-out; }
@keyframes flash { from { background:#fff3b0; } to { background:transparent; } }
table.samples { border-collapse:collapse; width:100%; font-size:12.5px; table-layout:fixed; margin:4px 0 10px; }
table.samples th, table.samples td { border-bottom:1px solid var(--line); padding:5px 8px; text-align:left;
                                     vertical-align:top; overflow-wrap:anywhere; }
table.samples th { background:var(--soft); }
table.samples col.id { width:15%; } table.samples col.score { width:6%; }
table.samples col.pred { width:37%; } table.samples col.ref { width:30%; } table.samples col.meta { width:12%; }
pre { white-space:pre-wrap; overflow-wrap:anywhere; margin:2px 0; font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;
      background:var(--soft); padding:4px 6px; border-radius:4px; max-height:480px; overflow:auto; }
code { font:12px ui-monospace,Menlo,Consolas,monospace; }
.err { color:var(--bad); font-weight:600; }
ol.traj > li { margin:4px 0 8px; } dl.kv { margin:2px 0; } dl.kv dt { font-weight:600; font-size:12px; }
dl.kv dd { margin:0 0 4px 10px; }
footer { margin-top:30px; font-size:12.5px; color:var(--muted); max-width:900px; }
"""

JS = """
(function () {
  const CONFIG = %(config)s;
  const figs = JSON.parse(document.getElementById('figure-data').textContent);
  function openFailures(id) {
    const el = document.getElementById(id);
    if (!el) return false;
    for (let p = el; p; p = p.parentElement) { if (p.tagName === 'DETAILS') p.open = true; }
    el.scrollIntoView({block: 'start'});
    el.classList.remove('flash'); void el.offsetWidth; el.classList.add('flash');
    history.replaceState(null, '', '#' + id);
    return true;
  }
  window.longctxOpenFailures = openFailures;
  for (const f of figs) {
    const div = document.getElementById(f.id);
    if (f.shared_template) f.figure.layout.template = figs[0].figure.layout.template;
    Plotly.newPlot(div, f.figure.data, f.figure.layout, CONFIG).then(function (gd) {
      if (f.kind !== 'heatmap') return;
      const hint = document.getElementById(f.id + '-hint');
      gd.on('plotly_click', function (ev) {
        const pt = ev && ev.points && ev.points[0];
        const anchor = pt && pt.customdata ? pt.customdata[0] : '';
        if (anchor && openFailures(anchor)) { hint.textContent = ''; return; }
        hint.textContent = 'No failing samples in ' + pt.x + ' / ' + pt.y + '.';
      });
    });
  }
  if (location.hash.length > 1) openFailures(decodeURIComponent(location.hash.slice(1)));
})();
"""

METHODS = """
<p><b>Accuracy</b> is the mean of the task's primary metric over <i>scored</i> samples. Samples whose
runner failed (timeout, server error, context overflow) are <b>errors</b>: they are never scored, are
excluded from accuracy and its interval, and are counted in their own column; <i>acc. (errors = 0)</i>
counts them as failures instead.</p>
<p>Tasks shown as <b>TASK (forced choice)</b> were scored by forced choice (<code>--scoring choice</code>):
their accuracy is <code>choice_accuracy</code>, the share of samples whose true answer has a strictly higher
log-likelihood than every distractor (a tie is wrong; chance is 1/candidates), never the accuracy of
generated answers.</p>
<p><b>95% CI</b> is the Wilson score interval (Wilson 1927, JASA 22:209-212) of the accuracy over the
scored samples; for graded metrics (F1, partial match) it treats the mean score as a proportion.
<b>Latency</b> is the request wall time of scored samples. <b>Cached</b> is the share of engine-counted
prompt tokens served from the prefix cache, where the engine reported both counts.</p>
<p>Heatmaps share one fixed colour scale (0-100%); blank cells have no results, <i>err</i> marks
cells where every sample errored. Depth is either the requested needle depth or, for tasks that do
not place evidence, the achieved position of the first evidence in deciles of the context.</p>
<p><b>Cost</b> per sample: tokens sent, computed (not served from the prefix cache) and generated, wall
time, USD (below).</p>
"""


# ---- small formatting helpers --------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None, digits: int = 1) -> str:
    return "&ndash;" if x is None else f"{100 * x:.{digits}f}%"


def _secs(x: float | None) -> str:
    return "&ndash;" if x is None else (f"{x:.2f}s" if x < 100 else f"{x:.0f}s")


def _clip(text: str, limit: int, what: str) -> str:
    """Escaped text, cut at ``limit`` characters with the full text in a nested ``<details>``."""
    if len(text) <= limit:
        return f"<pre>{_e(text)}</pre>"
    return (
        f"<pre>{_e(text[:limit])}&hellip;</pre>"
        f"<details><summary class='muted'>full {what} ({len(text):,} chars)</summary><pre>{_e(text)}</pre></details>"
    )


def _depth_words(axis: DepthAxis, depth: float | None) -> str:
    prefix = {"requested": "depth ", "evidence": "evidence at "}.get(axis.kind, "")
    return prefix + axis.label(depth)


# ---- sections -----------------------------------------------------------------------------------
def _runs_section(runs: Sequence[RunData]) -> str:
    keys = ["model", "runner", "tasks", "created", "updated"]
    head = "".join(f"<th class='l'>{k}</th>" for k in ["run", *keys]) + "<th>results</th><th>errors</th>"
    rows = []
    for run in runs:
        info = run.info()
        errors = sum(r.error is not None for r in run.results)
        cols = "".join(f"<td class='l'>{_e(info.get(k, ''))}</td>" for k in keys)
        # results recorded under conditions that can change them (other concurrency, dtype, engine)
        mixed = f"<br><span class='bad'>mixed: {_e(info['mixed'])}</span>" if info.get("mixed") else ""
        manifest = json.dumps(run.manifest, indent=2, sort_keys=True, default=str)
        rows.append(
            f"<tr><td class='l'><b>{_e(run.label)}</b>{mixed}<br><span class='muted'>{_e(run.path)}</span>"
            f"<details><summary class='muted'>manifest</summary><pre>{_e(manifest)}</pre></details></td>"
            f"{cols}<td>{len(run.results):,}</td><td class='{'bad' if errors else ''}'>{errors:,}</td></tr>"
        )
    return f"<h2 id='runs'>Runs</h2><table class='data'><tr>{head}</tr>{''.join(rows)}</table>"


def _stats_cells(s: Stats) -> str:
    ci = "&ndash;" if s.ci_low is None else f"{_pct(s.ci_low)} &ndash; {_pct(s.ci_high)}"
    err_class = " class='bad'" if s.errors else ""
    return (
        f"<td>{s.n:,}</td><td>{s.scored:,}</td><td{err_class}>{s.errors:,}</td>"
        f"<td><b>{_pct(s.accuracy)}</b></td><td>{ci}</td><td>{_pct(s.accuracy_all)}</td>"
        f"<td>{_secs(s.latency_mean)}</td><td>{_secs(s.latency_p50)}</td><td>{_pct(s.cached_share, 0)}</td>"
    )


def _summary_table(task: str, run_labels: Sequence[str], margins, totals) -> str:
    head = (
        "<tr><th class='l'>run</th><th class='l'>length</th><th>n</th><th>scored</th><th>errors</th>"
        "<th>accuracy</th><th>95% CI (Wilson)</th><th>acc. (errors = 0)</th><th>latency mean</th>"
        "<th>latency p50</th><th>cached</th></tr>"
    )
    rows = []
    for run in run_labels:
        for m in margins:
            if m.run == run and m.task == task:
                rows.append(
                    f"<tr><td class='l'>{_e(run)}</td><td class='l'>{length_label(m.length)}</td>"
                    f"{_stats_cells(m.stats)}</tr>"
                )
        for m in totals:
            if m.run == run and m.task == task:
                rows.append(
                    f"<tr class='total'><td class='l'>{_e(run)}</td><td class='l'>all</td>"
                    f"{_stats_cells(m.stats)}</tr>"
                )
    return f"<table class='data'>{head}{''.join(rows)}</table>"


def _corpus_table(task: str, run_labels: Sequence[str], by_run: dict[str, list[Result]]) -> str:
    """Corpus metrics per run and length (then all lengths), or "" when the task's scorer has none."""
    hook = corpus_hook(task)
    if hook is None:
        return ""
    per_run = [(run, corpus_rows([r for r in by_run[run] if r.task == task], hook)) for run in run_labels]
    keys = list(dict.fromkeys(k for _, rows in per_run for row in rows for k in row.metrics))
    if not keys:
        return ""
    head = "<tr><th class='l'>run</th><th class='l'>length</th><th>n</th>" + "".join(
        f"<th>{_e(k)}</th>" for k in keys
    ) + "</tr>"
    body = []
    for run, rows in per_run:
        for row in rows:
            values = "".join(f"<td>{_pct(row.metrics.get(k))}</td>" for k in keys)
            length = "all" if row.length is None else length_label(row.length)
            total = " class='total'" if row.length is None else ""
            body.append(f"<tr{total}><td class='l'>{_e(run)}</td><td class='l'>{length}</td><td>{row.n:,}</td>{values}</tr>")
    return (
        "<h3>Corpus metrics</h3><p class='muted'>Computed over the scored samples the way the benchmark's "
        "official evaluator computes them (not means of per-sample scores); &ndash; = undefined "
        "(no sample of that kind, or no prediction carrying evidence).</p>"
        f"<table class='data corpus'>{head}{''.join(body)}</table>"
    )


def _meta(r: Result) -> dict:
    meta = r.extra.get("metadata") if isinstance(r.extra, dict) else None
    return meta if isinstance(meta, dict) else {}


def _ambiguous_note(task: str, run_labels: Sequence[str], by_run: dict[str, list[Result]]) -> str:
    """How many samples of each run carry ``metadata["ambiguous_answer"]`` (nothing when none do)."""
    counts = []
    for run in run_labels:
        results = [r for r in by_run[run] if r.task == task]
        n = sum(_meta(r).get("ambiguous_answer") is True for r in results)
        if n:
            counts.append(f"<li><b>{_e(run)}</b>: <span class='warn'>{n:,} of {len(results):,}</span></li>")
    if not counts:
        return ""
    return (
        "<div class='ambiguous'><h3>Ambiguous answer keys</h3><p class='muted'>Samples whose right option is "
        "not unique: the benchmark's answer text is contained in more than one option "
        "(<code>metadata.answer_candidates</code>), so versions of the authors' evaluation disagree on "
        "which is right; longctx scores them with the first candidate and flags them among the failing "
        f"samples.</p><ul>{''.join(counts)}</ul></div>"
    )


def _trajectory(steps: list) -> str:
    """An RLM trajectory (list of iterations), rendered generically: each iteration's fields."""
    items = []
    for step in steps:
        if isinstance(step, dict):
            fields = []
            for key, value in step.items():
                text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
                if len(text) > TRAJECTORY_FIELD_CHARS:
                    text = text[:TRAJECTORY_FIELD_CHARS] + f"\n... ({len(text) - TRAJECTORY_FIELD_CHARS:,} chars cut)"
                fields.append(f"<dt>{_e(key)}</dt><dd>{_clip(text, INLINE_CHARS * 2, str(key))}</dd>")
            items.append(f"<li><dl class='kv'>{''.join(fields)}</dl></li>")
        else:
            items.append(f"<li>{_clip(str(step), INLINE_CHARS * 2, 'step')}</li>")
    return (
        f"<details class='traj'><summary>trajectory ({len(steps)} iteration{'s' * (len(steps) != 1)})</summary>"
        f"<ol class='traj'>{''.join(items)}</ol></details>"
    )


def _thinking(r: Result) -> str:
    """A reasoning model's thinking, collapsed: its size, and whether the thinking budget cut it."""
    text = r.thinking or ""
    size = f"{r.thinking_tokens:,} tokens" if r.thinking_tokens is not None else f"{len(text):,} chars"
    cut = ", <span class='warn'>cut by the thinking budget</span>" if r.thinking_truncated else ""
    if len(text) > THINKING_CHARS:
        text = text[:THINKING_CHARS] + f"\n... ({len(text) - THINKING_CHARS:,} chars cut; all in results.jsonl)"
    return (f"<details class='thinking'><summary class='muted'>thinking ({size}{cut}), not scored</summary>"
            f"<pre>{_e(text) or '<span class=muted>(empty)</span>'}</pre></details>")


def _sample_row(r: Result) -> str:
    if r.error is not None:
        pred = f"<span class='err'>error</span>{_clip(r.error, INLINE_CHARS, 'error')}"
        score = "<span class='err'>err</span>"
    else:
        pred = _clip(r.prediction or "", INLINE_CHARS, "prediction")
        score = f"{r.score:.2f}" if r.score is not None else "&ndash;"
        if len(r.scores) > 1:
            score += "".join(f"<br><span class='muted'>{_e(k)} {v:.2f}</span>" for k, v in r.scores.items())
    refs = "".join(_clip(ref, INLINE_CHARS, "reference") for ref in r.references) or "&ndash;"
    meta = [f"{r.context_tokens:,} tok"]
    if r.evidence_depth is not None:
        meta.append(f"evidence at {r.evidence_depth:.1f}%")
    meta.append(f"{r.latency_s:.2f}s")
    if r.attempts > 1:  # earlier attempts ended in errors; this line is the one that counts
        before = f": {_e(r.previous_error)}" if r.previous_error else ""
        meta.append(f"<span class='warn'>attempt {r.attempts}, earlier error{before}</span>")
    if _meta(r).get("ambiguous_answer") is True:
        letters = ", ".join(map(str, _meta(r).get("answer_candidates") or []))
        meta.append(f"<span class='warn ambiguous-answer'>ambiguous answer key: {_e(letters)}</span>")
    extras = _thinking(r) if r.thinking is not None else ""
    trajectory = r.extra.get("trajectory") if isinstance(r.extra, dict) else None
    if isinstance(trajectory, list) and trajectory:
        extras += _trajectory(trajectory)
    rest = {k: v for k, v in (r.extra or {}).items() if k != "trajectory"}
    if rest:
        text = json.dumps(rest, indent=1, default=str)[:TRAJECTORY_FIELD_CHARS]
        extras += f"<details><summary class='muted'>extra</summary><pre>{_e(text)}</pre></details>"
    return (
        f"<tr><td><code>{_e(r.sample_id)}</code></td><td>{score}</td><td>{pred}{extras}</td>"
        f"<td>{refs}</td><td class='muted'>{'<br>'.join(meta)}</td></tr>"
    )


def _failures_section(
    run: str, results: Sequence[Result], axis: DepthAxis, anchor_of: dict, run_id: str, limit: int
) -> str:
    cell_groups = group(results, lambda r: (r.length, axis.bin(r)))
    n_fail = sum(1 for r in results if r.error is not None or r.score is None or r.score < 1)
    n_err = sum(r.error is not None for r in results)
    parts = []
    for length in sorted({k[0] for k in cell_groups}):
        for depth in sort_bins(k[1] for k in cell_groups if k[0] == length):
            cell_results = cell_groups[(length, depth)]
            bad = failing(cell_results)
            if not bad:
                continue
            errs = sum(r.error is not None for r in bad)
            shown = bad[:limit]
            more = (
                f"<p class='muted'>{len(bad) - limit:,} more failing samples not shown "
                f"(raise --max-failures, or read results.jsonl)</p>" if len(bad) > limit else ""
            )
            rows = "".join(_sample_row(r) for r in shown)
            parts.append(
                f"<details class='cell' id='{anchor_of[(length, depth)]}'><summary>"
                f"{length_label(length)} &middot; {_e(_depth_words(axis, depth))}: "
                f"{len(bad) - errs} failing{f', <span class=bad>{errs} errors</span>' if errs else ''}"
                f" of {len(cell_results)}</summary>"
                "<table class='samples'><colgroup><col class='id'><col class='score'><col class='pred'>"
                "<col class='ref'><col class='meta'></colgroup>"
                "<tr><th>sample</th><th>score</th><th>prediction</th><th>reference</th><th>context</th></tr>"
                f"{rows}</table>{more}</details>"
            )
    if not parts:
        return f"<p class='muted'>{_e(run)}: no failing samples.</p>"
    errs = f", <span class='bad'>{n_err:,} errors</span>" if n_err else ""
    return (
        f"<details class='run-fails' id='{run_id}'><summary>{_e(run)}: {n_fail - n_err:,} failing{errs} "
        f"of {len(results):,}</summary>{''.join(parts)}</details>"
    )


# ---- the page -----------------------------------------------------------------------------------
def _json_for_script(value: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026"
    )


def _share_template(entry: dict[str, Any], figs: list[dict[str, Any]]) -> None:
    """Drop ``entry``'s layout template when it equals the first figure's (``shared_template``:
    the page script puts that one back), so the template is in the page once, not per figure."""
    layout = entry["figure"].get("layout") or {}
    if not figs or "template" not in layout:
        return
    first = (figs[0]["figure"].get("layout") or {}).get("template")
    if first is not None and layout["template"] == first:
        del layout["template"]
        entry["shared_template"] = True


def render_report(
    runs: Sequence[RunData], title: str = "longctx report", max_failures_per_cell: int = 25,
    prices: PriceTable | None = None,
) -> str:
    """The report as one HTML string (plotly.js inlined once, no external references); USD with
    ``prices`` (default: the shipped table: :func:`longctx._prices.load_prices`)."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from longctx._prices import load_prices
    from longctx.reports.cost import cell_costs, costs, pricers
    from longctx.reports.cost_html import USD_METHODS, cost_section

    by_run = results_by_run(runs)
    labels = list(by_run)
    axes = depth_axes(by_run)
    all_cells = cells(by_run, axes)
    margins = by_length(by_run)
    totals = by_task(by_run)
    prices = prices if prices is not None else load_prices(user=False)
    priced = pricers(runs, prices)
    cost_rows, cost_cells = costs(by_run, priced), cell_costs(by_run, axes, priced)
    figs: list[dict[str, Any]] = []

    def add_figure(fig_id: str, kind: str, fig) -> str:
        entry = {"id": fig_id, "kind": kind, "figure": json.loads(pio.to_json(fig, validate=False))}
        _share_template(entry, figs)
        figs.append(entry)
        hint = f"<div class='hint' id='{fig_id}-hint'></div>" if kind == "heatmap" else ""
        return f"<div><div class='fig' id='{fig_id}'></div>{hint}</div>"

    tasks = tasks_of(by_run)
    body = [_runs_section(runs)]
    nav = ["<a href='#runs'>Runs</a>"]
    for ti, task in enumerate(tasks):
        axis = axes[task]
        task_cells = [c for c in all_cells if c.task == task]
        lengths = sorted({c.length for c in task_cells})
        depths = sort_bins(c.depth_bin for c in task_cells)
        nav.append(f"<a href='#task-{ti}'>{_e(task)}</a>")
        section = [f"<h2 id='task-{ti}'>{_e(task)}</h2>"]
        section.append(f"<p class='muted'>Depth axis: {_e(axis.title)}.</p>")
        task_runs = [run for run in labels if any(c.run == run for c in task_cells)]
        section.append(
            add_figure(
                f"curve-{ti}",
                "curve",
                figures.length_curves(
                    [m for m in margins if m.task == task], task_runs, f"{_e(task)}: accuracy vs context length"
                ),
            )
        )
        section.append(_summary_table(task, task_runs, margins, totals))
        section.append(_corpus_table(task, task_runs, by_run))
        section.append(_ambiguous_note(task, task_runs, by_run))
        section.append("<h3>Accuracy by depth and length <span class='muted'>(click a cell for its failing samples)</span></h3>")
        heatmaps, failures = [], []
        for ri, run in enumerate(labels):
            run_cells = [c for c in task_cells if c.run == run]
            if not run_cells:
                continue
            anchors = {(c.length, c.depth_bin): f"fail-{ti}-{ri}-{ci}" for ci, c in enumerate(run_cells)}
            failing_cells = {
                (c.length, c.depth_bin) for c in run_cells if c.stats.failures or c.stats.errors
            }

            def anchor(cell: Cell, a=anchors, f=failing_cells) -> str:
                key = (cell.length, cell.depth_bin)
                return a[key] if key in f else ""

            model = ", ".join(dict.fromkeys(r.model for r in by_run[run] if r.task == task))
            fig = figures.heatmap(run_cells, lengths, depths, axis, f"<b>{_e(run)}</b>  ({_e(model)})", anchor)
            heatmaps.append(add_figure(f"heat-{ti}-{ri}", "heatmap", fig))
            run_results = [r for r in by_run[run] if r.task == task]
            failures.append(
                _failures_section(run, run_results, axis, anchors, f"fail-{ti}-{ri}", max_failures_per_cell)
            )
        section.append(f"<div class='grid'>{''.join(heatmaps)}</div>")
        section.append(cost_section([c for c in cost_rows if c.task == task],
                                    [c for c in cost_cells if c.task == task], task_runs, lengths, depths, axis,
                                    prices.describe()))
        section.append("<h3>Failing samples</h3>" + "".join(failures))
        body.append(f"<section>{''.join(section)}</section>")
    if not tasks:
        body.append("<p class='muted'>These runs have no results yet.</p>")
    nav.append("<a href='#methods'>Methods</a>")

    plotly_js = get_plotlyjs()
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_results = sum(len(r) for r in by_run.values())
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div class='muted'>{len(runs)} run{'s' * (len(runs) != 1)}, "
        f"{len(tasks)} task{'s' * (len(tasks) != 1)}, {n_results:,} results &middot; generated {generated} "
        f"by longctx {_e(_version())}</div></header>"
        f"<nav>{''.join(nav)}</nav><main>{''.join(body)}"
        f"<footer id='methods'><h2>Methods</h2>{METHODS}<p>{USD_METHODS}</p></footer></main>"
        f"<script type='application/json' id='figure-data'>{_json_for_script(figs)}</script>"
        f"<script>{plotly_js}</script>"
        f"<script>{JS % {'config': json.dumps(PLOTLY_CONFIG)}}</script>"
        "</body></html>"
    )


def write_report(
    runs: Sequence[RunData], path: str | Path, title: str = "longctx report", max_failures_per_cell: int = 25,
    prices: PriceTable | None = None,
) -> Path:
    """Write :func:`render_report` to ``path`` (atomically) and return the absolute path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(runs, title, max_failures_per_cell, prices), encoding="utf-8")
    tmp.replace(path)
    return path.resolve()


def _version() -> str:
    return dist_version("longctx") or "dev"
