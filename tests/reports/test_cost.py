"""USD per sample, per (run, length), per run and per (length, depth) cell, computed by hand on
constructed records; the report and the comparison page (and --json) show them with their prices."""

from __future__ import annotations

import json

import msgspec
import pytest
from click.testing import CliRunner
from longctx.reports.aggregate import depth_axes
from longctx.reports.compare import compare_runs
from longctx.reports.cost import cell_costs, costs, pricer
from longctx.reports.html import render_report
from longctx.reports.runs import load_runs

from longctx._prices import load_prices
from longctx.cli.main import cli

from .conftest import make_result, write_run

E = 1e-6  # one millionth of a dollar


@pytest.fixture(autouse=True)
def no_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def api_results(model: str = "gpt-x", runner: str = "vllm"):
    """Six samples over 2 lengths x 2 depths; USD by hand at $2 input, $0.5 cached, $8 output."""
    rlm = {"rlm": {"root_calls": 2, "sub_calls": 3, "prompt_tokens": 5000, "completion_tokens": 100}}
    rows = [
        # id, length, depth, prompt, cached, completion, error, extra -> USD
        ("s1", 1024, 0.0, 1000, 0, 10, None, {}),         # 1000*2 + 10*8 = 2080
        ("s2", 1024, 0.0, 1000, 600, 10, None, {}),       # 400*2 + 600*0.5 + 80 = 1180
        ("s3", 1024, 100.0, 1000, None, 20, None, {}),    # 1000*2 + 160 = 2160
        ("s4", 2048, 0.0, 2000, 1000, 0, None, {}),       # 1000*2 + 1000*0.5 = 2500
        ("s5", 2048, 100.0, None, None, None, "HTTP 500", {}),  # no usage: unknown
        ("s6", 2048, 100.0, 5000, None, 100, None, rlm),  # root + sub calls: 10000 + 800 = 10800
    ]
    out = []
    for sid, length, depth, prompt, cached, completion, error, extra in rows:
        r = make_result(sid, length=length, depth=depth, prompt_tokens=prompt, cached_tokens=cached,
                        error=error, model=model, runner=runner, extra=extra)
        out.append(msgspec.structs.replace(r, completion_tokens=completion))
    return out


@pytest.fixture
def price_file(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  gpt-x: {input: 2, cached_input: 0.5, output: 8, source: https://example.org/p, "
                    "read: 2026-11-30}\n")
    return path


@pytest.fixture
def folders(tmp_path):
    """The same samples on a priced API model, a local vLLM (0 USD) and an unpriced API model."""
    api = write_run(tmp_path / "api", api_results(), runner_config={"endpoint": "https://api.example.com/v1"})
    local = write_run(tmp_path / "local", api_results("smollm"), runner_config={"endpoint": None})
    other = write_run(tmp_path / "other", api_results("mystery"),
                      runner_config={"endpoint": "https://api.example.com/v1"})
    return api, local, other


def test_usd_per_sample_length_run_and_cell_by_hand(price_file):
    results = {"api": api_results()}
    priced = {"api": pricer(load_prices(price_file), local=False)}
    rows = {c.length: c for c in costs(results, priced)}
    assert rows[1024].usd_total == pytest.approx((2080 + 1180 + 2160) * E)
    assert rows[1024].usd_per_sample == pytest.approx((2080 + 1180 + 2160) / 3 * E)
    assert rows[1024].usd_unknown == 0
    assert rows[2048].usd_total == pytest.approx((2500 + 10800) * E)
    assert rows[2048].usd_per_sample == pytest.approx((2500 + 10800) / 2 * E)
    assert rows[2048].usd_unknown == 1  # the error without usage is not counted as free
    run = rows[None]
    assert run.usd_total == pytest.approx(18720 * E) and run.usd_per_sample == pytest.approx(18720 / 5 * E)
    (used,) = run.pricing
    assert (used.entry, used.origin, used.input, used.cached_input, used.output, used.read) == (
        "gpt-x", str(price_file), 2.0, 0.5, 8.0, "2026-11-30")
    assert run.unpriced == []

    cells = {(c.length, c.depth_bin): c for c in cell_costs(results, depth_axes(results), priced)}
    assert cells[(1024, 0.0)].usd_per_sample == pytest.approx(1630 * E)
    assert cells[(1024, 0.0)].usd_total == pytest.approx(3260 * E)
    assert cells[(1024, 100.0)].usd_per_sample == pytest.approx(2160 * E)
    assert cells[(2048, 0.0)].usd_per_sample == pytest.approx(2500 * E)
    assert cells[(2048, 100.0)].usd_per_sample == pytest.approx(10800 * E)
    assert (cells[(2048, 100.0)].samples, cells[(2048, 100.0)].usd_unknown) == (2, 1)


def test_cached_tokens_change_the_price():
    """Same tokens, twice the cached share: cheaper by exactly the cached discount."""
    table = load_prices(user=False)  # gpt-4o-mini: $0.15 input, $0.075 cached, $0.60 output
    base = make_result("a", prompt_tokens=10_000, cached_tokens=0, model="gpt-4o-mini")
    cached = make_result("a", prompt_tokens=10_000, cached_tokens=8_000, model="gpt-4o-mini")
    price = pricer(table)
    full, part = (costs({"r": [r]}, {"r": price})[0].usd_total for r in (base, cached))
    assert full == pytest.approx(10_000 * 0.15 * E)
    assert part == pytest.approx((2_000 * 0.15 + 8_000 * 0.075) * E)


def test_local_engine_is_free_and_unpriced_remote_has_no_usd(folders, price_file):
    comp = compare_runs(load_runs(folders), prices=load_prices(price_file))
    total = {c.run: c for c in comp.costs if c.length is None}
    assert total["api"].usd_total == pytest.approx(18720 * E)
    assert total["local"].usd_total == 0.0 and total["local"].pricing[0].label == "local engine (0 USD)"
    assert total["other"].usd_total is None and total["other"].unpriced == ["mystery"]
    assert total["other"].usd_unknown == 6
    assert comp.prices == f"prices from {price_file} over the default table (read 2026-12-02)"
    cell = next(c for c in comp.cell_costs if c.run == "api" and c.length == 1024 and c.depth_bin == 0.0)
    assert cell.usd_per_sample == pytest.approx(1630 * E)


def test_compare_json_and_page_show_usd_with_their_prices(folders, price_file, tmp_path):
    out, js = tmp_path / "c.html", tmp_path / "c.json"
    res = CliRunner().invoke(cli, ["compare", *map(str, folders), "-o", str(out), "--json", str(js),
                                   "--prices", str(price_file)])
    assert res.exit_code == 0, res.output
    data = json.loads(js.read_text())
    api = next(c for c in data["costs"] if c["run"] == "api" and c["length"] is None)
    assert api["usd_total"] == pytest.approx(18720 * E) and api["pricing"][0]["origin"] == str(price_file)
    assert api["pricing"][0]["source"] == "https://example.org/p"
    assert data["prices"].startswith(f"prices from {price_file}")
    assert any(c["run"] == "api" and c["usd_per_sample"] for c in data["cell_costs"])
    assert "USD" in res.output and "0.003744" in res.output  # the terminal table's USD per sample

    page = out.read_text()
    assert "<th>USD / sample</th>" in page and "<th>USD total</th>" in page
    assert "$0.003744" in page and "$0.0187<" in page  # per sample and total over all lengths
    assert f"gpt-x: gpt-x from {price_file} (read 2026-11-30): $2 input, $0.5 cached input" in page
    assert "smollm: local engine (0 USD)" in page
    assert "mystery: no price (add it to a price file" in page
    assert "api: USD per sample by depth and length" in page and "$0.001630" in page
    assert f"USD prices from {price_file} over the default table (read 2026-12-02)" in page
    assert "local: USD per sample by depth" not in page  # all $0: no table of zeros


def test_report_shows_usd_per_sample_run_and_cell(folders, price_file, tmp_path):
    page = render_report(load_runs([folders[0]]), prices=load_prices(price_file))
    assert "<th>USD / sample</th>" in page
    assert "$0.003744" in page and "$0.0187<" in page
    assert "$0.001807" in page  # 1024: (2080 + 1180 + 2160) / 3 = 1806.7 micro-dollars
    assert "$0.006650" in page and "1 unknown" in page  # 2048: two known samples, one unknown
    matrix = page.split("api: USD per sample by depth and length", 1)[1].split("</details>", 1)[0]
    assert "$0.001630" in matrix and "$0.002160" in matrix and "$0.002500" in matrix and ">$0.0108<" in matrix
    assert "USD</b> per sample is priced" in page  # the methods say how

    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", str(folders[0]), "-o", str(out), "--prices", str(price_file),
                                   "--no-table"])
    assert res.exit_code == 0, res.output
    assert "$0.003744" in out.read_text()
    plain = render_report(load_runs([folders[0]]))  # no price for gpt-x in the default table
    assert "<th>USD / sample</th>" not in plain and "gpt-x: no price" in plain


def test_python_api_takes_a_price_file(folders, price_file, tmp_path):
    import longctx

    page = longctx.report([folders[0]], tmp_path / "r.html", prices=price_file)
    assert "$0.003744" in page.read_text()
    comp = longctx.compare(list(folders), prices=price_file)
    api = next(c for c in comp.costs if c.run == "api" and c.length is None)
    assert api.usd_total == pytest.approx(18720 * E) and api.pricing[0].origin == str(price_file)
