"""Reports over run folders: the aggregation data API and the self-contained HTML report.

- :mod:`longctx.reports.aggregate`: pure functions from results to numbers (reusable by any report);
- :mod:`longctx.reports.runs`: run folders loaded for reporting (:func:`load_runs`);
- :mod:`longctx.reports.figures`: plotly figures (heatmaps, accuracy-vs-length curves);
- :mod:`longctx.reports.html`: the one-file HTML report (:func:`write_report`);
- :mod:`longctx.reports.compare`: runs on the same samples compared (:func:`compare_runs`): sample
  identity, paired tests (:mod:`longctx.reports.stats`), effective length, cost
  (:mod:`longctx.reports.cost`), retrieval recall (:mod:`longctx.reports.retrieval`);
- :mod:`longctx.reports.compare_html`: the one-file comparison page (:func:`write_compare`).

Library code: no rich, no printing; plotly is imported only when a report is rendered.
"""

from longctx.reports.aggregate import (
    Cell,
    DepthAxis,
    Margin,
    Pair,
    Stats,
    by_length,
    by_task,
    cells,
    depth_axes,
    depth_axis,
    failing,
    length_label,
    paired_scores,
    summarize,
    wilson_interval,
)
from longctx.reports.compare import (
    Comparison,
    EffectiveLength,
    PairedTest,
    PairIdentity,
    classify_runs,
    compare_runs,
    effective_length,
    paired_tests,
)
from longctx.reports.compare_html import render_compare, write_compare
from longctx.reports.cost import Cost, costs
from longctx.reports.html import render_report, write_report
from longctx.reports.retrieval import RetrievalSplit, retrieval_splits
from longctx.reports.runs import RunData, load_runs, results_by_run
from longctx.reports.stats import holm, mcnemar_exact, paired_bootstrap

__all__ = [
    "Cell",
    "Comparison",
    "Cost",
    "DepthAxis",
    "EffectiveLength",
    "Margin",
    "Pair",
    "PairIdentity",
    "PairedTest",
    "RetrievalSplit",
    "RunData",
    "Stats",
    "by_length",
    "by_task",
    "cells",
    "classify_runs",
    "compare_runs",
    "costs",
    "depth_axes",
    "depth_axis",
    "effective_length",
    "failing",
    "holm",
    "length_label",
    "load_runs",
    "mcnemar_exact",
    "paired_bootstrap",
    "paired_scores",
    "paired_tests",
    "render_compare",
    "render_report",
    "results_by_run",
    "retrieval_splits",
    "summarize",
    "wilson_interval",
    "write_compare",
    "write_report",
]

