"""Sweep settings from YAML files: keys = long flags, natural YAML forms, one-line errors, layering."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import click
import pytest

from longctx._api import resolve_settings
from longctx._config import (
    DEFAULTS,
    SETTINGS,
    default_out,
    dump_config,
    layered,
    load_config,
    normalize,
    save_config,
)
from longctx._errors import LongctxError


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_natural_yaml_forms(tmp_path):
    path = write(tmp_path, """
task: ruler/niah_single_1
lengths: [4k, 8192]
depths: [0, 50, 100]
samples: 5
runner_option: {engine: offline, max_num_seqs: 4}
--option: [haystack_dir=/data, "ruler:tokens_to_generate=64"]
chat-only: true
timeout: 30
""")
    assert load_config(path) == {
        "task": ["ruler/niah_single_1"],
        "lengths": "4k,8192",
        "depths": "0,50,100",
        "samples": 5,
        "runner-option": ["engine=offline", "max_num_seqs=4"],
        "option": ["haystack_dir=/data", "ruler:tokens_to_generate=64"],
        "chat-only": True,
        "timeout": 30.0,
    }


@pytest.mark.parametrize("text,needle", [
    ("lenghts: 1k\n", "unknown key 'lenghts' (did you mean 'lengths'?)"),
    ("colour: red\n", "unknown key 'colour'"),
    ("samples: many\n", "samples must be a number"),
    ("samples: 2.5\n", "samples must be a whole number"),
    ("chat-only: yes please\n", "chat-only must be true or false"),
    ("task: {a: 1}\n", "task must be a name or a list of names"),
    ("option: 3\n", "option must be a mapping"),
    ("- just\n- a list\n", "expected a mapping"),
    ("task: [a\n", "bad YAML in"),
    ("preset: rulr-niah\n", "unknown preset 'rulr-niah'"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(LongctxError) as exc:
        load_config(path)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert str(path) in str(exc.value) or "preset" in needle


def test_missing_file(tmp_path):
    with pytest.raises(LongctxError, match="no config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(LongctxError, match="config.yaml"):  # a folder stands for its config.yaml
        load_config(tmp_path)


def test_layers_kwargs_over_file_over_preset_over_defaults(tmp_path):
    path = write(tmp_path, "preset: demo\nsamples: 7\nrunner: oracle\n")
    s = resolve_settings({"samples": None, "lengths": [1024], "task": None}, config=path)
    assert s["preset"] == "demo"
    assert s["task"] == ["ruler/niah_single_1", "ruler/niah_single_2"]  # from the preset
    assert (s["samples"], s["runner"], s["lengths"]) == (7, "oracle", "1024")  # file, file, kwarg
    assert s["seed"] == DEFAULTS["seed"] and s["depths"] == "0:100:5"
    # an explicit preset replaces the file's
    s = layered("ruler-niah", load_config(path))
    assert s["preset"] == "ruler-niah" and len(s["task"]) == 8 and s["samples"] == 7


def test_dump_and_load_round_trip(tmp_path):
    settings = {"task": ["babilong/qa1", "babilong/qa10"], "lengths": "0k,1k", "depths": "50", "samples": 4,
                "option": ["system_prompt=You are a helpful assistant.", "babilong:dataset=babilong"],
                "chat-only": False, "endpoint": [], "runner-option": []}
    path = write(tmp_path, dump_config(settings, "a header\nsecond line"))
    assert path.read_text().startswith("# a header\n# second line\n")
    expected = {k: v for k, v in settings.items() if v not in (None, [])}
    assert load_config(path) == expected


def test_save_config_only_after_this_invocation_wrote_the_manifest(tmp_path):
    folder = tmp_path / "run"
    assert save_config(folder, {"samples": 1}, since=time.time()) is None  # no folder
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"updated_at": time.time() - 100}))
    assert save_config(folder, {"samples": 1}, since=time.time()) is None  # another invocation's
    (folder / "manifest.json").write_text(json.dumps({"updated_at": time.time() + 1}))
    path = save_config(folder, {"samples": 1, "limit": 3, "allow-mixed": True}, since=time.time(), source="x")
    assert path == folder / "config.yaml"
    assert load_config(folder) == {"samples": 1}  # per-invocation flags are not kept


def test_default_out():
    day = dt.date(2026, 1, 2)
    assert default_out(["ruler/niah_single_1"], "default", "vllm", today=day) == Path(
        "runs/2026-01-02-ruler-niah_single_1-default-vllm")
    assert default_out(["babilong/qa1", "ruler/niah_single_1", "ruler/niah_single_2"], "/models/Qwen2.5-7B/",
                       "rag", today=day) == Path("runs/2026-01-02-babilong+ruler-Qwen2.5-7B-rag")
    demo = ["ruler/niah_single_1", "ruler/niah_single_2"]
    named = default_out(demo, "default", "vllm", preset="demo", today=day)
    assert named.name == "2026-01-02-demo-default-vllm"
    # a preset whose tasks were overridden does not name the folder
    assert default_out(["qasper"], "meta-llama/Llama-3.1-8B", "vllm", preset="demo", today=day).name == (
        "2026-01-02-qasper-Llama-3.1-8B-vllm")


def test_normalize_scalars():
    assert normalize("lengths", 4096, "x") == "4096"
    assert normalize("depths", [0.0, 12.5], "x") == "0,12.5"
    assert normalize("option", {"flag": True, "n": 3}, "x") == ["flag=true", "n=3"]
    assert normalize("endpoint", None, "x") == [] and normalize("task", None, "x") == []
    assert normalize("endpoint", "http://h:1/v1", "x") == ["http://h:1/v1"]  # one server, as before


def test_settings_are_the_sweep_flags_with_their_defaults():
    """Every flag of ``longctx sweep`` is a config key with the command's default, and back."""
    from longctx.cli.sweep import sweep

    flags: dict[str, click.Option] = {}
    for param in sweep.params:
        if isinstance(param, click.Option) and param.name not in ("config", "preset"):
            flags[next(o for o in param.opts if o.startswith("--"))[2:]] = param
    assert set(flags) == set(SETTINGS)
    ctx = click.Context(sweep)
    for key, param in flags.items():
        default = param.get_default(ctx)
        if not isinstance(default, (str, int, float, tuple, list, type(None))):
            default = None  # click's "unset" sentinel
        if param.multiple:
            default = list(default or ())
        if key == "out":
            continue  # defaulted from tasks, model and runner
        assert DEFAULTS[key] == default, key
