"""Sample-building cost: longctx's one-pass token slicing vs RULER-style re-tokenizing search.

RULER (NVIDIA/RULER ``scripts/data/synthetic/niah.py``, ``generate_samples``) fits a length by
binary search over the number of haystack words -- estimate tokens per word from a 500-word prompt,
search between 500 words and 3x the estimate, re-rendering and re-tokenizing the whole prompt at
every step -- then builds each sample at the found word count and tokenizes it once more to check
it. longctx tokenizes each haystack once and slices ids at whole sentences. For N samples of one
length (``--samples`` x depths 0/50/100, as one grid; one-time costs included on both sides) this
prints the wall time per sample of both, side by side, with the default model's tokenizer, and the
fill each achieves: (prompt tokens + tokens_to_generate) / length, for longctx the mean and minimum
of ``metadata["fill"]``, for RULER-style the fill of its word-level cut (which may end
mid-sentence). The RULER-style stand-in puts the needle between words (no sentence splitting), so
it slightly understates RULER's cost.

    python bench/bench_niah_build.py [--lengths 4k,8k,32k] [--samples 5]
"""

from __future__ import annotations

import argparse
import time

from longctx.tasks import _haystacks as hs
from longctx.tasks.ruler_niah import NEEDLE, TEMPLATE, singular

from longctx._models import resolve_model
from longctx._parsing import parse_lengths
from longctx._protocols import Grid
from longctx._records import Message
from longctx._registry import get_task
from longctx._tokenizer import hf_tokenizer

DEPTHS = (0.0, 50.0, 100.0)


def ruler_style(tokenizer, words: list[str], length: int, n_samples: int, gen: int = 128) -> tuple[int, float]:
    """RULER's fitting for one length, then ``n_samples`` samples: (search steps, fill)."""
    needle = NEEDLE.format(type_needle_v="numbers", key="tall-tree", value="1234567")
    user_t = singular(TEMPLATE).replace("{type_needle_v}", "number").replace("{query}", "tall-tree")

    def n_tokens(n_words: int, depth: float = 50.0) -> int:
        at = int(n_words * depth / 100)
        context = " ".join(words[:at] + [needle] + words[at:n_words])
        text = tokenizer.render_chat([Message("user", user_t.replace("{context}", context))])
        return len(tokenizer.encode(text))

    incremental = 500
    per_word = n_tokens(incremental) / incremental
    lo, hi = incremental, max(int(length / per_word * 3), incremental * 2)
    best, steps = incremental, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        steps += 1
        if n_tokens(mid) + gen <= length:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    total = 0
    for i in range(n_samples):
        total = n_tokens(best, DEPTHS[i % len(DEPTHS)]) + gen
        assert total <= length
    return steps, total / length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="4k,8k,32k")
    parser.add_argument("--samples", type=int, default=5, help="sample indices (x 3 depths)")
    args = parser.parse_args()
    tok = hf_tokenizer(str(resolve_model("default").path))
    words = " ".join(hs.split_sentences(hs.text_files(hs.essay_dir()))).split(" ")
    while len(words) < 200_000:
        words = words + words
    n = args.samples * len(DEPTHS)
    print(f"ruler/niah_single_2, {n} samples per length (one-time costs included)")
    print(f"{'length':>8} {'longctx s/sample':>17} {'fill':>6} {'min':>6} {'RULER-style s/sample':>21} "
          f"{'fill':>6} {'steps':>5} {'speed-up':>9}")
    for length in parse_lengths(args.lengths):
        task = get_task("ruler/niah_single_2")
        t0 = time.perf_counter()
        samples = list(task.samples(Grid((length,), DEPTHS, args.samples, seed=1), tok))
        ours = (time.perf_counter() - t0) / len(samples)
        fills = [s.metadata["fill"] for s in samples]
        t0 = time.perf_counter()
        steps, theirs_fill = ruler_style(tok, words, length, len(samples))
        theirs = (time.perf_counter() - t0) / len(samples)
        print(f"{length:>8} {ours:>17.4f} {sum(fills) / len(fills):>6.3f} {min(fills):>6.3f} {theirs:>21.4f} "
              f"{theirs_fill:>6.3f} {steps:>5} {theirs / ours:>8.1f}x")


if __name__ == "__main__":
    main()
