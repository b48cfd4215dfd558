"""Two real vLLM servers on loopback serve one sweep; one is killed mid-sweep (slow)."""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

import pytest
from click.testing import CliRunner

from longctx.cli.main import cli

pytestmark = pytest.mark.slow


def test_two_real_servers_one_killed_mid_sweep(vllm_server, tmp_path):
    """The session's server (never killed) and one started here, killed (SIGKILL to its process
    group) once it has answered: every planned sample is recorded exactly once, none as an error,
    and what the killed server held was answered by the other."""
    from longctx.runners._vllm_server import ServerConfig, VLLMServer

    extra = VLLMServer(ServerConfig(model_path=vllm_server.model_path, served_model_name=vllm_server.model_name,
                                    max_model_len=2048, deterministic=True, kv_cache_gib=1,
                                    log_dir=tmp_path / "extra-server"))
    extra.start()
    out = tmp_path / "run"
    killed: dict[str, float] = {}

    def kill_extra_once_it_answered() -> None:
        path = out / "results.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if path.exists():
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
                if any(r["extra"].get("server") == extra.base_url for r in rows):
                    os.killpg(extra.process.pid, signal.SIGKILL)
                    killed["at"] = time.time()
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_extra_once_it_answered, daemon=True)
    watcher.start()
    try:
        args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:4", "-n", "2",
                "--runner", "vllm", "--endpoint", vllm_server.endpoint, "--endpoint", extra.base_url,
                "--model", vllm_server.model_name, "-R", f"tokenizer={vllm_server.model_path}",
                "-R", "probe_s=2", "-c", "1", "--retries", "1", "--out", str(out)]
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        watcher.join(timeout=5)
        extra.stop()
    assert res.exit_code == 0, res.output
    assert "at" in killed, "the extra server never answered: requests were not spread"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    counts = collections.Counter(r["sample_id"] for r in rows)
    assert len(counts) == 8 and set(counts.values()) == {1}  # every planned sample exactly once
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]
    assert all(r["prediction"] for r in rows)
    by_extra = [r for r in rows if r["extra"]["server"] == extra.base_url]
    assert by_extra and all(r["finished_at"] <= killed["at"] + 1 for r in by_extra)
    after = [r for r in rows if r["finished_at"] > killed["at"] + 1]
    assert all(r["extra"]["server"] == vllm_server.endpoint for r in after)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sessions"][-1]["conditions"]["servers"] == [vllm_server.endpoint, extra.base_url]


def test_two_launched_replicas_serve_one_sweep_and_stop_together(tmp_path):
    """``-R replicas=2`` on CPU: two servers, one core each, one log each; both gone afterwards."""
    import importlib.util

    import httpx

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    out, logs = tmp_path / "run", tmp_path / "logs"
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0:100:3", "-n", "1",
            "--runner", "vllm", "--model", "default", "-R", "replicas=2", "-R", "max_model_len=2048",
            "-R", "kv_cache_gib=1", "-R", f"log_dir={logs}", "-c", "1", "--out", str(out)]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["error"] is None for r in rows)
    servers = rows[0]["conditions"]["servers"]
    assert len(servers) == 2 and {r["extra"]["server"] for r in rows} <= set(servers)
    ports = set()
    for i in range(2):  # one log per replica, starting with its command line
        first = (logs / f"vllm-server-{i}.log").read_text().splitlines()[0]
        ports.add(first.split("--port ")[1].split()[0])
    assert {f"http://127.0.0.1:{p}/v1" for p in ports} == set(servers)
    for url in servers:  # stopped together with the sweep
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.removesuffix("/v1") + "/health", timeout=5)
