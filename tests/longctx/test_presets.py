"""Named presets: the published protocols as settings, listed by ``longctx presets``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

import longctx
from longctx._config import SETTINGS, load_config
from longctx._parsing import parse_depths, parse_lengths, parse_options
from longctx._plan import options_for
from longctx._presets import PRESETS, RULER_NIAH_TASKS, get_preset
from longctx._registry import parse_options as validate_options
from longctx._registry import tasks as registered
from longctx.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_sweep(name):
    settings = get_preset(name).settings_normalized()
    assert set(settings) <= set(SETTINGS)
    known = registered()
    assert settings["task"] and all(t in known for t in settings["task"])
    parse_lengths(settings["lengths"])
    parse_depths(settings.get("depths", "0:100:5"))
    opts = parse_options(settings.get("option", []), "option")
    for task in settings["task"]:  # options validate against each task's Options
        validate_options(known[task].factory, options_for(task, opts), f"task {task}")


def test_ruler_niah_is_rulers_protocol():
    s = get_preset("ruler-niah").settings_normalized()
    # RULER config_tasks.sh: 13 synthetic tasks, the 8 NIAH ones are longctx's ruler family
    assert s["task"] == list(RULER_NIAH_TASKS) and sorted(s["task"]) == sorted(longctx.list_tasks("ruler"))
    # config_models.sh SEQ_LENGTHS
    assert parse_lengths(s["lengths"]) == (4096, 8192, 16384, 32768, 65536, 131072)
    # NUM_SAMPLES=500 per task and length, as a balanced grid
    assert s["samples"] * len(parse_depths(s["depths"])) == 500
    assert parse_depths(s["depths"])[0] == 0 and parse_depths(s["depths"])[-1] == 100


def test_babilong_is_the_leaderboard_protocol():
    s = get_preset("babilong").settings_normalized()
    assert s["task"] == [f"babilong/qa{i}" for i in range(1, 6)]
    assert parse_lengths(s["lengths"]) == (0, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
    assert s["samples"] == 100
    opts = parse_options(s["option"], "option")
    assert opts == {"dataset": "babilong", "system_prompt": "You are a helpful assistant."}


def test_demo_is_what_make_demo_runs():
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    sweep_line = recipe.replace("\\\n", " ").splitlines()[0]
    words = shlex.split(sweep_line)[2:]  # drop $(BIN)/longctx sweep
    flags: dict[str, list[str]] = {}
    switches: set[str] = set()
    while words:
        flag = words.pop(0).lstrip("-")
        if not words or words[0].startswith("--"):  # a switch such as --deterministic
            switches.add(flag)
        else:
            flags.setdefault(flag, []).append(words.pop(0))
    flags.pop("out")
    s = get_preset("demo").settings_normalized()
    assert flags.pop("task") == s["task"]
    assert parse_lengths(flags.pop("lengths")[0]) == parse_lengths(s["lengths"])
    assert flags == {"depths": [s["depths"]], "samples": [str(s["samples"])], "runner": [s["runner"]],
                     "model": [s["model"]]}
    assert switches == {"deterministic"} and s["deterministic"] is True


def test_presets_command_lists_and_prints_a_loadable_config(tmp_path):
    res = CliRunner().invoke(cli, ["presets", "--names"], catch_exceptions=False)
    assert res.output.split() == ["ruler-niah", "babilong", "demo"]
    table = CliRunner().invoke(cli, ["presets"], catch_exceptions=False).output
    assert "NVIDIA/RULER" in table and "booydar/babilong" in table
    for name in PRESETS:
        text = CliRunner().invoke(cli, ["presets", name], catch_exceptions=False).output
        (tmp_path / f"{name}.yaml").write_text(text)
        assert load_config(tmp_path / f"{name}.yaml") == get_preset(name).settings_normalized()
    res = CliRunner().invoke(cli, ["presets", "rulerniah"])
    assert res.exit_code != 0


def test_unknown_preset_gets_did_you_mean():
    with pytest.raises(longctx.LongctxError, match="unknown preset 'babilon'; did you mean 'babilong'"):
        get_preset("babilon")


def test_a_preset_runs_with_overrides(tmp_path, default_model_path):
    outcome = longctx.sweep(preset="demo", runner="oracle", deterministic=False,  # oracle has no such mode
                            lengths="1k", depths=[50], samples=1, out=tmp_path / "demo")
    results = outcome.store.latest_results()
    assert sorted(r.task for r in results) == ["ruler/niah_single_1", "ruler/niah_single_2"]
    assert {r.length for r in results} == {1024} and all(r.score == 1.0 for r in results)
    saved = load_config(tmp_path / "demo")  # the folder's config.yaml reruns it
    assert saved["runner"] == "oracle" and saved["task"] == ["ruler/niah_single_1", "ruler/niah_single_2"]
    assert "preset demo" in (tmp_path / "demo" / "config.yaml").read_text()
    again = longctx.sweep(config=tmp_path / "demo")
    assert (again.new, again.skipped) == (0, 2)
