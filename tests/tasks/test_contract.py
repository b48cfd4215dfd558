"""One contract for every registered task: offline samples, unique ids, lengths and positions that
hold, scores in [0, 1], and the oracle scoring 100%. A new task must add its offline recipe here."""

from __future__ import annotations

from pathlib import Path

import pytest

from longctx._protocols import Grid
from longctx._registry import get_task, tasks
from longctx.runners.oracle import oracle_prediction

DATA = Path(__file__).parent / "data"
BABILONG_PUBLISHED = {"data_dir": str(DATA / "babilong" / "published")}
BABILONG_GENERATED = {"source": "generate", "facts_dir": str(DATA / "babilong" / "babi"),
                      "background_dir": str(DATA / "babilong" / "background")}


def recipes(name: str) -> list[tuple[dict, Grid]]:
    """How to build ``name`` offline: (options, grid) pairs."""
    if name.startswith("ruler/"):
        return [({}, Grid((1024, 2048), (0.0, 50.0, 100.0), 2, seed=5))]
    if name.startswith("babilong/"):
        return [(BABILONG_PUBLISHED, Grid((1024, 2048), (50.0,), 2, seed=5)),
                (BABILONG_GENERATED, Grid((1024, 2048), (0.0, 50.0, 100.0), 2, seed=5))]
    if name.startswith("longhealth/"):
        return [({"data_path": str(DATA / "longhealth_synthetic.json")}, Grid((1024, 2048), (50.0,), 3, seed=5))]
    if name == "qasper":
        return [({"data_path": str(DATA / "qasper_sample_small.json")}, Grid((1024,), (50.0,), 4, seed=5))]
    raise AssertionError(f"task {name} has no offline recipe in test_contract.py")


CASES = [(name, i) for name in tasks() for i in range(len(recipes(name)))]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.mark.parametrize("name,recipe", CASES, ids=[f"{n}#{i}" for n, i in CASES])
def test_task_contract(name, recipe, smol_tokenizer):
    options, grid = recipes(name)[recipe]
    task = get_task(name, options)
    samples = list(task.samples(grid, smol_tokenizer))
    assert samples, "no samples"
    assert len({s.id for s in samples}) == len(samples), "duplicate ids"
    again = [s.id for s in get_task(name, options).samples(grid, smol_tokenizer)]
    assert again == [s.id for s in samples], "not deterministic"
    assert task.scorer.metrics
    for s in samples:
        assert s.task == name
        assert s.length in grid.lengths
        assert s.context_tokens > 0
        if s.prompt.token_ids is not None:
            assert s.context_tokens == len(s.prompt.token_ids)
        assert s.context_tokens + s.max_new_tokens <= s.length, "over budget"
        assert s.references
        assert all(0 <= p < s.context_tokens for p in s.needle_positions), "position outside the prompt"
        # the question stands apart from the context (retrievers search with it), and the context's
        # token span holds every needle (the rag runner chunks exactly that span)
        assert s.prompt.question and s.prompt.question.strip(), "no question separate from the context"
        assert s.prompt.question not in s.prompt.messages[-1].content[slice(*s.prompt.context_span)]
        start, end = s.prompt.context_token_span
        assert 0 < start <= end < s.context_tokens
        assert all(start <= p < end for p in s.needle_positions), "needle outside the context span"
        if s.evidence_depth is not None:
            assert 0 <= s.evidence_depth <= 100
        if task.controls_depth:
            assert s.depth in grid.depths
        oracle = task.scorer.score(oracle_prediction(s), s)
        wrong = task.scorer.score("I do not know.", s)
        for scores in (oracle, wrong):
            assert set(task.scorer.metrics[:1]) <= set(scores)
            assert all(0.0 <= v <= 1.0 for v in scores.values())
        assert oracle[task.scorer.metrics[0]] == 1.0, (s.id, oracle_prediction(s))
