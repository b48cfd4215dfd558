"""LongHealth tasks 1-3 on synthetic patients in the benchmark's schema (the real data is not
redistributed): context building, exact budgets, evidence positions, the authors' answer parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longctx._errors import LongctxError
from longctx._protocols import Grid
from longctx._registry import get_task
from longctx.tasks.longhealth import UNANSWERABLE, char_to_token, pack, parse_choice

FIXTURE = Path(__file__).parent / "data" / "longhealth_synthetic.json"
TASKS = ("longhealth/task1", "longhealth/task2", "longhealth/task3")
# The fixture's answer sentences (make_longhealth_fixture.py): every answer_location span starts one.
FACT_STARTS = ("Therapy with", "The patient was transferred", "The first symptoms", "A relapse")


def make(name: str, **options):
    return get_task(name, {"data_path": str(FIXTURE), **options})


# ---- the authors' answer parsing -------------------------------------------------------------------
def test_parse_choice_is_the_authors_regex():
    assert parse_choice("The correct answer is C: Acute bronchitis.") == "C"
    assert parse_choice("Hmm. The correct answer is B: x. The correct answer is D: y.") == "B"  # first match
    assert parse_choice("the correct answer is C: lower case") == ""  # case-sensitive
    assert parse_choice("The correct answer is C.") == ""  # the colon is required
    assert parse_choice("The correct answer is (C): x") == ""
    assert parse_choice(None) == ""


def test_scores_by_task():
    by_id = {name: {s.id: s for s in make(name).scoring_samples()} for name in TASKS}
    q = by_id["longhealth/task1"]["patient_01/0"]
    letter = q.metadata["answer_letter"]
    wrong = next(c for c in "ABCDE" if c != letter)
    score = make("longhealth/task1").scorer.score
    assert score(f"The correct answer is {letter}: whatever", q) == {
        "accuracy": 1.0,
        "abstention": 0.0,
        "answer_parsed": 1.0,
    }
    assert score(f"The correct answer is {wrong}: x", q)["accuracy"] == 0.0
    assert score(f"I think {letter}.", q) == {"accuracy": 0.0, "abstention": 0.0, "answer_parsed": 0.0}
    q2, q3 = by_id["longhealth/task2"]["patient_01/0"], by_id["longhealth/task3"]["patient_01/0"]
    assert q2.metadata["answer_letter"] == letter and q3.metadata["answer_letter"] == "F"
    assert q3.references == (f"F: {UNANSWERABLE}",)
    abstain = f"The correct answer is F: {UNANSWERABLE}."
    assert score(abstain, q2) == {"accuracy": 0.0, "abstention": 1.0, "answer_parsed": 1.0}
    assert score(abstain, q3) == {"accuracy": 1.0, "abstention": 1.0, "answer_parsed": 1.0}
    assert score(f"The correct answer is {letter}: x", q3)["accuracy"] == 0.0


def test_scoring_samples_use_patient_and_question_index_ids():
    samples = list(make("longhealth/task2").scoring_samples())
    assert [s.id for s in samples[:3]] == ["patient_01/0", "patient_01/1", "patient_01/2"]
    assert len(samples) == 12 and len({s.id for s in samples}) == 12
    raw = json.loads(FIXTURE.read_text())
    q = raw["patient_02"]["questions"][1]
    s = next(s for s in samples if s.id == "patient_02/1")
    letter = s.metadata["answer_letter"]
    assert q[f"answer_{letter.lower()}"] == q["correct"] and s.references == (f"{letter}: {q['correct']}",)


# ---- packing and positions ---------------------------------------------------------------------
def test_pack_takes_documents_until_one_does_not_fit_and_cuts_it():
    docs = [("a", [1] * 4), ("b", [2] * 3), ("c", [3] * 5)]
    # a(4) + sep(2) + b(3) = 9; c would need 2 + 5: 12 - 9 - 2 = 1 token of c is left
    assert pack(docs, 2, 12) == [("a", [1] * 4), ("b", [2] * 3), ("c", [3])]
    assert pack(docs, 2, 10) == [("a", [1] * 4), ("b", [2] * 3)]  # no room after the separator
    assert pack(docs, 2, 3) == [("a", [1] * 3)]  # even an answer document is cut to the budget
    assert pack(docs, 2, 100) == [(k, list(v)) for k, v in docs]


class CharTokenizer:
    """One token per character (exact offsets)."""

    name = "chars"

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def render_chat(self, messages):
        return "".join(f"<{m.role}>{m.content}</{m.role}>" for m in messages) + "<assistant>"


class WordTokenizer(CharTokenizer):
    """One token per space-prefixed word (ids index a vocabulary built on the fly)."""

    def __init__(self):
        self.vocab: list[str] = []

    def encode(self, text):
        import re

        out = []
        for piece in re.findall(r"\s*\S+|\s+", text):
            if piece not in self.vocab:
                self.vocab.append(piece)
            out.append(self.vocab.index(piece))
        return out

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_char_to_token_finds_the_token_holding_a_character():
    text = "alpha beta gamma"
    chars = CharTokenizer()
    assert [char_to_token(chars.encode(text), c, chars) for c in (0, 6, 15)] == [0, 6, 15]
    words = WordTokenizer()
    ids = words.encode(text)  # "alpha", " beta", " gamma"
    # chars 0-4 "alpha", 5-9 " beta", 10-15 " gamma"
    assert [char_to_token(ids, c, words) for c in (0, 4, 5, 9, 10, 15)] == [0, 0, 1, 1, 2, 2]


# ---- samples -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TASKS)
def test_samples_fill_the_budget_and_record_the_evidence(name, smol_tokenizer):
    task = make(name)
    grid = Grid(lengths=(1024, 2048, 4096), depths=(10.0, 90.0), samples=5, seed=11)
    samples = list(task.samples(grid, smol_tokenizer))
    assert len(samples) == 5 * 3 and len({s.id for s in samples}) == len(samples)
    assert not task.controls_depth
    raw = json.loads(FIXTURE.read_text())
    for s in samples:
        meta = s.metadata
        own = meta["patient_id"]
        assert s.task == name and s.depth is None
        assert s.context_tokens == len(s.prompt.token_ids)
        assert s.context_tokens + s.max_new_tokens <= s.length
        own_text = sum(len(smol_tokenizer.encode(t)) for t in raw[own]["texts"].values())
        if name != "longhealth/task1" or own_text > s.length:  # enough text: the budget is filled
            assert meta["fill"] >= 0.99 and meta["truncated_document"] is not None
        patients = {label.split("/")[0] for label in meta["documents"]}
        if name == "longhealth/task1":
            assert patients == {own}
        elif name == "longhealth/task2":
            # other patients' documents, unless the answer documents alone fill the budget
            assert own in patients and (len(patients) > 1 or meta["truncated_document"].startswith(own + "/"))
            assert {label for label in meta["documents"] if label.startswith(own + "/")} <= {
                f"{own}/{t}"
                for t in raw[own]["questions"][int(meta["question_id"].split("/")[1])]["answer_location"]
            }
        else:
            assert own not in patients
        if name == "longhealth/task3":
            assert s.needle_positions == () and s.evidence_depth is None and meta["answer_letter"] == "F"
            assert f"F: {UNANSWERABLE}" in s.prompt.text
            continue
        assert s.needle_positions == tuple(sorted(s.needle_positions)) and s.needle_positions
        assert all(0 < p < s.context_tokens for p in s.needle_positions)
        start, end = meta["context_span"]  # the documents, between the BEGIN/END DOCUMENTS lines
        assert smol_tokenizer.decode(s.prompt.token_ids[:start]).endswith("BEGIN DOCUMENTS--------------\n\n")
        assert smol_tokenizer.decode(s.prompt.token_ids[end:]).startswith("\n\n--------------END DOCUMENTS")
        assert s.evidence_depth == round(100 * (s.needle_positions[0] - start) / (end - start), 2)
        for start, end in meta["answer_spans"]:
            assert smol_tokenizer.decode(s.prompt.token_ids[start:end]).strip().startswith(FACT_STARTS)
        assert [a for a, _ in meta["answer_spans"]] == list(s.needle_positions)
        for start, end in meta["answer_documents"]:
            assert (
                smol_tokenizer.decode(s.prompt.token_ids[start:end])
                .lstrip()
                .startswith(("Discharge letter", "Outpatient report", "Transfer note"))
            )
        assert ("F: " + UNANSWERABLE in s.prompt.text) == (name == "longhealth/task2")


def test_oracle_scores_one_and_ids_are_stable(smol_tokenizer):
    grid = Grid(lengths=(1024, 2048), depths=(), samples=4, seed=5)
    for name in TASKS:
        task = make(name)
        samples = list(task.samples(grid, smol_tokenizer))
        assert all(task.scorer.score(s.metadata["oracle_prediction"], s)["accuracy"] == 1.0 for s in samples)
        again = list(make(name).samples(grid, smol_tokenizer))
        assert [s.prompt.token_ids for s in again] == [s.prompt.token_ids for s in samples]
    ids = {name: [s.id.split("|")[2] for s in make(name).samples(grid, smol_tokenizer)] for name in TASKS}
    assert ids["longhealth/task1"] == ids["longhealth/task2"] == ids["longhealth/task3"]  # same questions


def test_more_samples_than_questions_repeat_with_new_shuffles(smol_tokenizer):
    samples = list(
        make("longhealth/task1").samples(Grid(lengths=(4096,), depths=(), samples=14, seed=1), smol_tokenizer)
    )
    assert len(samples) == 14 and len({s.id for s in samples}) == 14
    repeats = [s for s in samples if s.id.endswith("|r1")]
    assert len(repeats) == 2
    for r in repeats:
        first = next(s for s in samples if s.id == r.id[: -len("|r1")])
        assert r.metadata["question_id"] == first.metadata["question_id"]
        assert sorted(r.metadata["documents"]) == sorted(first.metadata["documents"])  # all 4 fit at 4K


def test_max_distractors_caps_other_patients_documents(smol_tokenizer):
    task = make("longhealth/task3", max_distractors=2)
    for s in task.samples(Grid(lengths=(4096,), depths=(), samples=3), smol_tokenizer):
        assert len(s.metadata["documents"]) <= 2 and s.metadata["fill"] < 0.99


def test_without_system_prompt(smol_tokenizer):
    with_system = next(
        make("longhealth/task1").samples(Grid(lengths=(2048,), depths=(), samples=1), smol_tokenizer)
    )
    without = next(
        make("longhealth/task1", system_prompt="false").samples(
            Grid(lengths=(2048,), depths=(), samples=1), smol_tokenizer
        )
    )
    assert "detail-oriented assistant" in with_system.prompt.text
    assert "detail-oriented assistant" not in without.prompt.text


# ---- data errors ---------------------------------------------------------------------------------
def write(tmp_path, data) -> str:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return str(path)


def patient(question: dict) -> dict:
    q = {
        "No": 1,
        "question": "Q?",
        "answer_a": "alpha",
        "answer_b": "beta 5 mg",
        "answer_c": "gamma",
        "answer_d": "delta",
        "answer_e": "epsilon",
        "correct": "beta 5 mg",
        "answer_location": {"text_0": {"start": [0.1], "end": [0.2]}},
    }
    return {"texts": {"text_0": "some text " * 20}, "questions": [{**q, **question}]}


def authors_first_option(question: dict) -> str | None:
    """The rule of the authors' vLLM script (``get_correct_answer``), restated: walk the question's
    keys in order, skip keys not starting with "answer" or ending with "location", return the last
    character (upper-cased) of the first key whose raw text contains the raw ``correct`` text."""
    for key, value in question.items():
        if key.startswith("answer") and not key.endswith("location") and question["correct"] in value:
            return key[-1].upper()
    return None


def first_sample(tmp_path, question: dict, task: str = "longhealth/task1"):
    path = write(tmp_path, {"p1": patient(question), "p2": patient({})})
    return next(get_task(task, {"data_path": path}).scoring_samples())


@pytest.mark.parametrize(
    "question",
    [
        {},  # the option equal to `correct`
        {"correct": "beta"},  # contained in one option
        {"answer_a": "beta 5 mg daily"},  # contained in A, equal to B: the authors take A, not the exact B
        {"answer_b": "  beta 5 mg  "},  # surrounding whitespace in the option: still contained
        {"answer_a": "x", "answer_c": "beta 5 mg", "answer_e": "beta 5 mg"},  # B, C, E: the first, B
    ],
)
def test_the_answer_key_is_the_authors_first_containing_option(tmp_path, question):
    q = patient(question)["questions"][0]
    sample = first_sample(tmp_path, question)
    assert sample.metadata["answer_letter"] == authors_first_option(q)
    letter = sample.metadata["answer_letter"]
    assert sample.references == (f"{letter}: {q[f'answer_{letter.lower()}']}",)


def test_key_order_not_letter_order_decides_as_in_the_authors_loop(tmp_path):
    q = patient({"answer_c": "beta 5 mg x"})["questions"][0]
    reordered = {k: q[k] for k in ("No", "question", "answer_e", "answer_d", "answer_c", "answer_b", "answer_a")}
    reordered.update({k: v for k, v in q.items() if k not in reordered})
    path = write(tmp_path, {"p1": {**patient({}), "questions": [reordered]}, "p2": patient({})})
    sample = next(get_task("longhealth/task1", {"data_path": path}).scoring_samples())
    assert authors_first_option(reordered) == "C" and sample.metadata["answer_letter"] == "C"
    assert sample.metadata["answer_candidates"] == ["C", "B"]


def test_ambiguous_answer_keys_are_flagged(tmp_path):
    ambiguous = {"answer_a": "beta 5 mg daily", "answer_d": "beta 5 mg or more"}
    for task in ("longhealth/task1", "longhealth/task2"):
        meta = first_sample(tmp_path, ambiguous, task).metadata
        assert meta["answer_letter"] == "A"  # the vLLM script's choice; the TGI script's would be D
        assert meta["ambiguous_answer"] is True and meta["answer_candidates"] == ["A", "B", "D"]
    # task 3: the answer is F whatever the key, nothing to flag
    meta3 = first_sample(tmp_path, ambiguous, "longhealth/task3").metadata
    assert meta3["answer_letter"] == "F" and "ambiguous_answer" not in meta3
    assert "ambiguous_answer" not in first_sample(tmp_path, {}).metadata
    # sweep samples carry the flag too
    path = write(tmp_path, {"p1": patient(ambiguous), "p2": patient({})})
    grid = Grid(lengths=(40_000,), depths=(), samples=1)
    (sample,) = get_task("longhealth/task1", {"data_path": path}).samples(grid, CharTokenizer())
    assert sample.metadata["ambiguous_answer"] is True and sample.metadata["answer_candidates"] == ["A", "B", "D"]


def test_task2_counts_option_f_as_a_candidate_as_the_authors_set_answer_f_first(tmp_path):
    q = {"answer_b": "provided documents", "correct": "provided documents"}
    assert "ambiguous_answer" not in first_sample(tmp_path, q).metadata
    meta = first_sample(tmp_path, q, "longhealth/task2").metadata
    assert meta["answer_letter"] == "B" and meta["answer_candidates"] == ["B", "F"]


def test_correct_in_no_option_is_a_data_error(tmp_path):
    with pytest.raises(LongctxError, match="contained in none"):
        first_sample(tmp_path, {"correct": "zeta"})
    with pytest.raises(LongctxError, match="contained in none"):
        first_sample(tmp_path, {"correct": "beta 5 mg "})  # raw strings: the trailing space counts


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "p1": patient({"answer_location": {"text_9": {"start": [0.1], "end": [0.2]}}}),
                "p2": patient({}),
            },
            "unknown text",
        ),
        (
            {
                "p1": patient({"answer_location": {"text_0": {"start": [120], "end": [180]}}}),
                "p2": patient({}),
            },
            "fractions",
        ),
        ({"p1": {"texts": {"text_0": "x"}, "questions": [{"question": "Q?"}]}, "p2": patient({})}, "lacks"),
        ({"p1": patient({})}, "at least two patients"),
        (["not", "a", "mapping"], "not LongHealth"),
    ],
)
def test_bad_data_is_a_one_line_error(tmp_path, data, message):
    with pytest.raises(LongctxError, match=message):
        list(get_task("longhealth/task1", {"data_path": write(tmp_path, data)}).scoring_samples())


def test_missing_data_path_says_where_to_get_the_file(tmp_path):
    with pytest.raises(LongctxError, match="kbressem/LongHealth.*data_path"):
        list(get_task("longhealth/task2").scoring_samples())
    with pytest.raises(LongctxError, match="no such file"):
        list(get_task("longhealth/task2", {"data_path": str(tmp_path / "missing.json")}).scoring_samples())


def test_a_template_without_system_role_gets_a_one_line_error():
    class NoSystem(CharTokenizer):
        def render_chat(self, messages):
            if any(m.role == "system" for m in messages):
                raise ValueError("System role not supported")
            return super().render_chat(messages)

    grid = Grid(lengths=(40_000,), depths=(), samples=1)
    with pytest.raises(LongctxError, match="system_prompt=false"):
        list(make("longhealth/task1").samples(grid, NoSystem()))
    (sample,) = make("longhealth/task1", system_prompt="false").samples(grid, NoSystem())
    assert sample.prompt.text.startswith("<user>") and sample.context_tokens + 50 <= 40_000
