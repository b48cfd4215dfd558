"""The plan: samples known by key, built one by one when the runner takes them, in prefix-cache order."""

from __future__ import annotations

import pytest

from longctx._plan import Plan, SampleKey, key_of, order_for_prefix_cache
from longctx._protocols import Grid
from longctx._records import Prompt, Result, Sample
from longctx._registry import get_task
from longctx._scoring import RulerMatch

NIAH = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery"]


def sample(i: int, length: int = 1024, depth: float = 50.0, group: str = "g") -> Sample:
    return Sample(id=f"s|L{length}|D{depth:g}|{i}", task="fake", prompt=Prompt(messages=()), references=("x",),
                  length=length, context_tokens=length - 200, max_new_tokens=8, depth=depth,
                  metadata={"index": i, "prefix_group": group})


class LazyTask:
    """Keys for free; counts what it builds."""

    name = "fake"
    scorer = RulerMatch("all")
    controls_depth = True

    def __init__(self):
        self.built: list[str] = []

    def sample_keys(self, grid):
        for i in range(grid.samples):
            for length in grid.lengths:
                for depth in grid.depths:
                    yield key_of(sample(i, length, depth, group=f"g{i % 2}"))

    def build_sample(self, grid, tokenizer, key: SampleKey) -> Sample:
        self.built.append(key.id)
        return sample(key.index, key.length, key.depth, group=key.prefix_group)

    def samples(self, grid, tokenizer):
        for key in self.sample_keys(grid):
            yield self.build_sample(grid, tokenizer, key)


class EagerTask(LazyTask):
    """A task without the hooks: built whole when the plan is made."""

    name = "eager"
    sample_keys = None  # type: ignore[assignment]

    def samples(self, grid, tokenizer):
        for i in range(grid.samples):
            for length in grid.lengths:
                self.built.append(f"e{i}")
                yield Sample(id=f"e{i}|{length}", task="eager", prompt=Prompt(messages=()), references=("x",),
                             length=length, context_tokens=1, max_new_tokens=8)


GRID = Grid((1024, 2048), (0.0, 50.0, 100.0), 4)


def done(sample_id: str, error: str | None = None) -> Result:
    return Result(sample_id=sample_id, task="fake", runner="r", model="m", length=1024, context_tokens=1,
                  depth=None, needle_positions=(), evidence_depth=None, prediction=None if error else "x",
                  references=("x",), score=None if error else 1.0, scores={}, error=error, latency_s=0.0,
                  prompt_tokens=None, cached_tokens=None)


def test_pending_builds_nothing_and_the_todo_builds_as_it_is_taken():
    task = LazyTask()
    plan = Plan([task], GRID, tokenizer=None)
    assert len(plan) == 2 * 3 * 4 and task.built == []
    ids = [key.id for key, _ in plan.entries]
    recorded = {i: done(i) for i in ids[:10]} | {ids[10]: done(ids[10], error="timeout")}
    pending = plan.pending(recorded)
    assert (pending.new, pending.retry, len(pending.todo)) == (13, 1, 14)
    assert task.built == []  # finished samples are never built, nor are pending ones before they are taken
    taken = iter(pending.todo)
    first = next(taken)
    assert task.built == [first.id]
    assert plan.claim(first.id)[0] is first
    with pytest.raises(RuntimeError, match="never given"):
        plan.claim(first.id)  # released: nothing kept once its generation is recorded
    rest = list(taken)
    assert len(task.built) == 14 and {s.id for s in [first, *rest]} == set(ids[10:])


def test_submission_order_is_the_prefix_cache_order_of_the_built_samples():
    task = LazyTask()
    plan = Plan([task], GRID, tokenizer=None)
    todo = plan.pending({}).todo
    built = list(todo)
    assert [s.id for s in built] == [s.id for s in order_for_prefix_cache(built)] == todo.ids()
    assert todo[3].id == built[3].id and [s.id for s in todo[2:5]] == [s.id for s in built[2:5]]
    groups = [s.metadata["prefix_group"] for s in built]
    assert groups == sorted(groups)  # each group's samples adjacent, longest and deepest first in it
    assert (built[0].length, built[0].depth) == (2048, 100.0)


def test_limit_and_kept_errors():
    plan = Plan([LazyTask()], GRID, tokenizer=None)
    ids = [key.id for key, _ in plan.entries]
    kept = plan.pending({ids[0]: done(ids[0], error="HTTP 500")}, keep_errors=True, limit=5)
    assert (len(kept.todo), kept.new, kept.retry, kept.kept_errors) == (5, 23, 0, 1)


def test_a_task_without_the_hooks_is_built_whole_and_still_runs():
    eager, lazy = EagerTask(), LazyTask()
    plan = Plan([eager, lazy], GRID, tokenizer=None)
    assert len(eager.built) == 8 and lazy.built == []
    todo = plan.pending({}).todo
    got = {s.id for s in todo}
    assert {f"e{i}|{n}" for i in range(4) for n in (1024, 2048)} <= got and len(got) == 8 + 24
    assert len(eager.built) == 8  # not built again
    eager_id = next(i for i in got if i.startswith("e"))
    assert plan.claim(eager_id)[1] is eager


def test_preview_builds_one_sample_per_task_at_its_shortest_length():
    task = LazyTask()
    plan = Plan([task], GRID, tokenizer=None)
    (first,) = plan.preview(plan.pending({}).todo)
    assert first.length == 1024
    assert {s.length for s in plan.preview(plan.pending({}).todo, every_length=True)} == {1024, 2048}


def test_duplicate_ids_are_a_task_bug():
    with pytest.raises(RuntimeError, match="duplicate"):
        Plan([LazyTask(), LazyTask()], GRID, tokenizer=None)


@pytest.mark.parametrize("variant", NIAH)
def test_ruler_keys_are_those_of_the_built_samples(variant, smol_tokenizer):
    grid = Grid((1024, 2048), (0.0, 50.0, 100.0), 2)
    task = get_task(f"ruler/{variant}", {})
    keys = list(task.sample_keys(grid))
    built = list(task.samples(grid, smol_tokenizer))
    assert keys == [key_of(s) for s in built]
    # one sample built alone (another index first, as the plan's order does) is the same sample
    fresh = get_task(f"ruler/{variant}", {})
    assert fresh.build_sample(grid, smol_tokenizer, keys[-1]) == built[-1]
    assert fresh.build_sample(grid, smol_tokenizer, keys[0]) == built[0]


def test_resuming_a_finished_sweep_builds_no_sample(tmp_path, monkeypatch, default_model_path):
    from click.testing import CliRunner

    from longctx.cli.main import cli
    from longctx.tasks.ruler_niah import RulerNiah

    args = ["sweep", "-t", "ruler/niah_single_1", "-t", "ruler/niah_multikey_2", "--lengths", "1k,2k",
            "--depths", "0:100:3", "-n", "2", "--runner", "oracle", "--out", str(tmp_path / "run")]
    built = []
    real = RulerNiah.build_sample
    monkeypatch.setattr(RulerNiah, "build_sample", lambda self, *a: built.append(a[-1].id) or real(self, *a))
    first = CliRunner().invoke(cli, [*args, "--limit", "5"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert len(built) == 5 + 1  # what ran, and the preview of the first pending sample of its task
    built.clear()
    rest = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "19 new, 5 already done, 24 planned" in rest.output
    assert len(set(built)) == 19 and len(built) <= 19 + 2  # only what was owed (+ one preview per task)
    built.clear()
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "0 new, 24 already done" in again.output
    assert built == []
