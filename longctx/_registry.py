"""Registration by decorator, the only way tasks and runners become known.

``@task("ruler/niah_single_1", haystack="noise")`` on a family class registers one variant; stack
decorators for more variants (parameters, not copies). ``@runner("vllm")`` registers a runner class.
A family or runner may declare an ``Options`` msgspec Struct (``forbid_unknown_fields=True``) for
``-O key=value`` options; they are validated, never passed through blindly.

Built-in plug-ins live in ``longctx.tasks`` / ``longctx.runners``; third-party packages add theirs
through the ``longctx.tasks`` / ``longctx.runners`` entry-point groups. Plug-in modules must import
heavy libraries (torch, vllm, transformers) lazily, so listing names stays fast. A plug-in package
may name its modules in a ``BUILTIN`` dict (name -> module, as ``longctx.runners`` does): loading
the group imports them all, while :func:`get_runner_entry` imports only the one it needs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

import msgspec

from longctx._errors import LongctxError, UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A registered task variant or runner."""

    name: str
    """Registered name."""
    factory: type
    """The class constructed for it."""
    params: dict[str, Any] = field(default_factory=dict)
    """Variant parameters bound at registration (tasks)."""
    summary: str = ""
    """One line for listings."""

    @property
    def family(self) -> str:
        """Module-level family name (the part before the slash, or the whole name)."""
        return self.name.split("/")[0]


_TASKS: dict[str, Entry] = {}
_RUNNERS: dict[str, Entry] = {}
_loaded = False


def _summary(cls: type, summary: str | None) -> str:
    if summary:
        return summary
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def task(name: str, *, summary: str | None = None, **params: Any) -> Callable[[type[T]], type[T]]:
    """Register ``cls(name=..., options=..., **params)`` as task ``name``."""

    def deco(cls: type[T]) -> type[T]:
        if name in _TASKS and _TASKS[name].factory is not cls:
            raise RuntimeError(f"task {name!r} registered twice")
        _TASKS[name] = Entry(name, cls, dict(params), _summary(cls, summary))
        return cls

    return deco


def runner(name: str, *, summary: str | None = None) -> Callable[[type[T]], type[T]]:
    """Register ``cls(config=..., options=...)`` as runner ``name``."""

    def deco(cls: type[T]) -> type[T]:
        if name in _RUNNERS and _RUNNERS[name].factory is not cls:
            raise RuntimeError(f"runner {name!r} registered twice")
        _RUNNERS[name] = Entry(name, cls, {}, _summary(cls, summary))
        return cls

    return deco


_loaded_groups: set[str] = set()


def _builtin_modules(group: str) -> dict[str, str]:
    """Name -> module of the built-in plug-ins of ``group`` (its package's ``BUILTIN``); a package
    without one registers everything when imported."""
    return getattr(importlib.import_module(group), "BUILTIN", {})


def _load_builtin(group: str, name: str) -> None:
    """Register built-in ``name`` of ``group`` without loading the other plug-ins: import the
    group's package and, when its ``BUILTIN`` table names ``name``, that module."""
    module = _builtin_modules(group).get(name)
    if module is not None:
        importlib.import_module(module)


def load_plugins(*groups: str) -> None:
    """Import built-in and entry-point plug-ins once: of ``groups`` (``longctx.tasks``,
    ``longctx.runners``), all when none is given. Reading tasks does not import the runners (and
    their HTTP clients / engines): reports and ``longctx tasks`` start faster."""
    global _loaded
    for group in groups or ("longctx.tasks", "longctx.runners"):
        if group in _loaded_groups:
            continue
        _loaded_groups.add(group)
        for module in _builtin_modules(group).values():
            importlib.import_module(module)
        for ep in entry_points(group=group):
            ep.load()
    _loaded = {"longctx.tasks", "longctx.runners"} <= _loaded_groups


def tasks() -> dict[str, Entry]:
    """Every registered task, by name."""
    load_plugins("longctx.tasks")
    return dict(sorted(_TASKS.items()))


def runners() -> dict[str, Entry]:
    """Every registered runner, by name."""
    load_plugins("longctx.runners")
    return dict(sorted(_RUNNERS.items()))


def parse_options(cls: type, options: dict[str, Any], what: str) -> Any:
    """Validate ``-O key=value`` options against ``cls.Options`` (strings are coerced)."""
    opts_type = getattr(cls, "Options", None)
    if opts_type is None:
        if options:
            raise LongctxError(f"{what} takes no options (got {', '.join(sorted(options))})")
        return None
    try:
        return msgspec.convert(options, opts_type, strict=False)
    except msgspec.ValidationError as exc:
        known = ", ".join(opts_type.__struct_fields__)
        raise LongctxError(f"bad option for {what}: {exc} (options: {known})") from None


def get_task(name: str, options: dict[str, Any] | None = None) -> Any:
    """Instantiate task ``name`` with validated options; unknown names get a did-you-mean.

    A built-in name needs only the built-in families (importing ``longctx.tasks``); any other
    name loads the entry-point plug-ins too (reading every installed distribution's entry points
    is most of a small sweep's registry time)."""
    if name not in _TASKS:
        _load_builtin("longctx.tasks", name)
    if name in _TASKS:
        entry = _TASKS[name]
    else:
        known = tasks()
        if name not in known:
            raise UnknownNameError("task", name, known)
        entry = known[name]
    opts = parse_options(entry.factory, options or {}, f"task {name}")
    return entry.factory(name=name, options=opts, **entry.params)


def get_runner_entry(name: str) -> Entry:
    """The registry entry of runner ``name``; unknown names get a did-you-mean.

    A built-in name imports only its own module (a sweep does not pay for the other runners'
    imports); any other name loads every plug-in first (entry points, and the full list for the
    did-you-mean)."""
    if name not in _RUNNERS:
        _load_builtin("longctx.runners", name)
    if name in _RUNNERS:
        return _RUNNERS[name]
    known = runners()
    if name not in known:
        raise UnknownNameError("runner", name, known)
    return known[name]
