"""RULER NIAH samples: budgets, placement, determinism, wording (with the real default tokenizer)."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest
from longctx.tasks import _haystacks as hs

from longctx._errors import LongctxError
from longctx._protocols import Grid
from longctx._registry import get_task, tasks


def decode_at(tokenizer, ids, position, n):
    """Text of ``n`` tokens from ``position``."""
    return tokenizer.decode(ids[position:position + n])


NIAH = [n for n in tasks() if n.startswith("ruler/niah_")]
GRID = Grid(lengths=(1024, 4096), depths=(0.0, 25.0, 50.0, 75.0, 100.0), samples=2, seed=7)


def test_all_eight_variants_registered():
    assert sorted(NIAH) == sorted(f"ruler/{n}" for n in (
        "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
        "niah_multikey_3", "niah_multivalue", "niah_multiquery"))


@pytest.mark.parametrize("name", NIAH)
def test_budget_positions_and_references(name, smol_tokenizer):
    samples = list(get_task(name).samples(GRID, smol_tokenizer))
    assert len(samples) == 2 * 2 * 5
    assert len({s.id for s in samples}) == len(samples)
    for s in samples:
        ids = s.prompt.token_ids
        assert s.context_tokens == len(ids)
        # fits: prompt + generation budget <= length, and says how much of it it fills
        assert s.context_tokens + s.max_new_tokens <= s.length
        assert s.metadata["fill"] == round((s.context_tokens + s.max_new_tokens) / s.length, 4)
        assert s.max_new_tokens == 128
        # every needle is where the sample says, and the targets carry the references
        texts = [decode_at(smol_tokenizer, ids, p, 120) for p in s.needle_positions]
        assert all("One of the special magic" in t for t in texts)
        n_targets = s.metadata["n_targets"]
        for ref, text in zip(s.references, texts[:n_targets]):
            assert ref in text
        assert 0 <= s.evidence_depth <= 100
        # the decoded text is the same prompt as the ids
        assert s.prompt.text.endswith(s.prompt.answer_prefix)


@pytest.mark.parametrize("name", ["ruler/niah_single_1", "ruler/niah_single_2", "ruler/niah_multikey_3"])
def test_depth_is_honoured(name, smol_tokenizer):
    grid = Grid(lengths=(4096,), depths=(0.0, 10.0, 50.0, 90.0, 100.0), samples=1, seed=1)
    samples = list(get_task(name).samples(grid, smol_tokenizer))
    achieved = [s.evidence_depth for s in samples]
    assert achieved == sorted(achieved)
    for s in samples:
        assert abs(s.evidence_depth - s.depth) <= 3.0, (s.depth, s.evidence_depth)


def test_essay_needles_at_sentence_boundaries(smol_tokenizer):
    grid = Grid(lengths=(2048,), depths=(20.0, 40.0, 60.0, 80.0), samples=1, seed=3)
    for s in get_task("ruler/niah_multikey_1").samples(grid, smol_tokenizer):
        for p in s.needle_positions:
            before = smol_tokenizer.decode(s.prompt.token_ids[p - 3:p]).rstrip()
            assert re.search(r"[.!?]['\")\]]*$", before), before


def test_same_seed_same_samples_other_seed_other_needles(smol_tokenizer):
    task = get_task("ruler/niah_single_2")
    a = list(task.samples(GRID, smol_tokenizer))
    b = list(get_task("ruler/niah_single_2").samples(GRID, smol_tokenizer))
    assert [x.id for x in a] == [x.id for x in b]
    assert [x.prompt.token_ids for x in a] == [x.prompt.token_ids for x in b]
    c = list(task.samples(Grid(GRID.lengths, GRID.depths, GRID.samples, seed=8), smol_tokenizer))
    assert [x.references for x in a] != [x.references for x in c]


def test_paired_needles_across_depths_and_lengths(smol_tokenizer):
    samples = list(get_task("ruler/niah_single_1").samples(GRID, smol_tokenizer))
    by_index = {}
    for s in samples:
        by_index.setdefault(s.metadata["index"], set()).add(s.references)
    assert all(len(v) == 1 for v in by_index.values())


@pytest.mark.parametrize("name", NIAH)
def test_shorter_lengths_and_other_depths_share_the_prefix(name, smol_tokenizer):
    """Two prompts of one sample index are the same tokens up to the first needle of either."""
    grid = Grid(lengths=(1024, 4096), depths=(0.0, 50.0, 100.0), samples=1, seed=1)
    samples = list(get_task(name).samples(grid, smol_tokenizer))
    for a in samples:
        for b in samples:
            n = min(a.needle_positions + b.needle_positions)
            assert a.prompt.token_ids[:n] == b.prompt.token_ids[:n], (a.id, b.id)
    deep = [s for s in samples if s.depth == 100.0]
    assert deep[0].needle_positions[0] > 500  # the shared part is the haystack, not only the template


def test_singular_and_plural_wording(smol_tokenizer):
    grid = Grid(lengths=(1024,), depths=(50.0,), samples=1)
    single = next(get_task("ruler/niah_single_1").samples(grid, smol_tokenizer))
    text = single.prompt.messages[-1].content
    assert text.startswith("A special magic number is hidden within the following text.")
    assert "What is the special magic number for " in text
    assert single.prompt.answer_prefix.startswith(" The special magic number for ")
    assert single.prompt.answer_prefix.endswith("mentioned in the provided text is")
    assert "One of the special magic numbers for" in text  # needles keep the plural
    multi = next(get_task("ruler/niah_multiquery").samples(grid, smol_tokenizer))
    mtext = multi.prompt.messages[-1].content
    assert mtext.startswith("Some special magic numbers are hidden")
    assert re.search(r"for \S+, \S+, \S+, and \S+ mentioned", mtext)
    assert len(multi.references) == 4
    mv = next(get_task("ruler/niah_multivalue").samples(grid, smol_tokenizer))
    assert len(mv.references) == 4 and len(mv.needle_positions) == 4


def test_value_kinds(smol_tokenizer):
    grid = Grid(lengths=(1024,), depths=(50.0,), samples=3)
    for s in get_task("ruler/niah_single_3").samples(grid, smol_tokenizer):
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", s.references[0])
    for s in get_task("ruler/niah_single_1").samples(grid, smol_tokenizer):
        assert re.fullmatch(r"[1-9]\d{6}", s.references[0])
        assert re.search(r"for [a-z]+-[a-z]+ mentioned", s.prompt.messages[-1].content)


def test_haystack_dir_option(tmp_path, smol_tokenizer):
    (tmp_path / "a.txt").write_text("Alpha beta gamma. Delta epsilon zeta! Eta theta iota? " * 50)
    task = get_task("ruler/niah_single_2", {"haystack_dir": str(tmp_path)})
    s = next(task.samples(Grid((1024,), (50.0,), 1), smol_tokenizer))
    assert "Delta epsilon zeta!" in s.prompt.text


def test_too_small_length_is_a_user_error(smol_tokenizer):
    from longctx._errors import LongctxError

    with pytest.raises(LongctxError, match="too small"):
        list(get_task("ruler/niah_single_1").samples(Grid((150,), (50.0,), 1), smol_tokenizer))


# ---- placement as in RULER: separators, whole units, fill (issue [06]) ---------------------------

EDGE_GRID = Grid(lengths=(1024, 4096, 16384), depths=(0.0, 100.0), samples=2, seed=11)
NEEDLE_LINE = re.compile(r"One of the special magic (numbers|uuids) for [^\n]+? is: [0-9a-f-]+\.")  # keys: "ad hoc-walnut"


def context_text(s) -> str:
    """The context as it stands in the user message (decoded from the context's token ids)."""
    return s.prompt.messages[-1].content[slice(*s.prompt.context_span)]


@lru_cache(maxsize=1)
def essay_sentences() -> tuple[str, ...]:
    return tuple(hs.split_sentences(hs.text_files(hs.essay_dir())))


def strip_needles(ctx: str, needle_texts: list[str], joiner: str) -> tuple[str, list[int]]:
    """``ctx`` without the needles (each with the joiner in front of it, or after it when it opens
    the context); their char offsets."""
    found = []
    for text in needle_texts:
        assert ctx.count(text) == 1, text
        found.append(ctx.index(text))
    for text in needle_texts:
        at = ctx.index(text)
        lo, hi = (at - 1, at + len(text)) if at > 0 and ctx[at - 1] == joiner else (at, at + len(text) + 1)
        ctx = ctx[:lo] + ctx[hi:]
    return ctx, found


@pytest.mark.parametrize("name", NIAH)
def test_needles_at_the_edges_are_separated_and_no_unit_is_cut(name, smol_tokenizer):
    task = get_task(name)
    samples = list(task.samples(EDGE_GRID, smol_tokenizer))
    # the units that follow each sample's haystack: from a longer build of the same index
    longer = {s.metadata["index"]: s for s in task.samples(Grid((24576,), (50.0,), 2, seed=11), smol_tokenizer)}
    lines = task.haystack != "essay"
    joiner = "\n" if lines else " "
    for s in samples:
        ctx = context_text(s)
        message = s.prompt.messages[-1].content
        start, end = s.prompt.context_span
        # the template's own text frames the context: a newline before it and after it
        assert message[start - 1] == "\n" and message[end] == "\n"
        texts = [t for t, _ in task.needles(EDGE_GRID.seed, s.metadata["index"]).texts(task.value_kind)]
        hay, at = strip_needles(ctx, texts, joiner)
        for text, i in zip(texts, at):
            # a needle is never glued: the haystack's joiner on each side, or the template's text at
            # the very start (line haystacks) / end of the context
            before, after = ctx[i - 1:i], ctx[i + len(text):i + len(text) + 1]
            assert before == joiner or (lines and i == 0), (s.id, repr(ctx[max(i - 40, 0):i + 5]))
            assert after in (joiner, ""), (s.id, repr(ctx[i + len(text) - 5:i + len(text) + 40]))
        target = at[0]
        if s.depth == 0.0:  # the target opens the context (RULER: a bare line / " " + needle in essays)
            assert ctx[:target] == ("" if lines else " ")
            assert s.evidence_depth == 0.0
        else:  # at 100 only needles follow the target
            rest = ctx[target + len(texts[0]):]
            assert re.fullmatch(f"({re.escape(joiner)}{NEEDLE_LINE.pattern})*", rest), rest[:200]
        # no needle and no haystack unit is cut
        n_units = s.metadata["haystack_units"]
        if lines:
            got = ctx.split("\n")
            assert all(x == hs.NOISE_LINE or NEEDLE_LINE.fullmatch(x) for x in got), s.id
            units = hay.split("\n")
            if task.haystack == "noise":
                assert set(units) == {hs.NOISE_LINE}
                following = hs.NOISE_LINE
            else:
                reference = strip_needles(context_text(longer[s.metadata["index"]]), texts, "\n")[0].split("\n")
                assert units == reference[:len(units)], "distractor lines are not a prefix of a longer build"
                following = reference[len(units)]
        else:
            # the haystack is exactly the first n_units whole sentences, joined by spaces
            sentences = essay_sentences()
            units = [sentences[i % len(sentences)] for i in range(n_units)]
            assert hay.removeprefix(" ") == " ".join(units), s.id
            following = sentences[n_units % len(sentences)]
        assert len(units) == n_units
        # the most whole units that fit: the next one would not, so fill < 99% only when one unit is
        # more than 1% of the length
        slack = s.length - s.context_tokens - s.max_new_tokens
        next_tokens = len(smol_tokenizer.encode(joiner + following))
        assert 0 <= slack < next_tokens, (s.id, slack, next_tokens)
        assert s.metadata["fill"] >= 0.99 or next_tokens > 0.01 * s.length, (s.id, s.metadata["fill"])
        if task.haystack == "noise" and s.length >= 4096:  # a noise line is 25 tokens < 1% of 4K
            assert s.metadata["fill"] >= 0.99, (s.id, s.metadata["fill"])
        # positions are exact: the target's text starts at its position (separator included)
        ids = s.prompt.token_ids
        piece = smol_tokenizer.decode(ids[s.needle_positions[0]:s.needle_positions[0] + 200])
        assert piece.lstrip(joiner).startswith(texts[0]), (s.id, piece[:80])
        lo, hi = s.prompt.context_token_span
        assert smol_tokenizer.decode(ids[lo:hi]) == ctx


def test_fill_of_essays_at_least_99_percent_mostly(smol_tokenizer):
    """Sentences are rarely longer than 1% of 4K+: most essay samples fill >= 99% (RULER: 93-99.9%)."""
    grid = Grid(lengths=(4096, 16384), depths=(0.0, 25.0, 50.0, 75.0, 100.0), samples=4, seed=2)
    fills = [s.metadata["fill"] for s in get_task("ruler/niah_single_2").samples(grid, smol_tokenizer)]
    assert min(fills) >= 0.97 and sum(f >= 0.99 for f in fills) >= 0.9 * len(fills), fills


def test_haystack_repeated_flag_and_essay_json(tmp_path, smol_tokenizer):
    sentences = "Alpha beta gamma. Delta epsilon zeta! Eta theta iota? "
    essay = tmp_path / "PaulGrahamEssays.json"
    essay.write_text(json.dumps({"text": sentences * 100}))  # RULER's download script writes {"text": ...}
    grid = Grid((1024, 4096), (50.0,), 1)
    short, long = list(get_task("ruler/niah_single_2", {"essay_json": str(essay)}).samples(grid, smol_tokenizer))
    assert "Delta epsilon zeta!" in short.prompt.text
    assert short.metadata["haystack_repeated"] is False and long.metadata["haystack_repeated"] is True
    default = next(get_task("ruler/niah_single_2").samples(Grid((16384,), (50.0,), 1), smol_tokenizer))
    assert default.metadata["haystack_repeated"] is False  # the 49 essays hold ~139K tokens
    assert "haystack_repeated" not in next(get_task("ruler/niah_single_1").samples(grid, smol_tokenizer)).metadata


def test_essay_json_format_errors(tmp_path, smol_tokenizer):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["not", "RULER's format"]))
    grid = Grid((1024,), (50.0,), 1)
    with pytest.raises(LongctxError, match='"text"'):
        list(get_task("ruler/niah_single_2", {"essay_json": str(bad)}).samples(grid, smol_tokenizer))
    with pytest.raises(LongctxError, match="no such file|No such file"):
        list(get_task("ruler/niah_single_2", {"essay_json": str(tmp_path / "none.json")}).samples(grid, smol_tokenizer))
    with pytest.raises(LongctxError, match="one essay source"):
        get_task("ruler/niah_single_2", {"essay_json": str(bad), "haystack_dir": str(tmp_path)})


@pytest.mark.parametrize("name", ["ruler/niah_multikey_1", "ruler/niah_multivalue"])
def test_other_needle_drawing_depth_0_opens_the_context_separated(name, smol_tokenizer):
    """A non-target needle that draws grid depth 0 opens the context as RULER writes it:
    ``" " + needle + " " + first sentence`` (never glued to the sentence)."""
    task = get_task(name)
    grid = Grid((1024,), (100.0,), 40, seed=4)
    first = essay_sentences()[0]
    opened = 0
    for s in task.samples(grid, smol_tokenizer):
        start = s.prompt.context_token_span[0]
        if start not in s.needle_positions[1:]:
            continue
        opened += 1
        ctx = context_text(s)
        texts = [t for t, _ in task.needles(grid.seed, s.metadata["index"]).texts(task.value_kind)]
        opener = texts[s.needle_positions.index(start)]
        assert ctx.startswith(" " + opener + " "), ctx[:120]
        rest = ctx[len(opener) + 2:]
        while rest.startswith("One of the special magic"):  # more needles drew depth 0
            rest = rest.split(". ", 1)[1]
        assert rest.startswith(first), ctx[:200]
    assert opened >= 1, "no sample drew depth 0 for another needle; pick another seed"
