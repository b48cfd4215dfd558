"""Sample building, whole process: RULER's own generator vs ``longctx sweep --runner oracle``.

For every (task, length) this runs, as separate processes and one after the other,

- RULER's ``scripts/data/synthetic/niah.py`` (NVIDIA/RULER) exactly as RULER's ``prepare.py``
  calls it: the task's arguments from ``scripts/synthetic.yaml``, the template
  ``TASKS['niah']['template'] + TASKS['niah']['answer_prefix']`` (model template ``base``),
  ``--tokenizer_type hf --tokenizer_path`` the default model's folder, ``--tokens_to_generate 128``,
  ``--num_samples`` N; its interpreter is ``--ruler-python`` (a venv with what RULER imports);
- ``longctx sweep -t ruler/<task> -l <length> -d <depths> -n N/len(depths) -r oracle`` with the
  same tokenizer (``-m`` a temporary copy of the default model folder whose ``config.json`` says
  ``max_position_embeddings=131072``, weights symlinked, because the oracle refuses lengths beyond
  ``--model``'s window; only the tokenizer is used).

It prints wall seconds, CPU seconds (user + system, of the process and its children: the
machine may be shared, wall time then measures the neighbours too), samples/s, fill = (prompt tokens + tokens_to_generate) / length, min and
mean (RULER: its output's ``length`` field; longctx: ``metadata["fill"]`` of the results; RULER's
prompts have no chat template, longctx's have SmolLM2's) and RULER / longctx, side by side.

    python bench/bench_vs_ruler.py --ruler-dir /path/to/RULER --ruler-python /path/to/venv/bin/python \\
        [--tasks niah_single_1,niah_multikey_2,niah_multikey_3] [--lengths 4k,8k,16k,32k,64k,128k] \\
        [--samples 500] [--depths 0:100:5] [--essay-json PaulGrahamEssays.json]

Essay variants (niah_single_2, ...) run only with ``--essay-json`` (RULER reads
``scripts/data/synthetic/json/PaulGrahamEssays.json``, which its download script writes; the
bench copies the given file there for the run, and RULER's ``sent_tokenize`` needs nltk's punkt).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TASKS = "niah_single_1,niah_multikey_2,niah_multikey_3"
ESSAY_TASKS = {"niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"}
LONGCTX = [sys.executable, "-m", "longctx"]


def parse_lengths(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        part = part.strip().lower()
        out.append(int(float(part[:-1]) * 1024) if part.endswith("k") else int(part))
    return out


def yaml_args(ruler: Path, task: str) -> dict[str, object]:
    """The task's ``args`` in RULER's ``scripts/synthetic.yaml`` (a flat two-level block)."""
    args: dict[str, object] = {}
    inside = found = False
    for line in (ruler / "scripts" / "synthetic.yaml").read_text().splitlines():
        if not line.startswith(" ") and line.strip():
            inside = line.strip() == f"{task}:"
            found |= inside
            continue
        if inside and line.startswith("    ") and ":" in line:
            key, _, value = line.strip().partition(":")
            args[key.strip()] = value.strip()
    if not found:
        raise SystemExit(f"{task}: not in {ruler}/scripts/synthetic.yaml")
    return args


def ruler_template(ruler_python: str, ruler: Path) -> str:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from constants import TASKS; "
            "print(TASKS['niah']['template'] + TASKS['niah']['answer_prefix'], end='')")
    return subprocess.run([ruler_python, "-c", code, str(ruler / "scripts" / "data" / "synthetic")],
                          capture_output=True, text=True, check=True).stdout


def timed(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``: (process, wall seconds, CPU seconds user + system of it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_ruler(args, task: str, length: int, tokenizer: Path, template: str, out: Path) -> dict:
    ruler = Path(args.ruler_dir)
    cmd = [args.ruler_python, str(ruler / "scripts/data/synthetic/niah.py"), "--save_dir", str(out),
           "--save_name", task, "--subset", "validation", "--tokenizer_path", str(tokenizer),
           "--tokenizer_type", "hf", "--max_seq_length", str(length), "--tokens_to_generate", "128",
           "--num_samples", str(args.samples), "--random_seed", "42", "--template", template]
    for key, value in yaml_args(ruler, task).items():
        cmd += [f"--{key}", str(value)]
    proc, seconds, cpu = timed(cmd, env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    if proc.returncode != 0:
        raise SystemExit(f"RULER {task} {length} failed:\n{proc.stderr[-2000:]}")
    lengths = [json.loads(line)["length"] for line in (out / task / "validation.jsonl").open()]
    return {"s": seconds, "cpu": cpu, "n": len(lengths), "fills": [n / length for n in lengths]}


def run_longctx(args, task: str, length: int, model: Path, out: Path, env: dict[str, str]) -> dict:
    depths = args.depths.split(",") if "," in args.depths else None
    n_depths = len(depths) if depths else int(args.depths.split(":")[2])
    per_cell = max(1, args.samples // n_depths)
    cmd = LONGCTX + ["sweep", "-t", f"ruler/{task}", "-l", str(length), "-d", args.depths, "-n", str(per_cell),
                     "-r", "oracle", "-m", str(model), "-o", str(out)]
    if task in ESSAY_TASKS:
        cmd += ["-O", f"essay_json={args.essay_json}"]
    proc, seconds, cpu = timed(cmd, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"longctx {task} {length} failed:\n{proc.stderr[-2000:]}")
    fills = [json.loads(line)["extra"]["metadata"]["fill"] for line in (out / "results.jsonl").open()]
    return {"s": seconds, "cpu": cpu, "n": len(fills), "fills": fills}


def long_window_copy(src: Path, dest: Path, window: int = 131072) -> Path:
    """``src`` with a ``config.json`` saying ``max_position_embeddings=window`` (other files linked)."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "config.json":
            config = json.loads(f.read_text())
            config["max_position_embeddings"] = window
            (dest / f.name).write_text(json.dumps(config))
        elif f.name == "longctx-model.json":
            shutil.copy(f, dest / f.name)  # the cached weight hash (same files, same stat)
        else:
            (dest / f.name).symlink_to(f.resolve())
    return dest


def fmt_fill(fills: list[float]) -> str:
    return f"{min(fills):.3f}/{sum(fills) / len(fills):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ruler-dir", required=True, help="a checkout of NVIDIA/RULER")
    parser.add_argument("--ruler-python", default=sys.executable,
                        help="interpreter with what RULER's generator imports (numpy, wonderwords, nltk, "
                             "transformers, tenacity, tqdm)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--lengths", default="4k,8k,16k,32k,64k,128k")
    parser.add_argument("--samples", type=int, default=500, help="samples per length (RULER's protocol: 500)")
    parser.add_argument("--depths", default="0:100:5",
                        help="longctx's depths; samples per cell = samples / depths")
    parser.add_argument("--essay-json", help="RULER's PaulGrahamEssays.json: also run the essay variants given")
    parser.add_argument("--warm", action="store_true",
                        help="run longctx a second time into a new folder (warm OS and longctx caches)")
    parser.add_argument("--cold-cache", action="store_true",
                        help="longctx starts with an empty haystack cache (a temporary $LONGCTX_CACHE; later "
                             "rows still reuse what earlier rows of this run tokenized)")
    parser.add_argument("--json", help="write the measurements here too")
    args = parser.parse_args()
    from longctx._models import resolve_model

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if any(t in ESSAY_TASKS for t in tasks) and not args.essay_json:
        raise SystemExit("essay variants need --essay-json (RULER's PaulGrahamEssays.json)")
    ruler = Path(args.ruler_dir).resolve()
    tokenizer = resolve_model("default").path
    template = ruler_template(args.ruler_python, ruler)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-ruler-") as tmp_s:
        tmp = Path(tmp_s)
        model = long_window_copy(tokenizer, tmp / "model-128k")
        # both sides as a user's Python runs them: with bytecode caching (a sandbox may disable it,
        # and then every module of the editable longctx install is compiled in every process)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        if args.cold_cache:
            env["LONGCTX_CACHE"] = str(tmp / "longctx-cache")
        from longctx._models import cache_dir

        haystacks = (Path(env["LONGCTX_CACHE"]) if args.cold_cache else cache_dir()) / "haystacks"
        cached = len(list(haystacks.glob("*.msgpack"))) if haystacks.is_dir() else 0
        if args.essay_json:
            target = ruler / "scripts/data/synthetic/json/PaulGrahamEssays.json"
            if not target.exists():
                shutil.copy(args.essay_json, target)
        print(f"{args.samples} samples per length; longctx depths {args.depths}; tokenizer {tokenizer}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"longctx haystack cache at start: {cached} entries in {haystacks}")
        head = (f"{'task':<16} {'length':>7} {'RULER s':>8} {'cpu s':>7} {'/s':>6} {'fill min/mean':>13} "
                f"{'longctx s':>9} {'cpu s':>6} {'/s':>6} {'fill min/mean':>13} {'speed-up':>8} {'cpu':>6}")
        if args.warm:
            head += f" {'warm s':>7} {'cpu s':>6} {'speed-up':>8} {'cpu':>6}"
        print(head, flush=True)
        for task in tasks:
            for length in parse_lengths(args.lengths):
                r = run_ruler(args, task, length, tokenizer, template, tmp / f"ruler-{task}-{length}")
                lc = run_longctx(args, task, length, model, tmp / f"lc-{task}-{length}", env)
                row = {"task": task, "length": length, "ruler": r, "longctx": lc}
                line = (f"{task:<16} {length:>7} {r['s']:>8.2f} {r['cpu']:>7.2f} {r['n'] / r['s']:>6.1f} "
                        f"{fmt_fill(r['fills']):>13} {lc['s']:>9.2f} {lc['cpu']:>6.2f} {lc['n'] / lc['s']:>6.1f} "
                        f"{fmt_fill(lc['fills']):>13} {r['s'] / lc['s']:>7.1f}x {r['cpu'] / lc['cpu']:>5.1f}x")
                if args.warm:
                    warm = run_longctx(args, task, length, model, tmp / f"lc-warm-{task}-{length}", env)
                    row["longctx_warm"] = warm
                    line += (f" {warm['s']:>7.2f} {warm['cpu']:>6.2f} {r['s'] / warm['s']:>7.1f}x"
                             f" {r['cpu'] / warm['cpu']:>5.1f}x")
                line += f"  load {os.getloadavg()[0]:.1f}"
                print(line, flush=True)
                for side in ("ruler", "longctx", "longctx_warm"):
                    if side in row:
                        row[side] = {"s": row[side]["s"], "cpu": row[side]["cpu"], "n": row[side]["n"],
                                     "fill_min": min(row[side]["fills"]),
                                     "fill_mean": sum(row[side]["fills"]) / len(row[side]["fills"])}
                rows.append(row)
                shutil.rmtree(tmp / f"ruler-{task}-{length}", ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
