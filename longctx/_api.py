"""The functions of the public Python API (:mod:`longctx`): sweep, report, compare, listings.

Thin over the modules that do the work (:mod:`longctx._sweep`, :mod:`longctx.reports`), taking
the same settings as the command line: ``longctx.sweep(tasks=..., lengths=..., preset=...,
config=...)`` runs what ``longctx sweep --task ... --lengths ... --preset ... --config ...`` runs
(same run identity, so either resumes the other's folder). Heavy modules are imported inside the
functions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longctx._errors import LongctxError

if TYPE_CHECKING:
    from longctx._protocols import Progress
    from longctx._sweep import SweepOutcome, SweepSpec
    from longctx.reports.compare import Comparison
    from longctx.reports.runs import RunData

#: keyword argument of :func:`sweep` -> setting (long flag of ``longctx sweep``)
_KWARGS = {
    "tasks": "task",
    "lengths": "lengths",
    "depths": "depths",
    "samples": "samples",
    "seed": "seed",
    "runner": "runner",
    "model": "model",
    "endpoint": "endpoint",
    "endpoints_file": "endpoints-file",
    "api_key_env": "api-key-env",
    "concurrency": "concurrency",
    "timeout": "timeout",
    "retries": "retries",
    "chat_only": "chat-only",
    "task_options": "option",
    "runner_options": "runner-option",
    "out": "out",
    "limit": "limit",
    "keep_errors": "keep-errors",
    "max_errors": "max-errors",
    "deterministic": "deterministic",
    "allow_mixed": "allow-mixed",
    "scoring": "scoring",
    "choices": "choices",
    "max_cost_usd": "max-cost-usd",
    "prices": "prices",
    "max_thinking_tokens": "max-thinking-tokens",
    "ray": "ray",
    "ray_shards": "ray-shards",
    "ray_gpus": "ray-gpus",
}


def natural_key(name: str) -> list[Any]:
    """Sort key putting ``qa2`` before ``qa10`` (digit runs compare as numbers)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def resolve_settings(
    given: Mapping[str, Any], preset: str | None = None, config: str | Path | None = None
) -> dict[str, Any]:
    """Sweep settings: ``given`` (setting -> value, None = not given) over ``config`` over
    ``preset`` over the defaults, normalized to command-line form. ``preset`` is kept under the
    ``"preset"`` key (None when no preset is used)."""
    from longctx._config import DEFAULTS, layered, load_config, normalize

    settings: dict[str, Any] = dict(DEFAULTS)
    settings.update(layered(preset, load_config(config) if config is not None else {}))
    for key, value in given.items():
        if value is not None:
            settings[key] = normalize(key, value, "longctx.sweep")
    return settings


def spec_from_settings(settings: Mapping[str, Any]) -> SweepSpec:
    """The :class:`~longctx._sweep.SweepSpec` of resolved settings (``out`` defaulted if unset)."""
    from longctx._config import default_out, with_thinking_budget
    from longctx._parsing import parse_depths, parse_endpoints, parse_lengths, parse_options
    from longctx._protocols import Grid, RunnerConfig
    from longctx._sweep import SweepSpec

    tasks = list(settings["task"])
    if not tasks:
        raise LongctxError("no task given: pass tasks=[...] (or a preset / config file naming them)")
    if settings["concurrency"] < 1:
        raise LongctxError("concurrency must be at least 1")
    out = settings["out"] or default_out(tasks, settings["model"], settings["runner"], settings.get("preset"))
    servers = parse_endpoints(settings["endpoint"], settings.get("endpoints-file"))
    return SweepSpec(
        tasks=tasks,
        grid=Grid(parse_lengths(settings["lengths"]), parse_depths(settings["depths"]), settings["samples"],
                  settings["seed"]),
        runner=settings["runner"],
        runner_config=RunnerConfig(
            model=settings["model"], endpoint=servers[0] if servers else None,
            endpoints=servers if len(servers) > 1 else (), api_key_env=settings["api-key-env"],
            concurrency=settings["concurrency"], timeout_s=settings["timeout"], retries=settings["retries"],
            mode="chat" if settings["chat-only"] else "completions", seed=settings["seed"],
        ),
        out=Path(out),
        task_options=parse_options(settings["option"], "option"),
        runner_options=with_thinking_budget(parse_options(settings["runner-option"], "runner option"),
                                            settings.get("max-thinking-tokens"), settings["runner"]),
        limit=settings["limit"],
        keep_errors=settings["keep-errors"],
        max_errors=settings["max-errors"],
        deterministic=settings["deterministic"],
        allow_mixed=settings["allow-mixed"],
        scoring=settings.get("scoring") or "generate",
        choices=settings.get("choices"),
        max_cost_usd=settings.get("max-cost-usd"),
        prices=Path(settings["prices"]) if settings.get("prices") else None,
        ray=settings.get("ray"),
        ray_shards=settings.get("ray-shards"),
        ray_gpus=settings.get("ray-gpus"),
    )


def sweep(
    tasks: str | Sequence[str] | None = None,
    *,
    preset: str | None = None,
    config: str | Path | None = None,
    lengths: str | Sequence[int | str] | None = None,
    depths: str | Sequence[float] | None = None,
    samples: int | None = None,
    seed: int | None = None,
    runner: str | None = None,
    model: str | None = None,
    endpoint: str | Sequence[str] | None = None,
    endpoints_file: str | Path | None = None,
    api_key_env: str | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    chat_only: bool | None = None,
    task_options: Mapping[str, Any] | Sequence[str] | None = None,
    runner_options: Mapping[str, Any] | Sequence[str] | None = None,
    out: str | Path | None = None,
    limit: int | None = None,
    keep_errors: bool | None = None,
    max_errors: int | None = None,
    deterministic: bool | None = None,
    allow_mixed: bool | None = None,
    scoring: str | None = None,
    choices: int | None = None,
    max_cost_usd: float | None = None,
    prices: str | Path | None = None,
    max_thinking_tokens: int | None = None,
    ray: str | None = None,
    ray_shards: int | None = None,
    ray_gpus: float | None = None,
    progress: Progress | None = None,
) -> SweepOutcome:
    """Run a sweep (resumable) and return what it did; the same settings as ``longctx sweep``.

    Every argument mirrors a flag (``tasks`` = ``--task``, ``task_options`` = ``-O`` as a dict,
    ``runner_options`` = ``-R``); arguments left at None take the value of ``config`` (a YAML file),
    then of ``preset`` (``longctx presets``), then the command's default. ``lengths`` may be
    ``"1k,2k"`` or ``[1024, "2k"]``; ``depths`` ``"0:100:5"`` or ``[0, 50, 100]``. ``out`` defaults
    to ``runs/<date>-<task>-<model>-<runner>``. The settings are written to ``OUT/config.yaml``.

    Raises :class:`~longctx.LongctxError` for bad input and
    :class:`~longctx.SweepStopped` (with ``.outcome``) when the sweep ends early. Results are read
    back with ``outcome.store.latest_results()`` or :func:`load_runs`.
    """
    from longctx._config import save_config
    from longctx._sweep import run_sweep

    args = locals()
    given = {setting: args[kwarg] for kwarg, setting in _KWARGS.items()}
    settings = resolve_settings(given, preset, config)
    spec = spec_from_settings(settings)
    saved = {**settings, "out": str(spec.out)}
    source = ", ".join(p for p in (f"preset {settings['preset']}" if settings["preset"] else "",
                                   f"config {config}" if config else "") if p)
    since = time.time()
    try:
        return run_sweep(spec, progress)
    finally:
        save_config(spec.out, saved, since, source)


def load_runs(runs: str | Path | Iterable[str | Path]) -> list[RunData]:
    """Run folders opened read-only for reports (one path or several)."""
    from longctx.reports.runs import load_runs as _load

    return _load([runs] if isinstance(runs, (str, Path)) else list(runs))


def _as_runs(runs: Any) -> list[RunData]:
    from longctx.reports.runs import RunData

    items = [runs] if isinstance(runs, (str, Path, RunData)) else list(runs)
    if all(isinstance(r, RunData) for r in items):
        return items
    if any(isinstance(r, RunData) for r in items):
        raise LongctxError("pass either run folders or loaded runs (load_runs), not both")
    return load_runs(items)


def report(
    runs: Any, output: str | Path = "report.html", *, title: str = "longctx report",
    max_failures_per_cell: int = 25, prices: str | Path | None = None,
) -> Path:
    """Write the self-contained HTML report of ``runs`` (folders or :func:`load_runs` results) to
    ``output``; returns its absolute path. ``prices``: a price file over the default table."""
    from longctx._prices import load_prices
    from longctx.reports.html import write_report

    return write_report(_as_runs(runs), output, title=title, max_failures_per_cell=max_failures_per_cell,
                        prices=load_prices(prices))


def compare(
    runs: Any, output: str | Path | None = None, *, threshold: float | None = None,
    resamples: int | None = None, seed: int | None = None, title: str = "longctx comparison",
    max_failures_per_cell: int = 25, prices: str | Path | None = None,
) -> Comparison:
    """Compare runs on the same samples (paired tests, effective length, cost, recall): the numbers
    of ``longctx compare``. Writes the HTML page to ``output`` when given.

    Raises :class:`~longctx.LongctxError` for runs that are not on the same samples.
    """
    from longctx.reports.compare import compare_runs
    from longctx.reports.compare_html import write_compare

    loaded = _as_runs(runs)
    options = {k: v for k, v in (("threshold", threshold), ("resamples", resamples), ("seed", seed))
               if v is not None}
    from longctx._prices import load_prices

    comparison = compare_runs(loaded, **options, prices=load_prices(prices))
    if output is not None:
        write_compare(loaded, output, comparison, title=title, max_failures_per_cell=max_failures_per_cell)
    return comparison


def list_tasks(family: str | None = None) -> list[str]:
    """Registered task names in natural order (``qa2`` before ``qa10``), of one family if given."""
    from longctx._errors import UnknownNameError
    from longctx._registry import tasks

    entries = tasks()
    if family is not None:
        families = {e.family for e in entries.values()}
        if family not in families:
            raise UnknownNameError("task family", family, families)
        entries = {n: e for n, e in entries.items() if e.family == family}
    return sorted(entries, key=natural_key)


def list_runners() -> list[str]:
    """Registered runner names."""
    from longctx._registry import runners

    return sorted(runners(), key=natural_key)
