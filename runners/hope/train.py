r"""Train the demo checkpoints ``hope-demo`` and ``transformer-demo`` on CPU.

    make hope-train VARIANT=hope          # or VARIANT=transformer

runs the shipped checkpoints' four stages (A-D; each ``--init``s from the previous one; the
Makefile holds the exact commands, each ``config.json`` its own under ``provenance`` and the
earlier stages' under ``provenance.init_provenance``). The shipped ``transformer-demo`` is stages
A and B only (README, HOPE). On one core of this 2-core CPU HOPE took about 71 minutes.

Both build the same byte-level BPE tokenizer (7-digit numbers as 3-digit groups, a small chat template),
trained on text from the same generator, then train a same-width model of the given variant on a
mix of (a) synthetic key-value retrieval in the prompt format of RULER ``niah_single_1`` and (b)
plain sentences. RULER facts (NVIDIA/RULER ``scripts/data/synthetic/niah.py`` and
``synthetic.yaml``): the noise haystack line "The grass is green. The sky is blue. The sun is
yellow. Here we go. There and back again." repeated and joined by newlines, the needle
``One of the special magic numbers for {key} is: {value}.`` inserted as a line, keys
``adjective-noun`` from wonderwords' word lists, 7-digit values, the singular task template
("A special magic number is hidden ...", "What is the special magic number for {key} mentioned in
the provided text?") and the answer prefix `` The special magic number for {key} mentioned in the
provided text is``. Training contexts are at most ``--max-len`` tokens; the sweep measures
what happens beyond. Fully determined by ``--seed``, ``--steps`` and ``--init`` (rerunning stage A
with ``--stop-step 1000`` gave bit-identical weights).

The trainer's defaults are the earlier demo recipe (copy drills, several needles, prose haystacks,
192 tokens, the paper's self-generated targets): with it the HOPE did not learn retrieval, and its
output memory's W1 grew geometrically with the writes (NaN near 1K tokens). The shipped recipe is
single-needle data (``--drill 0 --multi-needle 0 --prose 0 --text 0.05``), ``--value-target
--eta-scale-other 0`` (bounded memories) and a curriculum up to 16K tokens (bench/RESULTS.md, HOPE).
``--save-every N`` writes the checkpoint every N steps as well.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic numbers for {key} is: {value}."
MULTI_INTRO = "Some special magic numbers are hidden within the following text. Make sure to memorize it. " \
              "I will quiz you about the numbers afterwards."
SINGLE_INTRO = "A special magic number is hidden within the following text. Make sure to memorize it. " \
               "I will quiz you about the number afterwards."
QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
ANSWER_PREFIX = " The special magic number for {key} mentioned in the provided text is"
SPECIAL = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def word_lists() -> dict[str, list[str]]:
    """wonderwords' adjective, noun and verb lists (the lists RULER draws its keys from)."""
    assets = resources.files("wonderwords") / "assets"
    return {kind: sorted({w.strip() for w in (assets / f"{kind}list.txt").read_text().splitlines()
                          if w.strip().isalpha()}) for kind in ("adjective", "noun", "verb")}


def random_key(rng: random.Random) -> str:
    """An ``adjective-noun`` key."""
    words = word_lists()
    return f"{rng.choice(words['adjective'])}-{rng.choice(words['noun'])}"


def random_value(rng: random.Random) -> str:
    """A 7-digit number."""
    return str(rng.randint(10**6, 10**7 - 1))


def sentence(rng: random.Random) -> str:
    """A simple random sentence ("The quiet river explains a lamp.")."""
    w = word_lists()
    return f"The {rng.choice(w['adjective'])} {rng.choice(w['noun'])} {rng.choice(w['verb'])}s " \
           f"a {rng.choice(w['noun'])}."


def chat(user: str) -> str:
    """``CHAT_TEMPLATE`` rendered for one user message with the generation prompt."""
    return f"<|user|>\n{user}<|end|>\n<|assistant|>\n"


@dataclass
class Example:
    """One training sequence: text pieces with loss weights."""

    pieces: list[tuple[str, float]]
    """(text, weight of its tokens in the loss)."""


def niah_example(rng: random.Random, n_lines: int, prose: bool = False, multi: float = 0.15) -> Example:
    """A NIAH prompt with ``n_lines`` haystack lines (noise, or random sentences) and its answer;
    with probability ``multi`` 2-4 needles of which one is asked."""
    n_needles = 1 if rng.random() >= multi else rng.randint(2, 4)
    keys: list[str] = []
    while len(keys) < n_needles:
        key = random_key(rng)
        if key not in keys:
            keys.append(key)
    values = [random_value(rng) for _ in keys]
    lines = [(" ".join(sentence(rng) for _ in range(3)) if prose else NOISE_LINE) for _ in range(n_lines)]
    for key, value in zip(keys, values):
        lines.insert(rng.randint(0, len(lines)), NEEDLE.format(key=key, value=value))
    context = "\n".join(lines)
    if rng.random() < 0.3:   # the task slices the haystack by tokens: lines may be cut
        context = context[:len(context) - rng.randint(0, len(NOISE_LINE))]
    target = rng.randrange(n_needles)
    intro = SINGLE_INTRO if n_needles == 1 else MULTI_INTRO
    user = f"{intro}\n{context}\n{QUESTION.format(key=keys[target])}"
    return Example([(chat(user) + ANSWER_PREFIX.format(key=keys[target]), 0.05),
                    (f" {values[target]}.<|end|>", 1.0)])


def recall_example(rng: random.Random, n_lines: int, multi: float = 0.15) -> Example:
    """Needles in noise, then the same needle lines again in random order, their numbers supervised.

    Dense supervision for the skill NIAH needs (recall the number stated after a key earlier); with
    probability ``multi`` 2-4 needles.
    """
    n = 1 if rng.random() >= multi else rng.randint(2, 4)
    pairs = [(random_key(rng), random_value(rng)) for _ in range(n)]
    lines = [NOISE_LINE] * max(0, n_lines - 2)
    for key, value in pairs:
        lines.insert(rng.randint(0, len(lines)), NEEDLE.format(key=key, value=value))
    pieces = [("\n".join(lines + [NOISE_LINE, NOISE_LINE]), 0.05)]
    for key, value in rng.sample(pairs, n):
        pieces += [(f"\nOne of the special magic numbers for {key} is:", 0.05), (f" {value}.", 1.0)]
    return Example(pieces)


def drill_example(rng: random.Random, n_lines: int) -> Example:
    """A list of 7-digit numbers, noise lines, the same list again (supervised): dense copying."""
    numbers = " ".join(random_value(rng) for _ in range(rng.randint(6, 14)))
    gap = "\n".join([NOISE_LINE] * rng.randint(0, max(0, n_lines)))
    return Example([(f"Numbers: {numbers}\n{gap}\nThe numbers again:", 0.05), (f" {numbers}.", 1.0)])


def text_example(rng: random.Random, n_sentences: int) -> Example:
    """Plain sentences (language modelling), sometimes with a stated number."""
    parts = []
    for _ in range(n_sentences):
        parts.append(sentence(rng) if rng.random() < 0.9 else NEEDLE.format(key=random_key(rng), value=random_value(rng)))
    return Example([(" ".join(parts), 0.2)])


def tokenizer_corpus(seed: int, n: int = 3000) -> list[str]:
    """Text the BPE is trained on (same generator as the training data)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ex = niah_example(rng, rng.randint(0, 3), prose=i % 2 == 1) if i % 3 else text_example(rng, 8)
        out.append("".join(t for t, _ in ex.pieces))
    return out


def build_tokenizer(seed: int = 0, vocab_size: int = 2048, corpus_size: int = 3000):
    """Byte-level BPE with the chat template; a transformers fast tokenizer.

    Digits: every 3-digit group "000".."999" is a token (matched left to right, so "2067779" is
    "206" "777" "9"), other digits one per token. Copying a 7-digit value is then 3 steps over a
    1000-symbol alphabet instead of 7 over 10 symbols (with single digits, repeated digits make
    the copy ambiguous; the small demo models did not learn it within the CPU budget).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(seed, corpus_size), trainer=trainer)
    tok.add_tokens([f"{i:03d}" for i in range(1000)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=1 << 20)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def encode_example(tokenizer, ex: Example) -> tuple[list[int], list[float]]:
    """Token ids and per-token loss weights (weight of predicting each token)."""
    ids: list[int] = []
    weights: list[float] = []
    for text, w in ex.pieces:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        weights += [w] * len(piece)
    return ids, weights


def make_batch(tokenizer, rng: random.Random, batch: int, max_len: int, noise_line_tokens: int,
               multi: float = 0.15, batch_tokens: int | None = None, drill: float = 0.3,
               prose: float = 0.15, text: float = 0.1, min_batch: int = 4):
    """(ids (B, T), targets (B, T), weights (B, T)) of examples up to ``max_len`` tokens long;
    with ``batch_tokens``, B = min(batch, batch_tokens // length) (at least ``min_batch``). Mix: ``text`` plain
    text, ``drill`` copy drills, the rest NIAH prompts (58%; a share ``prose`` of them with a
    random-sentence haystack) and needle recall (42%)."""
    niah_to = 0.58 * max(0.0, 1 - text - drill)
    recall_to = max(0.0, 1 - text - drill)
    text_from = 1 - text if drill < 1 else 1.0
    import torch

    target_len = rng.randint(max(96, max_len // 4), max_len)
    if batch_tokens:
        batch = max(min_batch, min(batch, batch_tokens // target_len))
    rows = []
    for _ in range(batch):
        kind, seed = rng.random(), rng.random()
        in_prose = kind < niah_to and rng.random() < prose
        per_line = noise_line_tokens * (2 if in_prose else 1)
        n_lines = max(0, target_len // per_line - 3)
        while True:   # the same example with fewer haystack lines until it fits (answers never cut)
            r = random.Random(seed)
            if kind < niah_to:
                ex = niah_example(r, n_lines, prose=in_prose, multi=multi)
            elif kind < recall_to:
                ex = recall_example(r, n_lines, multi=multi)
            elif kind < text_from:
                ex = drill_example(r, n_lines)
            else:
                ex = text_example(r, max(4, target_len // 10))
            ids, w = encode_example(tokenizer, ex)
            if len(ids) <= max_len + 1 or n_lines == 0 or kind >= text_from:
                break
            n_lines = max(0, n_lines - (len(ids) - max_len - 1) // per_line - 1)
        if kind >= text_from:   # plain text is cut to length; retrieval examples are kept whole
            ids, w = ids[:max_len + 1], w[:max_len + 1]
        rows.append((ids, w))
    T = max(len(r[0]) for r in rows) - 1
    pad = tokenizer.pad_token_id
    ids = torch.full((batch, T), pad, dtype=torch.long)
    targets = torch.full((batch, T), pad, dtype=torch.long)
    weights = torch.zeros(batch, T)
    for i, (r, w) in enumerate(rows):
        n = len(r) - 1
        ids[i, :n] = torch.tensor(r[:-1])
        targets[i, :n] = torch.tensor(r[1:])
        weights[i, :n] = torch.tensor(w[1:])
    return ids, targets, weights


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def demo_config(variant: str, vocab_size: int, chunk_size: int = 16, chunk_size_memory: int = 16,
                eta_scale_other: float = 0.02, value_target: bool = False):
    """The demo's hyper-parameters (HOPE and Transformer of the same width and depth).

    The HOPE memories use the stabilised options (L2-normalised input, sigmoid eta, normalised
    steps; see HopeConfig): with the paper's plain step they diverged within a few updates at this
    scale. Convs act on q, k, v (as in Titans): with the conv on the block input neither variant
    learned to copy within the budget; nor did HOPE while its k/v memories rewrote themselves at the
    output memory's rate (``eta_scale_other`` 0.02 keeps the self-generated keys stable). ``alpha_logit_offset`` 10 starts every decay at alpha ~ 0.99995 (a needle written
    16K tokens earlier keeps about half its weight).
    """
    from longctx.runners.hope.model import HopeConfig

    return HopeConfig(
        variant=variant, vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, memory_hidden=64,
        memory_conv_window=4, conv_after_projection=True, chunk_size=chunk_size,
        chunk_size_memory=chunk_size_memory, eta_scale=1.0,
        eta_scale_other=eta_scale_other, eta_activation="sigmoid",
        memory_input_l2norm=True, memory_normalized_steps=True, alpha_logit_offset=10.0,
        memory_value_target=value_target,
        cms_periods=(32, 256), cms_lr=(0.0, 0.0), attn_conv_window=4, mlp_hidden_mult=4,
    )


def init_demo_weights(model, embed_std: float = 1.0) -> None:
    """The demo's initialisation on top of the modules' defaults.

    The tied head: rare tokens (the 1000 number groups) need embeddings large enough for a
    confident logit through LayerNorm(h) . E, so the embedding is N(0, ``embed_std``) (GPT-2's 0.02
    leaves them unpredictable). Titans memories see unit-norm inputs: W2 ~ N(0, 0.25) gives
    |gelu(W2 k)|^2 ~ 1, so an eta <= 1 can store an association in one write (nn.Linear's default
    gives ~0.1).
    """
    import torch

    with torch.no_grad():
        model.embed.weight.normal_(0.0, embed_std)
        for name, p in model.named_parameters():
            if name.endswith(".w2") and ".titans.m_" in name:
                p.normal_(0.0, 0.25)


def train(args: argparse.Namespace) -> Path:
    """Train and save the checkpoint (its ``config.json`` records the command and the data mix)."""
    import torch
    import torch.nn.functional as F

    from longctx.runners.hope.model import HopeLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    if args.init:   # the tokenizer of the stage it continues (the BPE depends on that stage's seed)
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.init)
        for key in ("is_local", "local_files_only"):   # loading options, not tokenizer settings
            tokenizer.init_kwargs.pop(key, None)
    else:
        tokenizer = build_tokenizer(args.seed, args.vocab_size)
    noise_tokens = len(tokenizer.encode("\n" + NOISE_LINE, add_special_tokens=False))
    digit_ids = torch.tensor([i for t, i in tokenizer.get_vocab().items() if t.isdigit()])
    cfg = demo_config(args.variant, len(tokenizer), args.chunk_size, args.chunk_size_memory, args.eta_scale_other,
                      args.value_target)
    model = HopeLM(cfg)
    init_demo_weights(model, args.embed_std)
    init_provenance = None
    if args.init:   # continue from a checkpoint of the same configuration (a second training stage)
        from longctx.runners.hope.checkpoint import load_checkpoint

        previous, previous_config = load_checkpoint(args.init)
        if previous.cfg != cfg:
            sys.exit(f"--init {args.init}: its model configuration differs from this command's")
        model.load_state_dict(previous.state_dict())
        init_provenance = previous_config.get("provenance", {})
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.variant}: {n_params} parameters, vocab {len(tokenizer)}, {args.steps} steps", flush=True)
    start = time.monotonic()
    saved_at = None   # the step of the last save, so the final save does not write it again

    def save(out: Path | None = None) -> Path:
        return _save(args, model, tokenizer, step, start, init_provenance, out)

    for step in range(args.steps):
        frac = step / max(1, args.steps - 1)
        max_len = int(args.min_len + (args.max_len - args.min_len) * min(1.0, 2 * frac))   # length curriculum
        decay = max(0.0, (frac - args.lr_flat) / (1 - args.lr_flat)) if args.lr_flat < 1 else 0.0
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * decay)))
        drill = 1.0 if frac < args.drill_warmup else args.drill       # copy drills only, at first
        for group in opt.param_groups:
            group["lr"] = lr
        ids, targets, weights = make_batch(tokenizer, rng, args.batch, max_len, noise_tokens, args.multi_needle,
                                           args.batch_tokens, drill, args.prose, args.text,
                                           args.min_batch)
        logits, _ = model(ids)                                          # (B, T, V)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(weights)
        loss = (ce * weights).sum() / weights.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            digits = (weights == 1.0) & torch.isin(targets, digit_ids)
            acc = (logits.argmax(-1)[digits] == targets[digits]).float().mean().item()
            print(f"step {step:5d}  len {ids.shape[1]:4d}  loss {loss.item():.3f}  answer-digit acc {acc:.2f}  "
                  f"lr {lr:.2e}  {time.monotonic() - start:6.0f}s", flush=True)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            out, saved_at = save(), step
            print(f"saved {out} at step {step + 1}", flush=True)
            if args.keep_saves:   # the folder just written, copied
                kept = Path(f"{args.out}-step{step + 1}")
                shutil.copytree(out, kept, dirs_exist_ok=True)
                print(f"kept {kept}", flush=True)
        if args.stop_step and step + 1 >= args.stop_step:
            print(f"stopping after step {step + 1}: --stop-step", flush=True)
            break
        if args.max_minutes and time.monotonic() - start > 60 * args.max_minutes:
            print(f"stopping at step {step}: --max-minutes {args.max_minutes} reached", flush=True)
            break
    out = Path(args.out) if saved_at == step else save()
    print(f"saved {out}", flush=True)
    return out


def _save(args: argparse.Namespace, model, tokenizer, step: int, start: float, init_provenance: dict | None,
          out: Path | None = None) -> Path:
    """The checkpoint after ``step + 1`` steps, its ``config.json`` recording the command and the data mix."""
    from longctx.runners.hope.checkpoint import save_checkpoint

    was_training = model.training
    model.eval()
    provenance = {
        "source": "longctx.runners.hope.train",
        "command": " ".join(["python -m longctx.runners.hope.train", *sys.argv[1:]]),
        "steps": step + 1, "steps_planned": args.steps, "seed": args.seed, "lr": args.lr, "lr_flat": args.lr_flat,
        "embed_std": args.embed_std, "drill_warmup": args.drill_warmup, "batch": args.batch,
        "batch_tokens": args.batch_tokens, "min_batch": args.min_batch, "min_train_len": args.min_len, "max_train_len": args.max_len,
        "threads": args.threads, "train_seconds": round(time.monotonic() - start),
        **({"init": str(args.init), "init_provenance": init_provenance or {}} if args.init else {}),
        "data": f"{0.58 * (1 - args.text - args.drill):.0%} synthetic RULER niah_single_1-format prompts (noise "
                f"haystack; {args.multi_needle:.0%} with 2-4 needles; {args.prose:.0%} random-sentence haystack), "
                f"{0.42 * (1 - args.text - args.drill):.0%} needle recall (needle lines repeated later), "
                f"{args.drill:.0%} number-list copy drills across noise lines, {args.text:.0%} random sentences",
    }
    out = save_checkpoint(out or args.out, model, tokenizer, context_window=args.context_window, provenance=provenance)
    model.train(was_training)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=["hope", "hope_attention", "transformer"], default="hope")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--steps", type=int, default=750)
    p.add_argument("--batch", type=int, default=32, help="examples per batch at most")
    p.add_argument("--batch-tokens", type=int, default=4096, help="tokens per batch at most (fewer, longer examples)")
    p.add_argument("--min-batch", type=int, default=4, help="examples per batch at least (long sequences)")
    p.add_argument("--min-len", type=int, default=96, help="longest sequence at the start (tokens)")
    p.add_argument("--max-len", type=int, default=192, help="longest sequence after the curriculum (tokens)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--multi-needle", type=float, default=0.1, help="share of examples with 2-4 needles")
    p.add_argument("--drill", type=float, default=0.4, help="share of number-list copy drills")
    p.add_argument("--prose", type=float, default=0.15, help="share of NIAH prompts with a random-sentence haystack")
    p.add_argument("--text", type=float, default=0.1, help="share of plain-text examples")
    p.add_argument("--drill-warmup", type=float, default=0.3, help="fraction of the steps trained on drills only")
    p.add_argument("--lr-flat", type=float, default=0.6, help="fraction of the steps at full lr before the cosine decay")
    p.add_argument("--embed-std", type=float, default=1.0, help="initial embedding std (tied head)")
    p.add_argument("--chunk-size", type=int, default=16, help="HOPE: chunk size of the k, v, eta, alpha memories")
    p.add_argument("--chunk-size-memory", type=int, default=16, help="HOPE: chunk size of the output memory")
    p.add_argument("--eta-scale-other", type=float, default=0.02,
                   help="HOPE: eta scale of the k, v, eta, alpha memories (0: they do not write in context)")
    p.add_argument("--value-target", action="store_true",
                   help="HOPE: the output memory regresses on v_t, not M(v_t) (see HopeConfig.memory_value_target)")
    p.add_argument("--save-every", type=int, default=None, help="also save the checkpoint every this many steps")
    p.add_argument("--keep-saves", action="store_true", help="also keep every periodic save as OUT-stepN")
    p.add_argument("--stop-step", type=int, default=None,
                   help="stop after this many steps (the schedules stay those of --steps)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (same configuration; its provenance is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--context-window", type=int, default=131072)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--max-minutes", type=float, default=None, help="stop early after this much wall time")
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
