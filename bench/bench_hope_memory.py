"""Peak memory and tokens/s against context length: attention-free HOPE vs the Transformer baseline.

    nice -n 10 python bench/bench_hope_memory.py                      # 1K..64K, demo checkpoints
    python bench/bench_hope_memory.py --lengths 1024,4096 --variants hope

Each (variant, length) runs in a fresh subprocess: load the checkpoint (``hope-demo`` /
``transformer-demo``, or a randomly initialised model of the same config with ``--random``),
record the resident set size (RSS), stream a random prompt of ``length`` tokens the way runner
``hope`` does (``--prefill-chunk`` tokens per call, last-position logits only), decode
``--decode`` tokens greedily, and report the peak RSS growth over the post-load RSS (the peak
mark is reset after loading, then read from ``VmHWM``), the state's bytes, prefill and decode
tokens/s. The target checked at the end:
HOPE's peak growth at the longest length within 1.2x of its growth at 4K.

Against an older implementation (never committed; copies taken with ``git show``)::

    git show a565be8:runners/hope/model.py > /tmp/old_model.py
    mkdir -p /tmp/old-hope-demo && for f in config.json model.safetensors tokenizer.json \
        tokenizer_config.json chat_template.jinja; do
        git show a565be8:runners/hope/checkpoints/hope-demo/$f > /tmp/old-hope-demo/$f; done
    nice -n 10 python bench/bench_hope_memory.py --old-model /tmp/old_model.py \
        --old-checkpoint /tmp/old-hope-demo --variants hope-old,hope-same,hope,transformer

A variant ``NAME@B`` streams B random prompts as one batch (what runner hope's ``-R batch=B`` does
with consecutive samples); its tokens/s count all B prompts. ``--old-model`` adds ``hope-old`` (the old implementation running the old checkpoint) and ``hope-same`` (this
implementation running the same old checkpoint: the speed-up at equal maths and weights), and
prints the prefill-speed ratios hope-same/hope-old, hope/hope-old and hope/transformer. Speeds are
in wall time and in process CPU time (``cpu_tok_s``; what the work costs on a shared machine); the
load average is printed at the start and the end. One run for speed ratios and the memory target::

    nice -n 10 python bench/bench_hope_memory.py --old-model /tmp/old_model.py --old-checkpoint /tmp/old-hope-demo \
        --variants hope-old,hope,transformer --lengths 1024,4096,65536 --limit hope-old=4096 --limit transformer=4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM (peak RSS) of this process from /proc/self/status, MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Reset the peak-RSS mark (Linux: writing 5 to clear_refs), so VmHWM measures only what follows."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _old_model(model_py: str, folder: str):
    """The checkpoint at ``folder`` in the implementation ``model_py`` (a copy of an older model.py)."""
    import importlib.util

    import torch
    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("old_hope_model", model_py)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_hope_model"] = module
    spec.loader.exec_module(module)
    with open(f"{folder}/config.json") as fh:
        cfg = module.HopeConfig.from_dict(json.load(fh)["model"])
    model = module.HopeLM(cfg)
    model.load_state_dict(load_file(f"{folder}/model.safetensors"))
    return model.eval(), torch.no_grad   # the old runner's grad mode


def child(variant: str, length: int, prefill_chunk: int, decode: int, random_init: bool, threads: int,
          old_model: str | None = None, old_checkpoint: str | None = None) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    torch.set_num_threads(threads)

    variant, _, batch = variant.partition("@")   # hope@8: 8 prompts streamed as one batch (runner hope's -R batch)
    batch = int(batch or 1)
    from longctx.runners.hope.checkpoint import load_checkpoint

    grad_mode = torch.inference_mode   # what runner hope uses (without test-time CMS learning)
    from longctx.runners.hope.runner import CHECKPOINTS

    folder = CHECKPOINTS / f"{variant.split('-')[0]}-demo"
    if variant == "hope-old":
        model, grad_mode = _old_model(old_model, old_checkpoint)
    elif variant == "hope-same":
        model, _ = load_checkpoint(old_checkpoint)
    elif random_init or not folder.exists():
        from longctx.runners.hope.model import HopeLM
        from longctx.runners.hope.train import demo_config

        torch.manual_seed(0)
        model = HopeLM(demo_config(variant, 2048)).eval()
    else:
        model, _ = load_checkpoint(folder)
    vocab = model.cfg.vocab_size
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(length))
    base = _status_mb("VmRSS")
    _reset_peak()
    state = None
    with grad_mode():
        c0, t0 = time.process_time(), time.perf_counter()
        for start in range(0, length, prefill_chunk):
            logits, state = model(ids[:, start:start + prefill_chunk], state, learn=False, logits="last")
        c1, t1 = time.process_time(), time.perf_counter()
        for _ in range(decode):
            token = logits[:, -1].argmax(-1, keepdim=True)           # (B, 1)
            logits, state = model(token, state, learn=False, logits="last")
        t2 = time.perf_counter()
    peak = _status_mb("VmHWM")
    tokens = batch * length
    return {"variant": variant if batch == 1 else f"{variant}@{batch}", "length": length, "rss_after_load_mb": round(base, 1),
            "peak_rss_mb": round(peak, 1), "peak_growth_mb": round(peak - base, 1),
            "state_mb": round(state.nbytes() / 2**20, 2),
            "prefill_tok_s": round(tokens / (t1 - t0)), "cpu_tok_s": round(tokens / (c1 - c0)),
            "decode_tok_s": round(batch * decode / (t2 - t1), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="hope,transformer")
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768,65536")
    p.add_argument("--prefill-chunk", type=int, default=512)
    p.add_argument("--decode", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--random", action="store_true", help="random weights of the demo config, not the checkpoints")
    p.add_argument("--old-model", help="copy of an older runners/hope/model.py (variant hope-old)")
    p.add_argument("--old-checkpoint", help="checkpoint folder for hope-old and hope-same")
    p.add_argument("--limit", action="append", default=[], metavar="VARIANT=LENGTH",
                   help="skip lengths above LENGTH for VARIANT (e.g. transformer=4096: its 64K prefill takes minutes)")
    p.add_argument("--child", nargs=2, metavar=("VARIANT", "LENGTH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.prefill_chunk, args.decode,
                               args.random, args.threads, args.old_model, args.old_checkpoint)))
        return
    variants = args.variants.split(",")
    lengths = [int(x) for x in args.lengths.split(",")]
    limits = {v: int(n) for v, n in (item.split("=") for item in args.limit)}
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    rows: dict[tuple[str, int], dict] = {}
    for variant in variants:
        for length in lengths:
            if length > limits.get(variant, length):
                continue
            cmd = [sys.executable, __file__, "--child", variant, str(length), "--prefill-chunk",
                   str(args.prefill_chunk), "--decode", str(args.decode), "--threads", str(args.threads)]
            if args.random:
                cmd.append("--random")
            for flag, value in (("--old-model", args.old_model), ("--old-checkpoint", args.old_checkpoint)):
                if value:
                    cmd += [flag, value]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{variant} {length}: failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            rows[(variant, length)] = json.loads(out.stdout.strip().splitlines()[-1])
            r = rows[(variant, length)]
            print(f"  {variant:12s} {length:6d}: peak growth {r['peak_growth_mb']:8.1f} MB  state {r['state_mb']:7.2f} MB"
                  f"  prefill {r['prefill_tok_s']:6d} tok/s ({r['cpu_tok_s']:6d} per CPU s)"
                  f"  decode {r['decode_tok_s']:6.1f} tok/s", flush=True)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    header = f"{'length':>7} | " + " | ".join(f"{v + ' growth MB':>22} {'state MB':>9} {'prefill tok/s':>13}" for v in variants)
    print("\n" + header + "\n" + "-" * len(header))
    for length in lengths:
        cells = []
        for v in variants:
            r = rows.get((v, length))
            cells.append(f"{r['peak_growth_mb']:>22.1f} {r['state_mb']:>9.2f} {r['prefill_tok_s']:>13d}" if r
                         else f"{'-':>22} {'-':>9} {'-':>13}")
        print(f"{length:>7} | " + " | ".join(cells))
    ref = 4096 if 4096 in lengths else lengths[0]
    longest = lengths[-1]
    print(f"\nratio of peak memory growth, {longest} tokens vs {ref} tokens (target for hope: <= 1.2):")
    for v in variants:
        a, b = rows.get((v, longest)), rows.get((v, ref))
        if a and b:
            ratio = a["peak_growth_mb"] / max(b["peak_growth_mb"], 1e-9)
            total = a["peak_rss_mb"] / max(b["peak_rss_mb"], 1e-9)
            flag = "  OK" if v == "hope" and ratio <= 1.2 else ("  ABOVE TARGET" if v == "hope" else "")
            print(f"  {v:12s} {ratio:6.2f}x  (whole-process peak RSS {b['peak_rss_mb']:.0f} -> {a['peak_rss_mb']:.0f} MB"
                  f" = {total:.2f}x; state {b['state_mb']:.2f} -> {a['state_mb']:.2f} MB){flag}")
    pairs = [(a, b) for a, b in (("hope-same", "hope-old"), ("hope", "hope-old"), ("hope", "transformer"),
                                 ("hope-same", "transformer")) if a in variants and b in variants]
    pairs += [(v, b) for v in variants if "@" in v for b in ("hope-old", "hope") if b in variants]
    if pairs:
        print("\nprefill speed ratios, wall (CPU time) [target hope-same/hope-old >= 5]:")
        print(f"{'length':>7} | " + " | ".join(f"{a + '/' + b:>26}" for a, b in pairs))
        for length in lengths:
            cells = []
            for a, b in pairs:
                ra, rb = rows.get((a, length)), rows.get((b, length))
                cells.append(f"{ra['prefill_tok_s'] / rb['prefill_tok_s']:>12.2f}x ({ra['cpu_tok_s'] / rb['cpu_tok_s']:>9.2f}x)"
                             if ra and rb else f"{'-':>26}")
            print(f"{length:>7} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
