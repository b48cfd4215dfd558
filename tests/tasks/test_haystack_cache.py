"""The on-disk cache of tokenized haystacks: hits give identical samples, other tokenizers/options miss."""

from __future__ import annotations

import json
import shutil

import pytest
from longctx.tasks import _haystacks as hs

from longctx._protocols import Grid
from longctx._registry import get_task
from longctx._tokenizer import HFTokenizer

GRID = Grid(lengths=(2048, 4096), depths=(0.0, 50.0, 100.0), samples=2, seed=5)
TASKS = ("ruler/niah_single_1", "ruler/niah_multikey_2", "ruler/niah_multikey_3", "ruler/niah_single_2")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGCTX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LONGCTX_HAYSTACK_CACHE", "1")
    return tmp_path / "cache" / "haystacks"


def build(name, tokenizer, grid=GRID, monkeypatch=None):
    return list(get_task(name).samples(grid, tokenizer))


def uncached(name, tokenizer, monkeypatch, grid=GRID):
    monkeypatch.setenv("LONGCTX_HAYSTACK_CACHE", "0")
    try:
        return build(name, tokenizer, grid)
    finally:
        monkeypatch.setenv("LONGCTX_HAYSTACK_CACHE", "1")


@pytest.mark.parametrize("name", TASKS)
def test_a_hit_gives_the_same_samples(name, smol_tokenizer, cache, monkeypatch):
    first = build(name, smol_tokenizer)
    files = sorted(cache.iterdir())
    assert files, "the first build writes the tokenized haystack"
    stamps = {f: f.stat().st_mtime_ns for f in files}
    second = build(name, smol_tokenizer)
    assert second == first == uncached(name, smol_tokenizer, monkeypatch)
    assert {f: f.stat().st_mtime_ns for f in sorted(cache.iterdir())} == stamps, "a full hit writes nothing"


@pytest.mark.parametrize("name", ("ruler/niah_single_1", "ruler/niah_multikey_3"))
def test_a_short_cache_is_extended(name, smol_tokenizer, cache, monkeypatch):
    """Cached at 2K, asked for 16K: the cached units are reused, the rest tokenized (generated lines
    continue where the cached ones stop), the samples as without a cache."""
    build(name, smol_tokenizer, Grid((2048,), (50.0,), 2, 5))
    longer = Grid((2048, 16384), (0.0, 50.0, 100.0), 2, 5)
    assert build(name, smol_tokenizer, longer) == uncached(name, smol_tokenizer, monkeypatch, longer)
    assert build(name, smol_tokenizer, longer) == uncached(name, smol_tokenizer, monkeypatch, longer)


def test_another_tokenizer_misses(smol_tokenizer, default_model_path, cache, tmp_path, monkeypatch):
    build("ruler/niah_multikey_2", smol_tokenizer)
    before = set(cache.iterdir())
    folder = tmp_path / "tok"
    shutil.copytree(default_model_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "tokenizer.json").read_text())
    config["added_tokens"].append({**config["added_tokens"][-1], "id": max(t["id"] for t in config["added_tokens"]) + 1,
                                   "content": "special"})  # " special" now tokenizes differently
    (folder / "tokenizer.json").write_text(json.dumps(config))
    other = HFTokenizer(folder)
    assert other.fingerprint != smol_tokenizer.fingerprint
    samples = build("ruler/niah_multikey_2", other)
    new = set(cache.iterdir()) - before
    assert len(new) == len(before), "every haystack of the other tokenizer is its own entry"
    assert samples == uncached("ruler/niah_multikey_2", other, monkeypatch)


def test_options_and_seed_are_part_of_the_key(smol_tokenizer):
    assert hs.cache_path(smol_tokenizer, "units", "a") != hs.cache_path(smol_tokenizer, "units", "b")
    task = get_task("ruler/niah_multikey_2")
    needles = task.needles(5, 0)
    one = task._distractor_stream(smol_tokenizer, 5, 0, needles)._cache_path
    assert one == task._distractor_stream(smol_tokenizer, 5, 0, needles)._cache_path
    assert one != task._distractor_stream(smol_tokenizer, 6, 0, task.needles(6, 0))._cache_path
    assert one != task._distractor_stream(smol_tokenizer, 5, 1, task.needles(5, 1))._cache_path
    other = get_task("ruler/niah_multikey_3")
    assert one != other._distractor_stream(smol_tokenizer, 5, 0, other.needles(5, 0))._cache_path
    noise = hs.line_stream([hs.NOISE_LINE], smol_tokenizer)._cache_path
    assert noise != hs.line_stream([hs.NOISE_LINE + " "], smol_tokenizer)._cache_path


def test_no_fingerprint_no_cache(smol_tokenizer, cache):
    class Remote:  # a served model's /tokenize: nothing to key a cache with
        name = "remote"
        encode, decode, render_chat = smol_tokenizer.encode, smol_tokenizer.decode, smol_tokenizer.render_chat

    assert hs.cache_path(Remote(), "units", "x") is None
    build("ruler/niah_single_1", Remote())
    assert not cache.exists() or not any(cache.iterdir())


def test_a_corrupt_entry_is_a_miss(smol_tokenizer, cache, monkeypatch):
    first = build("ruler/niah_multikey_3", smol_tokenizer)
    for f in cache.iterdir():
        f.write_bytes(b"\x93garbage")
    assert build("ruler/niah_multikey_3", smol_tokenizer) == first
    monkeypatch.setenv("LONGCTX_HAYSTACK_CACHE", "0")
    assert build("ruler/niah_multikey_3", smol_tokenizer) == first
