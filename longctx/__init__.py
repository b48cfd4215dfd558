"""longctx: measure how well language models use long contexts, and where they fail.

The public Python API (everything else is private and may change)::

    import longctx

    outcome = longctx.sweep(tasks=["ruler/niah_single_1"], lengths="1k,2k,4k", depths="0:100:5",
                            samples=3, runner="vllm", model="default")      # = longctx sweep ...
    runs = longctx.load_runs([outcome.store.root])                         # results, manifests
    longctx.report(runs, "report.html")                                    # = longctx report
    longctx.compare(["runs/a", "runs/b"], "compare.html")                  # = longctx compare

- running: :func:`sweep` (keyword arguments = the flags of ``longctx sweep``, plus ``preset`` and
  ``config``), :func:`run_sweep` / :class:`SweepSpec` / :class:`SweepOutcome` underneath;
- reading: :func:`load_runs` (:class:`RunData`), :func:`report`, :func:`compare`
  (:class:`Comparison`), :func:`list_runs` (:class:`RunStatus`: finished / interrupted / ...);
- listing: :func:`list_tasks`, :func:`list_runners`, :data:`PRESETS`;
- plugging in: the :func:`task` and :func:`runner` decorators, the protocols (:class:`Task`,
  :class:`Scorer`, :class:`Runner`, :class:`Tokenizer`, :class:`Progress`), the records
  (:class:`Sample`, :class:`Prompt`, :class:`Message`, :class:`Generation`, :class:`Result`,
  :class:`Grid`, :class:`RunnerConfig`); third-party packages register modules under the
  ``longctx.tasks`` / ``longctx.runners`` entry-point groups;
- progress: sweeps are silent unless given a :class:`Progress`; ``progress=longctx.RichProgress()``
  draws the command line's bars (in a terminal or a notebook);
- errors: :class:`LongctxError` (bad input, one line), :class:`SweepStopped` (``EngineGone``,
  ``TooManyErrors``, ``CostCapReached``), :class:`RunnerError`;
- prices: :func:`load_prices` (:class:`PriceTable`: the default table, the user's file, a price
  file); :func:`report`, :func:`compare` and :func:`sweep` (with ``max_cost_usd``) take a price
  file as ``prices=``.

Importing :mod:`longctx` is light: names are imported on first use (no torch, vllm, transformers,
plotly or scipy until a sweep, a report or a comparison needs them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # running and reading
    "sweep": "longctx._api",
    "report": "longctx._api",
    "compare": "longctx._api",
    "load_runs": "longctx._api",
    "list_tasks": "longctx._api",
    "list_runners": "longctx._api",
    "list_runs": "longctx._runs",
    "RunStatus": "longctx._runs",
    "run_sweep": "longctx._sweep",
    "SweepSpec": "longctx._sweep",
    "SweepOutcome": "longctx._sweep",
    "RunData": "longctx.reports.runs",
    "Comparison": "longctx.reports.compare",
    "PRESETS": "longctx._presets",
    "Preset": "longctx._presets",
    # plugging in
    "task": "longctx._registry",
    "runner": "longctx._registry",
    "Sample": "longctx._records",
    "Prompt": "longctx._records",
    "Message": "longctx._records",
    "Generation": "longctx._records",
    "Result": "longctx._records",
    "Grid": "longctx._protocols",
    "RunnerConfig": "longctx._protocols",
    "Task": "longctx._protocols",
    "Scorer": "longctx._protocols",
    "CorpusScorer": "longctx._protocols",
    "ScoringSource": "longctx._protocols",
    "Runner": "longctx._protocols",
    "Tokenizer": "longctx._protocols",
    "Progress": "longctx._protocols",
    "NullProgress": "longctx._protocols",
    "RichProgress": "longctx.cli._progress",
    # errors
    "LongctxError": "longctx._errors",
    "UnknownNameError": "longctx._errors",
    "RunnerError": "longctx._errors",
    "SweepStopped": "longctx._errors",
    "EngineGone": "longctx._errors",
    "TooManyErrors": "longctx._errors",
    "CostCapReached": "longctx._errors",
    # prices (USD of results, --max-cost-usd)
    "load_prices": "longctx._prices",
    "PriceTable": "longctx._prices",
}

__all__ = [
    "PRESETS",
    "Comparison",
    "CorpusScorer",
    "CostCapReached",
    "EngineGone",
    "Generation",
    "Grid",
    "LongctxError",
    "Message",
    "NullProgress",
    "Preset",
    "PriceTable",
    "Progress",
    "Prompt",
    "Result",
    "RichProgress",
    "RunData",
    "RunStatus",
    "Runner",
    "RunnerConfig",
    "RunnerError",
    "Sample",
    "Scorer",
    "ScoringSource",
    "SweepOutcome",
    "SweepSpec",
    "SweepStopped",
    "Task",
    "Tokenizer",
    "TooManyErrors",
    "UnknownNameError",
    "__version__",
    "compare",
    "list_runners",
    "list_runs",
    "list_tasks",
    "load_prices",
    "load_runs",
    "report",
    "run_sweep",
    "runner",
    "sweep",
    "task",
]


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562), so ``import longctx`` stays light."""
    if name == "__version__":
        from longctx._versions import dist_version

        value: Any = dist_version("longctx") or "dev"
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'longctx' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs; at run time names come from __getattr__
    from longctx._api import compare, list_runners, list_tasks, load_runs, report, sweep
    from longctx._errors import (
        EngineGone,
        LongctxError,
        RunnerError,
        SweepStopped,
        TooManyErrors,
        UnknownNameError,
    )
    from longctx._presets import PRESETS, Preset
    from longctx._protocols import (
        CorpusScorer,
        Grid,
        NullProgress,
        Progress,
        Runner,
        RunnerConfig,
        Scorer,
        ScoringSource,
        Task,
        Tokenizer,
    )
    from longctx._records import Generation, Message, Prompt, Result, Sample
    from longctx._registry import runner, task
    from longctx._runs import RunStatus, list_runs
    from longctx._sweep import SweepOutcome, SweepSpec, run_sweep
    from longctx.cli._progress import RichProgress
    from longctx.reports.compare import Comparison
    from longctx.reports.runs import RunData
