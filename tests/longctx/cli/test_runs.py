"""``longctx runs``: run folders with their status, from manifests and result lines only."""

from __future__ import annotations

import fcntl
import json
import os

from click.testing import CliRunner

from longctx._records import Result
from longctx._runs import list_runs, run_status
from longctx._store import RunStore
from longctx.cli.main import cli


def result(i: int, error: str | None = None) -> Result:
    return Result(sample_id=f"s{i}", task="ruler/niah_single_1", runner="oracle", model="default",
                  length=1024, context_tokens=896, depth=50.0, needle_positions=(10,), evidence_depth=50.0,
                  prediction=None if error else "x", references=("x",), score=None if error else 1.0,
                  scores={} if error else {"m": 1.0}, error=error, latency_s=0.1, prompt_tokens=896,
                  cached_tokens=0)


def make_run(folder, planned: int, results: list[Result], **manifest) -> None:
    ident = {"tasks": ["ruler/niah_single_1", "ruler/niah_single_2"], "runner": "oracle", "model": "default"}
    with RunStore.open_for_write(folder, ident, {"planned": planned}) as store:
        for r in results:
            store.record(r)
        if manifest:
            store.update_manifest(**manifest)


def test_statuses(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "done", 3, [result(0), result(1, error="HTTP 500"), result(2)])
    make_run(root / "half", 4, [result(0), result(1)])
    make_run(root / "gone", 4, [result(0)], stopped="engine gone: connection refused")
    # a retried error: two lines, the last one scored
    make_run(root / "nested" / "retried", 1, [result(0, error="timeout"), result(0)])
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{")
    (root / "not-a-run").mkdir()

    by_name = {os.path.basename(r.path): r for r in list_runs(root)}
    assert set(by_name) == {"done", "half", "gone", "retried", "broken"}
    done = by_name["done"]
    assert (done.status, done.planned, done.recorded, done.errors, done.pending) == ("finished", 3, 3, 1, 0)
    assert done.tasks == ["ruler/niah_single_1", "ruler/niah_single_2"] and done.runner == "oracle"
    half = by_name["half"]
    assert (half.status, half.recorded, half.pending) == ("interrupted", 2, 2)
    gone = by_name["gone"]
    assert gone.status == "stopped" and gone.stopped.startswith("engine gone")
    retried = by_name["retried"]
    assert (retried.status, retried.lines, retried.recorded, retried.errors) == ("finished", 2, 1, 0)
    assert by_name["broken"].status == "corrupt" and "manifest.json" in by_name["broken"].problem


def test_a_held_lock_means_running(tmp_path):
    make_run(tmp_path / "r", 2, [result(0)])
    assert run_status(tmp_path / "r").status == "interrupted"
    fd = os.open(tmp_path / "r" / ".lock", os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a writing sweep holds
        assert run_status(tmp_path / "r").status == "running"
    finally:
        os.close(fd)
    assert run_status(tmp_path / "r").status == "interrupted"


def test_torn_tail_is_not_counted(tmp_path):
    make_run(tmp_path / "r", 3, [result(0), result(1)])
    with open(tmp_path / "r" / "results.jsonl", "ab") as fh:
        fh.write(b'{"sample_id": "s2", "task"')  # kill -9 mid-write
    status = run_status(tmp_path / "r")
    assert (status.recorded, status.lines, status.status) == (2, 2, "interrupted")


def test_cli_table_and_json(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "a-finished", 1, [result(0)])
    make_run(root / "b-half", 2, [result(0)])
    res = CliRunner().invoke(cli, ["runs", str(root)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "a-finished" in res.output and "finished" in res.output
    assert "b-half" in res.output and "interrupted" in res.output and "1/2" in res.output
    res = CliRunner().invoke(cli, ["runs", str(root), "--json"], catch_exceptions=False)
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert {r["path"].rsplit("/", 1)[-1]: (r["status"], r["pending"]) for r in rows} == {
        "a-finished": ("finished", 0), "b-half": ("interrupted", 1)}
    # a run folder itself, and an empty folder
    res = CliRunner().invoke(cli, ["runs", str(root / "b-half"), "--json"], catch_exceptions=False)
    assert len(res.output.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(cli, ["runs", str(tmp_path / "empty")], catch_exceptions=False)
    assert "no run folders" in res.output


def test_cli_defaults_to_runs_and_refuses_a_missing_folder(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "longctx", "runs"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "no folder runs" in proc.stderr and "Traceback" not in proc.stderr
    make_run(tmp_path / "runs" / "x", 1, [result(0)])
    proc = subprocess.run([sys.executable, "-m", "longctx", "runs", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["status"] == "finished"


def test_a_real_sweep_interrupted_then_finished(tmp_path, default_model_path):
    out = tmp_path / "runs" / "niah"
    args = ["sweep", "-t", "ruler/niah_single_1", "-l", "1k", "-d", "0,100", "-n", "2", "-r", "oracle",
            "--out", str(out)]
    assert CliRunner().invoke(cli, [*args, "--limit", "3"], catch_exceptions=False).exit_code == 0
    status = run_status(out)
    assert (status.status, status.planned, status.recorded) == ("interrupted", 4, 3)
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
    status = run_status(out)
    assert (status.status, status.recorded, status.model, status.tasks) == (
        "finished", 4, "default", ["ruler/niah_single_1"])


def test_resume_command(tmp_path):
    make_run(tmp_path / "a", 2, [result(0)], argv=["/venv/bin/longctx", "sweep", "-t", "ruler/niah_single_1",
                                                   "--out", "runs/my run"])
    assert run_status(tmp_path / "a").resume == "longctx sweep -t ruler/niah_single_1 --out 'runs/my run'"
    (tmp_path / "a" / "config.yaml").write_text("samples: 1\n")
    assert run_status(tmp_path / "a").resume == f"longctx sweep --config {tmp_path / 'a'}"
    make_run(tmp_path / "b", 2, [result(0)], argv=["ipykernel_launcher.py", "-f", "k.json"])
    assert run_status(tmp_path / "b").resume is None
    res = CliRunner().invoke(cli, ["runs", str(tmp_path)], catch_exceptions=False)
    assert f"resume a: longctx sweep --config {tmp_path / 'a'}" in res.output
