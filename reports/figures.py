"""Plotly figures of a report: a depth x length heatmap per (run, task), accuracy-vs-length curves;
for the comparison page also retrieval-recall heatmaps and paired-difference curves.

Figures are built with plotly's Python API and handed to the page as JSON; the page loads
plotly.js once (see :mod:`longctx.reports.html`). Colour scales are fixed to [0, 1] so the same
colour means the same accuracy in every heatmap of a report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

from longctx.reports.aggregate import Cell, DepthAxis, Margin, Stats, length_label

#: accuracy colour scale: perceptually uniform and colour-blind safe (matplotlib's viridis)
COLORSCALE = "Viridis"
#: line colours for runs (Okabe & Ito 2008 colour-blind safe palette)
RUN_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def stats_hover(stats: Stats) -> str:
    """Hover text: accuracy with its Wilson interval, counts, errors."""
    lines = [
        f"accuracy {_pct(stats.accuracy)}"
        + (f"  [95% CI {_pct(stats.ci_low)}, {_pct(stats.ci_high)}]" if stats.ci_low is not None else ""),
        f"scored {stats.scored}, failing {stats.failures}, errors {stats.errors}",
    ]
    if stats.errors:
        lines.append(f"errors counted as failures: {_pct(stats.accuracy_all)}")
    return "<br>".join(lines)


#: Built with the template they end up with: plotly otherwise applies (and first loads) its default
#: template at construction only for ``_base_layout`` to replace it (same figure, less work).
_TEMPLATE_ONLY = {"template": "plotly_white"}


def _base_layout(title: str, height: int) -> dict:
    return dict(
        title=dict(text=title, font=dict(size=14), x=0.0, xanchor="left"),
        height=height,
        margin=dict(l=70, r=20, t=40, b=50),
        font=dict(family=FONT, size=12, color="#222"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        template="plotly_white",
    )


def heatmap(
    cells: Sequence[Cell],
    lengths: Sequence[int],
    depths: Sequence[float | None],
    axis: DepthAxis,
    title: str,
    anchor: Callable[[Cell], str] = lambda cell: "",
):
    """Accuracy of one (run, task) as a depth (rows, 0% at the top) x length (columns) heatmap.

    ``lengths`` and ``depths`` are the task's full grid across runs, so heatmaps of one task line
    up; cells without results stay blank, cells with only errors are labelled ``err``. Each cell
    carries ``customdata = [anchor(cell), hover text]``; the page uses the anchor to open that
    cell's failing samples on click. ``title`` is plotly markup (escape user text).
    """
    import plotly.graph_objects as go

    at = {(c.length, c.depth_bin): c for c in cells}
    z, text, custom = [], [], []
    for depth in depths:
        z_row, text_row, custom_row = [], [], []
        for length in lengths:
            cell = at.get((length, depth))
            where = f"length {length_label(length)} ({length} tokens), {axis.title}: {axis.label(depth)}"
            if cell is None:
                z_row.append(None)
                text_row.append("")
                custom_row.append(["", f"{where}<br>no results"])
                continue
            s = cell.stats
            z_row.append(s.accuracy)
            text_row.append(f"{s.errors}err" if s.accuracy is None
                            else f"{100 * s.accuracy:.0f}" + (f" +{s.errors}err" if s.errors else ""))
            custom_row.append([anchor(cell), f"{where}<br>{stats_hover(s)}"])
        z.append(z_row)
        text.append(text_row)
        custom.append(custom_row)

    x = [length_label(n) for n in lengths]
    y = [axis.label(d) for d in depths]
    fig = go.Figure(
        layout=_TEMPLATE_ONLY,
        data=go.Heatmap(
            z=z,
            x=x,
            y=y,
            text=text,
            texttemplate="%{text}",
            textfont=dict(size=11 if len(lengths) <= 12 else 9),
            customdata=custom,
            hovertemplate="%{customdata[1]}<extra></extra>",
            colorscale=COLORSCALE,
            zmin=0.0,
            zmax=1.0,
            xgap=1,
            ygap=1,
            colorbar=dict(
                title=dict(text="accuracy", side="right"),
                tickvals=[0, 0.25, 0.5, 0.75, 1],
                ticktext=["0%", "25%", "50%", "75%", "100%"],
                thickness=12,
                len=0.9,
            ),
        )
    )
    height = int(min(max(120 + 22 * len(depths), 260), 1000))
    fig.update_layout(**_base_layout(title, height))
    fig.update_xaxes(title_text="context length (tokens)", type="category", showgrid=False)
    fig.update_yaxes(title_text=axis.title, type="category", autorange="reversed", showgrid=False)
    return fig


def length_curves(margins: Sequence[Margin], runs: Sequence[str], title: str):
    """Accuracy vs context length for one task, one line per run, Wilson 95% error bars.

    ``title`` is plotly markup (escape user text); run labels are escaped here.

    The x axis is logarithmic (lengths are usually powers of two) with ticks labelled ``1K``,
    ``2K``...; the y axis is fixed to 0-100% so curves of different tasks compare by eye.
    """
    import plotly.graph_objects as go

    fig = go.Figure(layout=_TEMPLATE_ONLY)
    all_lengths = sorted({m.length for m in margins if m.length is not None and m.run in runs})
    log_axis = bool(all_lengths) and all_lengths[0] > 0
    for i, run in enumerate(runs):
        # runs are dodged sideways by a few percent of an octave so their error bars stay apart
        dodge = 2 ** (0.04 * (i - (len(runs) - 1) / 2)) if log_axis else 1.0
        points = [m for m in margins if m.run == run and m.length is not None and m.stats.accuracy is not None]
        if not points:
            continue
        points.sort(key=lambda m: m.length)
        acc = [m.stats.accuracy for m in points]
        color = RUN_COLORS[i % len(RUN_COLORS)]
        fig.add_trace(
            go.Scatter(
                x=[m.length * dodge for m in points],
                y=acc,
                name=escape(run),
                mode="lines+markers",
                line=dict(color=color, width=2),
                marker=dict(size=7),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[m.stats.ci_high - a for m, a in zip(points, acc)],
                    arrayminus=[a - m.stats.ci_low for m, a in zip(points, acc)],
                    thickness=1.2,
                    width=4,
                ),
                customdata=[
                    f"{escape(run)}<br>length {length_label(m.length)}<br>{stats_hover(m.stats)}" for m in points
                ],
                hovertemplate="%{customdata}<extra></extra>",
            )
        )
    ticks = all_lengths
    fig.update_layout(
        **_base_layout(title, 360),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1.0),
        hovermode="closest",
    )
    fig.update_xaxes(
        title_text="context length (tokens)",
        type="log" if log_axis else "linear",
        tickvals=ticks,
        ticktext=[length_label(n) for n in ticks],
        showgrid=True,
        gridcolor="#eee",
    )
    fig.update_yaxes(
        title_text="accuracy (95% Wilson CI)",
        range=[-0.03, 1.03],
        tickformat=".0%",
        showgrid=True,
        gridcolor="#eee",
        zeroline=False,
    )
    return fig


# ---- comparison page (longctx compare) -----------------------------------------------------------
def recall_heatmap(
    splits: Sequence,
    lengths: Sequence[int],
    depths: Sequence[float | None],
    axis: DepthAxis,
    title: str,
    anchor: Callable[[int, float | None], str] = lambda length, depth: "",
):
    """Retrieval recall of one ``rag`` (run, task) as a depth x length heatmap, laid out like
    :func:`heatmap` (same grid, same 0-1 colour scale) so it sits next to the run's accuracy.

    ``splits`` are the run's per-cell :class:`~longctx.reports.compare.RetrievalSplit` records;
    hover text gives the split of wrong answers into retrieval and reading misses. Each cell
    carries ``customdata = [anchor(length, depth), hover text]`` like :func:`heatmap`.
    """
    import plotly.graph_objects as go

    at = {(s.length, s.depth_bin): s for s in splits if not s.pooled}
    z, text, custom = [], [], []
    for depth in depths:
        z_row, text_row, custom_row = [], [], []
        for length in lengths:
            s = at.get((length, depth))
            where = f"length {length_label(length)} ({length} tokens), {axis.title}: {axis.label(depth)}"
            if s is None or s.recall is None:
                z_row.append(None)
                text_row.append("")
                custom_row.append([anchor(length, depth) if s else "", f"{where}<br>no recall recorded"])
                continue
            z_row.append(s.recall)
            text_row.append(f"{100 * s.recall:.0f}")
            wrong = s.scored - s.right
            custom_row.append([
                anchor(length, depth),
                f"{where}<br>needle recall {_pct(s.recall)} over {s.with_recall} samples"
                f"<br>wrong {wrong}: retrieval miss {s.retrieval_miss}, reading miss {s.reading_miss}"
                + (f", recall unknown {s.unknown}" if s.unknown else ""),
            ])
        z.append(z_row)
        text.append(text_row)
        custom.append(custom_row)
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[length_label(n) for n in lengths], y=[axis.label(d) for d in depths], text=text,
            texttemplate="%{text}", textfont=dict(size=11 if len(lengths) <= 12 else 9), customdata=custom,
            hovertemplate="%{customdata[1]}<extra></extra>", colorscale=COLORSCALE, zmin=0.0, zmax=1.0,
            xgap=1, ygap=1,
            colorbar=dict(title=dict(text="recall", side="right"), tickvals=[0, 0.25, 0.5, 0.75, 1],
                          ticktext=["0%", "25%", "50%", "75%", "100%"], thickness=12, len=0.9),
        )
    )
    fig.update_layout(**_base_layout(title, int(min(max(120 + 22 * len(depths), 260), 1000))))
    fig.update_xaxes(title_text="context length (tokens)", type="category", showgrid=False)
    fig.update_yaxes(title_text=axis.title, type="category", autorange="reversed", showgrid=False)
    return fig


def difference_curves(tests: Sequence, title: str):
    """Paired accuracy difference (A - B) vs context length, one line per pair of runs, with the
    95% paired-bootstrap interval as error bars; filled markers where the Holm-adjusted p < 0.05.

    ``tests`` are one task's :class:`~longctx.reports.compare.PairedTest` records (the per-length
    ones are drawn; pooled ones, ``length`` None, are skipped). ``title`` is plotly markup.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    pairs = list(dict.fromkeys((t.run_a, t.run_b) for t in tests))
    lengths = sorted({t.length for t in tests if t.length is not None})
    log_axis = bool(lengths) and lengths[0] > 0
    for i, (a, b) in enumerate(pairs):
        dodge = 2 ** (0.04 * (i - (len(pairs) - 1) / 2)) if log_axis else 1.0
        points = sorted((t for t in tests if (t.run_a, t.run_b) == (a, b) and t.length is not None
                         and t.diff is not None), key=lambda t: t.length)
        if not points:
            continue
        color = RUN_COLORS[i % len(RUN_COLORS)]
        fig.add_trace(go.Scatter(
            x=[t.length * dodge for t in points], y=[t.diff for t in points],
            name=f"{escape(a)} - {escape(b)}", mode="lines+markers", line=dict(color=color, width=2),
            marker=dict(size=8, color=[color if (t.p_holm or 1) < 0.05 else "white" for t in points],
                        line=dict(color=color, width=2)),
            error_y=dict(type="data", symmetric=False, array=[t.ci_high - t.diff for t in points],
                         arrayminus=[t.diff - t.ci_low for t in points], thickness=1.2, width=4),
            customdata=[_difference_hover(a, b, t) for t in points],
            hovertemplate="%{customdata}<extra></extra>",
        ))
    fig.add_hline(y=0, line=dict(color="#888", width=1, dash="dot"))
    fig.update_layout(**_base_layout(title, 340), hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1.0))
    fig.update_xaxes(title_text="context length (tokens)", type="log" if log_axis else "linear",
                     tickvals=lengths, ticktext=[length_label(n) for n in lengths], showgrid=True,
                     gridcolor="#eee")
    fig.update_yaxes(title_text="score difference A - B (95% CI)", range=[-1.05, 1.05], tickformat="+.0%",
                     showgrid=True, gridcolor="#eee", zeroline=False)
    return fig


def _difference_hover(a: str, b: str, t) -> str:
    """Hover text of one paired test: difference, interval, discordant counts, p-values."""
    return (
        f"{escape(a)} - {escape(b)}, length {length_label(t.length)}"
        f"<br>difference {100 * t.diff:+.1f} points [95% CI {100 * t.ci_low:+.1f}, {100 * t.ci_high:+.1f}]"
        f"<br>{t.pairs} pairs: only A right {t.only_a}, only B right {t.only_b}"
        f"<br>{t.test}: p = {t.p_value:.3g}, Holm-adjusted {t.p_holm:.3g}"
    )
