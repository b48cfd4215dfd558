"""The run store: one folder per run, ``manifest.json`` + append-only ``results.jsonl``.

Crash safety: each result is one line written with a single ``write`` on an ``O_APPEND`` descriptor
the moment it is recorded (no buffer in the process: the line is in the OS's page cache when
:meth:`RunStore.record` returns, and a killed process, ``kill -9`` included, loses nothing it
recorded). Durability against a crash of the machine is a group commit: ``fsync`` runs at most
:data:`SYNC_INTERVAL_S` after a line is written (a timer), at once every :data:`SYNC_EVERY` lines
or when the last ``fsync`` is older than the interval, and at :meth:`RunStore.close`; one ``fsync``
per result cost more than the whole oracle sweep (bench/RESULTS.md). A torn last line (no newline,
or undecodable) is dropped on open and truncated before the next append. A run folder is locked
(``flock``) while a sweep writes to it.

Reusing a folder with a different configuration is refused, naming the differing keys.

Sessions: every invocation that opens a folder for writing appends a record to the manifest's
``sessions`` list (started, argv, host, git sha, then the runner's ``conditions``: engine version,
dtype, concurrency, ...; finished, recorded, why it stopped). Results name their session. A resume
whose conditions could change results is refused unless mixing is allowed (:func:`mixed_conditions`).

Exactly once: a sample has at most one *scored* line. A sample whose last line is an error may be
retried (a new line with ``attempts`` + 1 and the ``previous_error``); readers take the last line
per sample (:meth:`RunStore.latest`), so earlier failed attempts stay visible without being counted.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from longctx._errors import LongctxError
from longctx._records import Result, decode, encode

MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
FORMAT_VERSION = 2
"""2: ``sessions`` is a list of session records (1: a count)."""

#: session conditions that can change greedy results; ``concurrency`` and ``max_num_seqs`` do not
#: when both sessions ran deterministic
CONDITION_KEYS = (
    "engine_version", "dtype", "deterministic", "concurrency", "max_num_seqs", "max_thinking_tokens",
)
BATCH_KEYS = ("concurrency", "max_num_seqs")

SYNC_INTERVAL_S = 0.1
"""Longest time a recorded line waits for its ``fsync`` (group commit)."""
SYNC_EVERY = 100
"""Lines written since the last ``fsync`` that trigger one at once."""


def mixed_conditions(earlier: list[dict[str, Any]], now: dict[str, Any]) -> list[str]:
    """How ``now`` differs from the conditions of ``earlier`` sessions, in what can change results
    (e.g. ``["concurrency 4 -> 1"]``). Unknown values (None or absent) are not compared; batch
    settings are not compared between two deterministic sessions."""
    out: list[str] = []
    for key in CONDITION_KEYS:
        new = now.get(key)
        if new is None:
            continue
        olds = []
        for cond in earlier:
            old = cond.get(key)
            if old is None or old == new:
                continue
            if key in BATCH_KEYS and cond.get("deterministic") and now.get("deterministic"):
                continue
            olds.append(old)
        if olds:
            shown = ", ".join(str(o) for o in dict.fromkeys(olds))
            out.append(f"{key} {shown} -> {new}")
    return out


def config_hash(identity: dict[str, Any]) -> str:
    """Stable hash of a run's identity (the config that must match on resume)."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]} ({old!r} -> {new!r})"]


def read_results(path: Path) -> tuple[list[Result], int]:
    """Results of ``results.jsonl`` and the byte length of its intact part.

    A torn *last* line is tolerated (it is what ``kill -9`` mid-write leaves); a bad line anywhere
    else means the folder is corrupt.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    # Decoding allocates one container per field; the cyclic GC would walk them all again and again
    # (a third of the time on 100,000 lines, bench/bench_reports.py). Records hold no cycles.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_lines(path, data)
    finally:
        if enabled:
            gc.enable()


_RESULT_LINES = msgspec.json.Decoder(Result)


def _read_lines(path: Path, data: bytes) -> tuple[list[Result], int]:
    end = data.rfind(b"\n") + 1  # every line before the last newline is whole
    try:  # one call for the intact part (100,000 lines: 0.7 -> 0.5 s); the loop below locates errors
        results = _RESULT_LINES.decode_lines(data[:end])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _read_each_line(path, data)
    tail = data[end:]
    if tail.strip():
        try:
            results.append(decode(tail, Result))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return results, end  # torn tail: the final record never got its newline
        return results, len(data)  # complete JSON but no newline: kept, newline rewritten on append
    return results, end  # a blank tail is dropped like a torn one


def _read_each_line(path: Path, data: bytes) -> tuple[list[Result], int]:
    results: list[Result] = []
    good = 0
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line.strip():
            if not last:
                good += len(line) + 1
            continue
        try:
            results.append(decode(line, Result))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if last:  # torn tail: the final record never got its newline
                break
            raise LongctxError(f"corrupt run folder: {path} line {i + 1}: {exc}") from None
        if last:  # complete JSON but no newline: keep it, rewrite newline on append
            good += len(line)
            break
        good += len(line) + 1
    return results, good


SESSION_FIELDS = ("argv", "host", "git_sha", "pid", "runner_config")
"""Fields of ``info`` that describe one invocation and are copied into its session record."""


def _session_list(value: Any) -> list[dict[str, Any]]:
    """``sessions`` as a list: format 1 stored a count (those sessions' details are unknown)."""
    if isinstance(value, list):
        return [dict(s) for s in value]
    if isinstance(value, int):
        return [{"index": i, "details": "unknown (older run folder)"} for i in range(value)]
    return []


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class RunStore:
    """A run folder opened for a sweep (or for reading)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.results_path = self.root / RESULTS
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self.manifest: dict[str, Any] = {}
        self.results: list[Result] = []
        """Every line of ``results.jsonl`` in order (retries included; see :meth:`latest`)."""
        self._lines: dict[str, list[Result]] | None = None
        self.session: int | None = None
        """Index of this invocation's record in the manifest's ``sessions`` (when writing)."""
        self.sync_interval_s = SYNC_INTERVAL_S
        """Longest wait of a written line for its ``fsync``."""
        self.sync_every = SYNC_EVERY
        """``fsync`` at once when this many lines are written since the last one."""
        self._sync_lock = threading.Lock()
        self._unsynced = 0
        self._synced_at = 0.0
        self._timer: threading.Timer | None = None

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open_for_read(cls, root: str | Path) -> RunStore:
        """Open an existing run folder read-only; errors name what is wrong."""
        store = cls(Path(root))
        if not store.root.is_dir():
            raise LongctxError(f"no run folder at {store.root}")
        store.manifest = store._read_manifest()
        store.results, _ = read_results(store.results_path)
        return store

    @classmethod
    def check(cls, root: str | Path, identity: dict[str, Any]) -> dict[str, Result]:
        """Raise if ``root`` is a corrupt run folder or holds another configuration (no writes);
        else the last result per sample id it holds (:meth:`latest`; empty for a new folder)."""
        store = cls(Path(root))
        if not store.root.exists():
            return {}
        if not store.root.is_dir():
            raise LongctxError(f"--out {store.root} exists and is not a folder")
        if store.manifest_path.exists():
            store.manifest = store._read_manifest()
            store._check_identity(identity)
        elif store.results_path.exists() and store.results_path.stat().st_size:
            raise LongctxError(f"corrupt run folder: {store.root} has results but no {MANIFEST}")
        store.results, _ = read_results(store.results_path)
        return store.latest()

    def _check_identity(self, identity: dict[str, Any]) -> None:
        old = self.manifest.get("identity", {})
        if config_hash(old) != config_hash(identity):
            diff = "; ".join(_diff_keys(old, identity)[:4])
            raise LongctxError(
                f"{self.root} holds a run with a different configuration ({diff}); use another --out folder"
            )

    @classmethod
    def open_for_write(cls, root: str | Path, identity: dict[str, Any], info: dict[str, Any]) -> RunStore:
        """Create the folder or resume it; refuse a folder whose identity differs."""
        store = cls(Path(root))
        if store.root.exists() and not store.root.is_dir():
            raise LongctxError(f"--out {store.root} exists and is not a folder")
        store.root.mkdir(parents=True, exist_ok=True)
        store._lock()
        if store.manifest_path.exists():
            store.manifest = store._read_manifest()
            store._check_identity(identity)
        elif store.results_path.exists() and store.results_path.stat().st_size:
            raise LongctxError(f"corrupt run folder: {store.root} has results but no {MANIFEST}")
        now = time.time()
        sessions = _session_list(store.manifest.get("sessions"))
        session_info = {k: info[k] for k in SESSION_FIELDS if k in info}
        sessions.append({"index": len(sessions), "started_at": now, **session_info})
        manifest = {
            "format": FORMAT_VERSION,
            "identity": identity,
            "config_hash": config_hash(identity),
            "created_at": store.manifest.get("created_at", now),
            **info,
            "updated_at": now,
            "sessions": sessions,
        }
        store._write_manifest(manifest)
        store.session = len(sessions) - 1
        store.results, good = read_results(store.results_path)
        fd = os.open(store.results_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size > good:  # torn tail left by a killed writer
                os.ftruncate(fd, good)
        finally:
            os.close(fd)
        store._fd = os.open(store.results_path, os.O_WRONLY | os.O_APPEND)
        if good and not _ends_with_newline(store.results_path):
            os.write(store._fd, b"\n")
        return store

    def _lock(self) -> None:
        self._lock_fd = os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LongctxError(f"{self.root} is in use by another sweep") from None

    def _read_manifest(self) -> dict[str, Any]:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise LongctxError(f"not a run folder: {self.root} has no {MANIFEST}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LongctxError(f"corrupt run folder: {self.manifest_path}: {exc}") from None
        if not isinstance(manifest, dict) or "identity" not in manifest:
            raise LongctxError(f"corrupt run folder: {self.manifest_path} has no identity")
        if manifest.get("format", 0) > FORMAT_VERSION:
            raise LongctxError(f"{self.root} was written by a newer longctx (format {manifest['format']})")
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.manifest_path)
        self.manifest = manifest

    # ---- writing ------------------------------------------------------------------------------
    def done_ids(self) -> set[str]:
        """Sample ids already recorded (scored or error)."""
        return {r.sample_id for r in self.results}

    def latest(self) -> dict[str, Result]:
        """The last result per sample id, in order of first appearance: what reports read."""
        last: dict[str, Result] = {}
        for r in self.results:
            last[r.sample_id] = r
        return last

    def latest_results(self) -> list[Result]:
        """:meth:`latest` as a list (one result per recorded sample)."""
        return list(self.latest().values())

    def record(self, result: Result) -> Result:
        """Append ``result`` as the next attempt for its sample and return what was written.

        A sample seen before must have ended in an error: the new line gets ``attempts`` = lines
        so far + 1 and that error as ``previous_error``. Recording over a scored result is a bug.
        """
        if self._lines is None:
            self._lines = {}
            for r in self.results:
                self._lines.setdefault(r.sample_id, []).append(r)
        earlier = self._lines.setdefault(result.sample_id, [])
        if earlier:
            if earlier[-1].error is None:
                raise RuntimeError(f"sample {result.sample_id!r} is already scored in {self.root}")
            result = msgspec.structs.replace(
                result, attempts=len(earlier) + 1, previous_error=earlier[-1].error
            )
        self.append(result)
        return result

    def append(self, result: Result) -> None:
        """Append one result, as given: written at once (one ``write``), fsynced by group commit."""
        if self._fd is None:
            raise RuntimeError("store not open for writing")
        os.write(self._fd, encode(result) + b"\n")
        self.results.append(result)
        if self._lines is not None:
            self._lines.setdefault(result.sample_id, []).append(result)
        with self._sync_lock:
            self._unsynced += 1
            waited = time.monotonic() - self._synced_at
            if self._unsynced >= self.sync_every or waited >= self.sync_interval_s:
                self._sync_locked()
            elif self._timer is None:
                self._timer = threading.Timer(self.sync_interval_s - waited, self._sync_from_timer)
                self._timer.daemon = True
                self._timer.start()

    def sync(self) -> None:
        """``fsync`` what was written and not yet synced (also done by :meth:`close`)."""
        with self._sync_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
        self._unsynced = 0
        self._synced_at = time.monotonic()

    def _sync_from_timer(self) -> None:
        with self._sync_lock:
            if self._timer is threading.current_thread():  # not cancelled by a sync meanwhile
                self._timer = None
                self._sync_locked()

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """The manifest's session records, oldest first (count-only older manifests give stubs)."""
        return _session_list(self.manifest.get("sessions"))

    def update_session(self, **fields: Any) -> None:
        """Merge ``fields`` into this invocation's session record (atomic manifest replace)."""
        if self.session is None:
            raise RuntimeError("store not open for writing")
        sessions = self.sessions
        sessions[self.session] = {**sessions[self.session], **fields}
        self.update_manifest(sessions=sessions)

    def conditions_of_results(self) -> list[dict[str, Any]]:
        """The distinct ``conditions`` of the results readers see (last line per sample)."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.latest().values():
            if r.conditions:
                seen.setdefault(json.dumps(r.conditions, sort_keys=True, default=str), r.conditions)
        return list(seen.values())

    def update_manifest(self, **fields: Any) -> None:
        """Merge ``fields`` into the manifest (atomic replace)."""
        self._write_manifest({**self.manifest, **fields, "updated_at": time.time()})

    def close(self) -> None:
        """``fsync`` what is pending, release the file and the lock."""
        with self._sync_lock:
            self._sync_locked()
        for attr in ("_fd", "_lock_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Result]:
        return iter(self.results)
