"""The escape battery: model-written code that tries to get out, run through the real sandbox.

Every attempt must be contained with a recorded reason, and the host must be unaffected (canary
files not written, the parent's environment not leaked, no process left behind). Each test runs in
every isolation mode this machine has (``bwrap``; the ``landlock`` fallback).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from longctx.runners.rlm.agent import Budget, BudgetExceeded, Limits
from longctx.runners.rlm.sandbox import CellResult, Sandbox, SandboxConfig

CANARY_ENV = "LONGCTX_TEST_CANARY"
CANARY_VALUE = f"canary-{uuid.uuid4().hex}"


def run(config: SandboxConfig, code: str, on_llm=None) -> tuple[CellResult, set[int]]:
    """Run ``code`` as one cell in a fresh sandbox; (result, every host pid the sandbox had)."""
    with Sandbox("the context", config, on_llm=on_llm) as box:
        seen = box.host_pids()
        result = box.exec(code)
        seen |= box.host_pids()
        assert not result.stopped or not box.alive
    return result, seen


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (dead, waiting for its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def assert_gone(pids: set[int]) -> None:
    """No process of the sandbox survives it."""
    alive = [pid for pid in pids if running(pid)]
    assert not alive, f"processes left behind: {alive}"


def host_path(name: str) -> Path:
    """A host path the sandbox does not mount: the test's own folder, or /var/tmp when the checkout
    lives under /tmp (inside the sandbox /tmp is its own tmpfs, where a missing file is just missing;
    the home folder may hold the mounted Python runtime, e.g. pyenv's, and so be visible read-only)."""
    here = Path(__file__).resolve().parent
    return (here if not str(here).startswith("/tmp/") else Path("/var/tmp")) / name


def expect(result: CellResult, *prefixes: str) -> str:
    """The recorded reason starts with one of ``prefixes``."""
    assert result.reasons, f"no reason recorded; error={result.error!r} stdout={result.stdout!r}"
    assert result.reasons[0].startswith(prefixes), result.reasons
    return result.reasons[0]


def test_tcp_connect_is_blocked(small_config):
    result, pids = run(small_config, 'import socket\nsocket.create_connection(("1.1.1.1", 80), timeout=2)')
    expect(result, "network blocked")
    assert_gone(pids)


def test_dns_is_blocked(small_config):
    result, _ = run(small_config, 'import socket\nprint(socket.getaddrinfo("example.com", 80))')
    expect(result, "network blocked")
    assert "example.com" not in result.stdout


def test_etc_shadow_is_unreadable(small_config, mode):
    result, _ = run(small_config, 'print(open("/etc/shadow").read())')
    expect(result, "not visible in sandbox" if mode == "bwrap" else "filesystem access denied")
    assert result.stdout == ""


def test_host_files_and_home_are_unreadable(small_config, mode):
    secret = host_path(f"secret-{uuid.uuid4().hex}.txt")
    secret.write_text("host secret 42")
    try:
        result, _ = run(small_config, f"print(open({str(secret)!r}).read())")
    finally:
        secret.unlink()
    expect(result, "not visible in sandbox" if mode == "bwrap" else "filesystem access denied")
    assert "host secret" not in result.stdout

    home = Path.home()
    result, _ = run(small_config, f"import os\nprint(os.listdir({str(home)!r}))")
    host_entries = set(os.listdir(home))
    shown = set(result.stdout.strip("[]\n").replace("'", "").split(", ")) - {""}
    python_prefix_parts = set(Path(os.path.realpath(os.sys.base_prefix)).parts)
    assert shown <= python_prefix_parts, f"home listing leaked {shown & host_entries}"
    if mode != "bwrap":
        expect(result, "filesystem access denied")


def test_parent_environment_is_not_visible(small_config, monkeypatch):
    monkeypatch.setenv(CANARY_ENV, CANARY_VALUE)
    code = (
        "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ').read())\n"
        "print(open('/proc/1/environ').read())"
    )
    result, _ = run(small_config, code)
    assert CANARY_VALUE not in result.stdout + (result.error or "")
    environ = eval(result.stdout.splitlines()[0])  # noqa: S307 - our own repr
    assert set(environ) <= {"PWD", "LC_CTYPE"}, environ
    expect(result, "filesystem access denied")  # pid 1 (bwrap's init, or the host's) is off limits


def test_writes_outside_the_tmpfs_fail(small_config, mode):
    canary = host_path(f"canary-{uuid.uuid4().hex}")
    try:
        result, _ = run(small_config, f"open({str(canary)!r}, 'w').write('pwned')")
        assert not canary.exists()
    finally:
        canary.unlink(missing_ok=True)
    expect(result, "not visible in sandbox" if mode == "bwrap" else "filesystem access denied")
    system = f"/usr/lib/longctx-pwned-{uuid.uuid4().hex}"
    result, _ = run(small_config, f"open({system!r}, 'w').write('pwned')")
    assert not Path(system).exists()
    expect(result, "read-only filesystem" if mode == "bwrap" else "filesystem access denied")


def test_fork_bomb_hits_the_pids_limit(small_config):
    with Sandbox("ctx", small_config) as box:
        baseline = box.host_pids()
        result = box.exec("import os\nwhile True:\n    os.fork()")  # every process forks
        expect(result, "pids limit")
        assert {p for p in box.host_pids() if running(p)} == baseline  # no child outlives the cell
        sleepers = "import os, time\nwhile True:\n    if os.fork() == 0:\n        time.sleep(1000)"
        result = box.exec(sleepers)  # children that would live on
        expect(result, "pids limit")
        assert any(r.startswith("stray processes killed") for r in result.reasons), result.reasons
        assert {p for p in box.host_pids() if running(p)} == baseline
        after = box.exec("print('alive', len(context))")
        assert after.stdout == "alive 3\n" and not after.reasons
        seen = box.host_pids()
    assert_gone(baseline | seen)


@pytest.mark.parametrize(
    "code", ["x = bytearray(8 * 1024**3)", "a = []\nwhile True:\n    a.append(bytearray(10**7))"]
)
def test_memory_bomb_hits_the_memory_limit(small_config, code):
    config = SandboxConfig(**{**small_config.__dict__, "cell_timeout_s": 20.0})  # slow when the host is busy
    result, pids = run(config, code)
    expect(result, "memory limit")
    assert_gone(pids)


def test_infinite_loop_is_killed_at_the_cell_timeout(small_config):
    result, pids = run(small_config, "while True:\n    pass")
    expect(result, "cell timeout")
    assert result.stopped and 1.9 < result.wall_s < 5
    assert_gone(pids)


def test_cpu_time_limit_kills_a_spinning_worker(small_config):
    config = SandboxConfig(**{**small_config.__dict__, "cpu_s": 1, "cell_timeout_s": 20.0})
    result, pids = run(config, "while True:\n    pass")
    expect(result, "cpu limit")
    assert result.stopped and result.wall_s < 15
    assert_gone(pids)


def test_open_files_limit(small_config):
    result, _ = run(small_config, "handles = [open('/dev/null') for _ in range(100000)]")
    expect(result, "open files limit")


def test_disk_fill_stops_at_the_tmpfs_size(small_config, mode):
    code = "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'x' * 10**6)\n    i += 1"
    result, _ = run(small_config, code)
    expect(result, "disk full" if mode == "bwrap" else "filesystem access denied")
    if mode == "bwrap":
        result, _ = run(small_config, "open('/tmp/big', 'wb').write(b'x' * 10**7)")
        expect(result, "file size limit")


@pytest.mark.parametrize(
    "code",
    [
        "for _ in range(50000):\n    print('x' * 100)",
        "import os\nfor _ in range(500):\n    os.write(1, b'y' * 10000)",
    ],
)
def test_stdout_flood_is_truncated(small_config, code):
    result, _ = run(SandboxConfig(**{**small_config.__dict__, "cell_timeout_s": 20.0}), code)
    expect(result, "output truncated")
    assert len(result.stdout) == 1000 and result.stdout_chars >= 5_000_000


@pytest.mark.parametrize("target", ["os.getpid_of_test", "os.getppid()", "-1"])
def test_signalling_the_parent_is_blocked(small_config, target):
    pid = str(os.getpid()) if target == "os.getpid_of_test" else target
    with Sandbox("ctx", small_config) as box:
        result = box.exec(f"import os, signal\nos.kill({pid}, signal.SIGKILL)")
        expect(result, "signal blocked")
        assert box.alive and box.exec("print(1)").stdout == "1\n"
    os.kill(os.getpid(), 0)  # we are alive to say so


def test_ptrace_is_blocked(small_config):
    code = (
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "if libc.ptrace(16, os.getppid(), 0, 0) != 0:\n    raise OSError(ctypes.get_errno(), 'ptrace')"
    )
    result, _ = run(small_config, code)
    assert expect(result, "syscall blocked").startswith("syscall blocked: ptrace")


def test_other_processes_under_proc_are_invisible(small_config, mode):
    result, _ = run(small_config, "import os\nprint(os.listdir('/proc'))")
    expect(result, "filesystem access denied")
    result, _ = run(small_config, f"print(open('/proc/{os.getpid()}/environ').read())")
    expect(result, "not visible in sandbox" if mode == "bwrap" else "filesystem access denied")
    assert CANARY_VALUE not in result.stdout


def test_sub_call_fan_out_past_the_budget_stops_inside_the_cell(small_config):
    budget = Budget(Limits(max_sub_calls=5))
    answered: list[str] = []

    def on_llm(prompts: list[str], recursive: bool) -> list[str]:
        budget.reserve_sub_calls(len(prompts))
        answered.extend(prompts)
        return ["ok"] * len(prompts)

    code = "out = []\nfor i in range(1000):\n    out.append(llm_query(f'q{i}'))\nprint(len(out))"
    result, pids = run(small_config, code, on_llm=on_llm)
    reason = expect(result, "budget exceeded: sub_calls")
    assert "limit 5" in reason and result.stopped and answered == [f"q{i}" for i in range(5)]
    assert result.stdout == ""  # the cell never finished: no partial "answer" escapes
    with pytest.raises(BudgetExceeded):
        budget.reserve_sub_calls(1)
    assert_gone(pids)


@pytest.mark.parametrize("how", ["close", "timeout", "strays"])
def test_cleanup_leaves_no_cgroup_or_files(small_config, how):
    box = Sandbox("ctx", small_config)
    box.start()
    folder, cgroup = box._dir, box._cgroup
    assert folder is not None and folder.exists()
    if how == "timeout":  # killed mid-cell, with children
        box.exec(
            "import os, time\nfor _ in range(3):\n    os.fork() or time.sleep(100)\nwhile True:\n    pass"
        )
    elif how == "strays":  # children left behind, killed after the cell
        box.exec("import os, time\nfor _ in range(3):\n    os.fork() or time.sleep(100)")
    box.close()
    assert not folder.exists()
    assert cgroup is None or not cgroup.path.exists()


def test_kill_from_outside_does_not_leave_the_worker(small_config):
    """The controller's process group kill reaches bwrap's init and the worker (die-with-parent)."""
    with Sandbox("ctx", small_config) as box:
        pids = box.host_pids()
        assert box._proc is not None
        os.killpg(box._proc.pid, signal.SIGKILL)
        box._proc.wait(timeout=10)
        deadline = time.monotonic() + 10  # bwrap's init and the worker die with it (die-with-parent)
        while any(running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert_gone(pids)
        result = box.exec("print(1)")  # the dead worker is noticed and reported...
        assert result.stopped and result.reason.startswith(("killed", "sandbox died")), result.reasons
        result = box.exec("print(1)")  # ...and a fresh one answers the next cell
        assert result.stdout == "1\n" and box.starts == 2
        pids |= box.host_pids()
    assert_gone(pids)
