"""``longctx sweep --max-cost-usd``: stops with exit code 5 before the folder's spend would pass the
cap, keeps what finished, resumes with a higher cap; refused (exit 2) for a model without a price."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import longctx
from longctx._errors import CostCapReached
from longctx.cli.main import cli

PRICE = 1000.0  # USD per million prompt tokens: a 1K sample costs about $1


@pytest.fixture(autouse=True)
def no_user_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def prices(tmp_path) -> Path:
    """The oracle runs on ``--model default``'s tokenizer; price that name like an API model."""
    path = tmp_path / "prices.yaml"
    path.write_text(f"models:\n  default: {{input: {PRICE}, output: {PRICE}}}\n")
    return path


def sweep(out: Path, *extra: str):
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:3", "-n", "2",
            "--runner", "oracle", "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]


def usd(row: dict) -> float:
    return row["prompt_tokens"] * PRICE / 1e6  # the oracle reports prompt tokens only


def test_cap_stops_with_exit_code_5_and_a_higher_cap_resumes(tmp_path, prices, default_model_path):
    out = tmp_path / "run"
    cap = 3.0
    first = sweep(out, "--max-cost-usd", str(cap), "--prices", str(prices))
    assert first.exit_code == 5, first.output
    rows = lines(out)
    spent = [sum(usd(r) for r in rows[: i + 1]) for i in range(len(rows))]
    # the rule, checked on what was recorded: after result i the sweep goes on while
    # spent + spent / i (the mean so far) stays within the cap, and stops at the first that does not
    k = len(rows)
    assert 1 <= k < 6
    assert all(spent[i] * (1 + 1 / (i + 1)) <= cap for i in range(k - 1))
    assert spent[-1] * (1 + 1 / k) > cap and spent[-1] <= cap
    assert f"would pass --max-cost-usd {cap:g}" in first.output
    summary = f"{k} new, 0 already done, 6 planned, {6 - k} pending, ${spent[-1]:.4f} spent by the folder"
    assert summary in first.output

    again = sweep(out, "--max-cost-usd", str(cap), "--prices", str(prices))  # still at the cap: nothing runs
    assert again.exit_code == 5, again.output
    assert "0 new" in again.output and len(lines(out)) == k
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sessions"][-1]["stopped"].startswith("the run folder spent $")
    assert "engine_ready_at" not in manifest["sessions"][-1]  # stopped before the engine started
    cost_cap = manifest["sessions"][-1]["cost_cap"]
    assert cost_cap["max_cost_usd"] == cap and cost_cap["spent_usd"] == pytest.approx(spent[-1])
    assert cost_cap["price"] == f"default from {prices}"

    with pytest.raises(CostCapReached):  # the Python API takes the same settings
        longctx.sweep(tasks="ruler/niah_single_1", lengths="1k", depths="0:100:3", samples=2, runner="oracle",
                      out=out, max_cost_usd=cap, prices=prices)
    outcome = longctx.sweep(tasks="ruler/niah_single_1", lengths="1k", depths="0:100:3", samples=2,
                            runner="oracle", out=out, max_cost_usd=100.0, prices=prices)
    assert outcome.new == 6 - k and outcome.pending == 0
    rows = lines(out)
    assert set(collections.Counter(r["sample_id"] for r in rows).values()) == {1} and len(rows) == 6
    assert outcome.spent_usd == pytest.approx(sum(usd(r) for r in rows))


def test_local_engine_costs_nothing_without_a_price(tmp_path, default_model_path):
    res = sweep(tmp_path / "run", "--max-cost-usd", "0.5")
    assert res.exit_code == 0, res.output
    assert "6 new" in res.output and "$0.0000 spent by the folder" in res.output


def test_cap_is_refused_for_a_model_without_price(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "longctx", "sweep", "-t", "ruler/niah_single_1", "--runner", "vllm",
         "--endpoint", "https://api.example.com/v1", "--model", "mystery-model", "--max-cost-usd", "5",
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "--max-cost-usd: no price for model 'mystery-model'" in line and "--prices FILE" in line
    assert not out.exists()


def test_negative_cap_is_refused(tmp_path):
    res = sweep(tmp_path / "run", "--max-cost-usd", "-1")
    assert res.exit_code == 2 and "--max-cost-usd must be 0 or more" in res.output
