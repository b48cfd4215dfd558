"""Forced-choice scoring (``--scoring choice``) on constructed cases: a runner that prefers the true
candidate scores 1, one that prefers a distractor 0, a tie 0; what is refused before any work."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from longctx._choice import (
    CHOICE_METRIC,
    choice_generation,
    choice_scores,
    closed_choices,
    drawn_choices,
    runner_choice,
    top_choice,
)
from longctx._errors import LongctxError
from longctx._records import Choices, Generation, Message, Prompt, Sample
from longctx._registry import runner
from longctx.cli.main import cli


def sample(candidates=(" 1", " 2", " 3"), correct=1) -> Sample:
    return Sample(id="s", task="t", prompt=Prompt((Message("user", "q"),), "q", "", (1, 2)), references=("2",),
                  length=16, context_tokens=2, max_new_tokens=4, choices=Choices(tuple(candidates), correct))


# ---- the pieces -------------------------------------------------------------------------------------
def test_drawn_choices_are_distinct_shuffled_and_reproducible():
    draw = lambda r: str(r.randint(0, 9))
    made = [drawn_choices("5", draw, 4, random.Random(i), avoid=["7"]) for i in range(20)]
    for c in made:
        assert len(set(c.candidates)) == 5 and c.candidates[c.correct] == " 5" and " 7" not in c.candidates
    assert len({c.correct for c in made}) > 1  # the true one is not always first
    assert made[3] == drawn_choices("5", draw, 4, random.Random(3), avoid=["7"])
    with pytest.raises(LongctxError, match="distinct distractors"):
        drawn_choices("5", draw, 9, random.Random(0), avoid=["7"])  # only 8 other values exist


def test_closed_choices_keep_their_order_and_refuse_duplicates():
    assert closed_choices(["a", "b"], 1) == Choices(("a", "b"), 1)
    with pytest.raises(ValueError):
        closed_choices(["a", "a"], 0)


def test_a_tie_at_the_top_is_wrong():
    s = sample()
    assert top_choice([-1.0, -1.0, -3.0]) is None and top_choice([-3.0, -1.0, -2.0]) == 1
    assert choice_scores({"logliks": [-3.0, -1.0, -2.0]}, s) == {CHOICE_METRIC: 1.0}
    assert choice_scores({"logliks": [-1.0, -3.0, -2.0]}, s) == {CHOICE_METRIC: 0.0}
    assert choice_scores({"logliks": [-1.0, -1.0, -2.0]}, s) == {CHOICE_METRIC: 0.0}   # tie with the true one
    gen = choice_generation(s, [-1.0, -1.0, -2.0], [1, 1, 1])
    assert gen.prediction == "" and gen.extra["choice"]["chosen"] is None and gen.extra["choice"]["rank"] == 2


def test_choice_generation_keeps_every_loglik_and_refuses_non_finite():
    s = sample()
    gen = choice_generation(s, [-3.0, -1.0, -2.5], [1, 1, 1], prompt_tokens=2, latency_s=0.5)
    assert gen.error is None and gen.prediction == " 2" and gen.prompt_tokens == 2
    assert gen.extra["choice"] == {"candidates": [" 1", " 2", " 3"], "logliks": [-3.0, -1.0, -2.5],
                                   "tokens": [1, 1, 1], "correct": 1, "chosen": 1, "rank": 1, "margin": 1.5}
    bad = choice_generation(s, [-1.0, math.nan, -2.0], [1, 1, 1])  # the model's NaN logits: wrong, kept
    assert bad.error is None and bad.prediction == ""
    assert bad.extra["choice"]["logliks"] == [-1.0, None, -2.0] and bad.extra["choice"]["non_finite"]
    assert choice_scores(bad.extra["choice"], s) == {CHOICE_METRIC: 0.0}
    zero = choice_generation(s, [-math.inf, -1.0, -math.inf], [1, 1, 1])  # probability 0: still a ranking
    assert zero.prediction == " 2" and choice_scores(zero.extra["choice"], s) == {CHOICE_METRIC: 1.0}
    assert zero.extra["choice"]["logliks"][0] == -1e30
    assert choice_generation(s, [-1.0], [1]).error.startswith("1 log-likelihoods for 3 candidates")
    with pytest.raises(RuntimeError, match="without the log-likelihoods"):
        runner_choice(Generation("s", " 2"), s)


# ---- constructed runners -------------------------------------------------------------------------------
class _FakeChooser:
    """The oracle's tokenizer and window; ``choose`` gives log-likelihoods from ``prefer``."""

    prefer = "true"

    def __init__(self, config, options, progress):
        from longctx._models import resolve_model
        from longctx._tokenizer import hf_tokenizer

        self.model = resolve_model(config.model, progress)
        self._tokenizer = hf_tokenizer(str(self.model.path))
        self.seen: list[str] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def tokenizer(self):
        return self._tokenizer

    def context_window(self) -> int | None:
        return self.model.context_window

    def identity(self) -> dict[str, Any]:
        return {"name": f"choice-{self.prefer}"}

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        raise AssertionError("a forced-choice sweep must not generate")

    def choose(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        for s in samples:
            n, right = len(s.choices.candidates), s.choices.correct
            if self.prefer == "true":
                logliks = [-1.0 if i == right else -5.0 - i for i in range(n)]
            elif self.prefer == "wrong":
                logliks = [-5.0 if i == right else -1.0 - i for i in range(n)]
            else:  # a tie between the true one and a distractor
                logliks = [-1.0 if i in (right, (right + 1) % n) else -5.0 for i in range(n)]
            yield choice_generation(s, logliks, [1] * n, prompt_tokens=s.context_tokens)


@runner("test-choice-true")
class PrefersTrue(_FakeChooser):
    prefer = "true"


@runner("test-choice-wrong")
class PrefersWrong(_FakeChooser):
    prefer = "wrong"


@runner("test-choice-tie")
class Ties(_FakeChooser):
    prefer = "tie"


def sweep(out: Path, runner_name: str, *extra: str, task: str = "ruler/niah_single_1"):
    args = ["sweep", "-t", task, "--lengths", "1k", "--depths", "0,100", "-n", "2", "--runner", runner_name,
            "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize(("runner_name", "expected"), [("test-choice-true", 1.0), ("test-choice-wrong", 0.0),
                                                       ("test-choice-tie", 0.0)])
def test_a_sweep_scores_by_forced_choice(tmp_path, default_model_path, runner_name, expected):
    out = tmp_path / "run"
    res = sweep(out, runner_name, "--scoring", "choice", "--choices", "3")
    assert res.exit_code == 0, res.output
    assert "(forced choice)" in res.output  # the summary table is the choice metric's
    got = rows(out)
    assert len(got) == 4
    for r in got:
        assert r["scoring"] == "choice" and r["scores"] == {CHOICE_METRIC: expected} and r["score"] == expected
        choice = r["extra"]["choice"]
        assert len(choice["candidates"]) == len(choice["logliks"]) == 4
        assert choice["candidates"][choice["correct"]] == " " + r["references"][0]
    identity = json.loads((out / "manifest.json").read_text())["identity"]
    assert identity["scoring"] == {"mode": "choice", "choices": 3}
    # the report keeps it apart: its own task label, never the task's generated-answer accuracy
    from longctx.reports.runs import load_runs

    (run,) = load_runs([out])
    assert {r.task for r in run.results} == {"ruler/niah_single_1 (forced choice)"}
    from longctx.reports.html import write_report

    html = write_report([run], tmp_path / "report.html").read_text()
    assert "ruler/niah_single_1 (forced choice)" in html


def test_choice_and_generate_runs_never_share_a_folder(tmp_path, default_model_path):
    out = tmp_path / "run"
    assert sweep(out, "test-choice-true", "--scoring", "choice").exit_code == 0
    again = sweep(out, "test-choice-true", "--scoring", "choice")
    assert again.exit_code == 0 and "0 new, 4 already done" in again.output
    resumed = CliRunner().invoke(cli, ["sweep", "--config", str(out)])  # config.yaml keeps the scoring
    assert resumed.exit_code == 0 and "0 new, 4 already done" in resumed.output, resumed.output
    for other in (["--scoring", "choice", "--choices", "2"], []):
        refused = sweep(out, "test-choice-true", *other)
        assert refused.exit_code == 2 and "different configuration" in refused.output
    generated = tmp_path / "generated"
    assert sweep(generated, "oracle").exit_code == 0
    manifest = json.loads((generated / "manifest.json").read_text())
    assert "scoring" not in manifest["identity"]  # generate runs keep the identity they always had
    assert sweep(generated, "oracle", "--scoring", "choice").exit_code == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--runner", "oracle", "--scoring", "choice"], "runner oracle cannot score candidates"),
    (["--scoring", "choice", "--chat-only"], "drop --chat-only"),
    (["--scoring", "choice", "--choices", "0"], "--choices must be at least 1"),
    (["--choices", "3"], "--choices needs --scoring choice"),
    (["-t", "ruler/niah_multivalue", "--scoring", "choice"], "ruler/niah_multivalue has no closed answer set"),
])
def test_refused_before_the_run_folder_is_opened(tmp_path, default_model_path, extra, message):
    out = tmp_path / "run"
    task = next((extra[i + 1] for i, a in enumerate(extra) if a == "-t"), "ruler/niah_single_1")
    extra = [a for i, a in enumerate(extra) if a != "-t" and (i == 0 or extra[i - 1] != "-t")]
    name = next((extra[i + 1] for i, a in enumerate(extra) if a == "--runner"), "test-choice-true")
    extra = [a for i, a in enumerate(extra) if a != "--runner" and (i == 0 or extra[i - 1] != "--runner")]
    res = sweep(out, name, *extra, task=task)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (out / "results.jsonl").exists() and not (out / "manifest.json").exists()


def test_longctx_score_refuses_forced_choice_results(tmp_path, default_model_path):
    out = tmp_path / "run"
    assert sweep(out, "test-choice-true", "--scoring", "choice").exit_code == 0
    res = CliRunner().invoke(cli, ["score", "--task", "ruler/niah_single_1", str(out / "results.jsonl")])
    assert res.exit_code == 2 and "forced-choice result" in res.output
