"""Engine: the same prompts through vLLM offline, a longctx sweep, RULER's client and a naive client.

The prompts are those of ``longctx sweep -t ruler/niah_single_1 -l LENGTHS -d DEPTHS -n SAMPLES``
with the default model (SmolLM2-135M-Instruct, its tokenizer and chat template, completions mode:
the answer prefix prefilled, token ids sent, 128 new tokens, greedy). They go through

(a) vLLM's offline engine, ``LLM.generate`` once with every prompt (``TokensPrompt``), in a
    subprocess with longctx's CPU settings (``VLLM_CPU_KVCACHE_SPACE``, thread binding, eager);
    timed around ``generate`` only (engine start-up excluded);
(b) ``longctx sweep ... --runner vllm --endpoint URL`` attached to a vLLM server launched with
    longctx's own launcher (:class:`longctx.runners._vllm_server.VLLMServer`), whole process;
(c) with ``--ruler-dir``: RULER's client ``scripts/pred/call_api.py --server_type vllm`` (NVIDIA/
    RULER; 4 threads, batch size 1, its defaults) run by ``--ruler-python``. RULER's vLLM client
    PUTs ``{"prompt", "max_tokens", ...}`` to ``/generate`` of RULER's own ``serve_vllm.py``,
    a route vLLM's OpenAI server lacks, so the bench puts a local translator in front of the
    same server (``/generate`` -> ``/v1/completions``, the prompt as text, ``{"text": [...]}``
    back); call_api.py imports ``read_manifest`` from NeMo, which the bench shims with a
    JSON-lines reader on ``PYTHONPATH``. Its prompt is the same rendered text (RULER's ``input``
    + ``answer_prefix``);
(d) a naive client: httpx, one ``/v1/completions`` request at a time, token ids, in order.

Between clients the server's prefix cache is reset (``POST /reset_prefix_cache``, which vLLM
serves with ``VLLM_SERVER_DEV_MODE=1``). For each it prints wall seconds, generated tokens/s,
prompt tokens and the share served from the prefix cache (server: deltas of ``/metrics``
``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``; offline: ``num_cached_tokens``), and
the ratios side by side.

    python bench/bench_engine.py [--lengths 1k,2k,4k] [--depths 0:100:5] [--samples 1]
        [--ruler-dir DIR --ruler-python PY] [--chat-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

GEN = 128
OFFLINE = r"""
import json, sys, time
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
args = json.loads(sys.argv[1])
prompts = [json.loads(l) for l in open(args["prompts"])]
llm = LLM(model=args["model"], max_model_len=args["max_model_len"], seed=42, enforce_eager=True,
          enable_prefix_caching=True)
sp = SamplingParams(max_tokens=args["gen"], temperature=0.0)
if args["chat"]:
    t0 = time.perf_counter()
    outs = llm.chat([[{"role": "user", "content": p["user"]}] for p in prompts], sp, use_tqdm=False)
else:
    t0 = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=p["ids"]) for p in prompts], sp, use_tqdm=False)
s = time.perf_counter() - t0
open(args["out"], "w").write(json.dumps({"s": s, "prompt": sum(len(o.prompt_token_ids) for o in outs),
                  "cached": sum(o.num_cached_tokens or 0 for o in outs),
                  "gen": sum(len(o.outputs[0].token_ids) for o in outs)}))
"""


def build_prompts(lengths: str, depths: str, samples: int) -> list[dict]:
    from longctx._models import resolve_model
    from longctx._parsing import parse_depths, parse_lengths
    from longctx._protocols import Grid
    from longctx._registry import get_task
    from longctx._tokenizer import hf_tokenizer

    tok = hf_tokenizer(str(resolve_model("default").path))
    grid = Grid(parse_lengths(lengths), parse_depths(depths), samples, 42)
    out = []
    for s in get_task("ruler/niah_single_1").samples(grid, tok):
        text = s.prompt.text
        prefix = s.prompt.answer_prefix
        out.append({"id": s.id, "ids": list(s.prompt.token_ids), "text": text, "answer_prefix": prefix,
                    "user": s.prompt.messages[-1].content, "references": list(s.references)})
    return out


def metrics(root: str) -> dict[str, float]:
    """Sum of every sample of the prefix-cache and token counters in ``/metrics``."""
    want = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:prompt_tokens", "vllm:generation_tokens")
    out = dict.fromkeys(want, 0.0)
    for line in httpx.get(f"{root}/metrics", timeout=30).text.splitlines():
        if line.startswith("#"):
            continue
        for key in want:
            if line.startswith((key + "_total", key + "{")):
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


def measured(root: str, run) -> dict:
    """Reset the prefix cache, run ``run()``, return wall seconds and counter deltas."""
    r = httpx.post(f"{root}/reset_prefix_cache", timeout=60)
    r.raise_for_status()
    before = metrics(root)
    t0 = time.perf_counter()
    run()
    s = time.perf_counter() - t0
    after = metrics(root)
    d = {k: after[k] - before[k] for k in after}
    return {"s": s, "prompt": d["vllm:prefix_cache_queries"], "cached": d["vllm:prefix_cache_hits"],
            "gen": d["vllm:generation_tokens"]}


def naive(base: str, model: str, prompts: list[dict], chat: bool) -> None:
    with httpx.Client(timeout=600) as client:
        for p in prompts:
            if chat:
                body = {"model": model, "messages": [{"role": "user", "content": p["user"]}],
                        "max_tokens": GEN, "temperature": 0.0}
                client.post(f"{base}/chat/completions", json=body).raise_for_status()
            else:
                body = {"model": model, "prompt": p["ids"], "max_tokens": GEN, "temperature": 0.0}
                client.post(f"{base}/completions", json=body).raise_for_status()


class Translator(ThreadingHTTPServer):
    """RULER's ``/generate`` (its serve_vllm.py API) in front of vLLM's OpenAI ``/v1/completions``."""

    daemon_threads = True

    def __init__(self, base: str, model: str):
        self.base, self.model = base, model
        self.client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64))

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_PUT(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body = {"model": server.model, "prompt": req["prompt"], "max_tokens": req["max_tokens"],
                        "temperature": req.get("temperature", 1.0), "top_p": req.get("top_p", 1.0),
                        "top_k": req.get("top_k", -1), "stop": req.get("stop") or None}
                r = server.client.post(f"{server.base}/completions", json=body)
                out = json.dumps({"text": [c["text"] for c in r.json()["choices"]]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_PUT

        server = self
        super().__init__(("127.0.0.1", 0), Handler)


def run_ruler_client(args, base: str, model: str, prompts: list[dict], tmp: Path) -> None:
    data = tmp / "ruler-data" / "niah_single_1"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "validation.jsonl", "w") as fh:
        for i, p in enumerate(prompts):
            text = p["text"]
            cut = len(text) - len(p["answer_prefix"]) if p["answer_prefix"] else len(text)
            fh.write(json.dumps({"index": i, "input": text[:cut], "answer_prefix": text[cut:],
                                 "outputs": p["references"], "length": len(p["ids"])}) + "\n")
    shim = tmp / "shim" / "nemo" / "collections" / "asr" / "parts" / "utils"
    shim.mkdir(parents=True, exist_ok=True)
    for d in [shim, *shim.parents][:5]:
        (d / "__init__.py").touch()
    (shim / "manifest_utils.py").write_text(
        "import json\n\ndef read_manifest(path):\n"
        "    return [json.loads(line) for line in open(path) if line.strip()]\n")
    translator = Translator(base, model)
    thread = threading.Thread(target=translator.serve_forever, daemon=True)
    thread.start()
    env = dict(os.environ, PYTHONPATH=str(tmp / "shim"))
    cmd = [args.ruler_python, str(Path(args.ruler_dir) / "scripts/pred/call_api.py"),
           "--data_dir", str(tmp / "ruler-data"), "--save_dir", str(tmp / "ruler-pred"), "--benchmark", "synthetic",
           "--task", "niah_single_1", "--server_type", "vllm", "--server_host", "127.0.0.1",
           "--server_port", str(translator.server_address[1]), "--temperature", "0.0", "--top_p", "1.0"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    finally:
        translator.shutdown()
    if proc.returncode != 0:
        raise SystemExit(f"RULER call_api.py failed:\n{proc.stderr[-3000:]}")
    with open(tmp / "ruler-pred" / "niah_single_1.jsonl") as fh:
        n = sum(1 for _ in fh)
    if n != len(prompts):
        raise SystemExit(f"RULER call_api.py wrote {n} predictions for {len(prompts)} prompts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1k,2k,4k")
    parser.add_argument("--depths", default="0:100:5")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4, help="longctx sweep -c")
    parser.add_argument("--chat-only", action="store_true", help="chat messages everywhere (no prefill)")
    parser.add_argument("--ruler-dir", help="a checkout of NVIDIA/RULER: also run its call_api.py")
    parser.add_argument("--ruler-python", default=sys.executable)
    parser.add_argument("--json", help="write the measurements here too")
    args = parser.parse_args()
    if args.chat_only and args.ruler_dir:
        raise SystemExit("RULER's vLLM client sends text completions: run it without --chat-only")
    from longctx.runners._vllm_server import ServerConfig, VLLMServer, cpu_environment

    from longctx._models import resolve_model

    model = resolve_model("default").path
    prompts = build_prompts(args.lengths, args.depths, args.samples)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp_s:
        tmp = Path(tmp_s)
        with open(tmp / "prompts.jsonl", "w") as fh:
            fh.writelines(json.dumps(p) + "\n" for p in prompts)
        spec = {"prompts": str(tmp / "prompts.jsonl"), "model": str(model), "max_model_len": 8192, "gen": GEN,
                "chat": args.chat_only, "out": str(tmp / "offline.json")}
        env = cpu_environment(dict(os.environ, VLLM_NO_USAGE_STATS="1"))
        proc = subprocess.run([sys.executable, "-c", OFFLINE, json.dumps(spec)], capture_output=True, text=True,
                              env=env, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"offline engine failed:\n{proc.stderr[-3000:]}")
        rows["(a) vLLM offline LLM.generate"] = json.loads((tmp / "offline.json").read_text())
        rows["(a) vLLM offline LLM.generate"]["load"] = os.getloadavg()[0]

        os.environ["VLLM_SERVER_DEV_MODE"] = "1"  # /reset_prefix_cache
        cfg = ServerConfig(model_path=model, served_model_name="default", max_model_len=8192, log_dir=tmp / "log")
        with VLLMServer(cfg) as server:
            base, root = server.base_url, server.root_url
            sweep = [sys.executable, "-m", "longctx", "sweep", "-t", "ruler/niah_single_1", "-l", args.lengths,
                     "-d", args.depths, "-n", str(args.samples), "-r", "vllm", "--endpoint", base, "-m", "default",
                     "-c", str(args.concurrency), "-o", str(tmp / "run")]
            if args.chat_only:
                sweep.append("--chat-only")
            # warm-up request (first-request compilation), then the measured clients
            naive(base, "default", prompts[:1], args.chat_only)
            rows["(b) longctx sweep, attached"] = measured(
                root, lambda: subprocess.run(sweep, check=True, capture_output=True))
            rows["(b) longctx sweep, attached"]["load"] = os.getloadavg()[0]
            if args.ruler_dir:
                rows["(c) RULER call_api.py"] = measured(
                    root, lambda: run_ruler_client(args, base, "default", prompts, tmp))
                rows["(c) RULER call_api.py"]["load"] = os.getloadavg()[0]
            rows["(d) naive sequential httpx"] = measured(root, lambda: naive(base, "default", prompts,
                                                                              args.chat_only))
            rows["(d) naive sequential httpx"]["load"] = os.getloadavg()[0]
    offline = rows["(a) vLLM offline LLM.generate"]["s"]
    ours = rows["(b) longctx sweep, attached"]["s"]
    mode = "chat" if args.chat_only else "completions (token ids; RULER: text)"
    print(f"{len(prompts)} prompts (ruler/niah_single_1, lengths {args.lengths}, depths {args.depths}, "
          f"{args.samples} per cell), {GEN} new tokens, greedy, {mode}")
    print(f"{'client':<32} {'wall s':>7} {'gen tok/s':>9} {'prompt tok':>10} {'cached':>7} "
          f"{'vs offline':>10} {'longctx faster':>14} {'load':>5}")
    for name, r in rows.items():
        share = r["cached"] / r["prompt"] if r["prompt"] else 0.0
        print(f"{name:<32} {r['s']:>7.2f} {r['gen'] / r['s']:>9.1f} {int(r['prompt']):>10,} {share:>6.0%} "
              f"{r['s'] / offline:>9.2f}x {r['s'] / ours:>13.2f}x {r.get('load', 0.0):>5.1f}")
    print("vs offline = wall / offline wall (longctx target <= 1.10); longctx faster = wall / longctx wall "
          "(RULER target >= 2); cached = prompt tokens served from the prefix cache (target >= 40%); "
          "load = 1-minute load average when the client finished")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
