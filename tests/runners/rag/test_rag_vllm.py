"""Runner ``rag`` end to end through the CLI with a REAL vLLM server (the session's ``vllm_server``)
and the default model: a 16K sweep, twice the model's 8K window."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_rag_sweep_beyond_the_window_through_an_attached_vllm(vllm_server, tmp_path):
    out = tmp_path / "rag-bm25"
    proc = subprocess.run(
        [sys.executable, "-m", "longctx", "sweep", "-t", "ruler/niah_single_1", "-l", "16k", "-d", "0,50,100",
         "-n", "1", "-r", "rag", "-R", "retriever=bm25", "--endpoint", vllm_server.endpoint,
         "-m", vllm_server.model_name, "-o", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["error"] is None and row["score"] is not None
        assert 16000 < row["context_tokens"] <= 16384  # the whole context, beyond the 8K window
        assert 0 < row["prompt_tokens"] < 8192  # what vLLM counted: template + retrieved chunks
        info = row["extra"]["rag"]
        assert info["retriever"] == "bm25" and len(info["chunks"]) == info["k"] == 8
        assert info["recall"] == 1.0  # BM25 finds the needle of niah_single_1
        assert row["prompt_tokens"] <= 200 + info["retrieved_tokens"]
        assert "finish_reason" in row["extra"]  # the vllm runner's own extra is kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_identity"]["generator"]["engine"] == "endpoint"
    assert manifest["model_identity"]["retriever"]["name"] == "bm25"
