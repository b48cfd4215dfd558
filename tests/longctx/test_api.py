"""The public Python API: `import longctx` is light, its names resolve, sweeps through it equal
sweeps through the CLI, and third-party plug-ins registered by entry points run in a sweep."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import longctx

HEAVY = ("torch", "vllm", "transformers", "plotly", "scipy", "statsmodels", "datasets", "pyarrow")


def python(code: str, *, env_path: Path | None = None, cwd: Path | None = None
           ) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(env_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)


def test_import_and_every_public_name_stay_light():
    code = textwrap.dedent(f"""
        import sys
        import longctx
        before = sorted(m for m in {HEAVY!r} if m in sys.modules)
        names = {{n: getattr(longctx, n) for n in longctx.__all__}}
        after = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(before, after, len(names))
    """)
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "[]", str(len(longctx.__all__))], proc.stdout


def test_public_names_are_the_private_objects():
    from longctx.reports import runs

    from longctx import _errors, _protocols, _records, _registry, _sweep

    assert longctx.task is _registry.task and longctx.runner is _registry.runner
    for name in ("Sample", "Result", "Generation", "Prompt", "Message"):
        assert getattr(longctx, name) is getattr(_records, name)
    for name in ("Grid", "RunnerConfig", "Task", "Runner", "Scorer", "Tokenizer", "Progress"):
        assert getattr(longctx, name) is getattr(_protocols, name)
    assert longctx.LongctxError is _errors.LongctxError and longctx.SweepOutcome is _sweep.SweepOutcome
    assert longctx.RunData is runs.RunData
    assert set(longctx.__all__) <= set(dir(longctx))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        longctx.nope  # noqa: B018


def test_list_tasks_natural_order_and_family():
    qa = longctx.list_tasks("babilong")
    assert qa == [f"babilong/qa{i}" for i in range(1, 21)]
    assert "oracle" in longctx.list_runners()
    with pytest.raises(longctx.LongctxError, match="unknown task family 'babylong'.*'babilong'"):
        longctx.list_tasks("babylong")


def test_bad_input_is_a_longctx_error(tmp_path):
    with pytest.raises(longctx.LongctxError, match="no task given"):
        longctx.sweep(runner="oracle", out=tmp_path / "r")
    with pytest.raises(longctx.LongctxError, match="bad length '4x'"):
        longctx.sweep(tasks="ruler/niah_single_1", lengths="4x", runner="oracle", out=tmp_path / "r")
    with pytest.raises(longctx.LongctxError, match="unknown preset 'rulr-niah'.*'ruler-niah'"):
        longctx.sweep(preset="rulr-niah", out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_api_sweep_resumes_in_the_cli_and_reports(tmp_path, default_model_path):
    from click.testing import CliRunner

    from longctx.cli.main import cli

    out = tmp_path / "run"
    first = longctx.sweep(tasks="ruler/niah_single_1", lengths=[1024, "2k"], depths=[50], samples=2,
                          runner="oracle", task_options={"tokens_to_generate": 128}, out=out, limit=3)
    assert (first.planned, first.new, first.pending) == (4, 3, 1)
    # the same settings as flags: the same run identity, so the CLI resumes the folder
    res = CliRunner().invoke(cli, ["sweep", "-t", "ruler/niah_single_1", "-l", "1k,2k", "-d", "50", "-n", "2",
                                   "-r", "oracle", "-O", "tokens_to_generate=128", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "1 new, 3 already done, 4 planned" in res.output
    config = (out / "config.yaml").read_text()
    assert "ruler/niah_single_1" in config and "limit" not in config

    runs = longctx.load_runs(out)
    assert [len(r.results) for r in runs] == [4]
    assert all(r.score == 1.0 for r in runs[0].results)
    page = longctx.report(out, tmp_path / "report.html")
    assert page.read_text().startswith("<!DOCTYPE html>")

    other = tmp_path / "again"
    longctx.sweep(tasks="ruler/niah_single_1", lengths="1k,2k", depths="50", samples=2, runner="oracle",
                  task_options={"tokens_to_generate": "128"}, out=other)
    comparison = longctx.compare([out, other], tmp_path / "compare.html", resamples=200)
    assert [r.samples for r in comparison.runs] == [4, 4]
    assert (tmp_path / "compare.html").stat().st_size > 0


PLUGIN = '''
"""A third-party plug-in: one task family and one runner, registered through entry points."""
from __future__ import annotations

import longctx
from longctx import Generation, Message, Prompt, Sample


class WordTokenizer:
    name = "words"

    def encode(self, text):
        return list(range(len(text.split())))

    def decode(self, ids):
        return " ".join("w" for _ in ids)

    def render_chat(self, messages):
        return "\\n".join(m.content for m in messages)


class ExactScorer:
    metrics = ("exact",)

    def score(self, prediction, sample):
        return {"exact": float(prediction.strip() == sample.references[0])}


@longctx.task("plug/echo", word="banana")
@longctx.task("plug/echo2", word="cherry")
class Echo:
    """Repeat a word hidden in filler text."""

    controls_depth = True

    def __init__(self, name, options=None, *, word):
        self.name, self.word, self.scorer = name, word, ExactScorer()

    def samples(self, grid, tokenizer):
        for length in grid.lengths:
            for depth in grid.depths:
                for i in range(grid.samples):
                    words = ["filler"] * (length // 2)
                    words.insert(int(len(words) * depth / 100), self.word)
                    text = " ".join(words)
                    yield Sample(id=f"{self.name}|{length}|{depth}|{i}", task=self.name,
                                 prompt=Prompt(messages=(Message("user", text),), text=text),
                                 references=(self.word,), length=length,
                                 context_tokens=len(tokenizer.encode(text)), max_new_tokens=4, depth=depth)


@longctx.runner("plug-oracle")
class PlugOracle:
    """Answers with the references."""

    name = "plug-oracle"

    def __init__(self, config, options, progress):
        self.config = config

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def tokenizer(self):
        return WordTokenizer()

    def context_window(self):
        return 4096

    def identity(self):
        return {"name": "plug-oracle"}

    def generate(self, samples):
        for s in samples:
            yield Generation(sample_id=s.id, prediction=s.references[0])
'''


@pytest.fixture
def plugin_path(tmp_path) -> Path:
    """A folder holding an installed-looking distribution ``longctx-plug`` (dist-info with entry points)."""
    site = tmp_path / "site"
    (site / "longctx_plug").mkdir(parents=True)
    (site / "longctx_plug" / "__init__.py").write_text(PLUGIN)
    info = site / "longctx_plug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: longctx-plug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[longctx.tasks]\nplug = longctx_plug\n\n[longctx.runners]\nplug = longctx_plug\n"
    )
    return site


def test_entry_point_plugins_run_in_a_sweep(plugin_path, tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        import longctx
        out = longctx.sweep(tasks=["plug/echo", "plug/echo2"], lengths=[64, 256], depths=[0, 50, 100],
                            samples=2, runner="plug-oracle", model="none", out={str(tmp_path / "api")!r})
        results = out.store.latest_results()
        print(json.dumps({{"tasks": longctx.list_tasks("plug"), "runners": longctx.list_runners(),
                          "n": len(results), "scores": sorted({{r.score for r in results}}),
                          "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
    """)
    proc = python(code, env_path=plugin_path, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["tasks"] == ["plug/echo", "plug/echo2"] and "plug-oracle" in got["runners"]
    assert got["n"] == 2 * 2 * 3 * 2 and got["scores"] == [1.0]
    assert got["heavy"] == []  # a plug-in sweep needs none of the engines

    import os

    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    cli = subprocess.run([sys.executable, "-m", "longctx", "sweep", "-t", "plug/echo", "-l", "64", "-d", "50",
                          "-n", "3", "-r", "plug-oracle", "-m", "none", "--out", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "3 new, 0 already done, 3 planned" in cli.stdout
    listing = subprocess.run([sys.executable, "-m", "longctx", "tasks", "plug", "--names"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert listing.stdout.split() == ["plug/echo", "plug/echo2"]
