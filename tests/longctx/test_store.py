"""The run store: append-only, resumable, torn-tail tolerant, identity-checked."""

from __future__ import annotations

import json

import pytest

from longctx._errors import LongctxError
from longctx._records import Result, encode
from longctx._store import RunStore, read_results


def result(i: int, **kw) -> Result:
    base = dict(sample_id=f"s{i}", task="t", runner="r", model="m", length=1024, context_tokens=896, depth=50.0,
                needle_positions=(10,), evidence_depth=50.0, prediction="x", references=("x",), score=1.0,
                scores={"m": 1.0}, error=None, latency_s=0.1, prompt_tokens=896, cached_tokens=0)
    base.update(kw)
    return Result(**base)


IDENT = {"tasks": ["t"], "grid": {"lengths": [1024]}}


def test_append_and_reopen(tmp_path):
    with RunStore.open_for_write(tmp_path / "run", IDENT, {}) as store:
        store.append(result(1))
        store.append(result(2))
    with RunStore.open_for_write(tmp_path / "run", IDENT, {}) as store:
        assert store.done_ids() == {"s1", "s2"}
        store.append(result(3))
    again = RunStore.open_for_read(tmp_path / "run")
    assert [r.sample_id for r in again.results] == ["s1", "s2", "s3"]
    assert [s["index"] for s in again.manifest["sessions"]] == [0, 1]


def test_torn_tail_is_dropped_and_truncated(tmp_path):
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        store.append(result(1))
    path = tmp_path / "results.jsonl"
    path.write_bytes(path.read_bytes() + encode(result(2))[:25])  # killed mid-write
    assert [r.sample_id for r in read_results(path)[0]] == ["s1"]
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        store.append(result(3))
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["sample_id"] for line in lines] == ["s1", "s3"]


def test_complete_last_record_without_newline_is_kept(tmp_path):
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        store.append(result(1))
    path = tmp_path / "results.jsonl"
    path.write_bytes(path.read_bytes() + encode(result(2)))
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        assert store.done_ids() == {"s1", "s2"}
        store.append(result(3))
    assert [json.loads(x)["sample_id"] for x in path.read_bytes().splitlines()] == ["s1", "s2", "s3"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        store.append(result(1))
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"{not json}\n" + path.read_bytes())
    with pytest.raises(LongctxError, match="corrupt run folder.*line 1"):
        RunStore.open_for_read(tmp_path)


def test_different_config_is_refused_naming_the_key(tmp_path):
    RunStore.open_for_write(tmp_path, IDENT, {}).close()
    other = {"tasks": ["t"], "grid": {"lengths": [2048]}}
    with pytest.raises(LongctxError, match=r"different configuration \(grid.lengths"):
        RunStore.open_for_write(tmp_path, other, {})


def test_folder_in_use_is_refused(tmp_path):
    with RunStore.open_for_write(tmp_path, IDENT, {}):
        with pytest.raises(LongctxError, match="in use"):
            RunStore.open_for_write(tmp_path, IDENT, {})


@pytest.mark.parametrize("content", ["", "{", "[]"])
def test_bad_manifest(tmp_path, content):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(LongctxError, match="corrupt run folder|no identity"):
        RunStore.open_for_read(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(LongctxError, match="no run folder"):
        RunStore.open_for_read(tmp_path / "nope")
    with pytest.raises(LongctxError, match="not a run folder"):
        RunStore.open_for_read(tmp_path)


def test_record_retries_an_error_and_keeps_its_history(tmp_path):
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        store.record(result(1, error="timeout after 5 s", prediction=None, score=None, scores={}))
        store.record(result(2))
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        second = store.record(result(1, error="HTTP 400: too long", prediction=None, score=None, scores={}))
        assert second.attempts == 2 and second.previous_error == "timeout after 5 s"
        third = store.record(result(1))
        assert third.attempts == 3 and third.previous_error == "HTTP 400: too long"
        with pytest.raises(RuntimeError, match="already scored"):
            store.record(result(1))  # exactly once: a scored sample is never recorded again
        with pytest.raises(RuntimeError, match="already scored"):
            store.record(result(2))
    again = RunStore.open_for_read(tmp_path)
    assert len(again.results) == 4  # every attempt stays in the file
    latest = again.latest()
    assert list(latest) == ["s1", "s2"]
    assert latest["s1"].score == 1.0 and latest["s1"].attempts == 3


def test_old_lines_without_attempts_load_as_first_attempts(tmp_path):
    RunStore.open_for_write(tmp_path, IDENT, {}).close()
    row = json.loads(encode(result(1)))
    del row["attempts"], row["previous_error"], row["sample_hash"]
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    (r,) = RunStore.open_for_read(tmp_path).results
    assert r.attempts == 1 and r.previous_error is None


def test_mixed_conditions_names_what_differs():
    from longctx._store import mixed_conditions

    old = {"engine_version": "0.32.0", "dtype": "bfloat16", "concurrency": 4, "deterministic": False}
    assert mixed_conditions([old], dict(old)) == []
    assert mixed_conditions([old], {**old, "concurrency": 1}) == ["concurrency 4 -> 1"]
    assert mixed_conditions([old], {**old, "dtype": "float32", "engine_version": "0.33.0"}) == [
        "engine_version 0.32.0 -> 0.33.0", "dtype bfloat16 -> float32"]
    assert mixed_conditions([old], {**old, "dtype": None}) == []  # unknown is not compared
    thinking = {**old, "max_thinking_tokens": 1024}
    assert mixed_conditions([thinking], {**thinking, "max_thinking_tokens": 64}) == [
        "max_thinking_tokens 1024 -> 64"]  # a reasoning model's thinking budget changes answers
    det = {**old, "dtype": "float32", "deterministic": True, "max_num_seqs": 1}
    assert mixed_conditions([det], {**det, "concurrency": 1}) == []  # deterministic: batch-independent
    assert mixed_conditions([det], {**old, "concurrency": 4}) == ["dtype float32 -> bfloat16",
                                                                   "deterministic True -> False"]


def test_count_only_sessions_of_older_folders_become_a_list(tmp_path):
    RunStore.open_for_write(tmp_path, IDENT, {}).close()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest.update(format=1, sessions=2)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with RunStore.open_for_write(tmp_path, IDENT, {"argv": ["longctx", "sweep"]}) as store:
        assert store.session == 2
        store.update_session(conditions={"concurrency": 1})
    sessions = RunStore.open_for_read(tmp_path).sessions
    assert [s["index"] for s in sessions] == [0, 1, 2]
    assert sessions[2]["argv"] == ["longctx", "sweep"] and sessions[2]["conditions"] == {"concurrency": 1}


def test_fsync_is_a_group_commit_and_close_syncs_the_rest(tmp_path, monkeypatch):
    import os

    import longctx._store as store_mod

    synced = []
    real = os.fsync
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    store = RunStore.open_for_write(tmp_path, IDENT, {})
    store.sync_interval_s = 3600.0  # only the count triggers a sync here
    store._synced_at = __import__("time").monotonic()
    for i in range(250):
        store.append(result(i))
    assert len(synced) == 2  # after 100 and 200 lines, not 250 times
    lines = (tmp_path / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 250  # every line is written at once, synced or not
    store.close()
    assert len(synced) == 3  # the last 50 at close
    assert len(RunStore.open_for_read(tmp_path).results) == 250


def test_a_lone_result_is_synced_by_the_timer(tmp_path, monkeypatch):
    import os
    import time

    import longctx._store as store_mod

    synced = []
    real = os.fsync
    monkeypatch.setattr(store_mod.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with RunStore.open_for_write(tmp_path, IDENT, {}) as store:
        store.append(result(1))  # the first sync is due at once
        assert len(synced) == 1
        store.append(result(2))  # within the interval: left to the timer
        assert len(synced) == 1
        deadline = time.monotonic() + 10
        while len(synced) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(synced) == 2
    assert len(synced) == 2  # nothing left for close
