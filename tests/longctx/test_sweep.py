"""Sweeps end to end with the oracle: 100%, resume, exactly-once after kill -9."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from longctx.cli.main import cli

HERE = Path(__file__).parent


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line]


NIAH = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery"]


@pytest.mark.parametrize("variant", NIAH)
def test_oracle_scores_100_on_every_variant_1k_to_8k(variant, tmp_path, default_model_path):
    out = tmp_path / "run"
    res = run_cli("sweep", "-t", f"ruler/{variant}", "--lengths", "1k,2k,4k,8k", "--depths", "0:100:3",
                  "-n", "2", "--runner", "oracle", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = results(out)
    assert len(rows) == 4 * 3 * 2
    assert all(r["score"] == 1.0 and r["error"] is None for r in rows)
    assert {r["length"] for r in rows} == {1024, 2048, 4096, 8192}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["identity"]["tasks"] == [f"ruler/{variant}"]
    assert manifest["planned"] == 24 and manifest["recorded"] == 24
    for key in ("versions", "git_sha", "tokenizer", "model_identity", "created_at"):
        assert key in manifest


def test_rerun_resumes_without_duplicates(tmp_path, default_model_path):
    out = tmp_path / "run"
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k,2k", "--depths", "0:100:3", "-n", "2",
            "--runner", "oracle", "--out", str(out)]
    assert run_cli(*args, "--limit", "5").exit_code == 0
    assert len(results(out)) == 5
    res = run_cli(*args)
    assert "7 new, 5 already done, 12 planned" in res.output
    again = run_cli(*args)
    assert "0 new, 12 already done" in again.output
    ids = [r["sample_id"] for r in results(out)]
    assert len(ids) == len(set(ids)) == 12


def test_reusing_a_folder_with_another_config_is_refused(tmp_path, default_model_path):
    out = tmp_path / "run"
    base = ["sweep", "-t", "ruler/niah_single_1", "--depths", "50", "-n", "1", "--runner", "oracle", "--out", str(out)]
    assert run_cli(*base, "--lengths", "1k").exit_code == 0
    res = CliRunner().invoke(cli, [*base, "--lengths", "2k"])
    assert res.exit_code == 2
    assert "different configuration (grid.lengths ([1024] -> [2048]))" in res.output


def test_kill_9_then_rerun_gives_every_sample_exactly_once(tmp_path, default_model_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(HERE / "slow_oracle_cli.py"), "sweep", "-t", "ruler/niah_single_1",
           "--lengths", "1k,2k", "--depths", "0:100:5", "-n", "4", "--runner", "slow-oracle", "--out", str(out)]
    planned = 2 * 5 * 4
    killed_at = []
    for delay in (1.0, 1.5):  # kill twice at different moments
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until some results exist, then kill mid-run
            if (out / "results.jsonl").exists() and (out / "results.jsonl").stat().st_size > 0:
                break
            time.sleep(0.05)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at.append(len(results(out)))
    assert 0 < killed_at[0] < planned and killed_at[1] < planned
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = collections.Counter(r["sample_id"] for r in results(out))
    assert len(counts) == planned and set(counts.values()) == {1}


def test_kill_9_loses_nothing_reported_and_the_resume_adds_no_duplicate(tmp_path, default_model_path):
    """Group commit: fsync is batched, but every result the store reported is already in the OS's
    page cache, which a killed process does not take with it."""
    out = tmp_path / "run"
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:5", "-n", "60",
            "--runner", "oracle", "--out", str(out)]
    planned = 5 * 60
    proc = subprocess.Popen([sys.executable, str(HERE / "reporting_sweep.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "REPORTING_SWEEP_DELAY": "0.02"})
    assert proc.stdout is not None
    reported = []
    for line in proc.stdout:  # kill once 40 results were reported, well before the end
        reported.append(line.strip())
        if len(reported) == 40:
            os.kill(proc.pid, signal.SIGKILL)
            break
    reported += [line.strip() for line in proc.stdout]  # printed before the kill, still in the pipe
    assert proc.wait() == -signal.SIGKILL
    on_disk = [r["sample_id"] for r in results(out)]
    assert set(reported) <= set(on_disk) and len(on_disk) < planned
    assert len(on_disk) == len(set(on_disk))
    res = run_cli(*args)
    assert res.exit_code == 0, res.output
    assert f"{planned - len(on_disk)} new, {len(on_disk)} already done, {planned} planned" in res.output
    counts = collections.Counter(r["sample_id"] for r in results(out))
    assert len(counts) == planned and set(counts.values()) == {1}


def test_scoped_task_options():
    from longctx._sweep import options_for

    opts = {"seed_text": "a", "babilong:data_dir": "D", "ruler/niah_single_2:haystack_dir": "H", "qasper:x": "q"}
    assert options_for("babilong/qa1", opts) == {"seed_text": "a", "data_dir": "D"}
    assert options_for("ruler/niah_single_2", opts) == {"seed_text": "a", "haystack_dir": "H"}
    assert options_for("ruler/niah_single_1", opts) == {"seed_text": "a"}


def test_mixed_family_sweep_with_scoped_options(tmp_path, default_model_path):
    data = HERE.parent / "tasks" / "data"
    out = tmp_path / "run"
    res = run_cli("sweep", "-t", "ruler/niah_single_1", "-t", "qasper", "--lengths", "1k", "--depths", "50", "-n", "1",
                  "-O", f"qasper:data_path={data / 'qasper_sample_small.json'}", "--runner", "oracle", "--out", str(out))
    assert res.exit_code == 0, res.output
    rows = results(out)
    assert {r["task"] for r in rows} == {"ruler/niah_single_1", "qasper"}
    assert all(r["score"] == 1.0 for r in rows)
