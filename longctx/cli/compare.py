"""``longctx compare RUN RUN [RUN ...] -o page.html [--json out.json]``: runs on the same samples,
side by side, with paired tests (McNemar / paired bootstrap, Holm-adjusted)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from longctx.reports.compare import Comparison
    from rich.console import Console


@click.command(
    help="Compare runs on the same samples: one self-contained HTML page with paired tests, "
    "effective length and cost; --json writes the same numbers."
)
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path("compare.html"),
    show_default=True,
    help="HTML file to write.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write every number of the page as JSON here.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 100),
    default=85.6,
    show_default=True,
    help="Effective-length threshold, percent (RULER: Llama-2-7B's 85.6 at 4K).",
)
@click.option("--title", default="longctx comparison", show_default=True, help="Page title.")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=25,
    show_default=True,
    help="Side-by-side failing samples shown per (length, depth) cell.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=100),
    default=10_000,
    show_default=True,
    help="Paired-bootstrap resamples.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--prices", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="Price table (YAML or TOML, USD per million tokens) over ~/.config/longctx/prices.yaml and the "
    "shipped defaults.",
)
def compare(
    runs: tuple[Path, ...],
    output: Path,
    json_path: Path | None,
    threshold: float,
    title: str,
    max_failures: int,
    resamples: int,
    seed: int,
    prices: Path | None,
) -> None:
    """Read RUNS (run folders of ``longctx sweep``), write OUTPUT (and --json), print a summary."""
    import msgspec
    from rich.console import Console

    from longctx._errors import LongctxError
    from longctx._prices import load_prices
    from longctx._records import encode
    from longctx.reports.compare import compare_runs
    from longctx.reports.compare_html import write_compare
    from longctx.reports.runs import load_runs

    for path in (output, json_path):
        if path is not None and path.is_dir():
            raise LongctxError(f"{path} is a folder; give a file name such as {path / 'compare.html'}")
    table = load_prices(prices)  # a bad price file is refused before any work
    loaded = load_runs(runs)
    comparison = compare_runs(loaded, threshold=threshold, resamples=resamples, seed=seed, prices=table)
    try:  # the files first: a closed pipe on the summary (`| head`) must not lose them
        page = write_compare(loaded, output, comparison, title=title, max_failures_per_cell=max_failures)
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = json_path.with_name(json_path.name + ".tmp")
            tmp.write_bytes(msgspec.json.format(encode(comparison), indent=1) + b"\n")
            tmp.replace(json_path)
    except OSError as exc:
        raise LongctxError(f"cannot write {exc.filename or output}: {exc.strerror or exc}") from None
    print_comparison(comparison, Console())
    click.echo(str(page))
    if json_path is not None:
        click.echo(str(json_path.resolve()))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def print_comparison(comp: Comparison, console: Console) -> None:
    """The terminal summary: sample identity, per task accuracy / effective length / cost per run,
    and the all-lengths paired test of every two runs."""
    from longctx.reports.aggregate import length_label
    from rich.table import Table

    runs = list(dict.fromkeys([r for p in comp.pairs for r in (p.run_a, p.run_b)]))
    number = {run: str(i) for i, run in enumerate(runs, 1)}
    console.print("runs: " + ", ".join(f"{number[r]} = {r}" for r in runs), highlight=False)
    for p in comp.pairs:
        style = "green" if p.kind == "identical" else "yellow"
        console.print(
            f"{p.run_a} vs {p.run_b}: [{style}]{p.kind}[/{style}] samples ({p.note})", highlight=False
        )
    for task in comp.depth_axes:
        longest = max((len(f"{number.get(r, '')} {r}") for r in runs), default=3)
        table = Table(
            title=f"{task}  (all lengths)",
            title_justify="left",
            caption_justify="left",
            caption=f"eff. len: accuracy >= {comp.threshold:g}% up to there (RULER) / the same on the "
            "Wilson lower bound",
        )
        cost_table = Table(
            title=f"{task}  cost per sample (all lengths)",
            title_justify="left",
            caption_justify="left",
            caption="wall seconds, prompt tokens sent and USD per sample (" + comp.prices + ")",
        )
        for t in (table, cost_table):
            t.add_column("run", no_wrap=True, min_width=min(longest, 24))
        for name in ("acc %", "95% CI", "scored", "err", "eff. len"):
            table.add_column(name, justify="right", no_wrap=True)
        for name in ("s/sample", "prompt", "USD"):
            cost_table.add_column(name, justify="right", no_wrap=True)
        for m in comp.lengths:
            if m.task != task or m.length is not None:
                continue
            s = m.stats
            eff = next(e for e in comp.effective if e.run == m.run and e.task == task)
            cost = next(c for c in comp.costs if c.run == m.run and c.task == task and c.length is None)
            ci = "-" if s.ci_low is None else f"{100 * s.ci_low:.0f}-{100 * s.ci_high:.0f}"
            label = f"{number.get(m.run, '')} {m.run}".strip()
            table.add_row(label, _pct(s.accuracy), ci, str(s.scored), str(s.errors),
                          f"{eff.label} / {eff.conservative}")
            cost_table.add_row(
                label,
                "-" if cost.latency_s is None else f"{cost.latency_s:.2f}",
                "-" if cost.prompt_tokens is None else f"{cost.prompt_tokens:,.0f}",
                "-" if cost.usd_per_sample is None else f"{cost.usd_per_sample:.6g}",
            )
        console.print(table)
        console.print(cost_table)
        tests = [t for t in comp.tests if t.task == task and t.length is None]
        if not tests:
            continue
        table = Table(
            title=f"{task}  paired, all lengths",
            title_justify="left",
            caption_justify="left",
            caption="A, B: run numbers (above); A-B in points; p Holm-adjusted over all tests; errors "
            "left out",
        )
        for name in ("A", "B"):
            table.add_column(name, justify="right", no_wrap=True)
        for name in ("pairs", "only A", "only B", "A-B", "95% CI", "test", "p Holm"):
            table.add_column(name, justify="right", no_wrap=True)
        for t in tests:
            sig = t.p_holm is not None and t.p_holm < 0.05
            table.add_row(
                number.get(t.run_a, t.run_a),
                number.get(t.run_b, t.run_b),
                str(t.pairs),
                str(t.only_a),
                str(t.only_b),
                "-" if t.diff is None else f"{100 * t.diff:+.1f}",
                "-" if t.ci_low is None else f"{100 * t.ci_low:+.0f}..{100 * t.ci_high:+.0f}",
                t.test,
                "-" if t.p_holm is None else f"{t.p_holm:.3g}",
                style="bold" if sig else None,
            )
        console.print(table)
    lengths = sorted({m.length for m in comp.lengths if m.length is not None})
    if lengths:
        console.print(
            f"[dim]lengths {', '.join(length_label(n) for n in lengths)}; per-length tests on the page[/dim]"
        )
