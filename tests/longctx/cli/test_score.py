"""``longctx score``: CSV and JSONL predictions rescored with a task's scorer; bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from longctx._registry import get_task
from longctx.cli.main import cli
from longctx.cli.score import PANDAS_NA, csv_items, rescore

FIXTURES = Path(__file__).resolve().parents[2] / "tasks" / "data" / "babilong"
PUBLISHED = str(FIXTURES / "published")

CSV = """\
,target,output,question
0,kitchen,The most recent location of Mary is kitchen.,Where is Mary?
1,garden,"Mary is in the garden, John in the office.",Where is Mary?
2,office,,Where is John?
3,hallway,"hallway.
More text",Where is Sandra?
"""


def run(*args: str):
    return CliRunner().invoke(cli, ["score", *args])


def test_csv_table_and_json(tmp_path):
    path = tmp_path / "qa1_4k_instruction_yes.csv"
    path.write_text(CSV)
    table = run("--task", "babilong/qa1", str(path))
    assert table.exit_code == 0, table.output
    assert "accuracy" in table.output and "50.00" in table.output and "qa1_4k" in table.output
    out = run("--task", "babilong/qa1", "--json", str(path))
    result = json.loads(out.output)["results"][0]
    assert result["n"] == 4 and result["scores"]["accuracy"] == 0.5 and result["sums"]["accuracy"] == 2.0
    assert result["scores"]["target_mentioned"] == 0.75  # "garden" mentioned, but with a second label


def test_csv_with_the_pandas_index_header_and_missing_values(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(
        "Unnamed: 0,target,output,question\n0,none,None,How many objects is Mary carrying?\n"
        "1,two,two,How many objects is Mary carrying?\n\n"
    )
    items = list(csv_items(path, "babilong/qa7"))
    assert [p for p, _ in items] == ["", "two"]  # pandas reads "None" as missing -> ""
    assert items[1][1].metadata == {"question": "How many objects is Mary carrying?"}
    assert "None" in PANDAS_NA and "none" not in PANDAS_NA


def test_the_sweep_scorer_is_what_scores(tmp_path, monkeypatch):
    task = get_task("babilong/qa1")
    calls = []
    real = task.scorer.score
    monkeypatch.setattr(task.scorer, "score", lambda p, s: calls.append((p, s.references)) or real(p, s))
    path = tmp_path / "p.csv"
    path.write_text(CSV)
    rescore(task, path)
    assert calls[0] == ("The most recent location of Mary is kitchen.", ("kitchen",)) and len(calls) == 4


def test_jsonl_with_inline_references(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {
            "sample_id": "a",
            "prediction": "Mary is in the kitchen.",
            "references": ["kitchen"],
            "question": "Where is Mary?",
        },
        {"question_id": "b", "prediction": None, "references": "office"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = json.loads(run("--task", "babilong/qa1", "--json", str(path)).output)["results"][0]
    assert result["n"] == 2 and result["scores"]["accuracy"] == 0.5 and result["missing"] == 0


def test_jsonl_ids_resolve_through_scoring_samples(tmp_path):
    rows = json.loads((FIXTURES / "published" / "1k" / "qa2.json").read_text())
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"question_id": "qa2/1k/1", "prediction": rows[1]["target"]})
        + "\n"
        + json.dumps({"sample_id": "babilong/qa2|1k|i2", "prediction": "no idea"})
        + "\n"
    )
    args = ["--task", "babilong/qa2", "-O", f"data_dir={PUBLISHED}", "-O", "dataset_length=1k", "--json"]
    result = json.loads(run(*args, str(path)).output)["results"][0]
    assert (result["n"], result["scores"]["accuracy"], result["missing"]) == (2, 0.5, len(rows) - 2)
    zero = json.loads(run(*args, "--missing", "zero", str(path)).output)["results"][0]
    assert zero["n"] == len(rows) and zero["sums"]["accuracy"] == 1.0
    table = run(*args[:-1], str(path))
    assert (
        table.exit_code == 0 and f"{len(rows) - 2} samples of babilong/qa2 have no prediction" in table.output
    )


def test_a_run_folder_results_file_rescored_gives_the_sweep_scores(tmp_path):
    """results.jsonl lines (errors, other tasks, metadata under extra) score as the sweep scored them."""
    from longctx._protocols import Grid
    from longctx._records import Generation, encode
    from longctx._sweep import to_result

    class Chars:
        name = "chars"

        def encode(self, text):
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(map(chr, ids))

        def render_chat(self, messages):
            return "".join(m.content for m in messages)

    task = get_task("babilong/qa3", {"data_dir": PUBLISHED})
    other = get_task("babilong/qa4", {"data_dir": PUBLISHED})
    samples = list(task.samples(Grid((5000,), (), 4), Chars()))
    answers = [
        "Before the office the milk was in the " + samples[0].references[0],
        "no idea",
        "garden",
        "kitchen",
    ]
    results = [
        to_result(s, Generation(s.id, a), task, "x", "m") for s, a in zip(samples, answers, strict=True)
    ]
    error = to_result(samples[0], Generation(samples[0].id, None, error="timeout"), task, "x", "m")
    o = next(iter(other.samples(Grid((5000,), (), 1), Chars())))
    other_line = to_result(o, Generation(o.id, o.references[0]), other, "x", "m")
    path = tmp_path / "results.jsonl"
    # the error first, then its retry (how a resumed run writes it): the retry counts, the error not
    path.write_bytes(b"\n".join(encode(r) for r in [error, *results, other_line]) + b"\n")
    scored = rescore(task, path)
    assert (scored.n, scored.errors, scored.other_tasks, scored.duplicates) == (4, 0, 1, 0)
    assert scored.sums == {m: sum(r.scores[m] for r in results) for m in task.scorer.metrics}
    assert scored.warnings == []

    # an error as the last line of a sample is what counts (as the report's latest result)
    path.write_bytes(b"\n".join(encode(r) for r in [*results, error, other_line]) + b"\n")
    scored = rescore(task, path)
    assert (scored.n, scored.errors, scored.other_tasks, scored.duplicates) == (3, 1, 1, 1)
    assert scored.sums == {m: sum(r.scores[m] for r in results[1:]) for m in task.scorer.metrics}
    assert "replaced by a later error line" in scored.warnings[0]


def test_several_files_one_row_each(tmp_path):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(CSV)
    out = json.loads(
        run("--task", "babilong/qa1", "--json", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")).output
    )
    assert [r["n"] for r in out["results"]] == [4, 4]


@pytest.mark.parametrize(
    ("content", "suffix", "needle"),
    [
        ("a,b\n1,2\n", ".csv", "unknown column(s) 'a', 'b'"),
        (",target,question\n0,x,q\n", ".csv", "no target/output columns"),
        (",target,output\n0,x\n", ".csv", "2 fields, the header has 3"),
        ('{"prediction": "x"}\n', ".jsonl", "no sample_id or question_id"),
        ('{"sample_id": "x"}\n', ".jsonl", "no 'prediction'"),
        ('{"sample_id": "x", "prediction": "y"}\n', ".jsonl", "say which published length"),
        ("{not json\n", ".jsonl", "not valid JSON"),
        ("hello", ".txt", "unknown format .txt"),
    ],
)
def test_bad_files_are_user_errors(tmp_path, content, suffix, needle):
    path = tmp_path / f"p{suffix}"
    path.write_text(content)
    result = run("--task", "babilong/qa1", str(path))
    assert result.exit_code == 2 and needle in result.output, result.output


def test_a_file_of_unknown_ids_only_is_a_user_error_naming_them(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question_id": "qa1/1k/99", "prediction": "x"}\n')
    result = run("--task", "babilong/qa1", "-O", f"data_dir={PUBLISHED}", str(path))
    assert result.exit_code == 2, result.output
    assert "no predictions for babilong/qa1" in result.output and "'qa1/1k/99' (line 1)" in result.output


def test_errors_through_the_entry_point_are_one_line(tmp_path):
    def longctx(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "longctx", "score", *args], capture_output=True, text=True, timeout=120
        )

    for args, needle in [
        (("--task", "babilong/qa99", str(tmp_path / "x.csv")), "did you mean 'babilong/qa9'"),
        (("--task", "babilong/qa1", str(tmp_path / "missing.csv")), "missing.csv: no such file"),
    ]:
        proc = longctx(*args)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


# ---- QASPER: the official predictions file, corpus metrics, unknown and repeated ids ---------------
DATA = Path(__file__).resolve().parents[2] / "tasks" / "data"
QASPER_GOLD = str(DATA / "qasper_corpus_small.json")
OFFICIAL = DATA / "qasper_official_predictions.jsonl"
QASPER = ("--task", "qasper", "-O", f"data_path={QASPER_GOLD}")


def test_the_official_predictions_file_scores_as_the_official_evaluator(tmp_path):
    """qasper_official_predictions.jsonl against qasper_corpus_small.json (5 questions), by hand:
    q-extractive "seed lexicon method" vs "seed lexicon": P 2/3, R 1 -> 0.8, evidence [P0] = gold -> 1;
    q-abstractive "convolutional network" vs "small convolutional network": 0.8, evidence [P1] of
    [P1, P2]: P 1, R 1/2 -> 2/3; q-boolean-yes: lines "No" then "Yes", the last counts -> 1, evidence
    [] vs [P2] -> 0; q-none "Unanswerable" -> 1, [] vs [] -> 1; q-unknown is not a question (ignored);
    q-boolean-no has no line: 0 and 0 with --missing zero, in no type.
    Answer F1 = 3.6 / 5 = 0.72; by type 0.8, 0.8, boolean 1 (q-boolean-no counts nowhere), none 1;
    Evidence F1 = (1 + 2/3 + 0 + 1 + 0) / 5 = 8/15. (The official script prints these numbers for
    these two files.)"""
    result = run(*QASPER, "--missing", "zero", "--json", str(OFFICIAL))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["corpus_metrics"] == [
        "answer_f1",
        "answer_f1_extractive",
        "answer_f1_abstractive",
        "answer_f1_boolean",
        "answer_f1_none",
        "evidence_f1",
    ]
    (r,) = out["results"]
    assert (r["n"], r["missing"], r["ignored"], r["duplicates"]) == (5, 1, 1, 1)
    assert r["corpus"] == {
        "answer_f1": pytest.approx(0.72),
        "answer_f1_extractive": pytest.approx(0.8),
        "answer_f1_abstractive": pytest.approx(0.8),
        "answer_f1_boolean": 1.0,
        "answer_f1_none": 1.0,
        "evidence_f1": pytest.approx(8 / 15),
    }
    assert r["scores"]["answer_f1"] == pytest.approx(0.72)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and len(r["warnings"]) == 2
    assert "'q-unknown' (line 5)" in warnings[0] and "ignored" in warnings[0]
    assert "'q-boolean-yes' (lines 3, 6)" in warnings[1] and "last line" in warnings[1]


def test_corpus_metrics_are_the_official_replica_and_not_means_of_per_sample_scores():
    from longctx.tasks._qasper_metric import corpus_scores

    task = get_task("qasper", {"data_path": QASPER_GOLD})
    scored = rescore(task, OFFICIAL, "zero")
    gold = {s.id: s.metadata["qasper_references"] for s in task.scoring_samples()}
    predicted = {}
    for line in OFFICIAL.read_text().splitlines():  # the official script's reading: last line wins
        rec = json.loads(line)
        predicted[rec["question_id"]] = json.dumps(
            {"answer": rec["predicted_answer"], "evidence": rec["predicted_evidence"]}
        )
    official = corpus_scores(gold, predicted)
    assert scored.corpus["answer_f1"] == pytest.approx(official["Answer F1"])
    assert scored.corpus["evidence_f1"] == pytest.approx(official["Evidence F1"])
    for kind, value in official["Answer F1 by type"].items():
        assert scored.corpus[f"answer_f1_{kind}"] == pytest.approx(value)
    assert official["Missing predictions"] == scored.missing == 1

    # Means of the per-sample optional metrics are other numbers: the missing q-boolean-no scored
    # as "" gets a boolean 0 (official: no type), and the mean of evidence_f1 skips it (official: 0).
    per_sample = [task.scorer.score("", s) for s in task.scoring_samples() if s.id == "q-boolean-no"]
    per_sample += [
        task.scorer.score(predicted[s.id], s) for s in task.scoring_samples() if s.id in predicted
    ]
    boolean = [x["answer_f1_boolean"] for x in per_sample if "answer_f1_boolean" in x]
    evidence = [x["evidence_f1"] for x in per_sample if "evidence_f1" in x]
    assert sum(boolean) / len(boolean) == 0.5 != scored.corpus["answer_f1_boolean"]
    assert sum(evidence) / len(evidence) == pytest.approx(2 / 3) != scored.corpus["evidence_f1"]


def test_missing_skip_scores_the_predicted_questions_only():
    r = json.loads(run(*QASPER, "--json", str(OFFICIAL)).stdout)["results"][0]
    # the four predicted questions: answer 3.6 / 4, evidence (1 + 2/3 + 0 + 1) / 4
    assert r["n"] == 4 and r["missing"] == 1
    assert r["corpus"]["answer_f1"] == pytest.approx(0.9)
    assert r["corpus"]["evidence_f1"] == pytest.approx(2 / 3)


def test_plain_answers_have_no_evidence_f1_and_the_table_says_so(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(
        json.dumps({"question_id": "q-extractive", "prediction": "seed lexicon"})
        + "\n"
        + json.dumps({"question_id": "q-none", "prediction": "Unanswerable"})
        + "\n"
    )
    r = json.loads(run(*QASPER, "--json", str(path)).stdout)["results"][0]
    assert r["corpus"]["evidence_f1"] is None and r["corpus"]["answer_f1"] == 1.0
    assert r["corpus"]["answer_f1_abstractive"] is None  # no question of that type was predicted
    table = run(*QASPER, str(path))
    assert table.exit_code == 0 and "corpus metrics" in table.stdout
    row = next(line for line in table.stdout.splitlines() if "evidence_f1" in line)
    assert row.replace("│", " ").split() == ["evidence_f1", "-"]


def test_a_repeated_id_keeps_its_last_line(tmp_path):
    def score_of(*answers: str) -> float:
        path = tmp_path / "p.jsonl"
        path.write_text("".join(json.dumps({"question_id": "q-boolean-yes", "prediction": a}) + "\n" for a in answers))
        return json.loads(run(*QASPER, "--json", str(path)).stdout)["results"][0]["scores"]["answer_f1"]

    assert score_of("No", "Yes") == 1.0 and score_of("Yes", "No") == 0.0
    # lines with inline references (no lookup) follow the same rule
    path = tmp_path / "inline.jsonl"
    path.write_text(
        json.dumps({"sample_id": "a", "prediction": "garden", "references": ["kitchen"]})
        + "\n"
        + json.dumps({"sample_id": "a", "prediction": "kitchen", "references": ["kitchen"]})
        + "\n"
    )
    out = run("--task", "babilong/qa1", "--json", str(path))
    r = json.loads(out.stdout)["results"][0]
    assert (r["n"], r["duplicates"], r["scores"]["accuracy"]) == (1, 1, 1.0)
    assert "warning: " in out.stderr and "'a' (lines 1, 2)" in out.stderr


def test_unknown_ids_are_ignored_with_a_warning_and_the_library_prints_nothing(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"question_id": "q-none", "prediction": "Unanswerable"})
        + "\n"
        + json.dumps({"question_id": "not-a-question", "prediction": "x"})
        + "\n"
    )
    scored = rescore(get_task("qasper", {"data_path": QASPER_GOLD}), path)
    assert (scored.n, scored.ignored) == (1, 1) and "'not-a-question' (line 2)" in scored.warnings[0]
    assert capsys.readouterr() == ("", "")
    result = run(*QASPER, str(path))
    assert result.exit_code == 0 and "warning: " in result.stderr and "not-a-question" in result.stderr


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ({"question_id": "q-none", "predicted_answer": 3, "predicted_evidence": []}, "'predicted_answer' must"),
        ({"question_id": "q-none", "predicted_answer": "x", "predicted_evidence": "p"}, "list of paragraph"),
    ],
)
def test_bad_official_lines_are_user_errors(tmp_path, line, needle):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(line) + "\n")
    result = run(*QASPER, str(path))
    assert result.exit_code == 2 and needle in result.output, result.output
