"""The HTML report: one self-contained file, one plotly.js, a heatmap per (run, task)."""

from __future__ import annotations

import json
import re

import pytest
from plotly.offline import get_plotlyjs

from longctx.reports.aggregate import cells, summarize
from longctx.reports.html import render_report, write_report
from longctx.reports.runs import load_runs, results_by_run

from .conftest import make_result, write_run


@pytest.fixture
def page(two_runs) -> tuple[str, list]:
    runs = load_runs(two_runs)
    return render_report(runs), runs


def _figures(page_html: str) -> list[dict]:
    blob = re.search(r"<script type='application/json' id='figure-data'>(.*?)</script>", page_html, re.S)
    return json.loads(blob.group(1))


def _without_plotly(page_html: str) -> str:
    return page_html.replace(get_plotlyjs(), "")


def test_plotly_js_inlined_exactly_once(page):
    page_html, _ = page
    banner = get_plotlyjs()[:120]
    assert page_html.count(banner) == 1
    assert page_html.count("<script") == 3  # figure data, plotly.js, page script


def test_no_external_references(page):
    page_html, _ = page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", page_html, re.I)
    rest = _without_plotly(page_html)
    assert "http://" not in rest and "https://" not in rest and "//cdn" not in rest


def test_one_heatmap_per_run_and_task_with_cell_values(page):
    page_html, runs = page
    figs = _figures(page_html)
    heatmaps = [f for f in figs if f["kind"] == "heatmap"]
    pairs = {(r.label, t) for r in runs for t in {x.task for x in r.results}}
    assert len(heatmaps) == len(pairs) == 3  # run-a: niah + babilong; run-b: niah
    curves = [f for f in figs if f["kind"] == "curve"]
    assert len(curves) == 2  # one per task
    niah_curve = next(f for f in curves if "niah" in f["figure"]["layout"]["title"]["text"])
    assert [t["name"] for t in niah_curve["figure"]["data"]] == ["run-a", "run-b"]

    # the first heatmap (niah, run-a) shows the cell accuracies computed by the aggregation layer
    trace = next(f for f in heatmaps if f["id"] == "heat-0-0")["figure"]["data"][0]
    assert trace["zmin"] == 0 and trace["zmax"] == 1
    assert trace["x"] == ["1K", "2K", "4K"] and trace["y"] == ["0%", "25%", "50%", "75%", "100%"]
    by_run = results_by_run(runs)
    for cell in cells(by_run):
        if cell.run == "run-a" and cell.task == "ruler/niah_single_1":
            z = trace["z"][trace["y"].index(f"{cell.depth_bin:g}%")][trace["x"].index(f"{cell.length // 1024}K")]
            assert z == pytest.approx(cell.stats.accuracy) if cell.stats.accuracy is not None else z is None


def test_heatmap_cells_link_to_existing_failure_sections(page):
    page_html, _ = page
    anchors = []
    for fig in _figures(page_html):
        if fig["kind"] == "heatmap":
            for row in fig["figure"]["data"][0]["customdata"]:
                anchors += [cell[0] for cell in row if cell[0]]
    assert anchors
    for anchor in anchors:
        assert f"<details class='cell' id='{anchor}'>" in page_html


def test_evidence_axis_for_tasks_without_requested_depth(page):
    page_html, _ = page
    babilong = next(f for f in _figures(page_html) if f["id"] == "heat-1-0")["figure"]
    assert babilong["layout"]["yaxis"]["title"]["text"] == "evidence position (decile of context)"
    assert set(babilong["data"][0]["y"]) <= {f"{d}-{d + 10}%" for d in range(0, 100, 10)}


def test_predictions_are_escaped_and_truncated(page):
    page_html, _ = page
    rest = _without_plotly(page_html)
    assert "<script>alert(1)</script>" not in rest
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rest
    assert "full prediction (440 chars)" in rest  # long prediction: full text one click away
    assert "engine died &lt;b&gt;bold&lt;/b&gt;" in rest


def test_trajectory_rendered_when_present(page):
    page_html, _ = page
    assert page_html.count("<details class='traj'><summary>trajectory (2 iterations)</summary>") > 0
    assert "FINAL(answer)" in page_html and "<dt>sub_calls</dt>" in page_html


def test_summary_table_shows_counts_interval_and_errors(page):
    page_html, runs = page
    niah_b = [r for r in runs[1].results if r.task == "ruler/niah_single_1"]
    s = summarize(niah_b)
    assert s.errors > 0
    row = (
        f"<tr class='total'><td class='l'>run-b</td><td class='l'>all</td><td>{s.n:,}</td><td>{s.scored:,}</td>"
        f"<td class='bad'>{s.errors:,}</td><td><b>{100 * s.accuracy:.1f}%</b></td>"
        f"<td>{100 * s.ci_low:.1f}% &ndash; {100 * s.ci_high:.1f}%</td>"
    )
    assert row in page_html


def test_failure_cap_per_cell(tmp_path):
    results = [make_result(f"s{i}", score=0.0) for i in range(7)]
    runs = load_runs([write_run(tmp_path / "r", results)])
    page_html = render_report(runs, max_failures_per_cell=3)
    assert page_html.count("<code>s") == 3
    assert "4 more failing samples not shown" in page_html


def test_empty_run_and_write(tmp_path):
    root = write_run(tmp_path / "empty", [])
    out = write_report(load_runs([root]), tmp_path / "sub" / "r.html", title="T <x>")
    text = out.read_text()
    assert out.is_absolute() and "no results yet" in text and "<title>T &lt;x&gt;</title>" in text


# ---- corpus metrics (QASPER) and ambiguous answer keys (LongHealth) ---------------------------------
def _qasper_run(tmp_path):
    """A QASPER run on tests/tasks/data/qasper_corpus_small.json scored by the real scorer: at 1K the
    oracle answers all five questions; at 2K the answers of qasper_official_predictions.jsonl (the
    last line per id) and a runner error for q-boolean-no."""
    from pathlib import Path

    import msgspec

    from longctx._records import Generation
    from longctx._registry import get_task
    from longctx._sweep import to_result

    data = Path(__file__).resolve().parents[1] / "tasks" / "data"
    task = get_task("qasper", {"data_path": str(data / "qasper_corpus_small.json")})
    official = {}
    for line in (data / "qasper_official_predictions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        official[rec["question_id"]] = json.dumps(
            {"answer": rec["predicted_answer"], "evidence": rec["predicted_evidence"]}
        )
    results = []
    for s in task.scoring_samples():
        for length in (1024, 2048):
            sample = msgspec.structs.replace(s, id=f"qasper|{length}|{s.id}", length=length)
            if length == 1024:
                gen = Generation(sample.id, s.metadata["oracle_prediction"])
            elif s.id in official:
                gen = Generation(sample.id, official[s.id])
            else:
                gen = Generation(sample.id, None, error="timeout")
            results.append(to_result(sample, gen, task, "vllm", "m"))
    return write_run(tmp_path / "qasper-run", results)


def _corpus_rows(page_html: str) -> list[list[str]]:
    table = re.search(r"<table class='data corpus'>(.*?)</table>", page_html, re.S).group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in rows]


def test_corpus_metrics_table_per_run_and_length(tmp_path):
    page_html = render_report(load_runs([_qasper_run(tmp_path)]))
    assert page_html.count("<h3>Corpus metrics</h3>") == 1
    head, *rows = _corpus_rows(page_html)
    assert head == ["run", "length", "n", "answer_f1", "answer_f1_extractive", "answer_f1_abstractive",
                    "answer_f1_boolean", "answer_f1_none", "evidence_f1"]
    # 1K: the oracle scores 1 everywhere. 2K (4 scored, the error left out): answers 0.8, 0.8, 1, 1
    # -> 3.6 / 4 = 90%; evidence 1, 2/3, 0, 1 -> 66.7%; boolean: q-boolean-yes only -> 100%.
    # All lengths (9 items): answers (5 + 3.6) / 9 = 95.6%; extractive (1 + 0.8) / 2 = 90%;
    # evidence (5 + 8/3) / 9 = 85.2%.
    assert rows == [
        ["qasper-run", "1K", "5", "100.0%", "100.0%", "100.0%", "100.0%", "100.0%", "100.0%"],
        ["qasper-run", "2K", "4", "90.0%", "80.0%", "80.0%", "100.0%", "100.0%", "66.7%"],
        ["qasper-run", "all", "9", "95.6%", "90.0%", "90.0%", "100.0%", "100.0%", "85.2%"],
    ]


def test_no_corpus_table_for_tasks_without_the_hook(page):
    page_html, _ = page
    assert "Corpus metrics" not in page_html and "Ambiguous answer keys" not in page_html


def test_ambiguous_answer_keys_are_counted_and_shown_on_the_failing_sample(tmp_path):
    flagged = {"metadata": {"answer_letter": "A", "ambiguous_answer": True, "answer_candidates": ["A", "D"]}}
    results = [
        make_result("lh|1", task="longhealth/task1", depth=None, evidence_depth=40.0, score=0.0,
                    prediction="The correct answer is D: x", references=("A: x",), extra=flagged),
        make_result("lh|2", task="longhealth/task1", depth=None, evidence_depth=60.0, score=0.0,
                    prediction="The correct answer is B: y", references=("C: y",)),
        make_result("lh|3", task="longhealth/task1", depth=None, evidence_depth=60.0, score=1.0,
                    prediction="The correct answer is C: y", references=("C: y",)),
    ]
    page_html = render_report(load_runs([write_run(tmp_path / "lh-run", results)]))
    assert "<h3>Ambiguous answer keys</h3>" in page_html
    assert "<li><b>lh-run</b>: <span class='warn'>1 of 3</span></li>" in page_html
    assert page_html.count("ambiguous answer key: A, D") == 1
    row = page_html[page_html.index("<code>lh|1</code>"):]
    assert row.index("ambiguous answer key: A, D") < row.index("</tr>")
    assert "Corpus metrics" not in page_html  # LongHealth's scorer has no corpus hook


def test_mixed_run_retried_sample_and_cell_errors_are_shown(tmp_path):
    import msgspec

    ok = make_result("s|L1024|D50|0")
    retried = msgspec.structs.replace(make_result("s|L1024|D50|1", score=0.0, prediction="42"), attempts=2,
                                      previous_error="ConnectTimeout x")  # failing: listed with its history
    failed = make_result("s|L1024|D50|2", error="HTTP 400: context overflow", prediction=None)
    ok = msgspec.structs.replace(ok, conditions={"concurrency": 1})
    retried = msgspec.structs.replace(retried, conditions={"concurrency": 4})
    runs = load_runs([write_run(tmp_path / "mixed", [ok, retried, failed])])
    page_html = render_report(runs)
    assert "mixed: concurrency 1, 4" in page_html
    assert "attempt 2, earlier error: ConnectTimeout x" in page_html
    heat = next(f for f in _figures(page_html) if f["kind"] == "heatmap")["figure"]["data"][0]
    assert "50 +1err" in [t for row in heat["text"] for t in row]

    clean = load_runs([write_run(tmp_path / "clean", [make_result("s|L1024|D50|0")])])
    clean_html = render_report(clean)
    assert "mixed:" not in clean_html and "earlier error" not in clean_html
