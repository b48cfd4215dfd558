"""``longctx compare`` through the real command group: the page, --json, one-line refusals."""

from __future__ import annotations

import json

import msgspec
from click.testing import CliRunner

from longctx.cli.main import cli

from .conftest import make_result, niah_results, rag_extra, write_sweep_run


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["compare", *args], catch_exceptions=False, terminal_width=200)


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_page_json_and_summary(tmp_path):
    a = write_sweep_run(tmp_path / "vllm", niah_results(1, model="model-a"))
    rag = [
        msgspec.structs.replace(r, runner="rag", extra=rag_extra(1.0 if r.score else 0.5, 700))
        for r in niah_results(2, model="model-a")
    ]
    b = write_sweep_run(tmp_path / "rag", rag)
    page, out = tmp_path / "out" / "compare.html", tmp_path / "out" / "compare.json"
    result = _invoke(str(a), str(b), "-o", str(page), "--json", str(out), "--threshold", "50")
    assert result.exit_code == 0, result.output
    assert page.is_file() and page.stat().st_size > 1_000_000  # plotly.js inlined
    assert result.output.strip().splitlines()[-2:] == [str(page.resolve()), str(out.resolve())]
    assert "vllm vs rag: equivalent samples" in result.output  # niah_results records no sample_hash
    assert "paired, all lengths" in result.output and "mcnemar" in result.output
    assert "runs: 1 = vllm, 2 = rag" in result.output  # paired rows name runs by these numbers
    assert max(len(line) for line in result.output.splitlines()[:-2]) <= 80  # fits a terminal

    data = json.loads(out.read_text())
    assert [r["label"] for r in data["runs"]] == ["vllm", "rag"]
    assert data["threshold"] == 50.0
    assert data["pairs"][0]["kind"] == "equivalent" and data["pairs"][0]["shared"] == 60
    tests = data["tests"]
    assert {t["length"] for t in tests} == {1024, 2048, 4096, None}
    for t in tests:  # the counts behind each test add up; errors are left out of the pairs
        assert t["both_right"] + t["only_a"] + t["only_b"] + t["both_wrong"] == t["pairs"]
        assert t["p_holm"] >= t["p_value"]
    overall = next(t for t in tests if t["length"] is None)
    assert overall["pairs"] + overall["errors_a"] == 60  # both runs error on every 17th sample
    assert {e["run"]: e["label"] for e in data["effective"]}.keys() == {"vllm", "rag"}
    rag_cost = next(c for c in data["costs"] if c["run"] == "rag" and c["length"] is None)
    assert rag_cost["retrieved_tokens"] == 700
    pooled = next(s for s in data["retrieval"] if s["length"] is None)
    assert (
        pooled["retrieval_miss"] + pooled["reading_miss"] + pooled["unknown"]
        == pooled["scored"] - pooled["right"]
    )
    assert pooled["reading_miss"] == 0  # every wrong answer here had recall 0.5


def test_json_matches_the_library(tmp_path):
    from longctx.reports.compare import compare_runs
    from longctx.reports.runs import load_runs

    a = write_sweep_run(tmp_path / "a", niah_results(1))
    b = write_sweep_run(tmp_path / "b", niah_results(3))
    out = tmp_path / "c.json"
    assert _invoke(str(a), str(b), "-o", str(tmp_path / "c.html"), "--json", str(out)).exit_code == 0
    expected = msgspec.to_builtins(compare_runs(load_runs([a, b])))
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected))


def test_other_references_refused_one_line(tmp_path):
    a = write_sweep_run(tmp_path / "a", niah_results(1))
    other = [msgspec.structs.replace(r, references=("1111111",)) for r in niah_results(1)]
    b = write_sweep_run(tmp_path / "b", other)
    line = _one_line_error(_invoke(str(a), str(b), "-o", str(tmp_path / "c.html")))
    assert "60 of 60 shared sample ids have other references" in line
    assert "ruler/niah_single_1-1024-0-0" in line
    assert not (tmp_path / "c.html").exists()


def test_no_shared_sample_refused_one_line(tmp_path):
    a = write_sweep_run(tmp_path / "a", niah_results(1))
    b = write_sweep_run(tmp_path / "b", niah_results(1, task="ruler/niah_single_2"))
    line = _one_line_error(_invoke(str(a), str(b), "-o", str(tmp_path / "c.html")))
    assert "share no sample" in line and "60 samples of ruler/niah_single_2" in line


def test_not_a_run_folder_one_line(tmp_path):
    a = write_sweep_run(tmp_path / "a", niah_results(1))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    line = _one_line_error(_invoke(str(a), str(empty), "-o", str(tmp_path / "c.html")))
    assert line == f"Error: not a run folder: {empty} has no manifest.json"
    line = _one_line_error(_invoke(str(a), str(tmp_path / "nope")))
    assert line == f"Error: no run folder at {tmp_path / 'nope'}"


def test_one_run_and_folder_output_refused(tmp_path):
    a = write_sweep_run(tmp_path / "a", niah_results(1))
    assert "at least two run folders" in _one_line_error(_invoke(str(a), "-o", str(tmp_path / "c.html")))
    b = write_sweep_run(tmp_path / "b", niah_results(2))
    assert "is a folder" in _one_line_error(_invoke(str(a), str(b), "-o", str(tmp_path)))


def test_bad_threshold_is_a_usage_error(tmp_path):
    result = _invoke(str(tmp_path), str(tmp_path), "--threshold", "120")
    assert result.exit_code == 2 and "threshold" in result.output


def test_errors_are_counted_not_paired(tmp_path):
    rows = [make_result(f"s{i}", score=1.0) for i in range(6)]
    errs = [
        make_result(f"s{i}", error="HTTP 500") if i < 2 else make_result(f"s{i}", score=0.0) for i in range(6)
    ]
    a, b = write_sweep_run(tmp_path / "a", rows), write_sweep_run(tmp_path / "b", errs)
    out = tmp_path / "c.json"
    assert _invoke(str(a), str(b), "-o", str(tmp_path / "c.html"), "--json", str(out)).exit_code == 0
    overall = next(t for t in json.loads(out.read_text())["tests"] if t["length"] is None)
    assert (overall["pairs"], overall["errors_a"], overall["errors_b"], overall["only_a"]) == (4, 0, 2, 4)
    assert overall["p_value"] == 2 / 16  # McNemar 4 vs 0: 2 * (1/2)^4
