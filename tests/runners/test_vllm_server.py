"""Server launch / health / stop / log tail, with a fake server script instead of vLLM (fast)."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from longctx._errors import EngineGone, LongctxError
from longctx._protocols import RunnerConfig
from longctx._records import Message, Prompt, Sample
from longctx.runners._vllm_endpoint import Endpoint
from longctx.runners._vllm_server import (
    ServerConfig,
    VLLMServer,
    _cpu_list,
    cpu_environment,
    log_tail,
)
from longctx.runners.vllm import VLLMRunner

FAKE_SERVER = textwrap.dedent(
    """
    import http.server, json, os, signal, subprocess, sys, time
    mode, port = sys.argv[1], int(sys.argv[2])
    print("fake server starting", flush=True)
    if mode == "crash":
        print("RuntimeError: not enough memory for the KV cache", flush=True)
        sys.exit(3)
    if mode == "stubborn":  # ignores SIGTERM, and so does its child
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        print(f"child pid {child.pid}", flush=True)
    if mode == "never":
        time.sleep(600)
    time.sleep(1.5)

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
            self.wfile.write(b"{}")
        def do_POST(self):
            print("fatal: engine core died", flush=True)
            os._exit(7)

    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


class RecordingProgress:
    def __init__(self, interrupt_after: int | None = None):
        self.events: list[tuple[str, object]] = []
        self.interrupt_after = interrupt_after

    def start(self, label, total=None):
        self.events.append(("start", label))

    def advance(self, n=1):
        self.events.append(("advance", n))
        if self.interrupt_after is not None and self.count("advance") >= self.interrupt_after:
            raise KeyboardInterrupt

    def log(self, message):
        self.events.append(("log", message))

    def done(self):
        self.events.append(("done", None))

    def count(self, kind):
        return sum(1 for k, _ in self.events if k == kind)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"max_position_embeddings": 4096}')
    return folder


def fake_server(tmp_path: Path, model_dir: Path, progress=None, start_timeout_s: float = 60.0) -> VLLMServer:
    cfg = ServerConfig(
        model_path=model_dir,
        served_model_name="m",
        log_dir=tmp_path / "logs",
        start_timeout_s=start_timeout_s,
    )
    return VLLMServer(cfg, progress)


def launch(server: VLLMServer, tmp_path: Path, mode: str) -> VLLMServer:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    return server.launch([sys.executable, str(script), mode, str(server.port)], dict(os.environ))


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_death_during_startup_raises_with_log_tail(tmp_path, model_dir):
    server = fake_server(tmp_path, model_dir)
    with pytest.raises(LongctxError) as err:
        launch(server, tmp_path, "crash")
    message = str(err.value)
    assert message.startswith("vLLM server exited during start-up (code 3)")
    assert "not enough memory for the KV cache" in message
    assert str(tmp_path / "logs" / "vllm-server.log") in message
    assert not server.process.group_alive()


def test_health_wait_reports_progress_and_stop_escalates_to_sigkill(tmp_path, model_dir):
    progress = RecordingProgress()
    server = launch(fake_server(tmp_path, model_dir, progress), tmp_path, "stubborn")
    assert server.alive()
    label = next(v for k, v in progress.events if k == "start")
    assert label.startswith("starting vLLM server (m, port")
    assert progress.count("advance") >= 1 and progress.events[-1] == ("done", None)
    child = int(re.search(r"child pid (\d+)", server.process.tail()).group(1))
    pgid = server.process.pid
    server.stop(grace_s=1.0)
    assert server.process.returncode == -9  # SIGTERM was ignored: SIGKILL after the grace period
    assert pid_gone(child) and not server.process.group_alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def test_start_timeout_stops_the_server(tmp_path, model_dir):
    server = fake_server(tmp_path, model_dir, start_timeout_s=1.5)
    with pytest.raises(LongctxError, match=r"not healthy after 1.5 s"):
        launch(server, tmp_path, "never")
    assert not server.process.group_alive()


def test_ctrl_c_during_startup_stops_the_server(tmp_path, model_dir):
    server = fake_server(tmp_path, model_dir, RecordingProgress(interrupt_after=1))
    with pytest.raises(KeyboardInterrupt):
        launch(server, tmp_path, "never")
    assert not server.process.group_alive()


def test_temporary_log_folder_removed_after_clean_stop(tmp_path, model_dir):
    server = VLLMServer(ServerConfig(model_path=model_dir, served_model_name="m"))
    launch(server, tmp_path, "ok")
    log_dir = server.process.log_path.parent
    assert log_dir.name.startswith("longctx-vllm-") and log_dir.exists()
    server.stop()
    assert not log_dir.exists()


def test_runner_raises_with_log_tail_when_server_dies_during_run(tmp_path, model_dir):
    runner = VLLMRunner(RunnerConfig(model=str(model_dir), retries=1), None, None)
    runner.server = launch(fake_server(tmp_path, model_dir), tmp_path, "die")
    runner.endpoint = Endpoint(runner.server.base_url, "m")
    sample = Sample(
        id="a",
        task="t",
        prompt=Prompt(messages=(Message("user", "q"),), text="q"),
        references=("r",),
        length=10,
        context_tokens=1,
        max_new_tokens=4,
    )
    got: list = []
    with pytest.raises(EngineGone) as err:  # the engine's failure, never the sample's error
        got.extend(runner.generate([sample]))
    assert got == []
    assert str(err.value).startswith("vLLM server died during the run (code 7)")
    assert "fatal: engine core died" in str(err.value)
    runner.__exit__(None, None, None)
    assert runner.server is None


def test_command_has_the_required_flags(model_dir):
    server = VLLMServer(
        ServerConfig(
            model_path=model_dir,
            served_model_name="default",
            max_model_len=8192,
            seed=3,
            dtype="float32",
            port=12345,
            extra_args=("--max-num-seqs", "8"),
        )
    )
    cmd = server.command(enforce_eager=True)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(cmd)
    for flag in (
        "--model " + str(model_dir),
        "--served-model-name default",
        "--port 12345",
        "--seed 3",
        "--dtype float32",
        "--max-model-len 8192",
        "--enable-prompt-tokens-details",
        "--enable-prefix-caching",
        "--enforce-eager",
        "--host 127.0.0.1",
    ):
        assert flag in joined
    assert cmd[-2:] == ["--max-num-seqs", "8"]
    assert "--enforce-eager" not in server.command(enforce_eager=False)


def test_cpu_environment_defaults_and_user_values():
    env = cpu_environment({})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    n = len(os.sched_getaffinity(0))
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == _cpu_list(os.sched_getaffinity(0))
    if sorted(os.sched_getaffinity(0)) == list(range(n)):
        assert env["VLLM_CPU_OMP_THREADS_BIND"] == (f"0-{n - 1}" if n > 1 else "0")
    user = cpu_environment({"VLLM_CPU_KVCACHE_SPACE": "8", "VLLM_CPU_OMP_THREADS_BIND": "1"})
    assert user["VLLM_CPU_KVCACHE_SPACE"] == "8" and user["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert cpu_environment({"VLLM_CPU_KVCACHE_SPACE": "8"}, kv_cache_gib=4)["VLLM_CPU_KVCACHE_SPACE"] == "4"


def test_cpu_list():
    assert _cpu_list({0, 1}) == "0-1"
    assert _cpu_list({3}) == "3"
    assert _cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_log_tail(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n\n" for i in range(100)))
    assert log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == ""


def test_deterministic_settings_per_platform():
    from longctx.runners._vllm_server import deterministic_settings

    assert deterministic_settings("cpu", "auto") == ("float32", 1, {})
    assert deterministic_settings("cpu", "bfloat16") == ("bfloat16", 1, {})  # an explicit dtype is kept
    assert deterministic_settings("cuda", "auto") == ("auto", None, {"VLLM_BATCH_INVARIANT": "1"})


def test_engine_dtype_is_read_from_the_server_log(tmp_path):
    from longctx.runners._vllm_server import engine_dtype_from_log

    log = tmp_path / "vllm-server.log"
    assert engine_dtype_from_log(log) is None
    log.write_text("INFO [core.py:134] Initializing a V1 LLM engine (v0.32.0) with config: model='/m', "
                   "speculative_config=None, dtype=torch.bfloat16, max_seq_len=8192\n")
    assert engine_dtype_from_log(log) == "bfloat16"


def test_max_num_seqs_flag_and_deterministic_conflict(model_dir):
    server = VLLMServer(ServerConfig(model_path=model_dir, served_model_name="m", max_num_seqs=1))
    cmd = server.command(enforce_eager=True)
    assert cmd[cmd.index("--max-num-seqs") + 1] == "1"
    from longctx.runners.vllm import VLLMOptions

    with pytest.raises(LongctxError, match="deterministic mode sets --max-num-seqs"):
        VLLMRunner(RunnerConfig(model=str(model_dir)),
                   VLLMOptions(deterministic=True, server_args="--max-num-seqs 4"))
