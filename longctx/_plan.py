"""The plan of a sweep: which samples, in which order, and which of them still need a result.

A plan is every sample of every task over the grid (built once, before the engine starts). Given
what the run folder already holds, :meth:`Plan.pending` is what this invocation must run: samples
never recorded, plus samples whose last result is an error (unless errors are kept), ordered so
that samples sharing a haystack prefix run back to back (longest first) and vLLM's prefix cache
is hit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from longctx._protocols import Grid, NullProgress, Progress, Task, Tokenizer
from longctx._records import Result, Sample


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


def order_for_prefix_cache(samples: Sequence[Sample]) -> list[Sample]:
    """Samples sharing a haystack prefix back to back: per prefix group, longest and deepest first.

    Within a group every prompt starts with the same template and haystack tokens up to its
    first needle, so after the longest/deepest prompt the others find their prefix cached.
    """
    return sorted(samples, key=lambda s: (s.task, str(s.metadata.get("prefix_group", "")),
                                          -s.length, -(s.depth if s.depth is not None else 0), s.id))


@dataclass
class Pending:
    """What one invocation runs."""

    todo: list[Sample]
    """Samples to run now, in submission order (``limit`` applied)."""
    new: int
    """Samples of the plan never recorded."""
    retry: int
    """Samples whose last result is an error and that are retried."""
    kept_errors: int
    """Samples whose last result is an error and that are kept as they are (``keep_errors``)."""


@dataclass
class Plan:
    """Every sample of a sweep, with the task that scores it."""

    items: list[tuple[Sample, Task]]
    """``(sample, task)`` in the order the tasks built them."""
    by_id: dict[str, tuple[Sample, Task]] = field(init=False)
    """The same, by sample id."""

    def __post_init__(self) -> None:
        self.by_id = {s.id: (s, t) for s, t in self.items}
        if len(self.by_id) != len(self.items):
            raise RuntimeError("tasks produced duplicate sample ids")  # a task bug, not user input

    def __len__(self) -> int:
        return len(self.items)

    def pending(
        self, recorded: Mapping[str, Result], keep_errors: bool = False, limit: int | None = None
    ) -> Pending:
        """The samples still owed a result, given ``recorded`` (last result per sample id).

        A sample counts as done when its last result is scored, or is an error and ``keep_errors``
        is set; everything else is pending.
        """
        new = [s for s, _ in self.items if s.id not in recorded]
        failed = [s for s, _ in self.items if s.id in recorded and recorded[s.id].error is not None]
        retry = [] if keep_errors else failed
        todo = order_for_prefix_cache(new + retry)
        if limit is not None:
            todo = todo[: max(0, limit)]
        return Pending(todo, len(new), len(retry), len(failed) if keep_errors else 0)


def build_plan(tasks: Sequence[Task], grid: Grid, tokenizer: Tokenizer, progress: Progress | None = None) -> Plan:
    """Every sample of ``tasks`` over ``grid``, built with ``tokenizer``."""
    progress = progress or NullProgress()
    progress.start("building samples", total=len(tasks))
    items: list[tuple[Sample, Task]] = []
    for task in tasks:
        items += [(s, task) for s in task.samples(grid, tokenizer)]
        progress.advance()
    progress.done()
    return Plan(items)


def run_identity(
    tasks: Sequence[Task], grid: Grid, runner: str, runner_cls: type, runner_opts: Any, model: str, mode: str
) -> dict[str, Any]:
    """What must match for a run folder to be resumed: tasks and their options, runner and its
    options (minus the runner's ``volatile_options``), model, mode and grid."""
    volatile = set(getattr(runner_cls, "volatile_options", ()))
    ropts = {k: v for k, v in as_dict(runner_opts).items() if k not in volatile}
    return {
        "tasks": [t.name for t in tasks],
        "task_options": {t.name: as_dict(getattr(t, "options", None)) for t in tasks},
        "runner": runner,
        "runner_options": ropts,
        "model": model,
        "mode": mode,
        "grid": {"lengths": list(grid.lengths), "depths": list(grid.depths),
                 "samples": grid.samples, "seed": grid.seed},
    }


def as_dict(obj: Any) -> dict[str, Any]:
    """A config (msgspec Struct, mapping or None) as a plain dict."""
    if obj is None:
        return {}
    import msgspec

    return msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else dict(obj)
