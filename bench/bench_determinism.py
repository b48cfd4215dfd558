"""Same command, same numbers? The same RULER sweep at -c 1, -c 4 and through the offline engine,
without and with ``--deterministic``, side by side.

Each configuration is a real ``longctx sweep`` (a subprocess, its own fresh vLLM server or offline
engine, its own run folder). Printed per mode: seconds per sample (the span between the first and
the last result's ``finished_at`` over the results in between: engine start-up excluded), accuracy,
and how many predictions differ from the -c 1 run, over the samples both have; then the cost of
deterministic mode.

    .venv/bin/python bench/bench_determinism.py            # 30 prompts: niah_single_2, 2k/4k, 5 depths, 3 samples
    .venv/bin/python bench/bench_determinism.py --limit 12 # at most 12 of them per configuration

Run folders are kept under ``--out``: rerunning resumes them (a folder that is complete is not
run again), so ``--limit`` can be raised step by step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [("-c 1", ["-c", "1"]), ("-c 4", ["-c", "4"]), ("offline -c 4", ["-c", "4", "-R", "engine=offline"])]
MODES = [("default", []), ("deterministic", ["--deterministic"])]


def lines(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


def sweep(out: Path, args: list[str], base: list[str], limit: int | None) -> tuple[dict, float, float, str]:
    """Run one sweep (up to ``limit`` results in the folder); (predictions by sample id, seconds
    per sample, accuracy, dtype)."""
    have = len(lines(out))
    extra = [] if limit is None else ["--limit", str(max(0, limit - have))]
    if limit is None or limit > have:
        cmd = [sys.executable, "-m", "longctx", "sweep", *base, *args, *extra, "--out", str(out)]
        print("$", " ".join(cmd[2:]), flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"sweep failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    rows = {r["sample_id"]: r for r in lines(out)}
    done = sorted(r["finished_at"] for r in rows.values())
    per_sample = (done[-1] - done[0]) / (len(done) - 1) if len(done) > 1 else float("nan")
    scored = [r["score"] for r in rows.values() if r["score"] is not None]
    dtypes = {str((r.get("conditions") or {}).get("dtype")) for r in rows.values()}
    return ({k: r["prediction"] for k, r in rows.items()}, per_sample,
            sum(scored) / max(1, len(scored)), "/".join(sorted(dtypes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-determinism"))
    parser.add_argument("--task", default="ruler/niah_single_2")
    parser.add_argument("--lengths", default="2k,4k")
    parser.add_argument("--depths", default="0:100:5")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit", type=int, help="at most this many samples per configuration")
    args = parser.parse_args()
    base = ["-t", args.task, "--lengths", args.lengths, "--depths", args.depths, "-n", str(args.samples),
            "--runner", "vllm", "--model", args.model]

    table: list[tuple[str, str, float, float, str, str]] = []
    per_mode: dict[str, float] = {}
    for mode, mode_args in MODES:
        reference: dict[str, str | None] | None = None
        times = []
        for label, cfg_args in CONFIGS:
            slug = f"{mode}-{label.replace(' ', '').replace('-', '')}"
            preds, per_sample, acc, dtype = sweep(args.out / slug, cfg_args + mode_args, base, args.limit)
            times.append(per_sample)
            if reference is None:
                reference, same = preds, f"reference ({len(preds)} samples)"
            else:
                common = [k for k in reference if k in preds]
                diff = [k for k in common if preds[k] != reference[k]]
                same = (f"identical ({len(common)} compared)" if not diff
                        else f"{len(diff)}/{len(common)} differ (e.g. {diff[0]})")
            table.append((mode, label, per_sample, acc, dtype, same))
        per_mode[mode] = sum(times[:2]) / 2  # server runs: -c 1 and -c 4

    print()
    print(f"{'mode':<14} {'config':<13} {'s/sample':>9} {'accuracy':>9} {'dtype':>9}  predictions vs -c 1")
    for mode, label, per_sample, acc, dtype, same in table:
        print(f"{mode:<14} {label:<13} {per_sample:>9.2f} {100 * acc:>8.0f}% {dtype:>9}  {same}")
    if per_mode.get("default"):
        ratio = per_mode["deterministic"] / per_mode["default"]
        print(f"\ndeterministic costs {ratio:.2f}x the seconds per sample of default (server, mean of -c 1 and -c 4)")
    # the same samples, one request at a time: request latency at -c 1 (not skewed by which samples ran)
    default = {r["sample_id"]: r for r in lines(args.out / "default-c1")}
    det = {r["sample_id"]: r for r in lines(args.out / "deterministic-c1")}
    both = [k for k in det if k in default]
    if both:
        a = sum(default[k]["latency_s"] for k in both) / len(both)
        b = sum(det[k]["latency_s"] for k in both) / len(both)
        print(f"same {len(both)} samples at -c 1: {a:.2f} s per request default, {b:.2f} s deterministic "
              f"({b / a:.2f}x)")


if __name__ == "__main__":
    main()
