"""Run folders as reports see them: a label, the manifest's key facts, the results."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from longctx._records import Result
from longctx._store import BATCH_KEYS, CONDITION_KEYS, RunStore
from longctx.reports.aggregate import latest, reported


class RunData(msgspec.Struct):
    """One run folder loaded for reporting."""

    label: str
    """Short unique name shown in legends and tables (the folder name, disambiguated)."""
    path: str
    """The folder."""
    manifest: dict[str, Any]
    """``manifest.json`` as written by the sweep."""
    results: list[Result]
    """Results, one per sample id (the last attempt wins); forced-choice results under the task
    label ``TASK (forced choice)`` (:func:`~longctx.reports.aggregate.reported`)."""

    def info(self) -> dict[str, str]:
        """Key facts for the report header: model, runner, tasks, created, updated, sessions, and
        ``mixed`` when the results were recorded under conditions that can change them
        (:meth:`mixed`).

        Read from the manifest (top level, then ``identity``), falling back to the results for
        model and runner, so reports work with any manifest layout; tasks are the ones present in
        the results (the manifest's list when there are none yet).
        """
        m, ident = self.manifest, self.manifest.get("identity", {}) or {}

        def pick(*keys: str) -> Any:
            for source in (m, ident):
                for key in keys:
                    if isinstance(source, dict) and source.get(key) not in (None, "", [], {}):
                        return source[key]
            return None

        def from_results(field: str) -> str:
            return ", ".join(dict.fromkeys(str(getattr(r, field)) for r in self.results))

        out = {
            "model": _short(pick("model")) or from_results("model"),
            "runner": _short(pick("runner")) or from_results("runner"),
            "tasks": from_results("task") or _short(pick("tasks", "task")),
            "created": _when(pick("created_at")),
            "updated": _when(pick("updated_at")),
            "sessions": _count(pick("sessions")),
            "config hash": str(pick("config_hash") or ""),
            "mixed": "; ".join(f"{k} {', '.join(v)}" for k, v in self.mixed().items()),
        }
        return {k: v for k, v in out.items() if v}

    def mixed(self) -> dict[str, list[str]]:
        """Conditions that differ between the results (``{"concurrency": ["4", "1"]}``), in what
        can change them (:data:`longctx._store.CONDITION_KEYS`); batch settings are ignored when
        every result was deterministic. Empty for a run recorded under one set of conditions."""
        conds = [r.conditions for r in self.results if r.conditions]
        all_deterministic = bool(conds) and all(c.get("deterministic") for c in conds)
        out: dict[str, list[str]] = {}
        for key in CONDITION_KEYS:
            if all_deterministic and key in BATCH_KEYS:
                continue
            values = list(dict.fromkeys(str(c.get(key)) for c in conds if c.get(key) is not None))
            if len(values) > 1:
                out[key] = values
        return out


def _short(value: Any) -> str:
    """A manifest value as one short string (dicts show their name/path when they have one)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        for key in ("name", "model", "path", "id"):
            if value.get(key):
                return str(value[key])
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_short(v) for v in value)
    return str(value)


def _count(value: Any) -> str:
    """Sessions as a count (a list of session records, or the count older manifests stored)."""
    if isinstance(value, list):
        return str(len(value))
    return str(value or "")


def _when(value: Any) -> str:
    if isinstance(value, (int, float)):
        return _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return str(value) if value else ""


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """Folder names, extended with parent folders (then ``#i``) until they are unique."""
    paths = [Path(p).resolve() for p in paths]
    labels = [p.name or str(p) for p in paths]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 4:
        depth += 1
        labels = ["/".join(p.parts[-depth:]) for p in paths]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def load_runs(paths: Iterable[str | Path]) -> list[RunData]:
    """Open run folders read-only (``LongctxError`` names a missing or corrupt folder)."""
    paths = [Path(p) for p in paths]
    stores = [RunStore.open_for_read(p) for p in paths]
    return [
        RunData(label=label, path=str(store.root), manifest=store.manifest,
                results=reported(latest(store.results)))
        for label, store in zip(unique_labels(paths), stores)
    ]


def results_by_run(runs: Sequence[RunData]) -> dict[str, list[Result]]:
    """``{label: results}`` for the functions of :mod:`longctx.reports.aggregate`."""
    return {run.label: run.results for run in runs}
