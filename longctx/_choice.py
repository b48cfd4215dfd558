"""Forced-choice scoring (``longctx sweep --scoring choice``): candidates ranked by log-likelihood.

Small and weak models often give no signal when they must generate an answer; ranking a closed
set of candidate continuations by the model's log-likelihood does. A task with a closed answer set
attaches the candidates to each sample (:class:`~longctx._records.Choices`, when the sweep's grid
asks for them: ``Grid.choices > 0``); a runner that can score continuations (``hf``, ``hope``,
``vllm``) computes, for every candidate, the sum of its tokens' log-probabilities after the prompt
(answer prefix included) and returns them (:func:`choice_generation`); the sweep scores them
(:func:`choice_scores`) under a metric of its own, ``choice_accuracy``, never mixed with the
accuracy of generated answers.

Carried over from the nested-learning reproduction (kmccleary3301/nested_learning,
``scripts/eval/niah.py``: ``logprob_answer`` and ``main``):

- a candidate's score is the sum of the log-probabilities of its tokens, each given the prompt and
  the candidate tokens before it (there: one forward over prompt + answer, ``log_softmax`` of the
  logits gathered at the next token, summed from the first answer token);
- the candidate is tokenized on its own (there ``" " + answer``, without BOS) and its ids appended
  to the prompt's ids, so every candidate continues the very same prompt tokens;
- one distractor of the same form as the needle, drawn at random; correct iff
  ``logprob(true) > logprob(distractor)``, strictly: **a tie counts as wrong**.

longctx generalises the last point: ``K`` distractors (``--choices K``, default 1 as there), of
the same kind as the true value (RULER: 7-digit numbers, UUIDs, adjective-noun words), drawn from
the sample's seed (the same candidates at every length and depth of one sample index); the true
candidate must score strictly above every distractor. Tasks whose answers are a fixed set
(LongHealth's options, BABILong qa1's six locations) offer the whole set whatever ``K``.
No length normalisation: candidates of one sample are values of one kind, and the sum is what the
reproduction ranks by.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from longctx._errors import LongctxError
from longctx._records import Choices, Generation, Sample

#: ``--scoring`` values: generated answers scored by the task's scorer, or forced choice.
SCORINGS = ("generate", "choice")
#: The metric of forced-choice results (``Result.scores``); never one of a task's own metrics.
CHOICE_METRIC = "choice_accuracy"
#: Distractors per sample unless ``--choices`` says otherwise (nested-learning's NIAH uses one).
DEFAULT_CHOICES = 1
#: Where ``-inf`` log-likelihoods are clamped (JSON has no infinities).
NEG_INF_LOGLIK = -1e30
#: What reports append to the task name of forced-choice results (:func:`report_task`).
CHOICE_LABEL = " (forced choice)"


# ---- task side: building the candidates ---------------------------------------------------------
def drawn_choices(
    true: str, draw: Callable[[random.Random], str], k: int, rng: random.Random, *, prefix: str = " ",
    avoid: Iterable[str] = (),
) -> Choices:
    """The true value and ``k`` distinct distractors ``draw(rng)`` (never the true value nor one of
    ``avoid``), in an order shuffled by ``rng``, each written as ``prefix + value``."""
    if k < 1:
        raise ValueError("k must be at least 1")
    values, banned = [true], {true, *avoid}
    for _ in range(1000 * (k + 1)):
        if len(values) == k + 1:
            break
        value = draw(rng)
        if value not in banned:
            values.append(value)
            banned.add(value)
    else:
        raise LongctxError(f"cannot draw {k} distinct distractors of the kind of {true!r}")
    order = list(range(k + 1))
    rng.shuffle(order)
    return Choices(tuple(prefix + values[i] for i in order), order.index(0))


def closed_choices(candidates: Sequence[str], correct: int) -> Choices:
    """A fixed answer set (options, labels) in its own order; ``correct`` indexes the true one."""
    if len(set(candidates)) != len(candidates) or not 0 <= correct < len(candidates):
        raise ValueError(f"bad closed answer set {candidates!r} / {correct}")
    return Choices(tuple(candidates), correct)


# ---- sweep side: refusing what cannot be scored -------------------------------------------------
def check_choice_samples(samples: Sequence[Sample]) -> None:
    """``LongctxError`` naming the tasks whose samples carry no candidates."""
    missing = sorted({s.task for s in samples if s.choices is None})
    if missing:
        raise LongctxError(
            f"--scoring choice: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no closed answer "
            "set (forced choice covers ruler/niah_single_*, ruler/niah_multikey_*, longhealth/* and "
            "babilong/qa1); drop --scoring choice or those tasks"
        )


def check_choice_runner(runner: Any, runner_name: str, mode: str) -> None:
    """``LongctxError`` unless ``runner`` scores continuations (a ``choose`` method) in completions mode."""
    if not callable(getattr(runner, "choose", None)):
        raise LongctxError(
            f"runner {runner_name} cannot score candidates by log-likelihood (--scoring choice works with "
            "hf, hope and vllm)"
        )
    if mode != "completions":
        raise LongctxError("--scoring choice continues the prompt after its answer prefix; drop --chat-only")


# ---- runner side: token ids and the generation ---------------------------------------------------
def candidate_ids(encode: Callable[[str], Sequence[int]], sample: Sample) -> list[list[int]]:
    """Token ids of each candidate of ``sample``, tokenized on its own (no special tokens)."""
    if sample.choices is None:
        raise ValueError(f"sample {sample.id} has no candidates")
    out = [list(encode(c)) for c in sample.choices.candidates]
    if not all(out):
        raise ValueError(f"sample {sample.id}: a candidate encodes to no tokens")
    return out


def window_error(sample: Sample, n_prompt: int, n_candidate: int, window: int | None) -> Generation | None:
    """An error generation when the prompt plus the longest candidate exceed ``window``."""
    if window and n_prompt + n_candidate > window:
        return Generation(sample.id, None, prompt_tokens=n_prompt, error=(
            f"prompt of {n_prompt} tokens + a candidate of {n_candidate} exceeds the context window of {window}"))
    return None


def top_choice(logliks: Sequence[float | None]) -> int | None:
    """Index of the unique highest log-likelihood; None when several share the top (a tie) or a
    value is missing (non-finite: the model gave no ranking)."""
    if any(v is None for v in logliks):
        return None
    best = max(logliks)  # type: ignore[type-var]
    top = [i for i, value in enumerate(logliks) if value == best]
    return top[0] if len(top) == 1 else None


def choice_generation(sample: Sample, logliks: Sequence[float], tokens: Sequence[int], **fields: Any) -> Generation:
    """The runner's answer: every candidate's log-likelihood in ``extra["choice"]``; ``prediction``
    is the top candidate's text, ``""`` when there is none (a tie at the top, or a non-finite value).

    A NaN log-likelihood (the model's logits were NaN) is the model's doing, not the engine's: it is
    kept as ``null`` with ``non_finite`` set, and the sample scores 0, as garbage generated from
    such logits would. ``-inf`` (probability 0) is a ranking and is clamped to
    :data:`NEG_INF_LOGLIK` (JSON has no infinities; vLLM clamps it to -9999 likewise)."""
    assert sample.choices is not None
    if len(logliks) != len(sample.choices.candidates):
        return Generation(sample.id, None, error=f"{len(logliks)} log-likelihoods for "
                          f"{len(sample.choices.candidates)} candidates", **fields)
    values = [None if math.isnan(float(v)) else max(float(v), NEG_INF_LOGLIK) for v in logliks]
    chosen = top_choice(values)
    extra = dict(fields.pop("extra", {}))
    extra["choice"] = {
        "candidates": list(sample.choices.candidates),
        "logliks": values,
        "tokens": list(tokens),
        "correct": sample.choices.correct,
        "chosen": chosen,
    }
    if any(v is None for v in values):
        extra["choice"]["non_finite"] = True
    extra["choice"].update(choice_details(extra["choice"]))
    prediction = sample.choices.candidates[chosen] if chosen is not None else ""
    return Generation(sample.id, prediction, completion_tokens=0, extra=extra, **fields)


def choice_scores(choice: dict[str, Any], sample: Sample) -> dict[str, float]:
    """``{"choice_accuracy": 1.0}`` iff the true candidate's log-likelihood is strictly above every
    other's (recomputed from the log-likelihoods: a tie is wrong, a missing value is wrong)."""
    assert sample.choices is not None
    logliks, correct = choice["logliks"], sample.choices.correct
    if any(v is None for v in logliks):
        return {CHOICE_METRIC: 0.0}
    others = [v for i, v in enumerate(logliks) if i != correct]
    return {CHOICE_METRIC: float(all(logliks[correct] > v for v in others))}


def choice_details(choice: dict[str, Any]) -> dict[str, Any]:
    """Rank of the true candidate (1 = best; ties take the worst rank) and its margin over the best
    other candidate (log-likelihood difference, > 0 when it wins); None with a missing value."""
    logliks, correct = choice["logliks"], choice["correct"]
    if any(v is None for v in logliks):
        return {"rank": None, "margin": None}
    true = logliks[correct]
    others = [v for i, v in enumerate(logliks) if i != correct]
    return {"rank": 1 + sum(v >= true for v in others), "margin": true - max(others)}


def report_task(task: str, scoring: str) -> str:
    """The task name reports group a result under: forced-choice results apart (``TASK (forced choice)``)."""
    return task + CHOICE_LABEL if scoring == "choice" else task


def runner_choice(gen: Generation, sample: Sample) -> dict[str, Any]:
    """``gen.extra["choice"]`` checked against ``sample``'s candidates (a runner bug otherwise)."""
    choice = gen.extra.get("choice")
    if sample.choices is None or not isinstance(choice, dict) or \
            list(choice.get("candidates", ())) != list(sample.choices.candidates) or \
            len(choice.get("logliks", ())) != len(sample.choices.candidates):
        raise RuntimeError(f"runner answered sample {sample.id!r} without the log-likelihoods of its candidates")
    return choice
