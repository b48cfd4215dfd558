"""`longctx sweep --runner hope` with the shipped demo checkpoints, then one report of both runs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from longctx.cli.main import cli

pytest.importorskip("torch")


@pytest.mark.slow
def test_sweep_both_demo_checkpoints_and_report_them_together(tmp_path):
    runs = []
    for model in ("hope-demo", "transformer-demo"):
        out = tmp_path / model
        args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k,2k", "--depths", "50", "-n", "1",
                "-r", "hope", "-m", model, "-R", "threads=1", "-o", str(out)]
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert sorted(r["length"] for r in rows) == [1024, 2048]
        assert all(r["error"] is None and r["extra"]["state_bytes"] > 0 for r in rows)
        runs.append(out)
    report = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", *map(str, runs), "-o", str(report)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    html = report.read_text()
    assert "hope-demo" in html and "transformer-demo" in html
