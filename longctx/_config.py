"""Sweep settings from files: ``longctx sweep --config run.yaml`` and the named presets.

A config file is a YAML mapping whose keys are the long flag names of ``longctx sweep``
(``task``, ``lengths``, ``runner-option``, ...; ``_`` and ``-`` are the same), plus ``preset``
(a named preset the file builds on). Values may be written the natural YAML way: lists for
repeatable flags and lengths (``lengths: [4k, 8k]``), mappings for options
(``option: {haystack_dir: DIR}``), booleans for switches. Precedence: flags given on the command
line (or keyword arguments of :func:`longctx.sweep`) > the file > its preset > the defaults.

:func:`normalize` turns the natural forms into what the command line would have received
(strings for lengths and depths, ``key=value`` lists for options), so one code path parses both.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from longctx._errors import LongctxError

#: setting -> kind: ``list`` (repeatable flag), ``csv`` (comma list: lengths, depths), ``options``
#: (``key=value`` list), ``int``, ``float``, ``bool``, ``str``, ``path``. Keys are the long flag
#: names of ``longctx sweep``; ``longctx.sweep()`` takes them with ``_`` (plural for ``task``).
SETTINGS: dict[str, str] = {
    "task": "list",
    "lengths": "csv",
    "depths": "csv",
    "samples": "int",
    "seed": "int",
    "runner": "str",
    "model": "str",
    "endpoint": "list",
    "endpoints-file": "path",
    "api-key-env": "str",
    "concurrency": "int",
    "timeout": "float",
    "retries": "int",
    "chat-only": "bool",
    "option": "options",
    "runner-option": "options",
    "out": "path",
    "limit": "int",
    "keep-errors": "bool",
    "max-errors": "int",
    "deterministic": "bool",
    "allow-mixed": "bool",
    "scoring": "str",
    "choices": "int",
    "max-cost-usd": "float",
    "prices": "path",
    "max-thinking-tokens": "int",
    "ray": "str",
    "ray-shards": "int",
    "ray-gpus": "float",
}

#: what ``longctx sweep`` uses for a setting nobody gave (kept equal to the command's defaults by a test)
DEFAULTS: dict[str, Any] = {
    "task": [],
    "lengths": "1k,2k,4k",
    "depths": "0:100:5",
    "samples": 3,
    "seed": 42,
    "runner": "vllm",
    "model": "default",
    "endpoint": [],
    "endpoints-file": None,
    "api-key-env": "OPENAI_API_KEY",
    "concurrency": 4,
    "timeout": 600.0,
    "retries": 3,
    "chat-only": False,
    "option": [],
    "runner-option": [],
    "out": None,
    "limit": None,
    "keep-errors": False,
    "max-errors": None,
    "deterministic": False,
    "allow-mixed": False,
    "scoring": "generate",
    "choices": None,
    "max-cost-usd": None,
    "prices": None,
    "max-thinking-tokens": None,
    "ray": None,
    "ray-shards": None,
    "ray-gpus": None,
}

#: flags that steer one invocation, not the run: left out of ``OUT/config.yaml`` (where it runs:
#: ``--ray``, ``--ray-shards``, ``--ray-gpus`` do not change results; a resume may run elsewhere)
PER_INVOCATION = ("limit", "allow-mixed", "ray", "ray-shards", "ray-gpus")

#: file keys that are not flags
META_KEYS = ("preset",)

CONFIG_NAME = "config.yaml"
"""The file a sweep writes into its run folder: the settings it ran with (``--config`` reruns it)."""


def canonical_key(key: str) -> str:
    """``runner_option`` / ``--runner-option`` / ``runner-option`` -> ``runner-option``."""
    return str(key).strip().lstrip("-").replace("_", "-")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def normalize(key: str, value: Any, where: str, kinds: Mapping[str, str] | None = None) -> Any:
    """``value`` of setting ``key`` in the form the command line gives it; errors name ``where``.

    ``kinds`` (default :data:`SETTINGS`) says what each setting is.
    """
    kind = (kinds or SETTINGS)[key]
    if value is None:
        return [] if kind in ("list", "options") else None
    if kind == "list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, Sequence) or not all(isinstance(v, str) for v in items):
            raise LongctxError(f"{where}: {key} must be a name or a list of names")
        return [v.strip() for v in items if v.strip()]
    if kind == "csv":
        if isinstance(value, (list, tuple)):
            return ",".join(_scalar(v) for v in value)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return _scalar(value)
        raise LongctxError(f"{where}: {key} must be a list or a comma-separated string")
    if kind == "options":
        if isinstance(value, Mapping):
            return [f"{k}={_scalar(v)}" for k, v in value.items()]
        items = [value] if isinstance(value, str) else value
        if isinstance(items, Sequence) and all(isinstance(v, str) for v in items):
            return list(items)
        raise LongctxError(f"{where}: {key} must be a mapping (key: value) or a list of key=value")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise LongctxError(f"{where}: {key} must be true or false, got {value!r}")
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise LongctxError(f"{where}: {key} must be a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise LongctxError(f"{where}: {key} must be a number, got {value!r}") from None
        if kind == "int":
            if not number.is_integer():
                raise LongctxError(f"{where}: {key} must be a whole number, got {value!r}")
            return int(number)
        return number
    if isinstance(value, (dict, list, tuple)):
        raise LongctxError(f"{where}: {key} must be a single value")
    return _scalar(value)


def read_settings(data: Any, where: str, kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings of one mapping (a file's content): canonical keys, normalized values, the
    ``preset`` it builds on as a name (see :func:`layered`). Unknown keys raise, naming the key;
    ``kinds`` (default :data:`SETTINGS`: the flags of ``longctx sweep``) are the known ones."""
    from longctx._presets import get_preset

    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise LongctxError(f"{where}: expected a mapping of flag names to values, got {type(data).__name__}")
    kinds = kinds or SETTINGS
    raw = {canonical_key(k): v for k, v in data.items()}
    for key in raw:
        if key not in kinds and key not in META_KEYS:
            close = _close(key, kinds)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise LongctxError(
                f"{where}: unknown key {key!r}{hint}; keys are the long flags of longctx sweep"
            )
    out: dict[str, Any] = {}
    if raw.get("preset") is not None:
        out["preset"] = get_preset(str(raw["preset"])).name  # validated here, merged by the caller
    for key, value in raw.items():
        if key in kinds:
            out[key] = normalize(key, value, where, kinds)
    return out


def layered(preset: str | None, file_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a preset overlaid by those of a file (``preset`` given explicitly wins
    over the file's ``preset`` key). The result names the preset used under ``"preset"``."""
    from longctx._presets import get_preset

    name = preset or file_settings.get("preset")
    out: dict[str, Any] = dict(get_preset(name).settings_normalized()) if name else {}
    out.update({k: v for k, v in file_settings.items() if k != "preset"})
    out["preset"] = name
    return out


def _close(key: str, kinds: Mapping[str, str]) -> str | None:
    import difflib

    match = difflib.get_close_matches(key, [*kinds, *META_KEYS], n=1, cutoff=0.6)
    return match[0] if match else None


def load_config(path: str | Path, kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings of a YAML config file (``LongctxError`` for a missing, unreadable or bad file).

    A run folder stands for its ``config.yaml``.
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LongctxError(f"no config file {path}") from None
    except OSError as exc:
        raise LongctxError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LongctxError(f"bad YAML in {path}{at}: {problem}") from None
    return read_settings(data, str(path), kinds)


def dump_config(settings: Mapping[str, Any], header: str = "", kinds: Mapping[str, str] | None = None) -> str:
    """``settings`` as a YAML config file (natural forms: lists, mappings), keys in flag order.

    Unset settings (None, empty lists) are left out, so the defaults of the version that reads it
    apply to them.
    """
    import yaml

    kinds = {**SETTINGS, **(kinds or {})}
    data: dict[str, Any] = {}
    for key in [*kinds, *(k for k in settings if k not in kinds)]:
        value = settings.get(key)
        if value is None or value == [] or value == ():
            continue
        kind = kinds.get(key, "str")
        if kind == "options":
            data[key] = dict(str(p).partition("=")[::2] for p in value)
        elif kind == "list":
            data[key] = list(value)
        elif kind == "path":
            data[key] = str(value)
        else:
            data[key] = value
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
    lines = "".join(f"# {line}\n" for line in header.splitlines())
    return lines + body


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.")
    return text or "run"


def default_out(tasks: Sequence[str], model: str, runner: str, preset: str | None = None,
                today: _dt.date | None = None, root: str | Path = "runs") -> Path:
    """``runs/<date>-<task>-<model>-<runner>``: what ``--out`` defaults to.

    ``<task>`` is the preset's name when its tasks are the ones run, else the one task
    (``ruler-niah_single_1``),
    else the families of several tasks (``ruler``, ``babilong+ruler``); ``<model>`` is the last
    part of a model path or name. Same command on the same day -> same folder (it resumes).
    """
    today = today or _dt.date.today()
    if preset and _preset_tasks(preset) == list(tasks):
        what = preset
    elif len(tasks) == 1:
        what = tasks[0]
    else:
        what = "+".join(sorted(dict.fromkeys(t.split("/")[0] for t in tasks))) or "run"
    model_part = str(model).rstrip("/").split("/")[-1] or "model"
    name = "-".join(_slug(p) for p in (today.isoformat(), what, model_part, runner))
    return Path(root) / name


def _preset_tasks(name: str) -> list[str]:
    from longctx._presets import PRESETS

    preset = PRESETS.get(name)
    return normalize("task", preset.settings.get("task"), name) if preset else []


def save_config(out: str | Path, settings: Mapping[str, Any], since: float, source: str = "",
                kinds: Mapping[str, str] | None = None) -> Path | None:
    """Write ``config.yaml`` (the settings a sweep ran with) into run folder ``out``.

    Only when this invocation wrote the folder's manifest (``updated_at >= since``): a sweep that
    refused the folder (another configuration, bad input) leaves the folder's own file alone.
    Returns the file written, or None.
    """
    import json

    folder = Path(out)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or float(manifest.get("updated_at") or 0) < since:
        return None
    keep = {k: v for k, v in settings.items() if k not in PER_INVOCATION}
    header = "longctx sweep settings of this run folder; rerun with: longctx sweep --config " + str(
        folder / CONFIG_NAME
    )
    if source:
        header += f"\nsettings from: {source}"
    path = folder / CONFIG_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_config(keep, header, kinds), encoding="utf-8")
    tmp.replace(path)
    return path


def with_thinking_budget(runner_options: dict[str, Any], max_thinking_tokens: int | None,
                         runner: str) -> dict[str, Any]:
    """``runner_options`` with ``--max-thinking-tokens`` as the runner's ``max_thinking_tokens``
    option. ``LongctxError`` when the runner has no thinking budget, when the budget is below 1,
    or when ``-R max_thinking_tokens`` says something else."""
    if max_thinking_tokens is None:
        return runner_options
    from longctx._registry import get_runner_entry

    options_type = getattr(get_runner_entry(runner).factory, "Options", None)
    if "max_thinking_tokens" not in getattr(options_type, "__struct_fields__", ()):
        raise LongctxError(f"runner {runner} has no thinking budget (drop --max-thinking-tokens)")
    if max_thinking_tokens < 1:
        raise LongctxError("--max-thinking-tokens must be at least 1")
    given = runner_options.get("max_thinking_tokens")
    if given is not None and str(given) != str(max_thinking_tokens):
        raise LongctxError(
            f"--max-thinking-tokens {max_thinking_tokens} and -R max_thinking_tokens={given} disagree"
        )
    return {**runner_options, "max_thinking_tokens": str(max_thinking_tokens)}
