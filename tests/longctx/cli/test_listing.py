"""``longctx tasks`` / ``longctx runners``: natural order, family filter, one-line errors."""

from __future__ import annotations

from click.testing import CliRunner

from longctx._api import natural_key
from longctx.cli.main import cli, main


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_natural_key():
    names = ["qa10", "qa2", "qa1", "niah_single_10", "niah_single_9", "QA3"]
    assert sorted(names, key=natural_key) == ["niah_single_9", "niah_single_10", "qa1", "qa2", "QA3", "qa10"]


def test_tasks_sort_naturally():
    names = run("tasks", "--names").output.split()
    babilong = [n for n in names if n.startswith("babilong/")]
    assert babilong == [f"babilong/qa{i}" for i in range(1, 21)]
    order = [names.index(n) for n in ("babilong/qa20", "longhealth/task1", "ruler/niah_multikey_1")]
    assert order == sorted(order)


def test_family_filter_positional_and_option():
    first = run("tasks", "babilong", "--names").output.split()[:3]
    assert first == ["babilong/qa1", "babilong/qa2", "babilong/qa3"]
    assert run("tasks", "--family", "longhealth", "--names").output.split() == [
        "longhealth/task1", "longhealth/task2", "longhealth/task3"]
    assert len(run("tasks", "-f", "ruler", "--names").output.split()) == 8
    table = run("tasks", "qasper").output
    assert "qasper" in table and "babilong" not in table


def test_unknown_family_is_one_line(capsys, monkeypatch):
    import sys

    import pytest

    monkeypatch.setattr(sys, "argv", ["longctx", "tasks", "babylong"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "unknown task family 'babylong'" in err[0] and "'babilong'" in err[0]


def test_runners_listed():
    names = run("runners", "--names").output.split()
    assert {"oracle", "vllm", "hf", "hope", "rlm", "rag"} <= set(names)
    assert names == sorted(names, key=natural_key)


def test_listings_import_no_engine(tmp_path):
    import subprocess
    import sys

    commands = [["tasks", "babilong"], ["presets"], ["presets", "demo"], ["runs", str(tmp_path)]]
    heavy = ("torch", "vllm", "transformers", "plotly", "scipy")
    code = ("import sys; from longctx.cli.main import cli\n"
            f"for args in {commands!r}:\n"
            "    try: cli.main(args, standalone_mode=False)\n"
            "    except SystemExit: pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
