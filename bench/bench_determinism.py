"""Same command, same numbers? The same RULER sweep at -c 1, -c 4 and through the offline engine,
without and with ``--deterministic``, side by side.

Each configuration is a real ``longctx sweep`` (a subprocess, its own fresh vLLM server or offline
engine, its own run folder). Printed per mode: seconds per sample (generation wall time, from the
manifest's ``started_at`` - engine ready - to ``finished_at``, over the samples), accuracy, and how
many predictions differ from the -c 1 run; then the cost of deterministic mode.

    .venv/bin/python bench/bench_determinism.py            # 30 prompts: niah_single_2, 2k/4k, 5 depths, 3 samples
    .venv/bin/python bench/bench_determinism.py --out /tmp/det --samples 1

Run folders are kept under ``--out`` (resumable: rerunning reuses finished folders).
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


def sweep(out: Path, args: list[str], base: list[str]) -> tuple[dict[str, str | None], float, float, str]:
    """Run one sweep; (predictions by sample id, seconds per sample, accuracy, dtype)."""
    cmd = [sys.executable, "-m", "longctx", "sweep", *base, *args, "--out", str(out)]
    print("$", " ".join(cmd[2:]), flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sweep failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    rows = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["sample_id"]] = r
    manifest = json.loads((out / "manifest.json").read_text())
    session = manifest["sessions"][-1]
    wall = (manifest.get("finished_at") or time.time()) - (manifest.get("started_at") or start)
    scored = [r["score"] for r in rows.values() if r["score"] is not None]
    dtype = str((session.get("conditions") or {}).get("dtype") or "?")
    return ({k: r["prediction"] for k, r in rows.items()}, wall / max(1, len(rows)),
            sum(scored) / max(1, len(scored)), dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-determinism"))
    parser.add_argument("--task", default="ruler/niah_single_2")
    parser.add_argument("--lengths", default="2k,4k")
    parser.add_argument("--depths", default="0:100:5")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--model", default="default")
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
            preds, per_sample, acc, dtype = sweep(args.out / slug, cfg_args + mode_args, base)
            times.append(per_sample)
            if reference is None:
                reference, same = preds, "reference"
            else:
                diff = [k for k in reference if preds.get(k) != reference[k]]
                same = "identical" if not diff else f"{len(diff)}/{len(reference)} differ (e.g. {diff[0]})"
            table.append((mode, label, per_sample, acc, dtype, same))
        per_mode[mode] = sum(times[:2]) / 2  # server runs: -c 1 and -c 4

    print()
    print(f"{'mode':<14} {'config':<13} {'s/sample':>9} {'accuracy':>9} {'dtype':>9}  predictions vs -c 1")
    for mode, label, per_sample, acc, dtype, same in table:
        print(f"{mode:<14} {label:<13} {per_sample:>9.2f} {100 * acc:>8.0f}% {dtype:>9}  {same}")
    if per_mode.get("default"):
        ratio = per_mode["deterministic"] / per_mode["default"]
        print(f"\ndeterministic costs {ratio:.2f}x the seconds per sample of default (server, mean of -c 1 and -c 4)")


if __name__ == "__main__":
    main()
