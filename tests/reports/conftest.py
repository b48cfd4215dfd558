"""Synthetic run folders for report tests, written through the real RunStore."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from longctx._records import Result
from longctx._store import RunStore


def make_result(
    sample_id: str,
    *,
    task: str = "ruler/niah_single_1",
    length: int = 1024,
    depth: float | None = 50.0,
    evidence_depth: float | None = None,
    score: float | None = 1.0,
    error: str | None = None,
    prediction: str | None = "1234567",
    references: tuple[str, ...] = ("1234567",),
    latency_s: float = 0.5,
    prompt_tokens: int | None = None,
    cached_tokens: int | None = None,
    runner: str = "vllm",
    model: str = "smollm2-135m-instruct",
    extra: dict[str, Any] | None = None,
) -> Result:
    """One Result with sensible defaults; an error result gets no score and no prediction."""
    if error is not None:
        score, prediction = None, None
    return Result(
        sample_id=sample_id,
        task=task,
        runner=runner,
        model=model,
        length=length,
        context_tokens=length - 128,
        depth=depth,
        needle_positions=(),
        evidence_depth=evidence_depth if evidence_depth is not None else depth,
        prediction=prediction,
        references=references,
        score=score,
        scores={} if score is None else {"string_match_all": score},
        error=error,
        latency_s=latency_s,
        prompt_tokens=prompt_tokens,
        cached_tokens=cached_tokens,
        extra=extra or {},
    )


def write_run(root: Path, results: list[Result], **info: Any) -> Path:
    """A run folder holding ``results`` (manifest via ``RunStore.open_for_write``)."""
    first = results[0] if results else None
    identity = {
        "task": first.task if first else "none",
        "runner": first.runner if first else "none",
        "model": first.model if first else "none",
        "name": root.name,
    }
    info = {"model": identity["model"], "runner": identity["runner"], "task": identity["task"], **info}
    with RunStore.open_for_write(root, identity, info) as store:
        for r in results:
            store.append(r)
    return root


def niah_results(
    seed: int,
    *,
    lengths=(1024, 2048, 4096),
    depths=(0.0, 25.0, 50.0, 75.0, 100.0),
    per_cell: int = 4,
    model: str = "model-a",
    task: str = "ruler/niah_single_1",
    error_every: int = 17,
    trajectory: bool = False,
) -> list[Result]:
    """A NIAH-like sweep: accuracy falls with length and dips mid-context; some errors."""
    rng = random.Random(seed)
    out, i = [], 0
    for length in lengths:
        for depth in depths:
            p = max(0.05, 1.0 - 0.15 * (length // 1024) - (0.3 if 25 <= depth <= 75 else 0.0))
            for k in range(per_cell):
                i += 1
                ok = rng.random() < p
                error = "HTTP 500: engine died <b>bold</b>" if i % error_every == 0 else None
                extra = {}
                if trajectory:
                    extra = {
                        "trajectory": [
                            {"code": "print(context[:100])", "stdout": "The grass is green.", "sub_calls": []},
                            {"code": "FINAL(answer)", "stdout": "", "sub_calls": [{"prompt": "x", "response": "y"}]},
                        ]
                    }
                out.append(
                    make_result(
                        f"{task}-{length}-{depth:g}-{k}",
                        task=task,
                        length=length,
                        depth=depth,
                        score=1.0 if ok else 0.0,
                        error=error,
                        prediction="7654321" if ok else "The answer is <script>alert(1)</script> " + "x" * 400,
                        references=("7654321",),
                        latency_s=0.1 * length / 1024 + 0.01 * k,
                        prompt_tokens=length - 128,
                        cached_tokens=(length - 128) // 2 if k else 0,
                        model=model,
                        extra=extra,
                    )
                )
    return out


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    """Two run folders of the same NIAH sweep (different models), one with RLM-like trajectories,
    plus a second, evidence-positioned task (depth None) in the first run."""
    qa = [
        make_result(
            f"babilong/qa1-{i}",
            task="babilong/qa1",
            length=2048 * (1 + i % 2),
            depth=None,
            evidence_depth=(i * 7.3) % 100,
            score=float(i % 3 != 0),
            prediction="bathroom" if i % 3 else "kitchen",
            references=("bathroom",),
        )
        for i in range(30)
    ]
    a = write_run(tmp_path / "run-a", niah_results(1, model="model-a") + qa)
    b = write_run(tmp_path / "run-b", niah_results(2, model="model-b", trajectory=True, error_every=9))
    return [a, b]


# ---- comparison tests (longctx compare) ---------------------------------------------------------
def write_sweep_run(
    root: Path, results: list[Result], *, seed: int = 0, task_options: dict[str, Any] | None = None
) -> Path:
    """A run folder whose manifest identity records the grid seed and task options as
    ``longctx sweep`` writes them (what the comparison checks for equivalent samples)."""
    first = results[0] if results else None
    tasks = list(dict.fromkeys(r.task for r in results))
    identity = {
        "tasks": tasks,
        "task_options": task_options if task_options is not None else {t: {} for t in tasks},
        "runner": first.runner if first else "none",
        "model": first.model if first else "none",
        "grid": {"lengths": sorted({r.length for r in results}), "depths": [], "samples": 1, "seed": seed},
        "name": root.name,
    }
    info = {"model": identity["model"], "runner": identity["runner"]}
    with RunStore.open_for_write(root, identity, info) as store:
        for r in results:
            store.append(r)
    return root


def rag_extra(recall: float | None, retrieved_tokens: int = 512, needles: int = 1) -> dict[str, Any]:
    """``extra`` of a ``rag`` record (the rag runner's schema), with ``recall`` of ``needles``."""
    found = round((recall or 0.0) * needles)
    return {
        "rag": {
            "retriever": "bm25",
            "k": 4,
            "chunk_tokens": 128,
            "overlap": 16,
            "n_chunks": 12,
            "chunks": [{"start": 128 * i, "end": 128 * (i + 1), "rank": i, "score": 10.0 - i} for i in range(4)],
            "needles_retrieved": [i < found for i in range(needles)],
            "recall": recall,
            "retrieved_tokens": retrieved_tokens,
        }
    }
