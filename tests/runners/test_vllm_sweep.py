"""``longctx sweep --runner vllm --endpoint`` against the fake OpenAI server (fast): per-sample
failures are recorded and retried by a rerun, a server that goes away stops the sweep with nothing
recorded for what was in flight, and ``--max-errors`` ends a sweep that fails too often."""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from longctx.cli.main import cli

from .conftest import FakeOpenAI

PLANNED = 6  # 1 length x 3 depths x 2 samples


def sweep(fake: FakeOpenAI, out: Path, model_path: Path, *extra: str, concurrency: int = 1):
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:3", "-n", "2",
            "--runner", "vllm", "--endpoint", fake.base_url, "--model", "fake-model",
            "-R", f"tokenizer={model_path}", "--retries", "1", "-c", str(concurrency), "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]


def last_per_sample(out: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for r in lines(out)}


def test_rerun_retries_per_sample_errors_and_keeps_their_history(fake_openai, tmp_path, default_model_path):
    out = tmp_path / "run"
    msg = "This model's maximum context length is 4096 tokens."
    fake_openai.push(status=400, body={"error": {"message": msg}}, times=2)
    first = sweep(fake_openai, out, default_model_path)
    assert first.exit_code == 0, first.output
    assert "6 new, 0 already done, 6 planned, 2 errors, 2 pending" in first.output
    failed = {r["sample_id"] for r in lines(out) if r["error"]}
    assert len(failed) == 2 and all(r["error"] == f"HTTP 400: {msg}" for r in lines(out) if r["error"])

    kept = sweep(fake_openai, out, default_model_path, "--keep-errors")
    assert "0 new, 6 already done, 6 planned, 2 kept errors" in kept.output
    assert len(lines(out)) == 6

    again = sweep(fake_openai, out, default_model_path)
    assert again.exit_code == 0, again.output
    assert "2 new, 4 already done, 6 planned, 2 retried" in again.output
    rows = lines(out)
    assert len(rows) == 8  # the failed attempts stay in the file
    latest = last_per_sample(out)
    assert len(latest) == PLANNED and all(r["error"] is None and r["score"] is not None for r in latest.values())
    for sid in failed:
        assert latest[sid]["attempts"] == 2 and latest[sid]["previous_error"] == f"HTTP 400: {msg}"
    assert all(latest[s]["attempts"] == 1 for s in set(latest) - failed)
    # scored samples were sent once, retried ones twice
    assert len(fake_openai.posts()) == 8
    assert "0 new, 6 already done" in sweep(fake_openai, out, default_model_path).output


def test_timeout_is_the_samples_error(fake_openai, tmp_path, default_model_path):
    out = tmp_path / "run"
    fake_openai.push(delay_s=2.0)
    res = sweep(fake_openai, out, default_model_path, "--timeout", "0.5")
    assert res.exit_code == 0, res.output
    errors = [r["error"] for r in lines(out) if r["error"]]
    assert errors == ["timeout after 0.5 s"] and len(lines(out)) == PLANNED


def test_errors_are_shown_per_cell_in_the_summary(fake_openai, tmp_path, default_model_path):
    out = tmp_path / "run"
    fake_openai.push(status=400, body={"error": {"message": "too long"}})
    res = sweep(fake_openai, out, default_model_path)
    assert res.exit_code == 0
    assert "+1err" in res.output  # the depth x length cell with the failure says so


@pytest.mark.parametrize("how", ["reset", "gone"])
def test_server_going_away_stops_the_sweep_and_the_same_command_resumes(how, tmp_path, default_model_path):
    out = tmp_path / "run"
    fake = FakeOpenAI()
    fake.completion_delay_s = 0.2
    try:
        if how == "reset":  # connections accepted, then closed without an answer
            fake.push(times=2)
            fake.push(drop=True, times=100)
        else:  # the server goes away while requests are in flight
            def kill_after_two() -> None:
                path = out / "results.jsonl"
                while not (path.exists() and len(path.read_bytes().splitlines()) >= 2):
                    time.sleep(0.02)
                fake.die()

            threading.Thread(target=kill_after_two, daemon=True).start()
        start = time.monotonic()
        res = sweep(fake, out, default_model_path, concurrency=2)
        assert time.monotonic() - start < 30
    finally:
        fake.close()
    assert res.exit_code == 3, res.output
    error_lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "unreachable" in error_lines[0], res.output
    rows = lines(out)
    assert 2 <= len(rows) < PLANNED
    assert all(r["error"] is None for r in rows)  # nothing in flight was recorded as an error
    assert f"{PLANNED - len(rows)} pending" in res.output

    fresh = FakeOpenAI()
    try:
        again = sweep(fresh, out, default_model_path, concurrency=2)
    finally:
        fresh.close()
    assert again.exit_code == 0, again.output
    assert f"{PLANNED - len(rows)} new, {len(rows)} already done" in again.output
    counts = collections.Counter(r["sample_id"] for r in lines(out))
    assert len(counts) == PLANNED and set(counts.values()) == {1}  # exactly the gaps were filled


def test_max_errors_ends_the_sweep_with_exit_code_4(fake_openai, tmp_path, default_model_path):
    out = tmp_path / "run"
    fake_openai.push(status=400, body={"error": {"message": "bad"}}, times=2)
    res = sweep(fake_openai, out, default_model_path, "--max-errors", "1")
    assert res.exit_code == 4, res.output
    assert "2 samples failed, more than --max-errors 1 allows" in res.output
    assert len(lines(out)) == 2  # stopped at once: the rest stay pending
    assert "2 new, 0 already done, 6 planned, 2 errors, 6 pending" in res.output
    final = sweep(fake_openai, out, default_model_path, "--max-errors", "0")
    assert final.exit_code == 0, final.output
    assert "6 new, 0 already done, 6 planned, 2 retried" in final.output
    assert all(r["error"] is None for r in last_per_sample(out).values())


def test_resume_with_other_concurrency_is_refused_unless_mixed_or_deterministic(fake_openai, tmp_path,
                                                                                default_model_path):
    out = tmp_path / "run"
    assert sweep(fake_openai, out, default_model_path, "--limit", "2", concurrency=4).exit_code == 0
    refused = sweep(fake_openai, out, default_model_path, "--limit", "2", concurrency=2)
    assert refused.exit_code == 2
    (line,) = [x for x in refused.output.splitlines() if x.startswith("Error:")]
    assert "other settings that can change them (concurrency 4 -> 2)" in line and "--allow-mixed" in line
    assert len(lines(out)) == 2  # nothing was run

    mixed = sweep(fake_openai, out, default_model_path, "--limit", "2", "--allow-mixed", concurrency=2)
    assert mixed.exit_code == 0, mixed.output
    manifest = json.loads((out / "manifest.json").read_text())
    sessions = manifest["sessions"]
    assert [s["index"] for s in sessions] == [0, 1, 2]
    assert sessions[0]["conditions"]["concurrency"] == 4 and sessions[2]["conditions"]["concurrency"] == 2
    assert "refused" in sessions[1] and sessions[2]["mixed"] == ["concurrency 4 -> 2"]
    assert sessions[0]["argv"] and sessions[0]["recorded"] == 2
    rows = lines(out)
    assert [r["session"] for r in rows] == [0, 0, 2, 2]
    assert [r["conditions"]["concurrency"] for r in rows] == [4, 4, 2, 2]
    assert rows[0]["conditions"]["engine_version"] == "0.0-fake"

    from longctx.reports.runs import load_runs

    (run,) = load_runs([out])
    assert run.info()["mixed"] == "concurrency 4, 2"
    assert run.info()["sessions"] == "3"

    # deterministic sessions: against an endpoint one request at a time, whatever -c says
    det = tmp_path / "det"
    assert sweep(fake_openai, det, default_model_path, "--deterministic", "--limit", "3",
                 concurrency=4).exit_code == 0
    plain = sweep(fake_openai, det, default_model_path, concurrency=1)  # deterministic off: refused
    assert plain.exit_code == 2 and "deterministic True -> False" in plain.output
    again = sweep(fake_openai, det, default_model_path, "--deterministic", concurrency=2)
    assert again.exit_code == 0, again.output
    rows = lines(det)
    assert len(rows) == PLANNED and {r["conditions"]["concurrency"] for r in rows} == {1}
    assert all(r["conditions"]["deterministic"] for r in rows)
    assert "mixed" not in load_runs([det])[0].info()
