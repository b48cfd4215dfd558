"""Run folders at a glance (``longctx runs``): what each holds and whether it is done.

Reads only ``manifest.json`` and the ``sample_id``/``error`` of each line of ``results.jsonl``
(no task, runner or model is constructed), and probes the folder's lock without taking it, so
listing is safe while sweeps run.

Status of a folder:

- ``running``: a sweep holds its lock now;
- ``finished``: every planned sample has a result (some may be errors: see ``errors``);
- ``stopped``: the sweep ended early on its own (engine gone, too many errors; ``stopped`` says why);
- ``interrupted``: fewer results than planned and nobody is writing (killed, Ctrl-C, ``--limit``):
  rerun the same command (``--config FOLDER/config.yaml``) to resume;
- ``corrupt``: the manifest cannot be read (``problem`` says why).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from longctx._store import MANIFEST, RESULTS


class RunStatus(msgspec.Struct):
    """One run folder as ``longctx runs`` lists it."""

    path: str
    """The folder."""
    status: str
    """``running``, ``finished``, ``stopped``, ``interrupted`` or ``corrupt``."""
    planned: int | None = None
    """Samples in the sweep's plan (None when the sweep never got that far)."""
    recorded: int = 0
    """Samples with a result (the last line per sample counts)."""
    errors: int = 0
    """Recorded samples whose last result is a runner error."""
    lines: int = 0
    """Lines of ``results.jsonl`` (retries of errors included)."""
    tasks: list[str] = []
    """Task names (manifest identity)."""
    runner: str = ""
    """Runner name."""
    model: str = ""
    """Model as given to the sweep."""
    updated_at: float | None = None
    """Unix time the manifest was last written."""
    stopped: str | None = None
    """Why the sweep stopped early, when it did."""
    problem: str | None = None
    """What is wrong with a corrupt folder."""
    resume: str | None = None
    """A command that resumes (or reruns) the sweep: ``longctx sweep --config FOLDER`` when the
    folder has a ``config.yaml``, else the recorded command line of a ``longctx sweep``."""

    @property
    def pending(self) -> int | None:
        """Planned samples without a result yet."""
        return None if self.planned is None else max(0, self.planned - self.recorded)


class _Line(msgspec.Struct):
    sample_id: str
    error: str | None = None


_line_decoder = msgspec.json.Decoder(_Line)


def _count_results(path: Path) -> tuple[int, int, int]:
    """``(lines, samples, samples whose last line is an error)``; undecodable lines are skipped."""
    last: dict[str, bool] = {}
    lines = 0
    if not path.exists():
        return 0, 0, 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                line = _line_decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a torn tail (or a corrupt line, which a resume would name)
            lines += 1
            last[line.sample_id] = line.error is not None
    return lines, len(last), sum(last.values())


def _locked(folder: Path) -> bool:
    """True when a sweep holds the folder's lock (probed with a shared, non-blocking lock)."""
    try:
        fd = os.open(folder / ".lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def run_status(folder: str | Path) -> RunStatus:
    """The status of one run folder (a folder with a ``manifest.json``)."""
    folder = Path(folder)
    try:
        manifest: Any = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return RunStatus(str(folder), "corrupt", problem=f"{MANIFEST}: {exc}")
    if not isinstance(manifest, dict):
        return RunStatus(str(folder), "corrupt", problem=f"{MANIFEST}: not a JSON object")
    ident = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    lines, recorded, errors = _count_results(folder / RESULTS)
    planned = manifest.get("planned")
    planned = planned if isinstance(planned, int) else None
    stopped = manifest.get("stopped") or None
    if _locked(folder):
        status = "running"
    elif planned is not None and recorded >= planned:
        status = "finished"
    elif stopped:
        status = "stopped"
    else:
        status = "interrupted"
    updated = manifest.get("updated_at")
    return RunStatus(
        resume=_resume_command(folder, manifest.get("argv")),
        path=str(folder),
        status=status,
        planned=planned,
        recorded=recorded,
        errors=errors,
        lines=lines,
        tasks=[str(t) for t in ident.get("tasks", []) or []],
        runner=str(ident.get("runner") or ""),
        model=str(ident.get("model") or ""),
        updated_at=float(updated) if isinstance(updated, (int, float)) else None,
        stopped=str(stopped) if stopped else None,
    )


def _resume_command(folder: Path, argv: Any) -> str | None:
    import shlex

    if (folder / "config.yaml").is_file():
        return shlex.join(["longctx", "sweep", "--config", str(folder)])
    words = argv if isinstance(argv, list) and all(isinstance(a, str) for a in argv) else []
    if len(words) > 1 and words[1] == "sweep":
        return shlex.join(["longctx", *words[1:]])
    return None


def _run_folders(root: Path, depth: int) -> Iterator[Path]:
    if (root / MANIFEST).is_file():
        yield root
        return
    if depth <= 0:
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        yield from _run_folders(child, depth - 1)


def list_runs(root: str | Path = "runs", depth: int = 3) -> list[RunStatus]:
    """Every run folder at or under ``root`` (down to ``depth`` levels), most recently updated first.

    ``root`` may itself be a run folder. A missing ``root`` has no runs.
    """
    root = Path(root)
    found = [run_status(folder) for folder in _run_folders(root, depth)]
    return sorted(found, key=lambda r: (-(r.updated_at or 0), r.path))
