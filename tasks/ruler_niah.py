"""RULER needle-in-a-haystack, all eight variants, with per-position control.

Facts from NVIDIA/RULER (``scripts/synthetic.yaml``, ``scripts/data/synthetic/niah.py``,
``scripts/data/synthetic/constants.py``, ``scripts/eval/synthetic/constants.py``):

- needle ``One of the special magic {type_needle_v} for {key} is: {value}.``; the task template and
  answer prefix below; for one query and one value the wording is made singular (Some->A,
  "are all"->is, are->is, the plural "s" of the value kind dropped) in template and answer prefix,
  while needles keep the plural;
- keys: ``adjective-noun`` from wonderwords' lists, 7-digit numbers, or UUID4s; several queried keys
  are joined "a, b, and c"; tokens_to_generate 128; metric string_match_all.
- essay needles go at sentence boundaries ``int(n_sentences * depth / 100)``.

Differences, chosen for per-position measurement and recorded here: the *target* needle (the
first queried one) goes at the requested depth for every haystack kind (RULER places needles at
random depths, and at random lines for noise/needle haystacks); other needles go at depths drawn
from RULER's 40-point grid. Needle keys/values depend on (seed, sample index) only, so one sample
index is the same needle at every depth and length (paired comparisons). A key is drawn as an
independent adjective and noun, the same distribution as RULER's choice from their product list.
The haystack is the first ``budget`` tokens of one tokenization, so every prompt is exactly
``length - tokens_to_generate`` tokens (100% of the budget) and shorter lengths are prefixes of
longer ones (vLLM's prefix cache is hit across lengths and depths).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import msgspec

from longctx._errors import LongctxError
from longctx._prompting import context_budget, frame
from longctx._protocols import Grid, Tokenizer
from longctx._records import Sample
from longctx._registry import task
from longctx._scoring import RulerMatch
from longctx.tasks import _haystacks as hs

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
#: RULER's depth grid for non-target needles: np.round(np.linspace(0, 100, 40)).
DEPTH_GRID = tuple(round(100 * i / 39) for i in range(40))


def singular(text: str) -> str:
    """RULER's rewrite for one query and one value."""
    return text.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")


@lru_cache(maxsize=1)
def _word_lists() -> tuple[tuple[str, ...], tuple[str, ...]]:
    assets = resources.files("wonderwords") / "assets"
    adjs = tuple(sorted({w.strip() for w in (assets / "adjectivelist.txt").read_text().splitlines() if w.strip()}))
    nouns = tuple(sorted({w.strip() for w in (assets / "nounlist.txt").read_text().splitlines() if w.strip()}))
    return adjs, nouns


def random_value(kind: str, rng: random.Random) -> str:
    """A random key/value of RULER's kinds: ``words``, ``numbers`` (7 digits) or ``uuids``."""
    if kind == "words":
        adjs, nouns = _word_lists()
        return f"{rng.choice(adjs)}-{rng.choice(nouns)}"
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(kind)


def stable_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from ``parts`` independently of PYTHONHASHSEED."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class Needles:
    """The needles of one sample: targets (queried) first."""

    keys: tuple[str, ...]
    values: tuple[tuple[str, ...], ...]
    queried: tuple[int, ...]

    def texts(self, type_v: str) -> list[tuple[str, bool]]:
        """(needle text, is_target) for every needle, targets first."""
        out = [(NEEDLE.format(type_needle_v=type_v, key=self.keys[k], value=v), True)
               for k in self.queried for v in self.values[k]]
        out += [(NEEDLE.format(type_needle_v=type_v, key=self.keys[k], value=v), False)
                for k in range(len(self.keys)) if k not in self.queried for v in self.values[k]]
        return out

    @property
    def answers(self) -> tuple[str, ...]:
        """Values of the queried keys, in query order."""
        return tuple(v for k in self.queried for v in self.values[k])


@task("ruler/niah_single_1", haystack="noise", key_kind="words", value_kind="numbers", n_keys=1, n_values=1, n_queries=1,
      summary="RULER S-NIAH-1: one word-key -> number needle in the repeated noise haystack")
@task("ruler/niah_single_2", haystack="essay", key_kind="words", value_kind="numbers", n_keys=1, n_values=1, n_queries=1,
      summary="RULER S-NIAH-2: one word-key -> number needle in Paul Graham essays")
@task("ruler/niah_single_3", haystack="essay", key_kind="words", value_kind="uuids", n_keys=1, n_values=1, n_queries=1,
      summary="RULER S-NIAH-3: one word-key -> UUID needle in Paul Graham essays")
@task("ruler/niah_multikey_1", haystack="essay", key_kind="words", value_kind="numbers", n_keys=4, n_values=1,
      n_queries=1, summary="RULER MK-NIAH-1: one queried needle among 4 keys in essays")
@task("ruler/niah_multikey_2", haystack="needle", key_kind="words", value_kind="numbers", n_keys=1, n_values=1,
      n_queries=1, summary="RULER MK-NIAH-2: the haystack is distractor needles (word keys)")
@task("ruler/niah_multikey_3", haystack="needle", key_kind="uuids", value_kind="uuids", n_keys=1, n_values=1,
      n_queries=1, summary="RULER MK-NIAH-3: the haystack is distractor needles (UUID keys and values)")
@task("ruler/niah_multivalue", haystack="essay", key_kind="words", value_kind="numbers", n_keys=1, n_values=4,
      n_queries=1, summary="RULER MV-NIAH: four values for one key, all must be returned")
@task("ruler/niah_multiquery", haystack="essay", key_kind="words", value_kind="numbers", n_keys=4, n_values=1,
      n_queries=4, summary="RULER MQ-NIAH: four keys queried at once")
class RulerNiah:
    """RULER NIAH: find the value(s) of a key hidden in a haystack."""

    controls_depth = True

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        """``-O`` options of ruler/niah_* tasks."""

        haystack_dir: str | None = None
        """Folder of .txt files used instead of the essays (essay-haystack variants)."""
        haystack_dataset: str | None = None
        """Hugging Face dataset ``NAME[:SPLIT[:COLUMN]]`` used instead of the essays."""
        tokens_to_generate: int = 128
        """Generation budget (RULER: 128 for NIAH)."""

    def __init__(self, name: str, options: Options | None, *, haystack: str, key_kind: str, value_kind: str,
                 n_keys: int, n_values: int, n_queries: int):
        self.name = name
        self.options = options or self.Options()
        self.haystack, self.key_kind, self.value_kind = haystack, key_kind, value_kind
        self.n_keys, self.n_values, self.n_queries = n_keys, n_values, n_queries
        self.scorer = RulerMatch("all")
        self._streams: dict[tuple[str, int], hs.TokenStream] = {}

    # ---- needles ------------------------------------------------------------------------------
    def needles(self, seed: int, index: int) -> Needles:
        """The needles of sample ``index`` (independent of length and depth)."""
        rng = stable_rng(self.name, seed, index)
        keys: list[str] = []
        while len(keys) < self.n_keys:
            key = random_value(self.key_kind, rng)
            if key not in keys:
                keys.append(key)
        values = tuple(tuple(random_value(self.value_kind, rng) for _ in range(self.n_values)) for _ in keys)
        queried = tuple(sorted(rng.sample(range(self.n_keys), self.n_queries)))
        return Needles(tuple(keys), values, queried)

    def _type_v(self) -> str:
        return self.value_kind if self.n_queries * self.n_values > 1 else self.value_kind[:-1]

    def _stream(self, tokenizer: Tokenizer, seed: int, index: int, needles: Needles) -> hs.TokenStream:
        if self.haystack == "noise":
            key = ("noise", 0)
            make = lambda: hs.line_stream([hs.NOISE_LINE], tokenizer)  # noqa: E731
        elif self.haystack == "essay":
            key = ("essay", 0)
            make = lambda: hs.prose_stream(self._essay_text(), tokenizer)  # noqa: E731
        else:  # "needle": distractor needles with random keys and values, one per line
            key = ("needle", index)
            make = lambda: self._distractor_stream(tokenizer, seed, index, needles)  # noqa: E731
        if key not in self._streams or self._streams[key].tokenizer is not tokenizer:
            self._streams[key] = make()
        return self._streams[key]

    def _essay_text(self) -> str:
        if self.options.haystack_dir:
            return hs.text_files(Path(self.options.haystack_dir))
        if self.options.haystack_dataset:
            return hs.dataset_text(self.options.haystack_dataset)
        return hs.text_files(hs.essay_dir())

    def _distractor_stream(self, tokenizer: Tokenizer, seed: int, index: int, needles: Needles) -> hs.TokenStream:
        rng = stable_rng(self.name, seed, index, "haystack")
        plural = self.value_kind
        taken = set(needles.keys)

        def lines() -> Iterator[str]:
            while True:
                key = random_value(self.key_kind, rng)
                if key not in taken:
                    yield NEEDLE.format(type_needle_v=plural, key=key, value=random_value(self.value_kind, rng))

        return _LazyLines(lines(), tokenizer)

    # ---- samples ------------------------------------------------------------------------------
    def samples(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        """One sample per (length, depth, index) cell, exactly ``length - tokens_to_generate`` tokens."""
        gen = self.options.tokens_to_generate
        for index in range(grid.samples):
            needles = self.needles(grid.seed, index)
            type_v = self._type_v()
            queries = [needles.keys[k] for k in needles.queried]
            query = queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
            template, prefix = TEMPLATE, ANSWER_PREFIX
            if self.n_queries * self.n_values == 1:
                template, prefix = singular(template), singular(prefix)
            user = template.replace("{type_needle_v}", type_v).replace("{query}", query)
            pf = frame(tokenizer, user, answer_prefix=prefix.format(type_needle_v=type_v, query=query),
                       question=user.partition("{context}")[2].strip())
            needle_texts = needles.texts(self.value_kind)
            stream = self._stream(tokenizer, grid.seed, index, needles)
            pieces = hs.encode_many(tokenizer, [stream.joiner + t for t, _ in needle_texts])
            for length in grid.lengths:
                budget = context_budget(length, pf, gen)
                n_hay = budget - sum(len(p) for p in pieces)
                if n_hay < 0:
                    raise LongctxError(f"{self.name}: length {length} cannot hold the needles")
                hay, starts = stream.window(n_hay)
                for depth in grid.depths:
                    rng = stable_rng(self.name, grid.seed, index, length, depth, "placement")
                    depths = [depth] + [rng.choice(DEPTH_GRID) for _ in needle_texts[1:]]
                    context, offsets = _insert(hay, starts, pieces, depths)
                    prompt = pf.prompt(context, tokenizer)
                    positions = tuple(len(pf.prefix_ids) + o for o in offsets)
                    total = len(prompt.token_ids)
                    yield Sample(
                        id=f"{self.name}|L{length}|D{depth:g}|{index}",
                        task=self.name,
                        prompt=prompt,
                        references=needles.answers,
                        length=length,
                        context_tokens=total,
                        max_new_tokens=gen,
                        depth=float(depth),
                        needle_positions=positions,
                        evidence_depth=round(100 * offsets[0] / len(context), 2),
                        metadata={
                            "index": index,
                            "haystack": self.haystack,
                            "query": query,
                            "n_targets": len(needles.answers),
                            "prefix_group": f"{self.name}|{self.haystack}|{index if self.haystack == 'needle' else ''}",
                        },
                    )


def _insert(hay: list[int], starts: list[int], pieces: list[list[int]], depths: list[float]) -> tuple[list[int], list[int]]:
    """Insert needle ``pieces`` at the unit boundaries nearest below each depth.

    Returns the context ids and each piece's start offset in the context (input order).
    """
    bounds = starts + [len(hay)]
    cuts = [bounds[min(int(len(starts) * d / 100), len(starts))] for d in depths]
    order = sorted(range(len(pieces)), key=lambda i: (cuts[i], i))
    context: list[int] = []
    offsets = [0] * len(pieces)
    prev = 0
    for i in order:
        context.extend(hay[prev:cuts[i]])
        prev = cuts[i]
        offsets[i] = len(context)
        context.extend(pieces[i])
    context.extend(hay[prev:])
    return context, offsets


class _LazyLines(hs.TokenStream):
    """A line stream fed by an endless generator (the needle haystack)."""

    def __init__(self, lines: Iterator[str], tokenizer: Tokenizer):
        super().__init__([], "\n", tokenizer)
        self._lines = lines

    def ensure(self, n_tokens: int) -> None:  # noqa: D102
        batch = 32
        while len(self.ids) < n_tokens:
            pieces = [next(self._lines) for _ in range(batch)]
            pieces = [p if self._next + i == 0 else "\n" + p for i, p in enumerate(pieces)]
            self._next += batch
            for piece_ids in hs.encode_many(self.tokenizer, pieces):
                self.starts.append(len(self.ids))
                self.ids.extend(piece_ids)
            batch = min(batch * 2, 1024)
