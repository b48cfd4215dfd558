"""End to end through a real vLLM server with the real default model (the session's server, and one
launched by a sweep and killed mid-way)."""

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

pytestmark = pytest.mark.slow


def test_niah_sweep_attached_to_real_vllm(vllm_server, tmp_path):
    out = tmp_path / "run"
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k,2k", "--depths", "0:100:3", "-n", "1",
            "--runner", "vllm", "--endpoint", vllm_server.endpoint, "--model", vllm_server.model_name,
            "-R", f"tokenizer={vllm_server.model_path}", "--out", str(out)]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        assert r["error"] is None, r["error"]
        assert r["prediction"]  # a real model answered
        assert r["prompt_tokens"] == r["context_tokens"]  # the engine saw exactly the planned tokens
        assert r["context_tokens"] + 128 <= r["length"]
        assert 0.0 <= r["score"] <= 1.0
    # samples sharing the haystack prefix ran back to back: the engine served some from its cache
    assert sum(r["cached_tokens"] or 0 for r in rows) > 0
    # the tiny model finds some needles at 1K-2K; it must not be a constant
    assert sum(r["score"] for r in rows) > 0, [r["prediction"] for r in rows]
    # resuming does nothing new
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "0 new, 6 already done" in again.output


def test_every_family_runs_through_real_vllm_and_reaches_the_report(vllm_server, tmp_path):
    data = __import__("pathlib").Path(__file__).parents[1] / "tasks" / "data"
    out = tmp_path / "families"
    args = ["sweep", "-t", "babilong/qa1", "-t", "longhealth/task2", "-t", "qasper",
            "--lengths", "2k", "--depths", "50", "-n", "1",
            "-O", "babilong:source=generate", "-O", f"babilong:facts_dir={data / 'babilong' / 'babi'}",
            "-O", f"babilong:background_dir={data / 'babilong' / 'background'}",
            "-O", f"longhealth:data_path={data / 'longhealth_synthetic.json'}",
            "-O", f"qasper:data_path={data / 'qasper_sample_small.json'}",
            "--runner", "vllm", "--endpoint", vllm_server.endpoint, "--model", vllm_server.model_name,
            "-R", f"tokenizer={vllm_server.model_path}", "--out", str(out)]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"babilong/qa1", "longhealth/task2", "qasper"}
    for r in rows:
        assert r["error"] is None, r["error"]
        assert r["prompt_tokens"] == r["context_tokens"]
        # evidence position recorded wherever there is evidence (an unanswerable QASPER question has none)
        assert (r["evidence_depth"] is not None) == bool(r["needle_positions"])
        assert 0.0 <= r["score"] <= 1.0
    assert all(r["needle_positions"] for r in rows if r["task"] != "qasper")
    report = tmp_path / "report.html"
    res = CliRunner().invoke(cli, ["report", str(out), "-o", str(report)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    html = report.read_text()
    for task in ("babilong/qa1", "longhealth/task2", "qasper"):
        assert task in html


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_killed_server_stops_the_sweep_and_a_rerun_fills_exactly_the_gaps(tmp_path, default_model_path):
    """A sweep that launched its own server (not the session's): the server is SIGKILLed mid-sweep;
    the sweep stops at once with the log's tail, records no error for what was in flight, and the
    same command (a fresh server) fills exactly the missing samples."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "longctx", "sweep", "-t", "ruler/niah_single_1", "--lengths", "1k,2k",
           "--depths", "0:100:11", "-n", "1", "--runner", "vllm", "--model", "default", "-c", "2",
           "-R", "max_model_len=2048", "-R", f"log_dir={tmp_path / 'logs'}", "--out", str(out)]
    planned = 22
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_bytes().splitlines()) >= 5:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    (server,) = [p for p in _children(proc.pid)
                 if "api_server" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    killed_at = time.time()
    os.killpg(server, signal.SIGKILL)  # the server and its engine core
    stdout, stderr = proc.communicate(timeout=120)
    assert time.time() - killed_at < 30
    assert proc.returncode == 3, (stdout, stderr)
    assert "Traceback" not in stderr
    assert "vLLM server died during the run" in stderr and "vllm-server.log" in stderr, stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert 5 <= len(rows) < planned
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows]
    assert f"{planned - len(rows)} pending" in stdout

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"{planned - len(rows)} new, {len(rows)} already done, {planned} planned" in again.stdout
    final = [json.loads(line) for line in results.read_text().splitlines()]
    counts = collections.Counter(r["sample_id"] for r in final)
    assert len(counts) == planned and set(counts.values()) == {1}
    assert all(r["error"] is None for r in final)
    assert final[: len(rows)] == rows  # nothing already scored was touched


def test_deterministic_sweep_gives_the_same_predictions_at_any_concurrency(tmp_path, default_model_path):
    """``--deterministic``: one sweep run twice (each launching its own vLLM server), at -c 1 and
    -c 4; every prediction is the same. A resume of the -c 4 folder at -c 2 is not refused."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    base = ["sweep", "-t", "ruler/niah_single_2", "--lengths", "1k,2k", "--depths", "0:100:3", "-n", "1",
            "--runner", "vllm", "--model", "default", "-R", "max_model_len=2048", "--deterministic"]
    preds = {}
    for c in ("1", "4"):
        out = tmp_path / f"c{c}"
        extra = ["--limit", "3"] if c == "4" else []
        res = CliRunner().invoke(cli, [*base, "-c", c, "--out", str(out), *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        if c == "4":  # the rest at another concurrency: same conditions under --deterministic
            res = CliRunner().invoke(cli, [*base, "-c", "2", "--out", str(out)], catch_exceptions=False)
            assert res.exit_code == 0, res.output
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 6 and all(r["error"] is None for r in rows)
        assert {r["conditions"]["dtype"] for r in rows} == {"float32"}
        assert {r["conditions"]["max_num_seqs"] for r in rows} == {1}
        preds[c] = {r["sample_id"]: r["prediction"] for r in rows}
    assert preds["1"] == preds["4"]
