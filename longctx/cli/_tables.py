"""Terminal tables (rich) over results: accuracy by length x depth, per task.

Shown at the end of ``longctx sweep`` and by ``longctx report``. The numbers come from
:mod:`longctx.reports.aggregate`, the same functions the HTML report uses.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from longctx._records import Result
from longctx._scoring import corpus_hook, corpus_rows
from longctx.reports.aggregate import Stats, depth_axis, group, length_label, sort_bins, summarize


def _style(accuracy: float) -> str:
    return "green" if accuracy >= 0.9 else "yellow" if accuracy >= 0.5 else "red"


def _acc(stats: Stats | None) -> Text:
    """Accuracy of a cell, then its error count when it has errors (``67 +2err``, ``3err``)."""
    if stats is None or stats.n == 0:
        return Text("·", style="dim")
    if stats.accuracy is None:
        return Text(f"{stats.errors}err", style="bold red")
    text = Text(f"{100 * stats.accuracy:.0f}", style=_style(stats.accuracy))
    if stats.errors:
        text.append(f" +{stats.errors}err", style="red")
    return text


def accuracy_tables(results: Iterable[Result], title: str | None = None) -> list[Table]:
    """One table per task: rows = depth bins, columns = lengths, cells = accuracy (%) over scored
    samples followed by the cell's error count when it has any (``80 +2err``; ``3err`` when every
    sample failed); footer rows give the per-length accuracy with its Wilson 95% interval, scored
    counts and errors."""
    tables = []
    for task, task_results in group(results, lambda r: r.task).items():
        axis = depth_axis(task_results)
        by_cell = {k: summarize(v) for k, v in group(task_results, lambda r: (r.length, axis.bin(r))).items()}
        by_len = {k: summarize(v) for k, v in group(task_results, lambda r: r.length).items()}
        by_depth = {k: summarize(v) for k, v in group(task_results, axis.bin).items()}
        total = summarize(task_results)
        lengths = sorted(by_len)
        depths = sort_bins(by_depth)

        heading = f"{title}: {task}" if title else task
        table = Table(
            title=f"{heading}  accuracy % by length x depth",
            caption="over scored samples; +Nerr = samples that failed (never scored; a rerun retries them)",
            title_justify="left",
            caption_justify="left",
            show_footer=False,
        )
        table.add_column(axis.title, justify="right", style="bold")
        for length in lengths:
            table.add_column(length_label(length), justify="right")
        table.add_column("all", justify="right", style="bold")

        for depth in depths:
            row = [_acc(by_cell.get((length, depth))) for length in lengths]
            table.add_row(axis.label(depth), *row, _acc(by_depth[depth]))
        table.add_section()
        table.add_row("all depths", *[_acc(by_len[n]) for n in lengths], _acc(total))
        table.add_row(
            "95% CI",
            *[_ci(by_len[n]) for n in lengths],
            _ci(total),
            style="dim",
        )
        table.add_row("scored", *[str(by_len[n].scored) for n in lengths], str(total.scored), style="dim")
        table.add_row(
            "errors",
            *[Text(str(by_len[n].errors), style="red" if by_len[n].errors else "dim") for n in lengths],
            Text(str(total.errors), style="bold red" if total.errors else "dim"),
        )
        tables.append(table)
    return tables


def _ci(stats: Stats) -> str:
    if stats.ci_low is None:
        return "-"
    return f"{100 * stats.ci_low:.0f}-{100 * stats.ci_high:.0f}"


def print_accuracy_table(results: Iterable[Result], console: Console, title: str | None = None) -> None:
    """Print :func:`accuracy_tables` for ``results`` (one run) to ``console``, then
    :func:`corpus_tables` (tasks with corpus metrics only)."""
    results = list(results)
    if not results:
        console.print(f"[dim]{title + ': ' if title else ''}no results[/dim]")
        return
    for table in accuracy_tables(results, title):
        console.print(table)
    for table in corpus_tables(results, title):  # tasks whose scorer has corpus metrics (QASPER)
        console.print(table)


def corpus_tables(results: Iterable[Result], title: str | None = None) -> list[Table]:
    """One table per task whose scorer has the optional ``corpus_scores`` hook: rows = the corpus
    metrics in % (``-`` where undefined), columns = lengths, then all lengths pooled."""
    tables = []
    for task, task_results in group(results, lambda r: r.task).items():
        hook = corpus_hook(task)
        rows = corpus_rows(task_results, hook) if hook is not None else []
        if not rows:
            continue
        heading = f"{title}: {task}" if title else task
        table = Table(title=f"{heading}  corpus metrics %", caption="computed over the scored samples "
                      "as the benchmark's official evaluator does", title_justify="left", caption_justify="left")
        table.add_column("metric", style="bold")
        for row in rows:
            table.add_column("all" if row.length is None else length_label(row.length), justify="right")
        for key in rows[0].metrics:
            cells = ["-" if row.metrics.get(key) is None else f"{100 * row.metrics[key]:.1f}" for row in rows]
            table.add_row(key, *cells)
        table.add_row("scored", *[str(row.n) for row in rows], style="dim")
        tables.append(table)
    return tables
