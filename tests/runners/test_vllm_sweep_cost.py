"""USD of a sweep against the fake OpenAI server, from the usage the engine reported (prompt,
cached and completion tokens): the comparison numbers match the hand formula on the records, and
``--max-cost-usd`` stops with requests in flight (-c 2), then resumes."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from longctx._prices import load_prices
from longctx.cli.main import cli
from longctx.reports.cost import costs, pricers
from longctx.reports.runs import load_runs, results_by_run

from .conftest import FakeOpenAI

INPUT, CACHED, OUTPUT = 1000.0, 100.0, 2000.0  # USD per million tokens: about $1 a sample


@pytest.fixture(autouse=True)
def no_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def prices(tmp_path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(f"models:\n  fake-model: {{input: {INPUT}, cached_input: {CACHED}, output: {OUTPUT}}}\n")
    return path


def sweep(fake: FakeOpenAI, out: Path, model_path: Path, *extra: str):
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:3", "-n", "2",
            "--runner", "vllm", "--endpoint", fake.base_url, "--model", "fake-model",
            "-R", f"tokenizer={model_path}", "--retries", "1", "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]


def by_hand(r: dict) -> float:
    cached = r["cached_tokens"] or 0
    return ((r["prompt_tokens"] - cached) * INPUT + cached * CACHED + r["completion_tokens"] * OUTPUT) / 1e6


def test_usd_from_the_engines_usage(fake_openai, tmp_path, default_model_path, prices):
    fake_openai.cached_tokens = 300
    out = tmp_path / "run"
    assert sweep(fake_openai, out, default_model_path).exit_code == 0
    rows = lines(out)
    assert all(r["cached_tokens"] == 300 and r["completion_tokens"] > 0 for r in rows)
    runs = load_runs([out])
    priced = pricers(runs, load_prices(prices))
    (total,) = [c for c in costs(results_by_run(runs), priced) if c.length is None]
    assert total.usd_total == pytest.approx(sum(by_hand(r) for r in rows))
    assert total.usd_per_sample == pytest.approx(sum(by_hand(r) for r in rows) / len(rows))
    assert total.pricing[0].origin == str(prices)
    # the fake server is on this machine: without a price it is a local engine at 0 USD
    (free,) = [c for c in costs(results_by_run(runs), pricers(runs, load_prices())) if c.length is None]
    assert free.usd_total == 0.0 and free.pricing[0].entry is None


def test_cap_with_requests_in_flight_then_resume(fake_openai, tmp_path, default_model_path, prices):
    fake_openai.completion_delay_s = 0.05
    out = tmp_path / "run"
    cap = 2.5
    first = sweep(fake_openai, out, default_model_path, "-c", "2", "--max-cost-usd", str(cap),
                  "--prices", str(prices))
    assert first.exit_code == 5, first.output
    rows = lines(out)
    k = len(rows)
    spent = [sum(by_hand(r) for r in rows[: i + 1]) for i in range(k)]
    assert 1 <= k < 6 and spent[-1] * (1 + 1 / k) > cap
    assert all(spent[i] * (1 + 1 / (i + 1)) <= cap for i in range(k - 1))
    assert f"${spent[-1]:.4f} spent by the folder" in first.output

    final = sweep(fake_openai, out, default_model_path, "-c", "2", "--max-cost-usd", "100",
                  "--prices", str(prices))
    assert final.exit_code == 0, final.output
    rows = lines(out)
    assert len(rows) == 6 and set(collections.Counter(r["sample_id"] for r in rows).values()) == {1}
    assert f"${sum(by_hand(r) for r in rows):.4f} spent by the folder" in final.output
