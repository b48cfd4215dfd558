"""A sweep: tasks x lengths x depths x samples through one runner into one run folder.

Order of work, so that mistakes cost nothing: resolve names and options, construct the runner
(resolves the model, knows its window and tokenizer), refuse lengths beyond the window, build
every sample, open the run folder (refusing a different configuration), and only then start the
engine. Samples already in the folder are skipped; the rest are sent in an order where samples
sharing a haystack prefix run back to back (longest first), so vLLM's prefix cache is hit.
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

from longctx._errors import LongctxError
from longctx._protocols import Grid, NullProgress, Progress, RunnerConfig, Runner, Task
from longctx._records import Generation, Result, Sample, sample_hash
from longctx._registry import get_runner_entry, get_task, parse_options
from longctx._store import RunStore
from longctx._versions import environment_versions


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
    """Run at most this many new samples this time (the rest stay pending; rerun to continue)."""


@dataclass
class SweepOutcome:
    """What a sweep did."""

    store: RunStore
    """The run folder (all results, old and new)."""
    planned: int
    """Samples in the plan."""
    skipped: int
    """Already in the folder before this invocation."""
    new: int
    """Recorded by this invocation."""
    errors: int
    """New results that are runner errors."""


def _identity(spec: SweepSpec, tasks: list[Task], runner_cls: type, runner_opts: Any) -> dict[str, Any]:
    volatile = set(getattr(runner_cls, "volatile_options", ()))
    ropts = {k: v for k, v in _as_dict(runner_opts).items() if k not in volatile}
    return {
        "tasks": [t.name for t in tasks],
        "task_options": {t.name: _as_dict(getattr(t, "options", None)) for t in tasks},
        "runner": spec.runner,
        "runner_options": ropts,
        "model": spec.runner_config.model,
        "mode": spec.runner_config.mode,
        "grid": {"lengths": list(spec.grid.lengths), "depths": list(spec.grid.depths),
                 "samples": spec.grid.samples, "seed": spec.grid.seed},
    }


def options_for(task_name: str, options: dict[str, str]) -> dict[str, str]:
    """The ``-O`` options meant for ``task_name``.

    ``key=value`` applies to every task of the sweep; ``SCOPE:key=value`` only to tasks whose name
    or family (the part before ``/``) is ``SCOPE``, e.g. ``-O babilong:data_dir=DIR``.
    """
    out: dict[str, str] = {}
    family = task_name.split("/")[0]
    for key, value in options.items():
        scope, sep, bare = key.rpartition(":")
        if not sep:
            out[key] = value
        elif scope in (task_name, family):
            out[bare] = value
    return out


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    import msgspec

    return msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else dict(obj)


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def order_for_prefix_cache(samples: Sequence[Sample]) -> list[Sample]:
    """Samples sharing a haystack prefix back to back: per prefix group, longest and deepest first.

    Within a group every prompt starts with the same template and haystack tokens up to its
    first needle, so after the longest/deepest prompt the others find their prefix cached.
    """
    return sorted(samples, key=lambda s: (s.task, str(s.metadata.get("prefix_group", "")),
                                          -s.length, -(s.depth if s.depth is not None else 0), s.id))


def to_result(sample: Sample, gen: Generation, task: Task, runner: str, model: str) -> Result:
    """Score a generation (errors are recorded, never scored)."""
    scores: dict[str, float] = {}
    score = None
    if gen.error is None and gen.prediction is not None:
        scores = task.scorer.score(gen.prediction, sample)
        score = scores[task.scorer.metrics[0]]
    keep = {k: v for k, v in sample.metadata.items() if k != "prefix_group"}
    return Result(
        sample_id=sample.id, task=sample.task, runner=runner, model=model, length=sample.length,
        context_tokens=sample.context_tokens, depth=sample.depth, needle_positions=sample.needle_positions,
        evidence_depth=sample.evidence_depth, prediction=gen.prediction if gen.error is None else None,
        references=sample.references, score=score, scores=scores, error=gen.error, latency_s=gen.latency_s,
        prompt_tokens=gen.prompt_tokens, cached_tokens=gen.cached_tokens, completion_tokens=gen.completion_tokens,
        finished_at=time.time(), extra={**({"metadata": keep} if keep else {}), **gen.extra},
        sample_hash=sample_hash(sample),
    )


def run_sweep(spec: SweepSpec, progress: Progress | None = None) -> SweepOutcome:
    """Plan, check, run and record a sweep (resumable)."""
    progress = progress or NullProgress()
    if spec.grid.samples < 1:
        raise LongctxError("--samples must be at least 1")
    tasks = [get_task(name, options_for(name, spec.task_options)) for name in spec.tasks]
    entry = get_runner_entry(spec.runner)
    runner_opts = parse_options(entry.factory, spec.runner_options, f"runner {spec.runner}")
    runner: Runner = entry.factory(config=spec.runner_config, options=runner_opts, progress=progress)

    window = runner.context_window()
    too_long = [n for n in spec.grid.lengths if window is not None and n > window]
    if too_long:
        raise LongctxError(
            f"length {max(too_long)} exceeds the context window of {spec.runner_config.model} ({window} tokens)"
        )
    identity = _identity(spec, tasks, entry.factory, runner_opts)
    RunStore.check(spec.out, identity)  # corrupt folder / other config: say so before any work
    tokenizer = runner.tokenizer()
    progress.start("building samples", total=len(tasks))
    plan: list[tuple[Sample, Task]] = []
    for task in tasks:
        plan += [(s, task) for s in task.samples(spec.grid, tokenizer)]
        progress.advance()
    progress.done()
    by_id = {s.id: (s, t) for s, t in plan}
    if len(by_id) != len(plan):
        raise RuntimeError("tasks produced duplicate sample ids")  # a task bug, not user input

    info = {
        "runner_config": {k: v for k, v in _as_dict(spec.runner_config).items() if k != "api_key_env"},
        "tokenizer": getattr(tokenizer, "name", None),
        "versions": environment_versions(),
        "git_sha": _git_sha(),
        "argv": sys.argv,
        "host": platform.node(),
        "planned": len(plan),
    }
    store = RunStore.open_for_write(spec.out, identity, info)
    try:
        done = store.done_ids()
        todo = order_for_prefix_cache([s for s, _ in plan if s.id not in done])
        if spec.limit is not None:
            todo = todo[: spec.limit]
        outcome = SweepOutcome(store, len(plan), len(plan) - len([s for s, _ in plan if s.id not in done]), 0, 0)
        if todo:
            with runner:
                store.update_manifest(model_identity=runner.identity(), started_at=time.time())
                progress.start(f"{spec.runner}: {len(todo)} samples", total=len(todo))
                seen: set[str] = set()
                for gen in runner.generate(todo):
                    if gen.sample_id in seen or gen.sample_id not in by_id:
                        raise RuntimeError(f"runner returned unexpected sample id {gen.sample_id!r}")
                    seen.add(gen.sample_id)
                    sample, task = by_id[gen.sample_id]
                    result = to_result(sample, gen, task, spec.runner, spec.runner_config.model)
                    store.append(result)
                    outcome.new += 1
                    outcome.errors += result.error is not None
                    progress.advance()
                progress.done()
        store.update_manifest(finished_at=time.time(), recorded=len(store.results), pid=os.getpid())
        return outcome
    finally:
        store.close()
