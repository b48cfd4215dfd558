"""Reports and store: ``longctx report`` on 10,000 records and loading a 100,000-line results file.

Builds synthetic run folders in a temporary directory -- ``manifest.json`` through
``RunStore.open_for_write`` and ``results.jsonl`` lines through ``longctx._records.encode`` (the
one encoder), with realistic records: RULER-like tasks over lengths x depths x samples, predictions
and references, ~30% failing, ~1% runner errors, task metadata in ``extra`` -- then measures

- ``longctx report RUN -o report.html --no-table`` as a whole process: wall seconds and HTML size
  (target: < 3 s and < 50 MB for 10,000 records);
- ``RunStore.open_for_read`` and ``reports.runs.load_runs`` on a folder of 100,000 lines, in
  process, best of ``--repeat`` (target: < 1 s).

    python bench/bench_reports.py [--report-records 10000] [--store-lines 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from longctx._records import Result, encode
from longctx._store import RESULTS, RunStore

TASKS = ("ruler/niah_single_1", "ruler/niah_multikey_2", "ruler/niah_single_2", "ruler/niah_multivalue")
LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
DEPTHS = tuple(float(d) for d in range(0, 101, 10))


def synthetic_results(n: int, seed: int = 0) -> list[Result]:
    """``n`` results spread over tasks x lengths x depths (as many samples per cell as needed)."""
    rng = random.Random(seed)
    cells = [(t, L, d) for t in TASKS for L in LENGTHS for d in DEPTHS]
    out = []
    for i in range(n):
        task, length, depth = cells[i % len(cells)]
        index = i // len(cells)
        value = str(rng.randint(10**6, 10**7 - 1))
        error = "HTTP 500: engine overloaded" if rng.random() < 0.01 else None
        correct = rng.random() < 0.7
        prediction = None if error else (f" {value}." if correct else f" {rng.randint(10**6, 10**7 - 1)}. The answer")
        score = None if error else float(correct)
        ctx = length - 128 - rng.randint(0, 40)
        out.append(Result(
            sample_id=f"{task}|L{length}|D{depth:g}|{index}", task=task, runner="vllm", model="default",
            length=length, context_tokens=ctx, depth=depth, needle_positions=(int(ctx * depth / 100) + 30,),
            evidence_depth=depth, prediction=prediction, references=(value,), score=score,
            scores={} if error else {"string_match_all": score}, error=error, latency_s=rng.random() * 3,
            prompt_tokens=None if error else ctx, cached_tokens=None if error else rng.randint(0, ctx),
            completion_tokens=None if error else rng.randint(3, 128), finished_at=1.76e9 + i,
            extra={"metadata": {"index": index, "haystack": "noise", "query": "tall-tree", "n_targets": 1,
                                "fill": round((ctx + 128) / length, 4), "haystack_units": ctx // 25}},
            sample_hash=f"{rng.getrandbits(64):016x}", session=0,
        ))
    return out


def write_run(root: Path, results: list[Result]) -> Path:
    """A run folder as a sweep leaves it (manifest by the store, lines by the one encoder)."""
    identity = {"tasks": sorted({r.task for r in results}), "runner": "vllm", "model": "default", "mode": "completions",
                "grid": {"lengths": list(LENGTHS), "depths": list(DEPTHS)}}
    store = RunStore.open_for_write(root, identity, {"planned": len(results)})
    store.close()
    with open(root / RESULTS, "wb") as fh:
        fh.write(b"".join(encode(r) + b"\n" for r in results))
    return root


def best_of(repeat: int, fn) -> tuple[float, float]:
    """Best wall seconds and best CPU seconds (this process) of ``repeat`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-records", type=int, default=10_000)
    parser.add_argument("--store-lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="write the run folders and the report here instead of a temp folder")
    args = parser.parse_args()
    from longctx.reports.runs import load_runs

    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp_s:
        tmp = Path(args.keep or tmp_s)
        small = write_run(tmp / "run-report", synthetic_results(args.report_records))
        big = write_run(tmp / "run-store", synthetic_results(args.store_lines, seed=1))
        html = tmp / "report.html"
        cmd = [sys.executable, "-m", "longctx", "report", str(small), "-o", str(html), "--no-table"]
        report_s, report_cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), children_cpu()
            subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ))
            report_s.append(time.perf_counter() - t0)
            report_cpu.append(children_cpu() - c0)
        size_mb = html.stat().st_size / 1e6
        open_s, open_cpu = best_of(args.repeat, lambda: RunStore.open_for_read(big))
        load_s, load_cpu = best_of(args.repeat, lambda: load_runs([big]))
        lines = args.store_lines
        size = (big / RESULTS).stat().st_size / 1e6
        print(f"{'what':<46} {'wall':>7} {'cpu':>7} {'target':>7} {'wall/target':>11} {'cpu/target':>10}")

        def row(what: str, wall: float, cpu: float | None, target: float) -> None:
            cpu_s = f"{cpu:>7.2f}" if cpu is not None else f"{'':>7}"
            ratio = f"{cpu / target:>9.2f}x" if cpu is not None else f"{'':>10}"
            print(f"{what:<46} {wall:>7.2f} {cpu_s} {target:>7.2f} {wall / target:>10.2f}x {ratio}")

        row(f"longctx report, {args.report_records:,} records (s, best)", min(report_s), min(report_cpu), 3.0)
        row("  HTML size (MB)", size_mb, None, 50.0)
        row(f"RunStore.open_for_read, {lines:,} lines, {size:.0f} MB (s)", open_s, open_cpu, 1.0)
        row(f"load_runs, {lines:,} lines (s)", load_s, load_cpu, 1.0)
        print("ratio = measured / target (<= 1 meets it); cpu = user + system seconds of the measured work "
              "(wall on a shared machine also measures the neighbours)")


if __name__ == "__main__":
    main()
