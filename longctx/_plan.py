"""The plan of a sweep: which samples, in which order, and which of them still need a result.

A plan knows every sample of every task over the grid by its :class:`SampleKey` (id, length,
depth, index, prefix group), which a task with the two lazy hooks gives without building anything:

* ``sample_keys(grid) -> Iterable[SampleKey]``: the keys of the samples ``samples(grid, tokenizer)``
  yields, in the same order, without a tokenizer (ids are deterministic in task, options, length,
  depth, index and seed);
* ``build_sample(grid, tokenizer, key) -> Sample``: the sample of one key.

Given what the run folder already holds, :meth:`Plan.pending` is what this invocation must run:
samples never recorded, plus samples whose last result is an error (unless errors are kept), ordered
by key so that samples sharing a haystack prefix run back to back (longest and deepest first) and
vLLM's prefix cache is hit. The todo is a :class:`PlannedSamples` sequence: each sample is built when
the runner takes it and dropped once its generation is claimed, so memory does not grow with the
number of samples and a resume builds no prompt of a finished sample. Tasks without the hooks are
built whole when the plan is made (as before; their samples stay in memory).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

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


class SampleKey(NamedTuple):
    """What a plan knows of a sample before it is built (no tokenizer, no prompt)."""

    id: str
    """``Sample.id``."""
    length: int
    """``Sample.length``."""
    depth: float | None
    """``Sample.depth``."""
    index: int = 0
    """Sample index in its (length, depth) cell."""
    prefix_group: str = ""
    """Samples of one group share their prompt's start up to the first needle (the same template
    and haystack): the order keeps them adjacent (``metadata["prefix_group"]`` of built samples)."""


def key_of(sample: Sample) -> SampleKey:
    """The key of a built sample."""
    meta = sample.metadata
    return SampleKey(sample.id, sample.length, sample.depth, int(meta.get("index", 0) or 0),
                     str(meta.get("prefix_group", "")))


def _order(task: str, key: SampleKey) -> tuple[Any, ...]:
    return task, key.prefix_group, -key.length, -(key.depth if key.depth is not None else 0), key.id


def order_for_prefix_cache(samples: Sequence[Sample]) -> list[Sample]:
    """Samples sharing a haystack prefix back to back: per prefix group, longest and deepest first.

    Within a group every prompt starts with the same template and haystack tokens up to its
    first needle, so after the longest/deepest prompt the others find their prefix cached.
    """
    return sorted(samples, key=lambda s: _order(s.task, key_of(s)))


def is_lazy(task: Task) -> bool:
    """True when ``task`` has the hooks that let a plan build its samples one by one."""
    return callable(getattr(task, "sample_keys", None)) and callable(getattr(task, "build_sample", None))


class PlannedSamples(Sequence[Sample]):
    """The samples an invocation runs, in submission order, each built when it is taken.

    A sequence for runners (``len``, indexing, slices, iteration); indexing builds the sample (again
    if asked twice), so a runner that iterates holds only what it has in flight. Every sample handed
    out waits in the plan until the dispatch claims it with its generation (:meth:`Plan.claim`).
    """

    def __init__(self, plan: Plan, entries: list[tuple[SampleKey, Task]]):
        self.plan = plan
        self.entries = entries
        """``(key, task)`` in submission order."""

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self.plan.hand_out(*self.entries[j]) for j in range(*i.indices(len(self.entries)))]
        return self.plan.hand_out(*self.entries[i])

    def __iter__(self) -> Iterator[Sample]:
        for key, task in self.entries:
            yield self.plan.hand_out(key, task)

    def ids(self) -> list[str]:
        """Sample ids in submission order (nothing built)."""
        return [key.id for key, _ in self.entries]


@dataclass
class Pending:
    """What one invocation runs."""

    todo: PlannedSamples
    """Samples to run now, in submission order (``limit`` applied), built as they are taken."""
    new: int
    """Samples of the plan never recorded."""
    retry: int
    """Samples whose last result is an error and that are retried."""
    kept_errors: int
    """Samples whose last result is an error and that are kept as they are (``keep_errors``)."""


class Plan:
    """Every sample of a sweep by key, with the task that builds and scores it."""

    def __init__(self, tasks: Sequence[Task], grid: Grid, tokenizer: Tokenizer, progress: Progress | None = None):
        progress = progress or NullProgress()
        self.grid, self.tokenizer = grid, tokenizer
        self.entries: list[tuple[SampleKey, Task]] = []
        """``(key, task)`` of every sample, in the order the tasks give them."""
        self._built: dict[str, Sample] = {}  # samples of tasks without the lazy hooks
        self._out: dict[str, tuple[Sample, Task]] = {}  # handed to the runner, not claimed yet
        self._lock = threading.Lock()  # runners may take samples from several threads
        eager = [t for t in tasks if not is_lazy(t)]
        if eager:  # real work: these tasks build every sample now
            progress.start("building samples", total=len(eager))
        for task in tasks:
            self.entries += [(key, task) for key in self._keys(task)]
            if not is_lazy(task):
                progress.advance()
        if eager:
            progress.done()
        if len({key.id for key, _ in self.entries}) != len(self.entries):
            raise RuntimeError("tasks produced duplicate sample ids")  # a task bug, not user input

    def _keys(self, task: Task) -> Iterable[SampleKey]:
        if is_lazy(task):
            return task.sample_keys(self.grid)  # type: ignore[attr-defined]
        keys = []
        for sample in task.samples(self.grid, self.tokenizer):
            self._built[sample.id] = sample
            keys.append(key_of(sample))
        return keys

    def __len__(self) -> int:
        return len(self.entries)

    def build(self, key: SampleKey, task: Task) -> Sample:
        """The sample of ``key`` (built now for a lazy task)."""
        with self._lock:
            sample = self._built.get(key.id)
            if sample is None:
                sample = task.build_sample(self.grid, self.tokenizer, key)  # type: ignore[attr-defined]
            return sample

    def hand_out(self, key: SampleKey, task: Task) -> Sample:
        """:meth:`build`, the sample then waiting for :meth:`claim`."""
        sample = self.build(key, task)
        self._out[key.id] = (sample, task)
        return sample

    def claim(self, sample_id: str) -> tuple[Sample, Task]:
        """The sample handed out under ``sample_id`` and its task, released from the plan."""
        item = self._out.pop(sample_id, None)
        if item is None:
            raise RuntimeError(f"runner returned a generation for sample {sample_id!r}, which it was never given")
        self._built.pop(sample_id, None)
        return item

    def preview(self, todo: PlannedSamples, every_length: bool = False) -> list[Sample]:
        """Built samples that show early what would fail late: per task, the first sample of
        ``todo`` at its shortest length (the one a haystack may not fit), or at every length."""
        firsts: dict[tuple[str, int | None], tuple[SampleKey, Task]] = {}
        for key, task in todo.entries:
            slot = (task.name, key.length if every_length else None)
            if slot not in firsts or key.length < firsts[slot][0].length:
                firsts[slot] = (key, task)
        return [self.build(key, task) for key, task in firsts.values()]

    def pending(
        self, recorded: Mapping[str, Result], keep_errors: bool = False, limit: int | None = None
    ) -> Pending:
        """The samples still owed a result, given ``recorded`` (last result per sample id).

        A sample counts as done when its last result is scored, or is an error and ``keep_errors``
        is set; everything else is pending. Nothing is built here.
        """
        new = [(k, t) for k, t in self.entries if k.id not in recorded]
        failed = [(k, t) for k, t in self.entries if k.id in recorded and recorded[k.id].error is not None]
        retry = [] if keep_errors else failed
        todo = sorted(new + retry, key=lambda item: _order(item[1].name, item[0]))
        if limit is not None:
            todo = todo[: max(0, limit)]
        return Pending(PlannedSamples(self, todo), len(new), len(retry), len(failed) if keep_errors else 0)


def build_plan(tasks: Sequence[Task], grid: Grid, tokenizer: Tokenizer, progress: Progress | None = None) -> Plan:
    """The plan of ``tasks`` over ``grid`` (samples built with ``tokenizer`` when they are taken)."""
    return Plan(tasks, grid, tokenizer, progress)


def run_identity(
    tasks: Sequence[Task], grid: Grid, runner: str, runner_cls: type, runner_opts: Any, model: str, mode: str
) -> dict[str, Any]:
    """What must match for a run folder to be resumed: tasks and their options, runner and its
    options (minus the runner's ``volatile_options``), model, mode and grid; for forced-choice
    scoring (``grid.choices > 0``) also ``scoring`` (absent for generated answers, so a generate run
    and a choice run never share a folder and older folders keep their identity)."""
    volatile = set(getattr(runner_cls, "volatile_options", ()))
    ropts = {k: v for k, v in as_dict(runner_opts).items() if k not in volatile}
    scoring = {"scoring": {"mode": "choice", "choices": grid.choices}} if grid.choices else {}
    return {
        "tasks": [t.name for t in tasks],
        "task_options": {t.name: as_dict(getattr(t, "options", None)) for t in tasks},
        "runner": runner,
        "runner_options": ropts,
        "model": model,
        "mode": mode,
        "grid": {"lengths": list(grid.lengths), "depths": list(grid.depths),
                 "samples": grid.samples, "seed": grid.seed},
        **scoring,
    }


def as_dict(obj: Any) -> dict[str, Any]:
    """A config (msgspec Struct, mapping or None) as a plain dict."""
    if obj is None:
        return {}
    import msgspec

    return msgspec.to_builtins(obj) if isinstance(obj, msgspec.Struct) else dict(obj)
