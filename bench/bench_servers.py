"""Servers: one depth sweep through 1 vs 2 vLLM servers, and -c 1 vs -c 4 with and without the
prefix-keeping scheduler and the prompt-token cap.

The sweep is ``longctx sweep -t ruler/niah_single_1 -t ruler/niah_multikey_2 -l LENGTHS -d DEPTHS
-n SAMPLES --runner vllm --endpoint URL [--endpoint URL2] -m default`` (whole process, attached to
servers launched here with longctx's own launcher, default model SmolLM2-135M-Instruct, 128 new
tokens, greedy). Its samples share haystack prefixes: every ``niah_single_1`` prompt starts with the
same template and noise haystack up to its needle, the ``niah_multikey_2`` prompts of one sample
index share their needle haystack.

Server setups (CPU, ``VLLM_CPU_OMP_THREADS_BIND`` per server):

* ``1 server, 2 cores``: one server bound to ``0-1``;
* ``1 server, 1 core``: one server bound to ``0``;
* ``2 servers, 1 core each``: servers bound to ``0`` and ``1``, both given with ``--endpoint``.

Before every measured sweep each server's prefix cache is reset (``POST /reset_prefix_cache``,
served with ``VLLM_SERVER_DEV_MODE=1``) after one warm-up request. For each sweep it prints wall
seconds, samples/s, the prompt tokens the servers counted and the share of them served from the
prefix cache (sum of the records' ``cached_tokens`` over ``prompt_tokens``), and each row's wall
time relative to the first row.

    python bench/bench_servers.py [--lengths 1k,2k,4k] [--depths 0:100:3] [--samples 1]
        [--cap 4096] [--all] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

TASKS = ("ruler/niah_single_1", "ruler/niah_multikey_2")


def start_servers(binds: list[str], log_dir: Path) -> list:
    """Servers for the default model, one per CPU list in ``binds``, started side by side."""
    from longctx.runners._vllm_server import ServerConfig, VLLMServer, probe_vllm

    from longctx._models import resolve_model

    model = resolve_model("default").path
    info = probe_vllm()
    servers = []
    for i, bind in enumerate(binds):
        cfg = ServerConfig(model_path=model, served_model_name="default", max_model_len=8192, log_dir=log_dir,
                           log_name=f"server-{bind}-{i}.log",
                           env={"VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_SERVER_DEV_MODE": "1"})
        server = VLLMServer(cfg)
        server.spawn(*server.prepare(info))
        servers.append(server)
    try:
        for server in servers:
            server.wait_healthy()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def warm_and_reset(servers: list) -> None:
    """One short request per server (first-request warm-up), then an empty prefix cache."""
    for server in servers:
        body = {"model": "default", "prompt": "Hello there.", "max_tokens": 4, "temperature": 0.0}
        httpx.post(server.base_url + "/completions", json=body, timeout=600).raise_for_status()
        for _ in range(20):  # the reset fails while blocks are held: retry
            r = httpx.post(server.root_url + "/reset_prefix_cache", timeout=60)
            r.raise_for_status()
            if r.json().get("success", True):
                break
            time.sleep(0.5)


def run_sweep(args, servers: list, out: Path, concurrency: int, runner_opts: list[str]) -> dict:
    from longctx._models import resolve_model

    cmd = [sys.executable, "-m", "longctx", "sweep", "-l", args.lengths, "-d", args.depths,
           "-n", str(args.samples), "-r", "vllm", "-m", "default", "-c", str(concurrency), "-o", str(out),
           "-R", f"tokenizer={resolve_model('default').path}"]  # samples built locally, not via one server
    for task in TASKS:
        cmd += ["-t", task]
    for server in servers:
        cmd += ["--endpoint", server.base_url]
    for opt in runner_opts:
        cmd += ["-R", opt]
    warm_and_reset(servers)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]
    errors = sum(r["error"] is not None for r in rows)
    prompt = sum(r["prompt_tokens"] or 0 for r in rows)
    cached = sum(r["cached_tokens"] or 0 for r in rows)
    served = Counter(r["extra"].get("server") for r in rows)
    return {"s": wall, "n": len(rows), "errors": errors, "prompt": prompt, "cached": cached,
            "per_server": [served.get(s.base_url, 0) for s in servers],
            "score": sum(r["score"] or 0 for r in rows) / max(1, len(rows))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1k,2k,4k")
    parser.add_argument("--depths", default="0:100:3")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--cap", type=int, default=4096, help="-R max_tokens_in_flight of the capped row")
    parser.add_argument("--all", action="store_true", help="also 2 servers in plain order and at -c 2")
    parser.add_argument("--json", help="write the measurements here too")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two cores")
    both, first, second = f"{cpus[0]}-{cpus[1]}", str(cpus[0]), str(cpus[1])
    setups = [
        ("1 server, 2 cores", [both], [
            ("-c 1", 1, []),
            ("-c 4, plain order", 4, ["prefix_scheduler=false"]),
            ("-c 4, prefix scheduler", 4, []),
            (f"-c 4, scheduler + cap {args.cap}", 4, [f"max_tokens_in_flight={args.cap}"]),
        ]),
        ("1 server, 1 core", [first], [("-c 4, prefix scheduler", 4, [])]),
        ("2 servers, 1 core each", [first, second], [
            ("-c 4, prefix scheduler", 4, []),
            *([("-c 4, plain order", 4, ["prefix_scheduler=false"]),
               ("-c 2, prefix scheduler", 2, [])] if args.all else []),
        ]),
    ]
    results: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-servers-") as tmp_s:
        tmp = Path(tmp_s)
        for k, (setup, binds, runs) in enumerate(setups):
            servers = start_servers(binds, tmp / "logs")
            try:
                for j, (label, concurrency, opts) in enumerate(runs):
                    r = run_sweep(args, servers, tmp / f"run-{k}-{j}", concurrency, opts)
                    results.append((setup, label, r))
                    print(f"  {setup:<24} {label:<30} {r['s']:7.1f} s", file=sys.stderr, flush=True)
            finally:
                for server in servers:
                    server.stop()
    base = results[0][2]["s"]
    n = results[0][2]["n"]
    print(f"{n} samples ({', '.join(TASKS)}; lengths {args.lengths}, depths {args.depths}, "
          f"{args.samples} per cell), default model, 128 new tokens, greedy, completions, CPU")
    print(f"{'servers':<24} {'sweep':<30} {'wall s':>7} {'samples/s':>9} {'prompt tok':>10} {'cached':>7} "
          f"{'per server':>10} {'errors':>6} {'vs row 1':>8}")
    for setup, label, r in results:
        share = r["cached"] / r["prompt"] if r["prompt"] else 0.0
        split = "/".join(str(x) for x in r["per_server"])
        print(f"{setup:<24} {label:<30} {r['s']:>7.1f} {r['n'] / r['s']:>9.3f} {r['prompt']:>10,} {share:>6.0%} "
              f"{split:>10} {r['errors']:>6} {r['s'] / base:>7.2f}x")
    print("cached = prompt tokens served from the prefix cache (records' cached_tokens / prompt_tokens); "
          "vs row 1 = wall / wall of the first row; -c is per server")
    if args.json:
        Path(args.json).write_text(json.dumps([{"setup": s, "sweep": lab, **r} for s, lab, r in results], indent=1))


if __name__ == "__main__":
    main()
