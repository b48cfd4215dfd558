"""Model identity: the weights hash follows the weight files."""

from __future__ import annotations

import json
import os

from longctx._models import weights_hash


def test_weights_hash_is_cached_and_recomputed_when_the_weights_change(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first")
    first = weights_hash(tmp_path)
    assert first and json.loads((tmp_path / "longctx-model.json").read_text())["weights_sha256"] == first
    assert weights_hash(tmp_path) == first                       # served from the cache

    weights.write_bytes(b"second, retrained")
    os.utime(weights, ns=(1, 1))                                 # even with an old mtime: the size differs
    second = weights_hash(tmp_path)
    assert second and second != first
    weights.write_bytes(b"second, retrainee")                    # same size, new mtime
    assert weights_hash(tmp_path) not in (first, second)


def test_no_weight_files_no_hash(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert weights_hash(tmp_path) is None
