"""``longctx presets``: the named presets of ``longctx sweep --preset`` (published protocols)."""

from __future__ import annotations

import click


@click.command()
@click.argument("name", required=False)
@click.option("--names", is_flag=True, help="Only the names, one per line.")
def presets(name: str | None, names: bool) -> None:
    """List the presets, or print preset NAME as a config file (``--config`` takes it)."""
    from longctx._config import dump_config
    from longctx._presets import PRESETS, get_preset

    if name:
        preset = get_preset(name)
        click.echo(dump_config(preset.settings_normalized(), f"preset {preset.name}: {preset.summary}\n"
                                                             f"source: {preset.source}"), nl=False)
        return
    if names:
        click.echo("\n".join(PRESETS))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="presets (longctx sweep --preset NAME; longctx presets NAME shows one)",
                  title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("source", style="dim")
    for preset in PRESETS.values():
        table.add_row(preset.name, preset.summary, preset.source)
    Console().print(table)
