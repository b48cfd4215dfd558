"""``longctx sweep --config FILE`` / ``--preset NAME``, the default ``--out``, and ``OUT/config.yaml``.

One decorator on the sweep command (:func:`sweep_settings`), so the command module keeps only its
flags: the file's and the preset's settings become click's ``default_map`` (flags given explicitly
win over them, as over any default), ``--out`` defaults to ``runs/<date>-<task>-<model>-<runner>``
(printed), and the settings the sweep ran with are written to ``OUT/config.yaml`` once the sweep has
opened its folder (a refused folder keeps its own file).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from longctx._config import (
    CONFIG_NAME,
    SETTINGS,
    canonical_key,
    default_out,
    layered,
    load_config,
    save_config,
)

_META = "longctx.sweep_settings"


def _flags(command: click.Command) -> dict[str, click.Option]:
    """Setting (long flag name) -> option, for every flag a config file may set."""
    out: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("config", "preset", "help"):
            for opt in (*param.opts, *param.secondary_opts):
                if opt.startswith("--"):
                    out.setdefault(canonical_key(opt), param)
    return out


def _flag_names(command: click.Command) -> dict[str, str]:
    """Setting (long flag name) -> click parameter name."""
    return {key: param.name or "" for key, param in _flags(command).items()}


def flag_kinds(command: click.Command) -> dict[str, str]:
    """What each flag of ``command`` is, for config files: the kinds of
    :data:`longctx._config.SETTINGS`, inferred from click for flags it does not know."""
    kinds: dict[str, str] = {}
    for key, param in _flags(command).items():
        if key in SETTINGS:
            kinds[key] = SETTINGS[key]
        elif param.is_flag:
            kinds[key] = "bool"
        elif param.multiple:
            kinds[key] = "options" if param.metavar == "KEY=VALUE" else "list"
        elif isinstance(param.type, click.types.IntParamType):
            kinds[key] = "int"
        elif isinstance(param.type, click.types.FloatParamType):
            kinds[key] = "float"
        else:
            kinds[key] = "str"
    return kinds


def _load(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Eager callback of --config / --preset: (re)build ``ctx.default_map`` from both."""
    state = ctx.meta.setdefault(_META, {"preset": None, "file": {}, "config": None})
    if value is None:
        return value
    if param.name == "config":
        state["file"], state["config"] = load_config(value, flag_kinds(ctx.command)), value
    else:
        state["preset"] = value
    merged = layered(state["preset"], state["file"])
    names = _flag_names(ctx.command)
    ctx.default_map = {names[key]: v for key, v in merged.items() if key in names}
    state["preset_used"] = merged.get("preset")
    return value


def sweep_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config``/``--preset`` to the sweep command function ``fn``; default its ``out``
    and write ``OUT/config.yaml`` after it ran (successfully or not)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, config: Path | None = None, preset: str | None = None, **params: Any) -> Any:
        ctx = click.get_current_context()
        state = ctx.meta.get(_META, {})
        names = _flag_names(ctx.command)
        out_name, tasks = names["out"], params[names["task"]]
        if params.get(out_name) is None:
            params[out_name] = default_out(tasks, params[names["model"]], params[names["runner"]],
                                           state.get("preset_used"))
            click.echo(f"run folder: {params[out_name]}", err=True)
        settings = {key: params[name] for key, name in names.items() if name in params}
        source = ", ".join(p for p in (f"preset {state['preset_used']}" if state.get("preset_used") else "",
                                       f"config {config}" if config else "") if p)
        since = time.time()
        try:
            return fn(*args, **params)
        finally:
            save_config(params[out_name], _as_config(settings), since, source, flag_kinds(ctx.command))

    wrapper = click.option(
        "--preset", metavar="NAME", is_eager=True, expose_value=True, callback=_load,
        help="Start from a published protocol (`longctx presets`: ruler-niah, babilong, demo); "
        "flags override it.",
    )(wrapper)
    wrapper = click.option(
        "--config", type=click.Path(path_type=Path, dir_okay=True), is_eager=True, callback=_load,
        help="Take the flags from a YAML file (keys = long flag names; a run folder means its "
        f"{CONFIG_NAME}); flags given here override it.",
    )(wrapper)
    return wrapper


def _as_config(settings: dict[str, Any]) -> dict[str, Any]:
    """Click values as config values (tuples -> lists, paths -> strings)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[key] = value
    return out
