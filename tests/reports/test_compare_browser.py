"""The comparison page in real headless Chromium (Debian's ``chromium``), offline.

Same skip / require logic as ``test_browser.py``: skipped without chromium or playwright unless
``LONGCTX_REQUIRE_BROWSER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from longctx.reports.compare_html import write_compare
from longctx.reports.runs import load_runs

from . import test_browser as browser
from .conftest import niah_results, rag_extra, write_sweep_run

pytestmark = pytest.mark.slow


def test_compare_page_in_headless_chromium(tmp_path: Path):
    chromium = browser._chromium()
    from playwright.sync_api import sync_playwright

    a = write_sweep_run(tmp_path / "vllm", niah_results(1, model="model-a"))
    hope = [msgspec.structs.replace(r, runner="hope", extra={"state_bytes": 4096}) for r in niah_results(2)]
    rag = [
        msgspec.structs.replace(r, runner="rag", extra=rag_extra(1.0 if r.score else 0.0))
        for r in niah_results(3)
    ]
    runs = [a, write_sweep_run(tmp_path / "hope", hope), write_sweep_run(tmp_path / "rag", rag)]
    page_path = write_compare(load_runs(runs), tmp_path / "compare.html")
    figures = json.loads(re.search(r"id='figure-data'>(.*?)</script>", page_path.read_text(), re.S).group(1))
    # a cell of the second run's heatmap that links to side-by-side samples
    trace = next(f for f in figures if f["id"] == "heat-0-1")["figure"]["data"][0]
    row, col, anchor = next(
        (i, j, cell[0]) for i, r in enumerate(trace["customdata"]) for j, cell in enumerate(r) if cell[0]
    )

    console_errors: list[str] = []
    outside: list[str] = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=browser.CHROMIUM_FLAGS)
        try:
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on("pageerror", lambda e: console_errors.append(f"page error: {e}"))

            def offline(route):
                if route.request.url.startswith(("file:", "data:", "blob:")):
                    return route.continue_()
                outside.append(route.request.url)
                return route.abort()

            page.route("**/*", offline)
            page.goto(page_path.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {len(figures)}",
                timeout=60_000,
            )
            # every figure drew: three accuracy heatmaps, the rag run's recall, curves for 3 runs / 3 pairs
            for fig_id in ("heat-0-0", "heat-0-1", "heat-0-2", "recall-0-2"):
                assert page.locator(f"#{fig_id} .hm image, #{fig_id} .heatmaplayer image").count() >= 1, (
                    fig_id
                )
            assert page.locator("#curve-0 .scatterlayer .trace").count() == 3
            assert page.locator("#diff-0 .scatterlayer .trace").count() == 3
            page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

            # clicking the heatmap cell opens that cell's samples, side by side, scrolled into view
            target = page.locator(f"#{anchor}")
            assert not target.evaluate("el => el.open")
            page.locator("#heat-0-1").scroll_into_view_if_needed()
            box = page.locator("#heat-0-1 .nsewdrag").first.bounding_box()
            n_rows, n_cols = len(trace["y"]), len(trace["x"])
            page.mouse.click(
                box["x"] + (col + 0.5) * box["width"] / n_cols,
                box["y"] + (row + 0.5) * box["height"] / n_rows,
            )
            page.wait_for_function(f"document.getElementById('{anchor}').open", timeout=5_000)
            assert page.evaluate("location.hash") == f"#{anchor}"
            assert 0 <= target.evaluate("el => el.getBoundingClientRect().top") < 1000
            summary = target.locator("summary").first.inner_text()
            assert summary.startswith(f"{trace['x'][col]} · depth {trace['y'][row]}")
            header = target.locator("table.sbs tr").first.locator("th").all_inner_texts()
            assert header == ["sample", "reference", "vllm", "hope", "rag"]
            first = target.locator("table.sbs tr").nth(1).locator("td")
            assert first.count() == 5 and first.nth(1).inner_text().strip() == "7654321"
            assert target.locator("table.sbs td.fail").count() >= 1  # some run failed each row shown

            # the full text of a cut prediction is one click away, escaped
            full = target.locator("details:has(> summary:text-matches('full prediction'))").first
            full.locator("summary").click()
            assert "<script>alert(1)</script>" in full.locator("pre").inner_text()

            # the recall heatmap links to the same samples
            rtrace = next(f for f in figures if f["id"] == "recall-0-2")["figure"]["data"][0]
            assert rtrace["customdata"][row][col][0] == anchor
        finally:
            b.close()

    assert console_errors == []
    assert outside == []
