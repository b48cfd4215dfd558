"""``longctx tasks`` and ``longctx runners``: what is registered (no heavy imports)."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from longctx._api import natural_key
from longctx._errors import UnknownNameError
from longctx._registry import Entry
from longctx._registry import runners as runner_entries
from longctx._registry import tasks as task_entries


def naturally_sorted(entries: dict[str, Entry]) -> dict[str, Entry]:
    """``entries`` in natural order of their names."""
    return {name: entries[name] for name in sorted(entries, key=natural_key)}


def _table(title: str, entries: dict[str, Entry], as_names: bool) -> None:
    if as_names:
        if entries:
            click.echo("\n".join(entries))
        return
    table = Table(title=title, title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, entry in entries.items():
        table.add_row(name, entry.summary)
    Console().print(table)


@click.command()
@click.argument("family_arg", metavar="[FAMILY]", required=False)
@click.option("--family", "-f", help="Only this family (the part before '/': ruler, babilong, ...).")
@click.option("--names", is_flag=True, help="Only the names, one per line.")
def tasks(family_arg: str | None, family: str | None, names: bool) -> None:
    """List the registered tasks (of FAMILY only, when given)."""
    entries = naturally_sorted(task_entries())
    wanted = family or family_arg
    if wanted:
        families = {e.family for e in entries.values()}
        if wanted not in families:
            raise UnknownNameError("task family", wanted, families)
        entries = {n: e for n, e in entries.items() if e.family == wanted}
    _table(f"tasks ({wanted})" if wanted else "tasks", entries, names)


@click.command()
@click.option("--names", is_flag=True, help="Only the names, one per line.")
def runners(names: bool) -> None:
    """List the registered runners."""
    _table("runners", naturally_sorted(runner_entries()), names)
