"""A sweep: tasks x lengths x depths x samples through one runner into one run folder.

A short orchestrator over three parts with one job each: the plan (:mod:`longctx._plan`: which
samples, which of them are still owed a result), the dispatch (:mod:`longctx._dispatch`: where they
run, scoring each answer) and the store (:mod:`longctx._store`: what happened, exactly once).

Order of work, so that mistakes cost nothing: resolve names and options, construct the runner
(resolves the model, knows its window and tokenizer), refuse lengths beyond the window, plan
every sample (keys; each sample is built when the runner takes it) and build the first one of
each task at its shortest length (what would fail late fails now), open the run folder (refusing a different configuration), and only then start the
engine. Samples already scored are skipped; samples whose last result is an error are retried
unless ``keep_errors``. When the engine is gone or too many samples fail the sweep stops at once
(:class:`~longctx._errors.SweepStopped`, carrying the outcome); the same command resumes.

Same command, same numbers: each invocation is a session in the manifest with the runner's
``conditions()`` (engine version, dtype, concurrency, ...; optional on runners), stamped on every
result it records. A resume whose conditions differ from those of the recorded results in a way
that can change them is refused unless ``allow_mixed``.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from longctx._choice import DEFAULT_CHOICES, SCORINGS, check_choice_runner, check_choice_samples
from longctx._dispatch import Tally, dispatch, engine_for, placement, ray_settings, to_result
from longctx._errors import LongctxError, SweepStopped
from longctx._plan import as_dict, build_plan, options_for, order_for_prefix_cache, run_identity
from longctx._prices import SpendCap, load_prices, sweep_pricing
from longctx._protocols import Grid, NullProgress, Progress, RunnerConfig, Runner
from longctx._registry import get_runner_entry, get_task, parse_options
from longctx._store import RunStore, mixed_conditions
from longctx._versions import environment_versions

__all__ = ["SweepOutcome", "SweepSpec", "options_for", "order_for_prefix_cache", "run_sweep", "to_result"]


@dataclass
class SweepSpec:
    """Everything ``longctx sweep`` was asked for."""

    tasks: Sequence[str]
    """Task names."""
    grid: Grid
    """Lengths, depths, samples per cell, seed."""
    runner: str
    """Runner name."""
    runner_config: RunnerConfig
    """Common runner settings (model, endpoint, concurrency, ...)."""
    out: Path
    """Run folder."""
    task_options: dict[str, str] = field(default_factory=dict)
    """``-O`` options for the task(s)."""
    runner_options: dict[str, str] = field(default_factory=dict)
    """``-R`` options for the runner."""
    limit: int | None = None
    """Run at most this many samples this time (the rest stay pending; rerun to continue)."""
    keep_errors: bool = False
    """Keep samples whose last result is an error as they are (default: retry them)."""
    max_errors: int | None = None
    """Stop (``TooManyErrors``) as soon as more than this many samples fail in this invocation."""
    deterministic: bool = False
    """Ask the runner for batch-independent greedy results (its ``deterministic`` option)."""
    allow_mixed: bool = False
    """Resume even when this session's conditions (concurrency, dtype, engine version) differ from
    those of the results already recorded; the manifest and the results say so."""
    scoring: str = "generate"
    """``generate`` (the task's scorer on generated answers) or ``choice`` (forced choice among the
    samples' candidates by log-likelihood, :mod:`longctx._choice`; a run identity of its own)."""
    choices: int | None = None
    """With ``scoring="choice"``: distractors per sample (default :data:`~longctx._choice.DEFAULT_CHOICES`)."""
    max_cost_usd: float | None = None
    """Stop (``CostCapReached``) before the next sample would take the run folder's spend (every
    recorded attempt, all sessions) past this many USD (:class:`~longctx._prices.SpendCap`)."""
    prices: Path | None = None
    """Price file over the user's and the default table (:func:`~longctx._prices.load_prices`)."""
    ray: str | None = None
    """Run the samples on Ray workers: ``local`` (a Ray instance started for the sweep), ``auto``,
    ``ray://HOST:PORT`` or ``HOST:PORT``; None runs them in this process (:mod:`longctx._ray_dispatch`)."""
    ray_shards: int | None = None
    """With ``ray``: shards, one Ray worker each (default: the cluster's CPUs)."""
    ray_gpus: float | None = None
    """With ``ray``: GPUs each shard's worker reserves (default 0)."""


@dataclass
class SweepOutcome:
    """What a sweep did."""

    store: RunStore
    """The run folder (all results, old and new)."""
    planned: int
    """Samples in the plan."""
    skipped: int
    """Samples not run this time: scored before (or kept errors, with ``keep_errors``)."""
    new: int = 0
    """Results recorded by this invocation (first attempts and retries)."""
    errors: int = 0
    """New results that are runner errors."""
    retried: int = 0
    """New results that retried a sample whose last result was an error."""
    kept_errors: int = 0
    """Samples left with their earlier error (``keep_errors``)."""
    pending: int = 0
    """Samples of the plan still without a scored result or kept error when the sweep ended."""
    stopped: str | None = None
    """Why the sweep ended early (engine gone, too many errors, cost cap), or None."""
    spent_usd: float | None = None
    """With ``max_cost_usd``: USD the run folder spent so far (every recorded attempt)."""


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _conditions(runner: Runner) -> dict[str, Any]:
    """The runner's ``conditions()`` (what can change results this session), {} if it has none."""
    method = getattr(runner, "conditions", None)
    return dict(method()) if callable(method) else {}


def _refuse_mixed(spec: SweepSpec, store: RunStore, earlier: list[dict[str, Any]],
                  now: dict[str, Any]) -> list[str]:
    """How ``now`` differs from the recorded results' conditions; LongctxError unless mixing is allowed."""
    diff = mixed_conditions(earlier, now)
    if diff and not spec.allow_mixed:
        message = (
            f"{store.root} holds results recorded with other settings that can change them "
            f"({'; '.join(diff)}); rerun with the same settings, with --allow-mixed to mix them, "
            "or with another --out (under --deterministic, concurrency does not change results)"
        )
        store.update_session(refused=message)
        raise LongctxError(message)
    return diff


def _scoring_grid(spec: SweepSpec) -> Grid:
    """``spec.grid`` asking the tasks for candidates when scoring by forced choice (refusing bad
    ``scoring`` / ``choices``)."""
    if spec.scoring not in SCORINGS:
        raise LongctxError(f"--scoring must be one of {', '.join(SCORINGS)}, not {spec.scoring!r}")
    if spec.scoring != "choice":
        if spec.choices is not None:
            raise LongctxError("--choices needs --scoring choice")
        return spec.grid
    if getattr(spec, "ray", None):
        raise LongctxError("--scoring choice does not run on Ray workers yet; drop --ray")
    k = DEFAULT_CHOICES if spec.choices is None else spec.choices
    if k < 1:
        raise LongctxError("--choices must be at least 1 (distractors per sample)")
    return msgspec.structs.replace(spec.grid, choices=k)


def run_sweep(spec: SweepSpec, progress: Progress | None = None) -> SweepOutcome:
    """Plan, check, run and record a sweep (resumable).

    Raises :class:`SweepStopped` (``EngineGone`` / ``TooManyErrors``, with ``.outcome``) when it
    ends before its plan is done; everything finished is recorded.
    """
    progress = progress or NullProgress()
    if spec.grid.samples < 1:
        raise LongctxError("--samples must be at least 1")
    if spec.max_errors is not None and spec.max_errors < 0:
        raise LongctxError("--max-errors must be 0 or more")
    grid = _scoring_grid(spec)
    ray = ray_settings(spec.ray, spec.ray_shards, spec.ray_gpus)
    pricing = None
    if spec.max_cost_usd is not None:  # refused before any work: a bad cap, a model without a price
        config = spec.runner_config
        pricing = SpendCap(spec.max_cost_usd, sweep_pricing(config.model, spec.runner, config.servers(),
                                                            spec.prices)).pricing
    elif spec.prices is not None:
        load_prices(spec.prices)  # a bad file is refused even when nothing uses it yet
    tasks = [get_task(name, options_for(name, spec.task_options)) for name in spec.tasks]
    entry = get_runner_entry(spec.runner)
    runner_options = dict(spec.runner_options)
    if spec.deterministic:
        fields = getattr(getattr(entry.factory, "Options", None), "__struct_fields__", ())
        if "deterministic" not in fields:
            raise LongctxError(f"runner {spec.runner} has no deterministic mode (drop --deterministic)")
        runner_options.setdefault("deterministic", "true")
    runner_opts = parse_options(entry.factory, runner_options, f"runner {spec.runner}")
    runner: Runner = entry.factory(config=spec.runner_config, options=runner_opts, progress=progress)
    if spec.scoring == "choice":
        check_choice_runner(runner, spec.runner, spec.runner_config.mode)

    window = runner.context_window()
    too_long = [n for n in spec.grid.lengths if window is not None and n > window]
    if too_long:
        raise LongctxError(
            f"length {max(too_long)} exceeds the context window of {spec.runner_config.model} ({window} tokens)"
        )
    identity = run_identity(tasks, grid, spec.runner, entry.factory, runner_opts,
                            spec.runner_config.model, spec.runner_config.mode)
    recorded = RunStore.check(spec.out, identity)  # corrupt folder / other config: say so before any work
    tokenizer = runner.tokenizer()
    plan = build_plan(tasks, grid, tokenizer, progress)  # keys only: samples are built when run
    check = getattr(runner, "check", None)  # optional hook: refuse samples before the folder is touched
    owed = plan.pending(recorded, spec.keep_errors, spec.limit).todo  # a finished sweep builds nothing
    preview = plan.preview(owed, every_length=callable(check))  # a too short length fails now
    if callable(check):
        check(preview)
    if spec.scoring == "choice":
        check_choice_samples(preview)  # per task: a task without a closed answer set is refused now

    info = {
        "runner_config": {k: v for k, v in as_dict(spec.runner_config).items() if k != "api_key_env"},
        "tokenizer": getattr(tokenizer, "name", None),
        "versions": environment_versions(),
        "git_sha": _git_sha(),
        "argv": sys.argv,
        "host": platform.node(),
        "pid": os.getpid(),
        "planned": len(plan),
    }
    store = RunStore.open_for_write(spec.out, identity, info)
    try:
        pending = plan.pending(store.latest(), spec.keep_errors, spec.limit)
        outcome = SweepOutcome(store, len(plan), len(plan) - pending.new - pending.retry,
                               kept_errors=pending.kept_errors)
        tally = Tally()
        engine: Runner | None = None
        earlier = store.conditions_of_results()
        spend = SpendCap(spec.max_cost_usd, pricing, store.results) if pricing is not None else None
        try:
            if pending.todo and spend is not None:
                spend.check()  # already at the cap: stop before the engine starts
            if pending.todo:
                _refuse_mixed(spec, store, earlier, _conditions(runner))  # what is known before start
                engine = engine_for(runner, ray, entry.factory, runner_opts, spec.runner_config,
                                    len(pending.todo), progress)  # the runner, or Ray workers building it
                with engine:
                    conditions = _conditions(engine)
                    mixed = _refuse_mixed(spec, store, earlier, conditions)
                    store.update_manifest(model_identity=engine.identity(), started_at=time.time())
                    store.update_session(conditions=conditions, engine_ready_at=time.time(),
                                         **({"mixed": mixed} if mixed else {}), **placement(engine))
                    dispatch(engine, pending.todo, plan, store, runner_name=spec.runner,
                             model=spec.runner_config.model, tally=tally, max_errors=spec.max_errors,
                             progress=progress, conditions=conditions, scoring=spec.scoring, spend=spend)
        except SweepStopped as exc:
            outcome.stopped = str(exc).splitlines()[0]
            exc.outcome = outcome
            raise
        finally:
            outcome.new, outcome.errors, outcome.retried = tally.new, tally.errors, tally.retried
            outcome.spent_usd = spend.spent if spend is not None else None
            left = plan.pending(store.latest(), spec.keep_errors)
            outcome.pending = left.new + left.retry
            store.update_manifest(finished_at=time.time(), recorded=len(store.latest()), pid=os.getpid())
            cap = {} if spend is None else {"cost_cap": {  # what --max-cost-usd saw, for the record
                "max_cost_usd": spend.cap, "price": spend.pricing.label, "spent_usd": spend.spent}}
            store.update_session(finished_at=time.time(), recorded=tally.new, errors=tally.errors,
                                 stopped=outcome.stopped, **placement(engine), **cap)
        return outcome
    finally:
        store.close()
