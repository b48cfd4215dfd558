"""The registry's lazy loading: a built-in runner (task) name imports only what it needs; listings,
unknown names and third-party names still load every plug-in."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from longctx._errors import UnknownNameError
from longctx._registry import get_runner_entry, get_task, runners, tasks
from longctx.runners import BUILTIN


def fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; its last stdout line, parsed as JSON."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_builtin_runner_imports_only_its_own_module():
    got = fresh("""
        import json, sys
        from longctx._registry import get_runner_entry
        entry = get_runner_entry("oracle")
        print(json.dumps({"name": entry.name, "module": entry.factory.__module__,
                          "runners": sorted(m for m in sys.modules if m.startswith("longctx.runners"))}))
    """)
    assert got["name"] == "oracle" and got["module"] == "longctx.runners.oracle"
    assert got["runners"] == ["longctx.runners", "longctx.runners.oracle"]


def test_a_builtin_task_does_not_read_entry_points():
    got = fresh("""
        import json, sys
        import importlib.metadata
        calls = []
        real = importlib.metadata.entry_points
        importlib.metadata.entry_points = lambda *a, **k: calls.append(k) or real(*a, **k)
        from longctx._registry import get_runner_entry, get_task
        get_task("ruler/niah_single_1")
        get_runner_entry("oracle")
        print(json.dumps({"calls": calls,
                          "runners": sorted(m for m in sys.modules if m.startswith("longctx.runners."))}))
    """)
    assert got == {"calls": [], "runners": ["longctx.runners.oracle"]}


def test_listing_in_a_fresh_process_still_shows_every_runner():
    got = fresh("""
        import json
        from longctx._registry import get_runner_entry, runners
        get_runner_entry("oracle")
        print(json.dumps(sorted(runners())))
    """)
    assert set(BUILTIN) <= set(got)


def test_the_table_names_the_module_that_registers_each_builtin():
    known = runners()
    for name, module in BUILTIN.items():
        assert known[name].factory.__module__ == module, name
    builtin = {n for n, e in known.items() if e.factory.__module__.startswith("longctx.runners.")}
    assert builtin == set(BUILTIN)  # a new built-in runner needs its line in runners/__init__.py


def test_a_builtin_name_resolves_to_the_listed_entry():
    known = runners()
    for name in BUILTIN:
        assert get_runner_entry(name) is known[name]
    assert get_task("ruler/niah_single_1").name == "ruler/niah_single_1"
    assert "ruler/niah_single_1" in tasks()


@pytest.mark.parametrize("kind, name, hint", [("runner", "oracl", "oracle"),
                                              ("task", "ruler/niah_singel_1", "ruler/niah_single_1")])
def test_unknown_names_in_a_fresh_process_get_did_you_mean(kind, name, hint):
    got = fresh(f"""
        import json
        from longctx._errors import UnknownNameError
        from longctx._registry import get_runner_entry, get_task
        try:
            get_runner_entry({name!r}) if {kind!r} == "runner" else get_task({name!r})
        except UnknownNameError as exc:
            print(json.dumps({{"message": str(exc), "suggestions": exc.suggestions}}))
    """)
    assert hint in got["suggestions"]
    assert f"unknown {kind} {name!r}; did you mean" in got["message"]
    with pytest.raises(UnknownNameError, match="did you mean"):
        get_runner_entry(name) if kind == "runner" else get_task(name)
