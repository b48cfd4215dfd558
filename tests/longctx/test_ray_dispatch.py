"""``longctx sweep --ray``: shards on Ray workers, one run folder, each sample recorded once.

The tests that start Ray share one local instance per module (``ray.init(num_cpus=2)``); sweeps in
this process find it connected and use it, the CLI driver of the kill test attaches to it by address.
"""

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
from longctx.runners.oracle import OracleRunner

from longctx._dispatch import ray_settings
from longctx._errors import LongctxError
from longctx._plan import SampleKey
from longctx._protocols import Grid, RunnerConfig
from longctx._ray_dispatch import RaySettings, RayShards, split_shards
from longctx._registry import runner
from longctx._sweep import SweepSpec, run_sweep
from longctx.cli.main import cli

HERE = Path(__file__).parent


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line]


def session(folder: Path, index: int = -1) -> dict:
    return json.loads((folder / "manifest.json").read_text())["sessions"][index]


@runner("dies-once")
class DiesOnce(OracleRunner):
    """The oracle, whose worker process exits on its ``die_at``-th sample, once (the first worker
    there creates ``marker``); every sample it starts is appended to ``log``; ``delay_s`` per sample
    lets the driver receive the answers before the death.

    Options are a plain mapping: this class travels to the workers by value (the test module is not
    importable there), which a msgspec Struct defined here cannot."""

    Options = dict[str, str]

    def __init__(self, config, options, progress):
        super().__init__(config, None, progress)
        self.marker, self.log = options["marker"], options["log"]
        self.die_at, self.delay_s = int(options.get("die_at", 3)), float(options.get("delay_s", 0.05))

    def generate(self, samples):
        for n, gen in enumerate(super().generate(samples)):
            with open(self.log, "a") as fh:
                fh.write(gen.sample_id + "\n")
            if n == self.die_at:
                try:
                    os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os._exit(1)  # the worker process dies mid-shard
            time.sleep(self.delay_s)
            yield gen


def spec(out: Path, runner_name: str = "oracle", ray: str | None = None, shards: int | None = None,
         runner_options: dict | None = None, **grid) -> SweepSpec:
    g = {"lengths": (1024, 2048), "depths": (0.0, 50.0, 100.0), "samples": 2, "seed": 7, **grid}
    return SweepSpec(tasks=["ruler/niah_single_1", "ruler/niah_multikey_1"], grid=Grid(**g), runner=runner_name,
                     runner_config=RunnerConfig(model="default", concurrency=2), out=out,
                     runner_options=runner_options or {}, ray=ray, ray_shards=shards)


# ---- without Ray ----------------------------------------------------------------------------------

class _Task:
    def __init__(self, name):
        self.name = name


class _Todo(list):
    def __init__(self, entries):
        super().__init__()
        self.entries = entries


def test_shards_keep_prefix_groups_together_and_balance_the_budget():
    task = _Task("t")
    entries = [(SampleKey(f"s{i}", 1024 * (1 + i % 3), 0.0, i, f"g{i // 4}"), task) for i in range(40)]
    shards = split_shards(_Todo(entries), 3)
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == list(range(40))  # every sample once
    assert all(shard == sorted(shard) for shard in shards)  # the plan's order kept
    home = {i: k for k, shard in enumerate(shards) for i in shard}
    for g in range(10):
        assert len({home[i] for i in range(4 * g, 4 * g + 4)}) == 1  # a prefix group stays together
    loads = [sum(entries[i][0].length for i in shard) for shard in shards]
    assert len(shards) == 3 and max(loads) - min(loads) <= 3 * 3072  # within one group's weight


def test_one_big_prefix_group_is_cut_into_consecutive_pieces():
    task = _Task("ruler/niah_single_1")  # the noise haystack: one group for the whole task
    entries = [(SampleKey(f"s{i}", 1024, 0.0, i, "one"), task) for i in range(10)]
    assert split_shards(_Todo(entries), 2) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert split_shards(_Todo(entries), 20) == [[i] for i in range(10)]
    assert split_shards(_Todo([]), 4) == []


def test_ray_flags_are_checked(tmp_path):
    assert ray_settings(None, None) is None
    assert ray_settings("", None) == RaySettings(address="local")
    assert ray_settings("auto", 3) == RaySettings(address="auto", shards=3)
    with pytest.raises(LongctxError, match="--ray-shards needs --ray"):
        ray_settings(None, 2)
    with pytest.raises(LongctxError, match="at least 1"):
        ray_settings("local", 0)
    with pytest.raises(LongctxError, match="--ray-gpus needs --ray"):
        ray_settings(None, None, 1)
    assert ray_settings("auto", None, 0.5).num_gpus == 0.5
    res = CliRunner().invoke(cli, ["sweep", "-t", "ruler/niah_single_1", "-r", "oracle", "--ray-shards", "2",
                                   "-o", str(tmp_path / "r")])
    assert res.exit_code != 0 and "--ray-shards needs --ray" in res.output


def test_ray_missing_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    shards = RayShards(OracleRunner, RunnerConfig(model="default"), None, RaySettings(), samples=1)
    with pytest.raises(LongctxError, match=r"--ray needs Ray: pip install 'longctx\[ray\]'"):
        shards.__enter__()


def test_import_and_help_import_neither_ray_nor_torch_nor_vllm():
    code = ("import sys, longctx, longctx._sweep, longctx._dispatch\n"
            "from longctx.cli.main import cli\n"
            "for args in (['--help'], ['sweep', '--help']):\n"
            "    try: cli.main(args, standalone_mode=False)\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in ('ray', 'torch', 'vllm', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--ray [ADDRESS]" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---- on a local Ray instance ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module; its GCS address (for drivers in other processes)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # the test runner classes travel to the workers by value (this module is not importable there)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_sharded_sweep_equals_the_single_process_sweep(tmp_path, default_model_path, ray_cluster):
    one = run_sweep(spec(tmp_path / "one"))
    sharded = run_sweep(spec(tmp_path / "ray", ray="local", shards=2))
    assert sharded.planned == one.planned == 24 and sharded.new == 24 and sharded.pending == 0

    def by_id(folder):
        return {r["sample_id"]: (r["prediction"], r["score"], r["scores"], r["sample_hash"], r["error"])
                for r in rows(folder)}

    mine, theirs = by_id(tmp_path / "ray"), by_id(tmp_path / "one")
    assert len(rows(tmp_path / "ray")) == 24 and mine == theirs
    assert all(score == 1.0 for _, score, *_ in mine.values())
    where = session(tmp_path / "ray")["ray"]
    assert where["shards"] == 2 and where["worker_deaths"] == 0 and where["ray_version"]
    assert len({w["pid"] for w in where["workers"]}) == 2 and os.getpid() not in {w["pid"] for w in where["workers"]}
    assert {r["extra"]["ray"]["shard"] for r in rows(tmp_path / "ray")} == {0, 1}
    # report and compare read the folder like any other
    report = CliRunner().invoke(cli, ["report", str(tmp_path / "ray"), "-o", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "r.html").stat().st_size > 10_000
    both = CliRunner().invoke(cli, ["compare", str(tmp_path / "one"), str(tmp_path / "ray"),
                                    "-o", str(tmp_path / "c.html"), "--json", str(tmp_path / "c.json")])
    assert both.exit_code == 0, both.output
    assert (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_a_worker_killed_mid_shard_is_recovered(tmp_path, default_model_path, ray_cluster):
    marker, log = tmp_path / "died", tmp_path / "attempts.log"
    opts = {"marker": str(marker), "log": str(log), "die_at": "3"}
    out = tmp_path / "run"
    outcome = run_sweep(spec(out, "dies-once", ray="local", shards=2, runner_options=opts))
    assert marker.exists()  # a worker did die
    counts = collections.Counter(r["sample_id"] for r in rows(out))
    assert len(counts) == outcome.planned == 24 and set(counts.values()) == {1}
    assert all(r["error"] is None and r["score"] == 1.0 for r in rows(out))
    assert session(out)["ray"]["worker_deaths"] == 1
    attempts = collections.Counter(log.read_text().split())
    rerun = [sid for sid, n in attempts.items() if n > 1]
    # only what the driver had not received is run again: the sample it died on (and at most one
    # answer that was on its way), not the shard
    assert 1 <= len(rerun) <= 2 and sum(attempts.values()) == 24 + len(rerun)


@pytest.mark.slow
def test_driver_killed_then_rerun_resumes_without_duplicates(tmp_path, default_model_path, ray_cluster):
    out = tmp_path / "run"
    cmd = [sys.executable, str(HERE / "slow_oracle_cli.py"), "sweep", "-t", "ruler/niah_single_1",
           "--lengths", "1k,2k", "--depths", "0:100:5", "-n", "3", "--runner", "slow-oracle",
           "--ray", ray_cluster, "--ray-shards", "2", "--out", str(out)]
    planned = 2 * 5 * 3
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:  # kill the driver once results arrive
        if (out / "results.jsonl").exists() and len(rows(out)) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(rows(out))
    assert 4 <= killed_at < planned
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = collections.Counter(r["sample_id"] for r in rows(out))
    assert len(counts) == planned and set(counts.values()) == {1}
    assert f"{planned - killed_at} new, {killed_at} already done" in done.stdout
    assert session(out)["ray"]["address"] == ray_cluster and session(out)["ray"]["shards"] == 2
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["runner"] == "slow-oracle" and not {"ray", "ray-shards"} & set(saved)  # where it ran: not the run
    assert not (out / "results.jsonl").read_bytes().count(b"\n") - planned  # no torn or extra line
