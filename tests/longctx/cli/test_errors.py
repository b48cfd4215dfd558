"""Bad input: one line, exit code 2, no traceback — through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def longctx(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longctx", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_task_gets_did_you_mean(tmp_path):
    proc = longctx("sweep", "-t", "ruler/niah_singel_1", "--runner", "oracle", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown task 'ruler/niah_singel_1'", "did you mean 'ruler/niah_single_1'")


def test_unknown_runner_gets_did_you_mean(tmp_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "orcale", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown runner 'orcale'", "'oracle'")


def test_unknown_model_gets_did_you_mean(tmp_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--model", "defualt",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "unknown model 'defualt'", "'default'")


def test_missing_model_folder(tmp_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--model", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "no such folder")


def test_length_beyond_window_is_refused_before_any_work(tmp_path, default_model_path):
    out = tmp_path / "r"
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--lengths", "4k,16k", "--out", str(out))
    assert_one_line_error(proc, "length 16384 exceeds the context window", "8192")
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--lengths", "4x"], "bad length '4x'"),
    (["--depths", "0:100"], "bad --depths"),
    (["-O", "nokey"], "bad -O 'nokey'"),
    (["-O", "colour=red"], "bad option for task ruler/niah_single_1"),
    (["--concurrency", "0"], "--concurrency"),
])
def test_bad_flags(tmp_path, args, needle):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--out", str(tmp_path / "r"), *args)
    assert_one_line_error(proc, needle)


def test_missing_haystack_dir(tmp_path, default_model_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_2", "--runner", "oracle", "-O", f"haystack_dir={tmp_path}/none",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "no such folder")


def test_corrupt_run_folder_on_resume(tmp_path, default_model_path):
    out = tmp_path / "r"
    args = ["sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--lengths", "1k", "--depths", "50", "-n", "2",
            "--out", str(out)]
    assert longctx(*args).returncode == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("garbage\n" + "\n".join(lines) + "\n")
    assert_one_line_error(longctx(*args), "corrupt run folder")
    (out / "manifest.json").write_text("{")
    assert_one_line_error(longctx(*args), "corrupt run folder")


def test_help_and_tasks_without_heavy_imports():
    code = ("import sys; from longctx.cli.main import cli\n"
            "for args in (['--help'], ['tasks'], ['runners'], ['models']):\n"
            "    try: cli.main(args, standalone_mode=False)\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'vllm', 'transformers', 'ray') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_tasks_lists_all_niah_variants():
    proc = longctx("tasks", "--names")
    assert proc.returncode == 0
    names = proc.stdout.split()
    assert sum(n.startswith("ruler/niah_") for n in names) == 8
    assert json.dumps(names)


def test_deterministic_with_a_runner_without_that_mode(tmp_path, default_model_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--deterministic",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "runner oracle has no deterministic mode")


def test_negative_max_errors(tmp_path, default_model_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "--runner", "oracle", "--max-errors", "-1",
                   "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "--max-errors must be 0 or more")
