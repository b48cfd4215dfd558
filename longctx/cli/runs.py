"""``longctx runs [FOLDER]``: the run folders under ``runs/`` (or FOLDER) and whether they are done."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import click

STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "stopped": "red", "corrupt": "red"}


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _tasks(tasks: list[str]) -> str:
    if len(tasks) <= 2:
        return ", ".join(tasks)
    families = sorted(dict.fromkeys(t.split("/")[0] for t in tasks))
    return f"{len(tasks)} tasks ({', '.join(families)})"


@click.command()
@click.argument("folder", required=False, type=click.Path(path_type=Path), default=Path("runs"))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run folder, one per line.")
@click.option("--depth", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many folder levels below FOLDER to look for run folders.")
def runs(folder: Path, as_json: bool, depth: int) -> None:
    """List run folders under FOLDER (default: runs/) with their status, newest first.

    Status: finished (every planned sample has a result), interrupted (rerun the same command to
    resume), stopped (engine gone or too many errors), running (a sweep holds the folder now).
    """
    from longctx._errors import LongctxError
    from longctx._runs import list_runs

    if not folder.exists():
        raise LongctxError(f"no folder {folder} (run folders are created by longctx sweep)")
    found = list_runs(folder, depth)
    if as_json:
        import msgspec

        for run in found:
            click.echo(msgspec.json.encode({**msgspec.to_builtins(run), "pending": run.pending}).decode())
        return
    if not found:
        click.echo(f"no run folders under {folder}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run folders under {folder}", title_justify="left")
    for name, justify in (("folder", "left"), ("status", "left"), ("planned", "right"), ("done", "right"),
                          ("errors", "right"), ("pending", "right"), ("runner", "left"), ("model", "left"),
                          ("tasks", "left"), ("updated", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for run in found:
        status = f"[{STYLE.get(run.status, '')}]{run.status}[/]"
        if run.stopped:
            status += f" ({run.stopped})"
        if run.problem:
            status += f" ({run.problem})"
        table.add_row(
            run.path,
            status,
            "" if run.planned is None else str(run.planned),
            str(run.recorded - run.errors),
            str(run.errors) if run.errors else "",
            str(run.pending) if run.pending else "",
            run.runner,
            run.model,
            _tasks(run.tasks),
            _when(run.updated_at),
        )
    Console().print(table)
    if any(r.status in ("interrupted", "stopped") for r in found):
        click.echo("resume an unfinished run: longctx sweep --config FOLDER/config.yaml "
                   "(or rerun the command it was started with)")
