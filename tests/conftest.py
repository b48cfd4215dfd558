"""Session-wide fixtures: the real default model (materialised once) and its tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def default_model_path():
    """Folder of the embedded default model (SmolLM2-135M-Instruct), built on first use."""
    from longctx._models import resolve_model

    return resolve_model("default").path


@pytest.fixture(scope="session")
def smol_tokenizer(default_model_path):
    """The default model's real tokenizer (with its chat template)."""
    from longctx._tokenizer import hf_tokenizer

    return hf_tokenizer(str(default_model_path))


class VLLMServerHandle:
    """A running vLLM server for the default model (see the ``vllm_server`` fixture)."""

    def __init__(self, runner, server):
        self.runner = runner
        """The ``vllm`` runner that launched the server (its ``generate`` talks to it)."""
        self.server = server
        """The launched :class:`longctx.runners._vllm_server.VLLMServer`."""
        self.endpoint: str = server.base_url
        """OpenAI API base, ``http://127.0.0.1:PORT/v1`` (pass as ``--endpoint``)."""
        self.model_name: str = server.config.served_model_name
        """Served model name (pass as ``--model`` with ``--endpoint``)."""
        self.model_path = server.config.model_path
        """The local model folder the server loaded."""


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """ONE real vLLM server for the whole test session, launched and stopped by runner ``vllm``'s own
    code (so launch/stop is tested). Skips when vLLM is not installed. Teardown checks that the
    server's whole process group is gone."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    from longctx._protocols import NullProgress, RunnerConfig
    from longctx.runners.vllm import VLLMOptions, VLLMRunner

    log_dir = tmp_path_factory.mktemp("vllm-server")
    runner = VLLMRunner(RunnerConfig(model="default", concurrency=2, timeout_s=300),
                        VLLMOptions(log_dir=str(log_dir), deterministic=True), NullProgress())
    with runner:
        server = runner.server
        yield VLLMServerHandle(runner, server)
    assert not server.process.group_alive(), "vLLM server still running after the runner exited"
