"""The comparison page: one self-contained file, heatmaps on one scale, recall next to rag accuracy,
cells linked to their side-by-side samples."""

from __future__ import annotations

import json
import re

import msgspec
import pytest
from plotly.offline import get_plotlyjs

from longctx.reports.compare_html import render_compare
from longctx.reports.runs import load_runs

from .conftest import make_result, niah_results, rag_extra, write_sweep_run


@pytest.fixture
def three_runs(tmp_path):
    """vLLM-like, HOPE-like (state_bytes) and rag runs of the same NIAH sweep, plus a graded task
    (F1-like) that only the first two have."""

    def qa(shift: int):
        return [
            make_result(
                f"qasper|2048|q{i}",
                task="qasper",
                length=2048,
                depth=None,
                evidence_depth=10.0 * i,
                score=[1.0, 0.5, 0.0][(i + shift) % 3],
                references=("yes",),
            )
            for i in range(9)
        ]

    a = niah_results(1, model="model-a") + qa(0)
    hope = [
        msgspec.structs.replace(r, runner="hope", extra={"state_bytes": 1 << 20}) for r in niah_results(2)
    ]
    hope += qa(1)
    rag = [
        msgspec.structs.replace(r, runner="rag", extra=rag_extra(1.0 if i % 4 else 0.0))
        for i, r in enumerate(niah_results(3))
    ]
    return [write_sweep_run(tmp_path / name, rs) for name, rs in (("vllm", a), ("hope", hope), ("rag", rag))]


@pytest.fixture
def page(three_runs):
    return render_compare(load_runs(three_runs))


def _figures(page_html: str) -> list[dict]:
    blob = re.search(r"<script type='application/json' id='figure-data'>(.*?)</script>", page_html, re.S)
    return json.loads(blob.group(1))


def test_self_contained_one_plotly(page):
    assert page.count(get_plotlyjs()[:120]) == 1
    assert page.count("<script") == 3
    rest = page.replace(get_plotlyjs(), "")
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)\s*=", rest, re.I)
    assert "http://" not in rest and "https://" not in rest
    assert "<script>alert(1)</script>" not in rest  # predictions are escaped


def test_heatmaps_share_one_scale_and_rag_has_recall(page):
    figs = _figures(page)
    heat = {f["id"]: f["figure"]["data"][0] for f in figs if f["kind"] == "heatmap"}
    niah_acc = [k for k in heat if k.startswith("heat-0-")]
    assert niah_acc == ["heat-0-0", "heat-0-1", "heat-0-2"]  # side by side: one per run
    assert all((t["zmin"], t["zmax"]) == (0, 1) for t in heat.values())
    assert list(k for k in heat if k.startswith("recall-")) == ["recall-0-2"]  # only the rag run
    recall = heat["recall-0-2"]
    assert recall["colorbar"]["title"]["text"] == "recall"
    assert "retrieval miss" in recall["customdata"][0][0][1]
    assert [k for k in heat if k.startswith("heat-1-")] == ["heat-1-0", "heat-1-1"]  # qasper: no rag run


def test_every_heatmap_anchor_opens_side_by_side_samples(page):
    figs = _figures(page)
    anchors = {
        cell[0]
        for f in figs
        if f["kind"] == "heatmap"
        for row in f["figure"]["data"][0]["customdata"]
        for cell in row
        if cell[0]
    }
    assert anchors
    for anchor in anchors:
        block = re.search(rf"<details class='cell' id='{anchor}'>(.*?)</details>", page, re.S)
        assert block, anchor
    # a side-by-side table has one column per run of the task, after sample and reference
    first = re.search(r"<table class='sbs'>.*?</table>", page, re.S).group(0)
    assert re.findall(r"<th>(.*?)</th>", first) == ["sample", "reference", "vllm", "hope", "rag"]


def test_tables_present(page):
    assert "Effective length" in page and "threshold 85.6%" in page
    assert "retrieval miss (recall &lt; 1)" in page and "reading miss (recall = 1)" in page
    assert "1.0 MiB" in page  # HOPE's memory state
    assert "McNemar 1947" in page and "Holm 1979" in page and "Efron &amp; Tibshirani 1993" in page
    assert ">bootstrap<" in page  # qasper's graded scores
    assert "equivalent" in page


def test_significant_rows_are_marked(tmp_path):
    a = [make_result(f"s{i}", score=1.0) for i in range(12)]
    b = [make_result(f"s{i}", score=0.0 if i < 11 else 1.0) for i in range(12)]
    page = render_compare(load_runs([write_sweep_run(tmp_path / "a", a), write_sweep_run(tmp_path / "b", b)]))
    # one length: the per-length and the all-lengths row are one test (p = 2 * 2^-11), counted once
    assert page.count("<tr class='sig'>") == 1 and page.count("<tr class='sig total'>") == 1
    assert page.count("<b>0.0010</b>") == 2


def test_side_by_side_summary_separates_wrong_answers_from_errors(tmp_path):
    a = [make_result("s0", score=0.0), make_result("s1", score=0.0), make_result("s2", score=1.0)]
    b = [make_result("s0", error="HTTP 500"), make_result("s1", score=1.0), make_result("s2", score=1.0)]
    page = render_compare(load_runs([write_sweep_run(tmp_path / "a", a), write_sweep_run(tmp_path / "b", b)]))
    assert "1K &middot; depth 50%: 2 samples failing in some run (a: 2 wrong; b: 1 error)" in page
