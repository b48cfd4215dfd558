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
    results.append(to_result(samples[0], Generation(samples[0].id, None, error="timeout"), task, "x", "m"))
    o = next(iter(other.samples(Grid((5000,), (), 1), Chars())))
    results.append(to_result(o, Generation(o.id, o.references[0]), other, "x", "m"))
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"\n".join(encode(r) for r in results) + b"\n")

    scored = rescore(task, path)
    assert (scored.n, scored.errors, scored.other_tasks) == (4, 1, 1)
    assert scored.sums == {m: sum(r.scores[m] for r in results[:4]) for m in task.scorer.metrics}


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
