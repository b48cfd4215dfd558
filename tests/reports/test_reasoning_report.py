"""The HTML report of a reasoning model's run: each failing sample's thinking, collapsed, with its
token count and whether the thinking budget cut it; runs without thinking show none."""

from __future__ import annotations

import re

from longctx.reports.html import THINKING_CHARS, render_report
from longctx.reports.runs import load_runs

from .conftest import make_result, write_run


def _with_thinking(result, thinking: str | None, tokens: int | None, truncated: bool):
    result.thinking, result.thinking_tokens, result.thinking_truncated = thinking, tokens, truncated
    return result


def _thinking_blocks(page: str) -> list[str]:
    return re.findall(r"<details class='thinking'>.*?</details>", page, re.S)


def test_failing_samples_show_their_thinking_collapsed(tmp_path):
    results = [
        _with_thinking(make_result("ok", score=1.0), "the needle is 1234567", 12, False),
        _with_thinking(make_result("cut", score=0.0, prediction="I do not know."),
                       "let me <b>look</b> ... the needle might be 1234567", 2048, True),
        _with_thinking(make_result("closed", score=0.0, prediction="42", depth=0.0), "it is 42", 5, False),
        make_result("plain", score=0.0, prediction="7", depth=100.0),
    ]
    page = render_report(load_runs([write_run(tmp_path / "run", results)]))
    blocks = _thinking_blocks(page)
    assert len(blocks) == 2  # the two failing samples that thought; the passing one is not listed
    cut = next(b for b in blocks if "might be" in b)
    assert "thinking (2,048 tokens, <span class='warn'>cut by the thinking budget</span>), not scored" in cut
    assert "&lt;b&gt;look&lt;/b&gt;" in cut and "<b>look</b>" not in cut  # escaped
    closed = next(b for b in blocks if "it is 42" in b)
    assert "thinking (5 tokens), not scored" in closed and "cut by" not in closed
    row = re.search(r"<tr><td><code>plain</code>.*?</tr>", page, re.S).group(0)
    assert "class='thinking'" not in row


def test_long_thinking_is_cut_in_the_page(tmp_path):
    long = "w " * THINKING_CHARS
    results = [_with_thinking(make_result("long", score=0.0, prediction="?"), long, None, False)]
    page = render_report(load_runs([write_run(tmp_path / "run", results)]))
    (block,) = _thinking_blocks(page)
    assert f"thinking ({len(long):,} chars), not scored" in block
    assert f"({len(long) - THINKING_CHARS:,} chars cut; all in results.jsonl)" in block


def test_a_run_without_thinking_has_no_thinking_blocks(tmp_path):
    results = [make_result("a", score=0.0, prediction="x"), make_result("b", score=1.0)]
    page = render_report(load_runs([write_run(tmp_path / "run", results)]))
    assert _thinking_blocks(page) == []
