"""``longctx sweep --runner vllm`` over several servers (fake OpenAI servers; fast), and
``-R replicas=N`` placement and start/stop (a fake server script instead of vLLM)."""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from longctx.runners import _vllm_replicas
from longctx.runners._vllm_replicas import ReplicaSet, gpu_groups, parse_cpu_list, placements, split_cpus
from longctx.runners._vllm_server import ServerConfig, VLLMServer

from longctx._errors import LongctxError
from longctx._parsing import parse_endpoints
from longctx.cli.main import cli

from .conftest import FakeOpenAI
from .test_vllm_server import FAKE_SERVER

PLANNED = 12  # 1 length x 3 depths x 4 samples


def sweep(endpoints: list[str], out: Path, model_path: Path, *extra: str, concurrency: int = 1):
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:3", "-n", "4",
            "--runner", "vllm", "--model", "fake-model", "-R", f"tokenizer={model_path}", "--retries", "1",
            "-c", str(concurrency), "--out", str(out), *extra]
    for url in endpoints:
        args += ["--endpoint", url]
    return CliRunner().invoke(cli, args)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]


@pytest.fixture
def two():
    a, b = FakeOpenAI(), FakeOpenAI()
    yield a, b
    a.close()
    b.close()


def test_parse_endpoints_from_flags_and_a_file(tmp_path):
    listing = tmp_path / "servers.txt"
    listing.write_text("# the pool\nhttp://h1:8000/v1\n\nhttp://h2:8000/v1  # second\nhttp://h1:8000/v1\n")
    assert parse_endpoints(("http://h0:1/v1",), listing) == ("http://h0:1/v1", "http://h1:8000/v1",
                                                             "http://h2:8000/v1")
    assert parse_endpoints(None) == () and parse_endpoints("http://h:1") == ("http://h:1",)
    with pytest.raises(LongctxError, match="endpoints-file"):
        parse_endpoints((), tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(LongctxError, match="lists no server"):
        parse_endpoints((), tmp_path / "empty.txt")


def test_sweep_over_two_servers_records_who_answered_and_the_session_lists_them(two, tmp_path,
                                                                                default_model_path):
    a, b = two
    a.completion_delay_s = b.completion_delay_s = 0.05
    out = tmp_path / "run"
    res = sweep([a.base_url, b.base_url], out, default_model_path, concurrency=2)
    assert res.exit_code == 0, res.output
    rows = lines(out)
    assert len(rows) == PLANNED and all(r["error"] is None for r in rows)
    served = collections.Counter(r["extra"]["server"] for r in rows)
    assert set(served) <= {a.base_url, b.base_url} and sum(served.values()) == PLANNED
    assert served[a.base_url] == len(a.posts()) and served[b.base_url] == len(b.posts())
    assert all(r["conditions"]["servers"] == [a.base_url, b.base_url] for r in rows)
    assert all(r["conditions"]["concurrency"] == 2 for r in rows)  # per server
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sessions"][0]["runner_config"]["endpoints"] == [a.base_url, b.base_url]
    assert "endpoint" not in json.dumps(manifest["identity"])  # the servers are not the run's identity


def test_same_run_on_another_list_of_servers_resumes(two, tmp_path, default_model_path):
    a, b = two
    out = tmp_path / "run"
    first = sweep([a.base_url], out, default_model_path, "--limit", "5")
    assert first.exit_code == 0, first.output
    listing = tmp_path / "servers.txt"
    listing.write_text(f"{a.base_url}\n{b.base_url}\n")
    again = sweep([], out, default_model_path, "--endpoints-file", str(listing))
    assert again.exit_code == 0, again.output
    assert f"{PLANNED - 5} new, 5 already done" in again.output
    counts = collections.Counter(r["sample_id"] for r in lines(out))
    assert len(counts) == PLANNED and set(counts.values()) == {1}


def test_one_server_dying_mid_sweep_loses_nothing_and_records_no_error(two, tmp_path, default_model_path):
    a, b = two
    a.completion_delay_s = b.completion_delay_s = 0.15
    out = tmp_path / "run"

    def kill_b_after_two() -> None:
        path = out / "results.jsonl"
        while not (path.exists() and len(path.read_bytes().splitlines()) >= 2):
            time.sleep(0.02)
        b.die()

    threading.Thread(target=kill_b_after_two, daemon=True).start()
    res = sweep([a.base_url, b.base_url], out, default_model_path, concurrency=2)
    assert res.exit_code == 0, res.output
    rows = lines(out)
    counts = collections.Counter(r["sample_id"] for r in rows)
    assert len(counts) == PLANNED and set(counts.values()) == {1}
    assert all(r["error"] is None for r in rows)
    assert any(r["extra"].get("moved_from") == [b.base_url] for r in rows)


def test_a_server_down_at_the_start_is_left_out_and_all_down_is_refused(two, tmp_path, default_model_path):
    a, b = two
    b.close()  # nothing listens there
    out = tmp_path / "run"
    res = sweep([b.base_url, a.base_url], out, default_model_path)
    assert res.exit_code == 0, res.output
    assert {r["extra"]["server"] for r in lines(out)} == {a.base_url}
    a.close()
    refused = sweep([b.base_url, a.base_url], tmp_path / "other", default_model_path)
    assert refused.exit_code == 2 and "none of the 2 endpoints is reachable" in refused.output


def test_every_server_gone_stops_with_exit_3_and_resumes(two, tmp_path, default_model_path):
    a, b = two
    a.completion_delay_s = b.completion_delay_s = 0.15
    out = tmp_path / "run"

    def kill_both() -> None:
        path = out / "results.jsonl"
        while not (path.exists() and len(path.read_bytes().splitlines()) >= 2):
            time.sleep(0.02)
        a.die()
        b.die()

    threading.Thread(target=kill_both, daemon=True).start()
    res = sweep([a.base_url, b.base_url], out, default_model_path, concurrency=2)
    assert res.exit_code == 3, res.output
    assert "all 2 servers are gone" in res.output
    rows = lines(out)
    assert all(r["error"] is None for r in rows) and len(rows) < PLANNED
    c, d = FakeOpenAI(), FakeOpenAI()
    try:
        again = sweep([c.base_url, d.base_url], out, default_model_path, concurrency=2)
    finally:
        c.close()
        d.close()
    assert again.exit_code == 0, again.output
    counts = collections.Counter(r["sample_id"] for r in lines(out))
    assert len(counts) == PLANNED and set(counts.values()) == {1}


# ---- replicas ------------------------------------------------------------------------------------


def test_cpu_and_gpu_placement():
    assert parse_cpu_list("0-2,5") == [0, 1, 2, 5]
    assert split_cpus([0, 1, 2, 3, 4], 2) == [[0, 1, 2], [3, 4]]
    with pytest.raises(LongctxError, match="needs at least 3 cores"):
        split_cpus([0, 1], 3)
    cpu = placements("cpu", 0, 2, 1, {"VLLM_CPU_OMP_THREADS_BIND": "0-3"})
    assert cpu == [{"VLLM_CPU_OMP_THREADS_BIND": "0-1"}, {"VLLM_CPU_OMP_THREADS_BIND": "2-3"}]
    assert gpu_groups(["0", "1", "2", "3"], 2, 2) == [["0", "1"], ["2", "3"]]
    assert placements("cuda", 4, 4, 1, {}) == [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]
    assert placements("cuda", 8, 2, 2, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}) == [
        {"CUDA_VISIBLE_DEVICES": "4,5"}, {"CUDA_VISIBLE_DEVICES": "6,7"}]
    with pytest.raises(LongctxError, match="needs 4 GPUs; 2 visible"):
        placements("cuda", 2, 2, 2, {})


def test_tensor_parallel_flag(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = ServerConfig(model_path=tmp_path, served_model_name="m", port=1, tensor_parallel=2)
    assert VLLMServer(cfg).command(False)[-2:] == ["--tensor-parallel-size", "2"]


@pytest.fixture
def fake_replicas(tmp_path, monkeypatch):
    """ReplicaSet launching the fake server script (mode per replica) instead of vLLM."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    modes: list[str] = []
    monkeypatch.setattr(_vllm_replicas, "probe_vllm",
                        lambda python: {"version": "0-fake", "device_type": "cpu", "device_count": 0})

    def command(self, enforce_eager):
        index = int(self.config.log_name.split("-")[-1].split(".")[0])
        return [sys.executable, str(script), modes[index], str(self.port)]

    monkeypatch.setattr(VLLMServer, "command", command)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")

    def make(*replica_modes: str) -> ReplicaSet:
        modes[:] = replica_modes
        cfg = ServerConfig(model_path=model, served_model_name="m", log_dir=tmp_path / "logs", start_timeout_s=30)
        return ReplicaSet(cfg, len(replica_modes))

    return make


def test_replicas_start_together_on_their_own_cores_and_stop_together(fake_replicas, tmp_path):
    replicas = fake_replicas("ok", "ok")
    start = time.monotonic()
    replicas.start()
    took = time.monotonic() - start
    try:
        servers = replicas.servers
        assert len({s.port for s in servers}) == 2 and all(s.alive() for s in servers)
        assert [s.process.env["VLLM_CPU_OMP_THREADS_BIND"] for s in servers] == ["0", "1"]
        assert sorted(os.listdir(tmp_path / "logs")) == ["vllm-server-0.log", "vllm-server-1.log"]
        assert took < 2 * 1.5 + 1.0  # each fake takes 1.5 s to listen: waited side by side
    finally:
        replicas.stop(grace_s=2)
    assert not any(s.process.group_alive() for s in replicas.servers)


def test_one_replica_failing_to_start_stops_them_all(fake_replicas, tmp_path):
    replicas = fake_replicas("ok", "crash")
    with pytest.raises(LongctxError, match="exited during start-up") as err:
        replicas.start()
    assert "vllm-server-1.log" in str(err.value)
    assert not any(s.process.group_alive() for s in replicas.servers)


def test_pool_and_replica_options_are_not_the_runs_identity():
    """Run folders made before these options existed, or on other servers, still resume."""
    from longctx._plan import run_identity
    from longctx._protocols import Grid
    from longctx.runners.vllm import VLLMOptions, VLLMRunner

    grid = Grid((1024,), (50.0,), 1)
    plain = run_identity([], grid, "vllm", VLLMRunner, VLLMOptions(), "m", "completions")
    scaled = VLLMOptions(replicas=2, tensor_parallel=2, max_tokens_in_flight=4096, prefix_scheduler=False,
                         probe_s=3.0)
    assert run_identity([], grid, "vllm", VLLMRunner, scaled, "m", "completions") == plain
    assert not {"replicas", "tensor_parallel", "max_tokens_in_flight", "prefix_scheduler",
                "probe_s"} & set(plain["runner_options"])


def test_token_cap_reaches_the_servers(two, tmp_path, default_model_path):
    a, b = two
    a.completion_delay_s = b.completion_delay_s = 0.1
    res = sweep([a.base_url, b.base_url], tmp_path / "run", default_model_path, "-R", "max_tokens_in_flight=1",
                "-R", "prefix_scheduler=false", concurrency=4)
    assert res.exit_code == 0, res.output
    assert a.max_in_flight == 1 and b.max_in_flight == 1  # every ~1K prompt is over the cap: one at a time
    assert len(lines(tmp_path / "run")) == PLANNED
