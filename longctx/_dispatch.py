"""The dispatch of a sweep: send pending samples through a runner, score and record each answer.

Each generation is scored (errors never are) and recorded in the run folder the moment it comes
back, so an interruption at any point loses nothing finished. Two things end a dispatch early,
leaving what did not finish pending for the next invocation of the same command:

* :class:`~longctx._errors.EngineGone` from the runner (the launched server died, the endpoint
  stopped accepting connections): what was in flight is dropped, never recorded as an error;
* more than ``max_errors`` samples recorded with an error in this invocation:
  :class:`~longctx._errors.TooManyErrors`;
* ``spend`` (``--max-cost-usd``, :class:`~longctx._prices.SpendCap`) saying the next sample would
  pass the cap: :class:`~longctx._errors.CostCapReached`.

Where the samples run is :func:`engine_for`: the runner itself, or with ``--ray`` the shards of
:mod:`longctx._ray_dispatch`, which build the runner on each Ray worker and stream the generations
back to this process: scoring and recording stay here, whatever runs the samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from longctx._choice import CHOICE_METRIC, choice_scores, runner_choice
from longctx._errors import LongctxError, TooManyErrors
from longctx._plan import Plan, PlannedSamples
from longctx._protocols import NullProgress, Progress, Runner, Task
from longctx._records import Generation, Result, Sample, sample_hash
from longctx._store import RunStore

if TYPE_CHECKING:
    from longctx._prices import SpendCap
    from longctx._protocols import RunnerConfig
    from longctx._ray_dispatch import RaySettings


@dataclass
class Tally:
    """What a dispatch recorded so far (kept up to date, so it is right when the dispatch stops)."""

    new: int = 0
    """Results recorded."""
    errors: int = 0
    """Of those, results that are errors."""
    retried: int = 0
    """Of those, retries of samples that had ended in an error."""


def to_result(sample: Sample, gen: Generation, task: Task, runner: str, model: str,
              scoring: str = "generate") -> Result:
    """Score a generation (errors are recorded, never scored); with ``scoring="choice"`` by forced
    choice (:mod:`longctx._choice`: ``choice_accuracy`` from the candidates' log-likelihoods)."""
    scores: dict[str, float] = {}
    score = None
    if gen.error is None and gen.prediction is not None and scoring == "choice":
        scores = choice_scores(runner_choice(gen, sample), sample)
        score = scores[CHOICE_METRIC]
    elif gen.error is None and gen.prediction is not None:
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
        sample_hash=sample_hash(sample), thinking=gen.thinking, thinking_tokens=gen.thinking_tokens,
        thinking_truncated=gen.thinking_truncated, scoring="choice" if scoring == "choice" else "generate",
    )


def dispatch(
    runner: Runner,
    todo: PlannedSamples,
    plan: Plan,
    store: RunStore,
    *,
    runner_name: str,
    model: str,
    tally: Tally,
    max_errors: int | None = None,
    progress: Progress | None = None,
    conditions: dict[str, Any] | None = None,
    scoring: str = "generate",
    spend: SpendCap | None = None,
) -> None:
    """Run ``todo`` through the entered ``runner`` and record every answer in ``store``, stamped
    with the store's session and ``conditions`` (what can change results in this session).

    Raises ``EngineGone`` (from the runner), :class:`TooManyErrors` or ``CostCapReached`` (from
    ``spend.charge``); ``tally`` then says what was recorded before.
    """
    progress = progress or NullProgress()
    progress.start(f"{runner_name}: {len(todo)} samples", total=len(todo))
    wanted = set(todo.ids())  # nothing built: samples are built as the runner takes them
    # forced choice: the runner's ``choose`` (the sweep checked it has one) instead of ``generate``
    generations = iter(runner.choose(todo) if scoring == "choice" else runner.generate(todo))  # type: ignore[attr-defined]
    try:
        for gen in generations:
            if gen.sample_id not in wanted:
                raise RuntimeError(f"runner returned unexpected sample id {gen.sample_id!r}")
            wanted.discard(gen.sample_id)
            sample, task = plan.claim(gen.sample_id)
            result = to_result(sample, gen, task, runner_name, model, scoring)
            result.session, result.conditions = store.session, dict(conditions or {})
            written = store.record(result)
            tally.new += 1
            tally.errors += written.error is not None
            tally.retried += written.attempts > 1
            progress.advance()
            if max_errors is not None and tally.errors > max_errors:
                raise TooManyErrors(
                    f"{tally.errors} samples failed, more than --max-errors {max_errors} allows "
                    f"(last: {written.sample_id}: {written.error}); the rest stay pending"
                )
            if spend is not None:  # raises CostCapReached when the next sample would pass the cap
                spend.charge(written)
    finally:
        close = getattr(generations, "close", None)
        if close is not None:  # a generator: cancels what is still in flight
            close()
        progress.done()


def ray_settings(address: str | None, shards: int | None = None, gpus: float | None = None) -> RaySettings | None:
    """``--ray [ADDRESS]`` / ``--ray-shards N`` / ``--ray-gpus G`` checked (bad values are
    LongctxErrors); None without ``--ray``. Ray itself is imported only when the workers start."""
    if address is None:
        given = [flag for flag, v in (("--ray-shards", shards), ("--ray-gpus", gpus)) if v is not None]
        if given:
            raise LongctxError(f"{given[0]} needs --ray")
        return None
    if shards is not None and shards < 1:
        raise LongctxError("--ray-shards must be at least 1")
    if gpus is not None and gpus < 0:
        raise LongctxError("--ray-gpus must be 0 or more")
    from longctx._ray_dispatch import RaySettings

    return RaySettings(address=address.strip() or "local", shards=shards, num_gpus=gpus or 0.0)


def engine_for(runner: Runner, ray: RaySettings | None, factory: type, options: Any, config: RunnerConfig,
               samples: int, progress: Progress | None = None) -> Runner:
    """What runs the samples: ``runner`` itself, or with ``ray`` Ray workers that each build the
    same runner (``factory(config=config, options=options)``), at most one per sample."""
    if ray is None:
        return runner
    from longctx._ray_dispatch import RayShards

    return RayShards(factory, config, options, ray, samples, progress)  # type: ignore[return-value]


def placement(engine: Runner | None) -> dict[str, Any]:
    """Where a session's samples ran (the Ray cluster and its workers), for the session record:
    the engine's optional ``placement()`` hook, {} without one."""
    method = getattr(engine, "placement", None)
    return dict(method()) if callable(method) else {}
