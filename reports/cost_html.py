"""The cost parts of the HTML pages (report and comparison): tokens, time and USD per sample per
run and length, and USD per (length, depth) cell as a shaded depth x length table.

Numbers from :mod:`longctx.reports.cost`; prices from :mod:`longctx._prices` (every page says which
table entry priced which model, and from which file or the default table and its date).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from longctx.reports.aggregate import DepthAxis, length_label
from longctx.reports.cost import CellCost, Cost, price_notes

#: what the pages say about USD (in their Methods sections)
USD_METHODS = (
    "<b>USD</b> per sample is priced from the sample's own token counts: prompt tokens not served from "
    "the provider's cache at the input rate, cached prompt tokens at the cached-input rate, generated "
    "tokens at the output rate (USD per million tokens, from the price table named on the page: the "
    "shipped default table, <code>~/.config/longctx/prices.yaml</code>, <code>--prices FILE</code>). "
    "<code>rlm</code> samples count every root and sub-LM call, at the rates of the run's model. Models "
    "on a local engine (no endpoint, or one on this machine) cost 0 unless the table prices them; a "
    "model on a remote endpoint without a price has no USD (&ndash;). USD/sample is the mean over the "
    "samples with a known cost, errors included (a failed request may have been billed); earlier "
    "attempts of retried samples are not counted."
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float | None, digits: int = 0) -> str:
    return "&ndash;" if x is None else f"{x:,.{digits}f}"


def _pct(x: float | None) -> str:
    return "&ndash;" if x is None else f"{100 * x:.0f}%"


def usd(x: float | None) -> str:
    """``$1.23``, ``$0.0123``, ``$0.000123``; ``$0`` for nothing spent; ``&ndash;`` unknown."""
    if x is None:
        return "&ndash;"
    if x == 0:
        return "$0"
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}" if x >= 0.01 else f"${x:.6f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "&ndash;"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return str(n)  # pragma: no cover


def _usd_known(c: Cost) -> str:
    text = usd(c.usd_per_sample)
    if c.usd_per_sample is not None and c.usd_unknown:
        text += f"<br><span class='muted'>{c.usd_unknown:,} unknown</span>"
    return text


#: (header, cell) of the cost table; columns that no row reports are left out
COLUMNS = [
    ("run", lambda c: _e(c.run)),
    ("length", lambda c: "all" if c.length is None else length_label(c.length)),
    ("samples", lambda c: f"{c.samples:,}"),
    ("prompt tok. sent", lambda c: _num(c.prompt_tokens) + ("*" if c.tokens_estimated else "")),
    ("computed", lambda c: _num(c.computed_tokens)),
    ("cached", lambda c: _pct(c.cached_share)),
    ("generated tok.", lambda c: _num(c.completion_tokens, 1)),
    ("root calls", lambda c: _num(c.root_calls, 1)),
    ("sub-LM calls", lambda c: _num(c.sub_calls, 1)),
    ("retrieved tok.", lambda c: _num(c.retrieved_tokens)),
    ("wall s / sample", lambda c: _num(c.latency_s, 2)),
    ("tok/s", lambda c: _num(c.tokens_per_s)),
    ("gen. tok/s", lambda c: _num(c.generated_per_s, 1)),
    ("memory state", lambda c: _bytes(c.state_bytes)),
    ("USD / sample", _usd_known),
    ("USD total", lambda c: usd(c.usd_total)),
    ("runner's USD (total)", lambda c: "&ndash;" if c.cost_usd is None else f"${c.cost_usd:,.4f}"),
]


def cost_table(rows: Sequence[Cost]) -> str:
    """Cost rows (one per run and length, then all lengths) as a table, with the prices used."""
    table = [[fmt(c) for _, fmt in COLUMNS] for c in rows]
    keep = [i for i in range(len(COLUMNS)) if i < 3 or any(row[i] != "&ndash;" for row in table)]
    head = "".join(f"<th{' class=l' if i < 2 else ''}>{COLUMNS[i][0]}</th>" for i in keep)
    body = []
    for c, row in zip(rows, table):
        tds = "".join(f"<td{' class=l' if n < 2 else ''}>{row[i]}</td>" for n, i in enumerate(keep))
        body.append(f"<tr{' class=total' if c.length is None else ''}>{tds}</tr>")
    notes = []
    if any(c.tokens_estimated for c in rows):
        notes.append("* token counts of some samples estimated from characters (the engine reported no "
                     "usage)")
    notes += price_notes(rows)
    listed = "".join(f"<li>{_e(n)}</li>" for n in notes)
    return (f"<table class='data cost'><tr>{head}</tr>{''.join(body)}</table>"
            + (f"<ul class='muted prices'>{listed}</ul>" if listed else ""))


def usd_matrix(cells: Sequence[CellCost], lengths: Sequence[int], depths: Sequence[float | None],
               axis: DepthAxis) -> str:
    """USD per sample of one run and task: depth (rows) x length (columns), shaded by value."""
    at = {(c.length, c.depth_bin): c for c in cells}
    top = max((c.usd_per_sample or 0.0 for c in cells), default=0.0)
    head = f"<th class='l'>{_e(axis.title)}</th>" + "".join(f"<th>{length_label(n)}</th>" for n in lengths)
    rows = []
    for depth in depths:
        tds = [f"<td class='l'>{_e(axis.label(depth))}</td>"]
        for n in lengths:
            c = at.get((n, depth))
            if c is None:
                tds.append("<td class='muted'></td>")
                continue
            known = top and c.usd_per_sample is not None
            shade = 0.08 + 0.5 * (c.usd_per_sample or 0.0) / top if known else 0
            style = f" style='background:rgba(11,99,197,{shade:.2f})'" if shade else ""
            tip = (f"{c.samples} samples, total {usd(c.usd_total)}"
                   + (f", {c.usd_unknown} of unknown cost" if c.usd_unknown else "")).replace("&ndash;", "-")
            tds.append(f"<td{style} title='{_e(tip)}'>{usd(c.usd_per_sample)}</td>")
        rows.append(f"<tr>{''.join(tds)}</tr>")
    return f"<table class='data usd-cells'><tr>{head}</tr>{''.join(rows)}</table>"


def cost_section(rows: Sequence[Cost], cells: Sequence[CellCost], runs: Sequence[str], lengths: Sequence[int],
                 depths: Sequence[float | None], axis: DepthAxis, prices: str) -> str:
    """``<h3>Cost per sample</h3>``, the table, the prices, and a collapsible USD-per-cell table per
    run that spent something (a local engine's cells, all $0, are left out)."""
    parts = [f"<h3>Cost per sample <span class='muted'>&middot; USD {_e(prices)}</span></h3>", cost_table(rows)]
    for run in runs:
        mine = [c for c in cells if c.run == run]
        if any(c.usd_per_sample for c in mine):
            parts.append(
                f"<details class='usd-cells'><summary>{_e(run)}: USD per sample by depth and length</summary>"
                f"{usd_matrix(mine, lengths, depths, axis)}</details>"
            )
    return f"<div class='cost'>{''.join(parts)}</div>"
