"""Forced-choice candidates attached by tasks (``Grid.choices``): same kind, reproducible, closed sets."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from longctx.tasks._babilong_metric import TASK_LABELS

from longctx._protocols import Grid
from longctx._records import Message
from longctx._registry import get_task

DATA = Path(__file__).parent / "data"
LONGHEALTH = {"data_path": str(DATA / "longhealth_synthetic.json")}
BABILONG = {"data_dir": str(DATA / "babilong" / "published")}


class CharTokenizer:
    """One token per character (fast, exact)."""

    name = "chars"

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))

    def render_chat(self, messages: Sequence[Message]) -> str:
        return "".join(f"<{m.role}>{m.content}</{m.role}>" for m in messages) + "<assistant>"


TOK = CharTokenizer()


def grid(k: int, lengths=(1024, 2048), depths=(0.0, 50.0, 100.0), n=3, seed=7) -> Grid:
    return Grid(lengths, depths, n, seed, choices=k)


def test_without_choices_in_the_grid_no_sample_carries_candidates():
    samples = list(get_task("ruler/niah_single_1").samples(grid(0), TOK))
    assert samples and all(s.choices is None for s in samples)


@pytest.mark.parametrize(("name", "kind"), [
    ("ruler/niah_single_1", r"\d{7}"), ("ruler/niah_single_2", r"\d{7}"), ("ruler/niah_multikey_1", r"\d{7}"),
    ("ruler/niah_multikey_2", r"\d{7}"), ("ruler/niah_single_3", "uuid"), ("ruler/niah_multikey_3", "uuid"),
])
def test_ruler_candidates_are_the_needle_and_k_distractors_of_its_kind(name, kind):
    task = get_task(name)
    samples = list(task.samples(grid(4), TOK))
    for s in samples:
        c = s.choices
        assert c is not None and len(c.candidates) == 5 and len(set(c.candidates)) == 5
        assert c.candidates[c.correct] == " " + s.references[0]
        needles = task.needles(7, s.metadata["index"])
        in_context = {v for values in needles.values for v in values}
        for i, cand in enumerate(c.candidates):
            assert cand.startswith(" ")
            value = cand[1:]
            if kind == "uuid":
                assert str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4
            else:
                assert re.fullmatch(kind, value)
            if i != c.correct:
                assert value not in in_context  # never another needle's value (multikey: 4 in the context)
    # one sample index: the same candidates at every length and depth; other indices other ones
    by_index = {}
    for s in samples:
        by_index.setdefault(s.metadata["index"], set()).add(s.choices)
    assert all(len(v) == 1 for v in by_index.values()) and len({next(iter(v)) for v in by_index.values()}) == 3
    # the true candidate is not always in the same place
    assert len({next(iter(v)).correct for v in by_index.values()} | {
        s.choices.correct for s in get_task(name).samples(grid(4, n=12, lengths=(1024,), depths=(50.0,)), TOK)}) > 1


def test_ruler_candidates_are_reproducible_and_follow_k_and_seed():
    a = [s.choices for s in get_task("ruler/niah_single_1").samples(grid(3), TOK)]
    b = [s.choices for s in get_task("ruler/niah_single_1").samples(grid(3), TOK)]
    assert a == b
    one = [s.choices for s in get_task("ruler/niah_single_1").samples(grid(1), TOK)]
    assert all(len(c.candidates) == 2 for c in one)
    other_seed = [s.choices for s in get_task("ruler/niah_single_1").samples(grid(3, seed=8), TOK)]
    assert other_seed != a


@pytest.mark.parametrize("name", ["ruler/niah_multivalue", "ruler/niah_multiquery"])
def test_ruler_variants_with_several_answers_have_no_closed_set(name):
    assert all(s.choices is None for s in get_task(name).samples(grid(3, lengths=(8192,), depths=(50.0,)), TOK))


@pytest.mark.parametrize(("name", "letters"), [("longhealth/task1", "ABCDE"), ("longhealth/task2", "ABCDEF"),
                                               ("longhealth/task3", "ABCDEF")])
def test_longhealth_candidates_are_the_answer_start_up_to_each_letter(name, letters):
    task = get_task(name, LONGHEALTH)
    samples = list(task.samples(Grid((4096,), (), 4, 5, choices=9), TOK))  # K does not apply: all options
    assert samples
    for s in samples:
        c = s.choices
        assert c.candidates == tuple(f"The correct answer is {x}:" for x in letters)
        right = "F" if name.endswith("3") else s.metadata["answer_letter"]
        assert c.candidates[c.correct] == f"The correct answer is {right}:"
        # the authors' parser reads the true candidate as the right letter
        assert task.scorer.score(c.candidates[c.correct] + " x.", s)["accuracy"] == 1.0
    assert all(s.choices is None for s in task.samples(Grid((4096,), (), 2, 5), TOK))


def test_babilong_qa1_candidates_are_the_answer_sentence_for_each_location():
    task = get_task("babilong/qa1", BABILONG)
    samples = list(task.samples(Grid((4000,), (), 3, 1, choices=2), TOK))
    assert samples
    for s in samples:
        c = s.choices
        person = re.fullmatch(r"Where is (\w+)\?", s.metadata["question"].strip()).group(1)
        assert c.candidates == tuple(f"The most recent location of {person} is {x}." for x in TASK_LABELS["qa1"])
        assert c.candidates[c.correct].endswith(f" {s.references[0]}.")
        assert task.scorer.score(c.candidates[c.correct], s)[task.scorer.metrics[0]] == 1.0
    bare = get_task("babilong/qa1", {**BABILONG, "chat_template": "false"})
    s = next(iter(bare.samples(Grid((4000,), (), 1, 1, choices=2), TOK)))
    assert all(cand.startswith("\nAnswer: The most recent location of ") for cand in s.choices.candidates)


def test_babilong_other_tasks_have_no_closed_set_here():
    task = get_task("babilong/qa2", BABILONG)
    assert all(s.choices is None for s in task.samples(Grid((4000,), (), 2, 1, choices=2), TOK))
