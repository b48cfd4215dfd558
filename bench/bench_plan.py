"""The streaming plan, whole process: peak memory of a long sweep and the time to resume a finished one.

Two measurements, each ``longctx sweep --runner oracle`` as its own process (peak RSS from the
kernel's rusage of that very process, ``os.wait4``; wall and CPU seconds likewise):

1. **peak RSS**: every NIAH variant at one length (default all 8 at 128K) with ``-n N`` per cell
   over ``--depths`` (default 100 x 5 depths = RULER's 500 samples per length per task), i.e. 4,000
   samples of 128K tokens. Target (issue [08]): under 1.5 GB.
2. **resume**: a finished sweep (default all 8 variants, 1K-8K, 11 depths, 15 per cell = 5,280
   samples) run again with the same command: nothing is left to run. Target: under 2 s.

The oracle refuses lengths beyond ``--model``'s window, so the default model is used through a
temporary copy whose ``config.json`` says ``max_position_embeddings=131072`` (weights linked; only
the tokenizer is used). Haystack caches stay as they are (``--cold`` sets a fresh
``LONGCTX_CACHE`` for the long sweep: the essays and distractors are then tokenized in the run).

    python bench/bench_plan.py [--long-length 128k] [--long-samples 100] [--resume-repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_vs_ruler import long_window_copy

NIAH = ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery"]
LONGCTX = [sys.executable, "-m", "longctx"]


def measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd``: wall s, CPU s (user + system) and peak RSS (MB) of that process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "stdout": out.decode()}


def sweep_cmd(tasks: list[str], lengths: str, depths: str, n: int, model: Path, out: Path) -> list[str]:
    cmd = list(LONGCTX) + ["sweep"]
    for t in tasks:
        cmd += ["-t", f"ruler/{t}"]
    return cmd + ["-l", lengths, "-d", depths, "-n", str(n), "-r", "oracle", "-m", str(model), "-o", str(out)]


def count_lines(folder: Path) -> tuple[int, int]:
    ids = [json.loads(line)["sample_id"] for line in (folder / "results.jsonl").open() if line.strip()]
    return len(ids), len(set(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(NIAH))
    parser.add_argument("--long-length", default="128k")
    parser.add_argument("--long-depths", default="0:100:5")
    parser.add_argument("--long-samples", type=int, default=100, help="per (length, depth) cell")
    parser.add_argument("--resume-lengths", default="1k,2k,4k,8k")
    parser.add_argument("--resume-depths", default="0:100:11")
    parser.add_argument("--resume-samples", type=int, default=15)
    parser.add_argument("--resume-repeat", type=int, default=3)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--cold", action="store_true", help="fresh haystack cache for the long sweep")
    parser.add_argument("--json", help="write the measurements here too")
    args = parser.parse_args()
    from longctx._models import resolve_model

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows: dict[str, object] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp_s:
        tmp = Path(tmp_s)
        model = long_window_copy(resolve_model("default").path, tmp / "model-128k")
        env = dict(os.environ)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        print(f"{'what':<58} {'samples':>7} {'wall s':>7} {'cpu s':>6} {'peak MB':>8} {'target':>8} "
              f"{'ratio':>6}", flush=True)
        if not args.skip_long:
            out = tmp / "long"
            long_env = {**env, "LONGCTX_CACHE": str(tmp / "cache")} if args.cold else env
            m = measured(sweep_cmd(tasks, args.long_length, args.long_depths, args.long_samples, model, out),
                         long_env)
            n, distinct = count_lines(out)
            assert n == distinct, "duplicates"
            label = f"sweep {len(tasks)} variants at {args.long_length}, -n {args.long_samples} x {args.long_depths}"
            print(f"{label:<58} {n:>7} {m['wall_s']:>7.2f} {m['cpu_s']:>6.2f} {m['peak_rss_mb']:>8.0f} "
                  f"{'1536 MB':>8} {m['peak_rss_mb'] / 1536:>5.2f}x", flush=True)
            rows["long"] = {k: v for k, v in m.items() if k != "stdout"} | {"samples": n}
        out = tmp / "resume"
        cmd = sweep_cmd(tasks, args.resume_lengths, args.resume_depths, args.resume_samples, model, out)
        first = measured(cmd, env)
        n, distinct = count_lines(out)
        assert n == distinct, "duplicates"
        label = f"first run, {args.resume_lengths} x {args.resume_depths} x {args.resume_samples}"
        print(f"{label:<58} {n:>7} {first['wall_s']:>7.2f} {first['cpu_s']:>6.2f} {first['peak_rss_mb']:>8.0f}",
              flush=True)
        resumes = []
        for _ in range(args.resume_repeat):
            m = measured(cmd, env)
            assert f"0 new, {n} already done" in m["stdout"], m["stdout"][-500:]
            resumes.append(m)
        best = min(resumes, key=lambda m: m["wall_s"])
        label = f"resume of the finished sweep (best of {len(resumes)})"
        print(f"{label:<58} {n:>7} {best['wall_s']:>7.2f} {best['cpu_s']:>6.2f} {best['peak_rss_mb']:>8.0f} "
              f"{'2.00 s':>8} {best['wall_s'] / 2:>5.2f}x", flush=True)
        assert count_lines(out) == (n, n)
        rows["first"] = {k: v for k, v in first.items() if k != "stdout"} | {"samples": n}
        rows["resume"] = [{k: v for k, v in m.items() if k != "stdout"} for m in resumes]
    rows["load_after"] = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("ratio = measured / target (<= 1 meets it); peak MB = the sweep process's maximum resident set")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
