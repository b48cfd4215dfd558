"""``longctx runs [FOLDER]``: the run folders under ``runs/`` (or FOLDER) and whether they are done."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import click

STYLE = {"finished": "green", "running": "cyan", "interrupted": "yellow", "stopped": "red", "corrupt": "red"}


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts).strftime("%m-%d %H:%M")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) if path != root else str(path)
    except ValueError:
        return str(path)


def _tasks(tasks: list[str]) -> str:
    if len(tasks) <= 1:
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
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"run folders under {folder}", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("folder  [dim](runner, model: tasks)[/]", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for run in found:
        status = f"[{STYLE.get(run.status, '')}]{run.status}[/]"
        if run.stopped or run.problem:
            status += f"\n[dim]{escape(run.stopped or run.problem or '')}[/]"
        what = f"{run.runner}, {run.model}: {_tasks(run.tasks)}" if run.runner else ""
        table.add_row(
            f"{escape(_relative(Path(run.path), folder))}\n[dim]{escape(what)}[/]",
            status,
            f"{run.recorded - run.errors}/{'?' if run.planned is None else run.planned}",
            str(run.errors) if run.errors else "",
            _when(run.updated_at),
        )
    Console().print(table)
    unfinished = [r for r in found if r.status in ("interrupted", "stopped")]
    for run in unfinished:
        if run.resume:
            click.echo(f"resume {_relative(Path(run.path), folder)}: {run.resume}")
