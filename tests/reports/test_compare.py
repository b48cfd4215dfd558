"""``longctx.reports.compare``: pairing, refusal, identity, paired tests, effective length, cost,
retrieval split; constructed records with numbers worked out by hand."""

from __future__ import annotations

import msgspec
import pytest

from longctx._errors import LongctxError
from longctx.reports import stats
from longctx.reports.aggregate import DepthAxis, by_length, wilson_interval
from longctx.reports.compare import (
    classify_runs,
    compare_runs,
    effective_length,
    paired_tests,
    side_by_side,
)
from longctx.reports.cost import cost_of
from longctx.reports.retrieval import retrieval_split
from longctx.reports.runs import load_runs

from .conftest import make_result, rag_extra, write_sweep_run

TASK = "ruler/niah_single_1"


def _pattern(length: int, both_right: int, only_a: int, only_b: int, both_wrong: int, start: int = 0):
    """Scores (a, b) of a block of samples with the given concordance counts."""
    pairs = (
        [(1.0, 1.0)] * both_right + [(1.0, 0.0)] * only_a + [(0.0, 1.0)] * only_b + [(0.0, 0.0)] * both_wrong
    )
    return [(f"{TASK}|L{length}|D50|{start + i}", length, sa, sb) for i, (sa, sb) in enumerate(pairs)]


def _runs(rows, *, hash_a=lambda sid: f"h-{sid}", hash_b=lambda sid: f"h-{sid}", refs_b=None):
    a, b = [], []
    for sid, length, sa, sb in rows:
        kw = dict(task=TASK, length=length, depth=50.0, references=("42",))
        a.append(
            msgspec.structs.replace(
                make_result(sid, score=sa, prediction="42" if sa else "7", model="A", **kw),
                sample_hash=hash_a(sid),
            )
        )
        ref_b = refs_b(sid) if refs_b else ("42",)
        kw["references"] = ref_b
        b.append(
            msgspec.structs.replace(
                make_result(sid, score=sb, prediction="42" if sb else "9", model="B", **kw),
                sample_hash=hash_b(sid),
            )
        )
    return a, b


@pytest.fixture
def pattern_runs(tmp_path):
    """1K: 9 only-A vs 1 only-B (significant); 2K: 3 vs 5 (not); an error in A at 2K."""
    rows = _pattern(1024, 4, 9, 1, 2) + _pattern(2048, 2, 3, 5, 6)
    a, b = _runs(rows)
    sid = f"{TASK}|L2048|D50|99"
    a.append(
        msgspec.structs.replace(
            make_result(
                sid, task=TASK, length=2048, depth=50.0, error="timeout", references=("42",), model="A"
            ),
            sample_hash=f"h-{sid}",
        )
    )
    b.append(
        msgspec.structs.replace(
            make_result(
                sid,
                task=TASK,
                length=2048,
                depth=50.0,
                score=1.0,
                prediction="42",
                references=("42",),
                model="B",
            ),
            sample_hash=f"h-{sid}",
        )
    )
    return [write_sweep_run(tmp_path / "A", a), write_sweep_run(tmp_path / "B", b)]


# ---- paired tests -------------------------------------------------------------------------------
def test_paired_tests_counts_mcnemar_and_holm(pattern_runs):
    runs = load_runs(pattern_runs)
    tests = {t.length: t for t in paired_tests({r.label: r.results for r in runs})}
    t1, t2, all_ = tests[1024], tests[2048], tests[None]
    assert (t1.both_right, t1.only_a, t1.only_b, t1.both_wrong) == (4, 9, 1, 2)
    assert (t2.both_right, t2.only_a, t2.only_b, t2.both_wrong, t2.errors_a, t2.errors_b) == (
        2,
        3,
        5,
        6,
        1,
        0,
    )
    assert t2.pairs == 16  # the errored sample is left out of the pair
    assert all(t.test == "mcnemar" for t in tests.values())
    # by hand: 2 * P(X <= 1 | 10) = 22/1024; 2 * P(X <= 3 | 8) = 186/256; overall 12 vs 6:
    # 2 * (1 + 18 + 153 + 816 + 3060 + 8568 + 18564) / 2^18 = 62360 / 262144
    assert t1.p_value == pytest.approx(22 / 1024)
    assert t2.p_value == pytest.approx(186 / 256)
    assert all_.p_value == pytest.approx(62360 / 262144)
    # Holm over the three: 3 * 0.02148, then max(that, 2 * 0.2379), then max(.., 0.7266)
    assert t1.p_holm == pytest.approx(3 * 22 / 1024)
    assert all_.p_holm == pytest.approx(2 * 62360 / 262144)
    assert t2.p_holm == pytest.approx(186 / 256)
    assert t1.p_value < 0.05 and t2.p_value > 0.05
    assert t1.diff == pytest.approx((13 - 5) / 16) and t1.mean_a == pytest.approx(13 / 16)


def test_graded_scores_use_the_paired_bootstrap(tmp_path):
    a, b = [], []
    for i in range(40):
        sid = f"qasper|4096|q{i}"
        kw = dict(task="qasper", length=4096, depth=None, evidence_depth=10.0, references=("x",))
        a.append(make_result(sid, score=0.8 if i < 30 else 0.4, **kw))
        b.append(make_result(sid, score=0.6 if i < 30 else 0.5, **kw))
    tests = paired_tests({"a": a, "b": b})
    assert {t.test for t in tests} == {"bootstrap"}
    t = next(t for t in tests if t.length is None)
    assert t.diff == pytest.approx(0.125) and t.ci_low > 0 and t.p_value < 0.001
    assert (t.both_right, t.only_a, t.only_b, t.both_wrong) == (0, 0, 0, 40)  # nobody gets full credit


# ---- sample identity ----------------------------------------------------------------------------
def test_identical_when_hashes_match(pattern_runs):
    (pair,) = classify_runs(load_runs(pattern_runs))
    assert pair.kind == "identical" and pair.shared == 33 and pair.same_hash == 33
    assert "same content hash" in pair.note


def test_equivalent_when_content_differs_but_recipe_matches(tmp_path):
    a, b = _runs(_pattern(1024, 3, 1, 1, 1), hash_b=lambda sid: f"other-{sid}")
    runs = load_runs([write_sweep_run(tmp_path / "a", a, seed=3), write_sweep_run(tmp_path / "b", b, seed=3)])
    (pair,) = classify_runs(runs)
    assert pair.kind == "equivalent" and pair.same_hash == 0 and pair.hash_missing == 0
    assert "another tokenizer" in pair.note


def test_old_folders_without_hash_are_equivalent_at_best(tmp_path):
    a, b = _runs(_pattern(1024, 3, 1, 1, 1), hash_b=lambda sid: None)
    runs = load_runs([write_sweep_run(tmp_path / "a", a), write_sweep_run(tmp_path / "b", b)])
    (pair,) = classify_runs(runs)
    assert pair.kind == "equivalent" and pair.hash_missing == 6
    assert "equivalent at best" in pair.note


def test_other_references_are_refused_naming_one(tmp_path):
    rows = _pattern(1024, 3, 1, 1, 1)
    changed = {rows[2][0], rows[4][0]}
    a, b = _runs(rows, hash_b=lambda sid: None, refs_b=lambda sid: ("13",) if sid in changed else ("42",))
    runs = load_runs([write_sweep_run(tmp_path / "a", a), write_sweep_run(tmp_path / "b", b)])
    with pytest.raises(LongctxError) as err:
        classify_runs(runs)
    msg = str(err.value)
    assert "\n" not in msg and "2 of 6 shared sample ids have other references" in msg
    assert rows[2][0] in msg


def test_other_seed_with_other_content_is_refused(tmp_path):
    rows = _pattern(1024, 3, 1, 1, 1)
    odd = rows[3][0]
    a, b = _runs(rows, hash_b=lambda sid: "x" if sid == odd else f"h-{sid}")
    runs = load_runs([write_sweep_run(tmp_path / "a", a, seed=1), write_sweep_run(tmp_path / "b", b, seed=2)])
    with pytest.raises(LongctxError, match=r"grid.seed differ \(1 vs 2\)") as err:
        classify_runs(runs)
    assert f"1 of 6 shared samples have other content (e.g. {odd})" in str(err.value)
    # the same seed and options: equivalent, and the note counts the one sample that differs
    runs = load_runs([write_sweep_run(tmp_path / "c", a, seed=1), write_sweep_run(tmp_path / "d", b, seed=1)])
    (pair,) = classify_runs(runs)
    assert pair.kind == "equivalent" and pair.same_hash == 5 and "1 of 6" in pair.note


def test_no_shared_sample_is_refused(tmp_path):
    a, _ = _runs(_pattern(1024, 2, 0, 0, 0))
    _, b = _runs(_pattern(1024, 2, 0, 0, 0, start=50))
    runs = load_runs([write_sweep_run(tmp_path / "a", a), write_sweep_run(tmp_path / "b", b)])
    with pytest.raises(LongctxError, match="share no sample"):
        classify_runs(runs)


def test_one_run_is_refused(pattern_runs):
    with pytest.raises(LongctxError, match="at least two run folders"):
        compare_runs(load_runs(pattern_runs[:1]))


# ---- effective length ---------------------------------------------------------------------------
def _accuracy_runs(per_length: dict[int, int], n: int = 10):
    """One run whose accuracy at each length is per_length[length] / n."""
    out = []
    for length, right in per_length.items():
        out += [make_result(f"{TASK}|L{length}|{i}", length=length, score=float(i < right)) for i in range(n)]
    return {"r": out}


def test_effective_length_stays_above_threshold():
    margins = by_length(_accuracy_runs({1024: 10, 2048: 9, 4096: 8, 8192: 10}))
    e = effective_length(margins, "r", TASK)  # 100, 90, 80 (< 85.6), 100: stops at the first drop
    assert (e.length, e.label, e.first_below) == (2048, "2K", 4096)
    assert e.accuracy == pytest.approx(0.9) and e.first_below_accuracy == pytest.approx(0.8)
    assert (e.ci_low, e.ci_high) == pytest.approx(wilson_interval(9, 10))
    assert e.tested == [1024, 2048, 4096, 8192]
    assert effective_length(margins, "r", TASK, threshold=75).label == ">=8K"  # every tested length passes
    assert effective_length(margins, "r", TASK, threshold=95).label == "1K"
    low = effective_length(by_length(_accuracy_runs({1024: 5, 2048: 9})), "r", TASK)
    assert (low.length, low.label, low.first_below) == (None, "<1K", 1024)


def test_conservative_effective_length_uses_the_wilson_lower_bound():
    # 40/40 at 1K: Wilson low 40 / (40 + z^2) = 0.912; 38/40 at 2K: accuracy 95% but low 0.835
    margins = by_length(_accuracy_runs({1024: 40, 2048: 38}, n=40))
    e = effective_length(margins, "r", TASK)
    assert (e.label, e.conservative) == (">=2K", "1K")
    small = effective_length(by_length(_accuracy_runs({1024: 10, 2048: 9})), "r", TASK)
    assert (small.label, small.conservative) == (">=2K", "<1K")  # 10/10: low 0.72 < 0.856


def test_effective_length_treats_all_error_lengths_as_below():
    runs = _accuracy_runs({1024: 10})
    runs["r"] += [make_result(f"{TASK}|L2048|{i}", length=2048, error="HTTP 500") for i in range(3)]
    e = effective_length(by_length(runs), "r", TASK)
    assert (e.label, e.first_below, e.first_below_accuracy) == ("1K", 2048, None)


# ---- cost ---------------------------------------------------------------------------------------
def test_cost_numbers_from_constructed_records():
    rs = [
        make_result(
            "s1",
            prompt_tokens=1000,
            cached_tokens=400,
            latency_s=2.0,
            extra={"rlm": {"root_calls": 2, "sub_calls": 3, "cost_usd": 0.01}, "state_bytes": 4096},
        ),
        make_result(
            "s2",
            prompt_tokens=3000,
            cached_tokens=0,
            latency_s=6.0,
            extra={
                "rlm": {"root_calls": 4, "sub_calls": 5, "cost_usd": 0.03, "tokens_estimated": True},
                "state_bytes": 8192,
            },
        ),
        make_result("s3", error="timeout", latency_s=4.0),  # errors cost time too
    ]
    rs = [msgspec.structs.replace(r, completion_tokens=c) for r, c in zip(rs, (10, 30, None))]
    c = cost_of(rs, "run", TASK, None)
    assert c.samples == 3
    assert c.prompt_tokens == 2000 and c.computed_tokens == (600 + 3000) / 2
    assert c.cached_share == pytest.approx(400 / 4000)
    assert c.completion_tokens == 20 and c.root_calls == 3 and c.sub_calls == 4
    assert c.latency_s == pytest.approx(4.0)
    assert c.tokens_per_s == pytest.approx((600 + 10 + 3000 + 30) / 8.0)
    assert c.generated_per_s == pytest.approx(40 / 8.0)
    assert c.state_bytes == 8192 and c.cost_usd == pytest.approx(0.04)
    assert c.retrieved_tokens is None and c.tokens_estimated == 1
    rag = cost_of(
        [make_result("r1", extra=rag_extra(1.0, 300)), make_result("r2", extra=rag_extra(0.0, 500))],
        "rag",
        TASK,
        1024,
    )
    assert rag.retrieved_tokens == 400 and rag.sub_calls is None and rag.state_bytes is None


# ---- retrieval split ----------------------------------------------------------------------------
def test_rag_wrong_answers_split_into_retrieval_and_reading_misses():
    rs = [
        make_result("1", score=1.0, extra=rag_extra(1.0)),
        make_result("2", score=1.0, extra=rag_extra(0.0)),  # right without the needle: counted right
        make_result("3", score=0.0, extra=rag_extra(0.5, needles=2)),  # retrieval miss
        make_result("4", score=0.0, extra=rag_extra(0.0)),  # retrieval miss
        make_result("5", score=0.0, extra=rag_extra(1.0)),  # reading miss
        make_result("6", score=0.0, extra=rag_extra(None)),  # recall unknown
        make_result("7", error="timeout", extra=rag_extra(1.0)),  # never scored
    ]
    s = retrieval_split(rs, "rag", TASK, None, pooled=True)
    assert (s.scored, s.right, s.retrieval_miss, s.reading_miss, s.unknown) == (6, 2, 2, 1, 1)
    assert s.with_recall == 5 and s.recall == pytest.approx((1 + 0 + 0.5 + 0 + 1) / 5)


def test_compare_runs_has_recall_cells_only_for_rag_runs(tmp_path):
    rows = _pattern(1024, 3, 2, 1, 2)
    a, b = _runs(rows)
    b = [msgspec.structs.replace(r, runner="rag", extra=rag_extra(1.0 if r.score else 0.0)) for r in b]
    comp = compare_runs(load_runs([write_sweep_run(tmp_path / "a", a), write_sweep_run(tmp_path / "b", b)]))
    assert {s.run for s in comp.retrieval} == {"b"}
    cell = next(s for s in comp.retrieval if not s.pooled)
    assert (cell.length, cell.depth_bin, cell.recall) == (1024, 50.0, pytest.approx(4 / 8))
    assert cell.retrieval_miss == 4 and cell.reading_miss == 0


# ---- side by side -------------------------------------------------------------------------------
def test_side_by_side_lists_samples_failing_in_any_run(pattern_runs):
    runs = load_runs(pattern_runs)
    groups = side_by_side({r.label: r.results for r in runs}, TASK, DepthAxis("requested"))
    rows = groups[(1024, 50.0)]
    assert len(rows) == 9 + 1 + 2  # only A, only B, both wrong: every sample someone failed
    only_b = next(s for s in rows if s.results["A"].score == 0.0 and s.results["B"].score == 1.0)
    assert only_b.references == ("42",) and only_b.results["B"].prediction == "42"
    err = next(s for s in groups[(2048, 50.0)] if s.sample_id.endswith("|99"))
    assert err.results["A"].error == "timeout"


def test_holm_family_spans_tasks_and_pairs():
    def run(task: str, scores: list[float]):
        return [make_result(f"{task}|{i}", task=task, score=s) for i, s in enumerate(scores)]

    runs = {
        "a": run("t1", [1.0] * 10) + run("t2", [1.0] * 6),
        "b": run("t1", [0.0] * 9 + [1.0]) + run("t2", [0.0] * 6),
        "c": run("t1", [1.0] * 10) + run("t2", [1.0] * 6),
    }
    tests = paired_tests(runs)
    # 3 pairs x 2 tasks x (one length + all lengths) = 12 rows; one length: the all-lengths row is
    # the same test, so the family has 6 tests
    assert len(tests) == 12
    per_length = [t for t in tests if t.length is not None]
    pooled = [t for t in tests if t.length is None]
    assert [t.p_holm for t in per_length] == pytest.approx(stats.holm([t.p_value for t in per_length]))
    assert [t.p_holm for t in pooled] == [t.p_holm for t in per_length]
    a_b_t1 = next(t for t in pooled if (t.run_a, t.run_b, t.task) == ("a", "b", "t1"))
    assert a_b_t1.p_value == pytest.approx(2 / 2**9)  # 9 vs 0 discordant
    assert a_b_t1.p_holm == pytest.approx(6 * 2 / 2**9)  # the smallest of 6 p-values (tied with b-c)
