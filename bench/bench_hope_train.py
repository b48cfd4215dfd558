"""Training tokens/s of HOPE (this implementation, and optionally an older one) vs the Transformer.

    git show a565be8:runners/hope/model.py > /tmp/old_model.py     # the implementation to compare with
    nice -n 10 python bench/bench_hope_train.py --old-model /tmp/old_model.py

One training step = the demo trainer's step (``longctx.runners.hope.train``): forward of a batch of
the demo's data mix, weighted next-token loss, backward, gradient clipping, AdamW step. Every model
is the demo configuration (``demo_config``) with the demo's initialisation, the same seed and the
same batches; the old implementation (a copy of a previous ``runners/hope/model.py``, loaded from
``--old-model``, never committed) gets the new model's weights. Rounds are interleaved (old, new,
transformer, old, new, ...) so that the load of a shared machine falls on all alike; the median
over rounds is reported, in process CPU time (what the step costs) and wall time. The target
checked at the end: HOPE's training tokens/s at least 5x the old implementation's.

The models follow the shipped recipe (``make hope-train``): ``--eta-scale-other 0`` (the k, v, eta
and alpha memories only decay, so their gradient pass is skipped: ``MemoryGroup.learners``),
value targets, the single-needle mix. ``--old-chunk-size`` gives the old implementation its own
chunk size, e.g. a chunk-64 model against the old demo's chunk 16 (the shipped demo keeps 16)::

    nice -n 10 python bench/bench_hope_train.py --old-model /tmp/old_model.py --chunk-size 64 --old-chunk-size 16
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import time


def load_old(path: str):
    """The module at ``path`` (a standalone copy of an older model.py), as ``old_hope_model``."""
    spec = importlib.util.spec_from_file_location("old_hope_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_hope_model"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-model", help="path of an older runners/hope/model.py to compare with")
    p.add_argument("--lengths", default="192,1024", help="sequence lengths of the batches (tokens)")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch (the trainer's default)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per model and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=16, help="chunk size of HOPE's memories (both groups)")
    p.add_argument("--old-chunk-size", type=int, help="chunk size of the old implementation's model (default: --chunk-size)")
    p.add_argument("--eta-scale-other", type=float, default=0.0,
                   help="eta scale of the k, v, eta, alpha memories (the shipped recipe: 0, they only decay)")
    p.add_argument("--no-value-target", dest="value_target", action="store_false",
                   help="the output memory regresses on M(v) (Eq. 88) instead of v (the shipped recipe)")
    args = p.parse_args()

    import torch
    import torch.nn.functional as F

    from longctx.runners.hope.model import HopeLM
    from longctx.runners.hope.train import NOISE_LINE, build_tokenizer, demo_config, init_demo_weights, make_batch

    torch.set_num_threads(args.threads)
    tok = build_tokenizer(0, 2048, corpus_size=600)
    noise = len(tok.encode("\n" + NOISE_LINE, add_special_tokens=False))
    models = {}
    for variant in ("hope", "transformer"):
        torch.manual_seed(0)
        models[variant] = HopeLM(demo_config(variant, len(tok), args.chunk_size, args.chunk_size,
                                             args.eta_scale_other, args.value_target))
        init_demo_weights(models[variant])
    if args.old_model:
        old = load_old(args.old_model)
        cfg = models["hope"].cfg.to_dict()
        chunk = args.old_chunk_size or args.chunk_size
        cfg.update(chunk_size=chunk, chunk_size_memory=chunk)
        # an old model.py without memory_value_target computes the target M(v) instead: the same cost
        models["hope (old)"] = old.HopeLM(old.HopeConfig(**{k: v for k, v in cfg.items()
                                                             if k in old.HopeConfig.__dataclass_fields__}))
        models["hope (old)"].load_state_dict(models["hope"].state_dict())
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}

    def step(name, ids, targets, weights):
        logits, _ = models[name](ids)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(weights)
        loss = (ce * weights).sum() / weights.sum()
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[name].parameters(), 1.0)
        opts[name].step()

    order = [n for n in ("hope (old)", "hope", "transformer") if n in models]
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    results = {}
    for length in (int(x) for x in args.lengths.split(",")):
        rng = random.Random(length)
        batches = []
        while len(batches) < args.steps:   # batches of exactly ``length`` tokens (the longest row)
            b = make_batch(tok, rng, 32, length, noise, multi=0, batch_tokens=args.batch_tokens,
                           drill=0, prose=0, text=0.05)   # the shipped recipe's mix
            if b[0].shape[1] >= length * 0.9:
                batches.append(b)
        tokens = sum(b[0].numel() for b in batches)
        for name in order:
            step(name, *batches[0])   # warm-up
        cpu = {n: [] for n in order}
        wall = {n: [] for n in order}
        for _ in range(args.rounds):
            for name in order:
                c0, w0 = time.process_time(), time.perf_counter()
                for b in batches:
                    step(name, *b)
                cpu[name].append(tokens / (time.process_time() - c0))
                wall[name].append(tokens / (time.perf_counter() - w0))
        B, T = batches[0][0].shape
        for name in order:
            results[(name, length)] = (statistics.median(cpu[name]), statistics.median(wall[name]))
            print(f"  T={length:5d} (batch {B}x{T})  {name:12s} {results[(name, length)][0]:8.0f} tok/s CPU"
                  f"  {results[(name, length)][1]:8.0f} tok/s wall", flush=True)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    print("\ntraining tokens/s (median of rounds, process CPU time):")
    lengths = sorted({length for _, length in results})
    header = f"{'length':>7} | " + " | ".join(f"{n:>12}" for n in order) + " | hope/old | hope/transformer"
    print(header + "\n" + "-" * len(header))
    ok = True
    for length in lengths:
        r = {n: results[(n, length)][0] for n in order}
        vs_old = f"{r['hope'] / r['hope (old)']:7.2f}x" if "hope (old)" in r else "      -"
        print(f"{length:>7} | " + " | ".join(f"{r[n]:>12.0f}" for n in order)
              + f" | {vs_old:>8} | {r['hope'] / r['transformer']:15.2f}x")
        if "hope (old)" in r:
            ok &= r["hope"] / r["hope (old)"] >= 5
    if args.old_model:
        print(f"\ntarget hope/old >= 5x at every length: {'OK' if ok else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
