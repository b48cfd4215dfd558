"""``longctx report RUN [RUN ...] -o report.html``: one self-contained HTML report for run folders."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(help="Write one self-contained HTML report for run folders (opens offline).")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), default=Path("report.html"),
    show_default=True, help="HTML file to write.",
)
@click.option("--title", default="longctx report", show_default=True, help="Report title.")
@click.option(
    "--max-failures", type=click.IntRange(min=0), default=25, show_default=True,
    help="Failing samples shown per (length, depth) cell.",
)
@click.option("--no-table", is_flag=True, help="Do not print the accuracy tables to the terminal.")
@click.option(
    "--prices", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
    help="Price table (YAML or TOML, USD per million tokens) over ~/.config/longctx/prices.yaml and the "
    "shipped defaults.",
)
def report(runs: tuple[Path, ...], output: Path, title: str, max_failures: int, no_table: bool,
           prices: Path | None) -> None:
    """Read RUNS (run folders written by ``longctx sweep``), print accuracy tables, write OUTPUT."""
    from rich.console import Console

    from longctx._errors import LongctxError
    from longctx._prices import load_prices
    from longctx.cli._tables import print_accuracy_table
    from longctx.reports.html import write_report
    from longctx.reports.runs import load_runs

    if output.is_dir():
        raise LongctxError(f"-o {output} is a folder; give a file name such as {output / 'report.html'}")
    table = load_prices(prices)  # a bad price file is refused before any work
    loaded = load_runs(runs)
    console = Console()
    if not no_table:
        for run in loaded:
            print_accuracy_table(run.results, console, title=run.label)
    try:
        path = write_report(loaded, output, title=title, max_failures_per_cell=max_failures,
                            prices=table)
    except OSError as exc:
        raise LongctxError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(str(path))
