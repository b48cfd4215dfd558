"""``longctx sweep --config FILE / --preset NAME``, the default ``--out`` and ``OUT/config.yaml``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from longctx.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def longctx(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longctx", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def grid(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())["identity"]["grid"]


def test_help_names_config_and_preset():
    out = run("sweep", "--help").output
    assert "--config" in out and "--preset" in out


@pytest.mark.parametrize("text,needle", [
    ("runner: oracle\nlenghts: 1k\n", "unknown key 'lenghts' (did you mean 'lengths'?)"),
    ("samples: lots\n", "samples must be a number"),
])
def test_bad_config_is_one_line(tmp_path, text, needle):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    line = one_line_error(longctx("sweep", "--config", str(path), "--out", str(tmp_path / "r")))
    assert needle in line and str(path) in line
    assert not (tmp_path / "r").exists()


def test_unknown_preset_is_one_line(tmp_path):
    line = one_line_error(longctx("sweep", "--preset", "rulerniah", "--out", str(tmp_path / "r")))
    assert "unknown preset 'rulerniah'" in line and "'ruler-niah'" in line


def test_flags_override_the_file_and_config_yaml_reruns(tmp_path, default_model_path):
    path = tmp_path / "run.yaml"
    out = tmp_path / "out"
    path.write_text(f"task: [ruler/niah_single_1]\nlengths: [1k, 2k]\ndepths: [0, 100]\nsamples: 3\n"
                    f"runner: oracle\noption: {{tokens_to_generate: 128}}\nout: {out}\n")
    res = run("sweep", "--config", str(path), "-n", "1", "--limit", "3")
    assert res.exit_code == 0, res.output
    assert grid(out) == {"lengths": [1024, 2048], "depths": [0.0, 100.0], "samples": 1, "seed": 42}
    saved = (out / "config.yaml").read_text()
    assert "samples: 1" in saved and "limit" not in saved and f"config {path}" in saved
    res = run("sweep", "--config", str(out))  # the run folder stands for its config.yaml
    assert res.exit_code == 0, res.output
    assert "1 new, 3 already done, 4 planned" in res.output
    # a sweep refused by the folder (another configuration) leaves its config.yaml alone
    before = (out / "config.yaml").read_text()
    res = CliRunner().invoke(cli, ["sweep", "--config", str(out), "-n", "2"])
    assert res.exit_code == 2 and "different configuration" in res.output
    assert (out / "config.yaml").read_text() == before


def test_default_out_is_printed_and_dated(tmp_path, default_model_path):
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "-r", "oracle", "-l", "1k", "-d", "50", "-n", "1",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    name = f"{dt.date.today().isoformat()}-ruler-niah_single_1-default-oracle"
    assert f"run folder: runs/{name}" in proc.stderr
    assert (tmp_path / "runs" / name / "results.jsonl").read_text().count("\n") == 1
    assert (tmp_path / "runs" / name / "config.yaml").exists()
    proc = longctx("runs", "--json", cwd=tmp_path)
    assert json.loads(proc.stdout)["status"] == "finished"


def test_preset_with_overrides_names_the_folder(tmp_path, default_model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("sweep", "--preset", "demo", "-r", "oracle", "-l", "1k", "-d", "50", "-n", "1")
    assert res.exit_code == 2 and "oracle has no deterministic mode" in res.output  # the preset's switch
    res = run("sweep", "--preset", "demo", "-r", "oracle", "--no-deterministic", "-l", "1k", "-d", "50", "-n", "1")
    assert res.exit_code == 0, res.output
    folder = tmp_path / "runs" / f"{dt.date.today().isoformat()}-demo-default-oracle"
    ident = json.loads((folder / "manifest.json").read_text())["identity"]
    assert ident["tasks"] == ["ruler/niah_single_1", "ruler/niah_single_2"] and ident["runner"] == "oracle"
    assert "2 new, 0 already done, 2 planned" in res.output
