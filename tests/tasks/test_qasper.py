"""The qasper task: loading (raw JSON, hub schema, offline), contexts fitted to budgets, positions."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from longctx._errors import LongctxError
from longctx._protocols import Grid
from longctx._registry import get_task
from longctx.tasks import qasper as qasper_module
from longctx.tasks.qasper import hub_reachable, parse_corpus

FIXTURE = Path(__file__).parent / "data" / "qasper_sample_small.json"
QID = "753990d0b621d390ed58f20c4d9e4f065f0dc672"
EVIDENCE = "Method paragraph using seed lexicon"


def make(**options):
    return get_task("qasper", {"data_path": str(FIXTURE), **options})


def test_samples_fit_the_budget_and_locate_the_evidence(smol_tokenizer):
    task = make()
    samples = list(
        task.samples(Grid(lengths=(256, 1024), depths=(0.0, 50.0), samples=10, seed=3), smol_tokenizer)
    )
    assert len(samples) == 4 * 2  # 4 questions (all of them), 2 lengths; depths are ignored
    assert len({s.id for s in samples}) == len(samples)
    assert {s.metadata["question_id"] for s in samples} == {QID, f"{QID}#2", f"{QID}#3", f"{QID}#4"}
    for s in samples:
        assert s.context_tokens == len(s.prompt.token_ids)
        assert s.context_tokens + s.max_new_tokens <= s.length
        assert s.depth is None and not task.controls_depth
        meta = s.metadata
        if s.length == 256:  # the paper (about 64 tokens) does not fit: cut, prompt filled exactly
            assert meta["truncated"] and meta["kept_fraction"] < 1
            assert s.context_tokens + s.max_new_tokens == s.length
        else:
            assert not meta["truncated"] and meta["kept_fraction"] == 1.0
            assert "Conclusion paragraph" in s.prompt.text and "Question: " in s.prompt.text
        if meta["answer_types"] == ["none"]:  # unanswerable: no gold evidence (official rule)
            assert s.needle_positions == () and s.evidence_depth is None
        elif s.length == 1024:
            (pos,) = s.needle_positions
            assert smol_tokenizer.decode(s.prompt.token_ids[pos:]).startswith(EVIDENCE)
            start, end = meta["context_span"]  # the paper, from its title to the end of its text
            assert smol_tokenizer.decode(s.prompt.token_ids[start:end]).startswith("# Minimally Supervised")
            assert smol_tokenizer.decode(s.prompt.token_ids[:end]).endswith("Conclusion paragraph")
            assert s.evidence_depth == round(100 * (pos - start) / (end - start), 2)
            assert meta["evidence_in_context"] == meta["evidence_located"] == 1
        else:  # the evidence paragraph lies beyond the cut
            assert (
                s.needle_positions == ()
                and meta["evidence_located"] == 1
                and meta["evidence_in_context"] == 0
            )


def test_same_seed_same_samples_and_questions_shared_across_lengths(smol_tokenizer):
    grid = Grid(lengths=(512, 1024), depths=(), samples=2, seed=7)
    first = [s.id for s in make().samples(grid, smol_tokenizer)]
    assert first == [s.id for s in make().samples(grid, smol_tokenizer)]
    by_length = {
        length: {i.split("|")[2] for i in first if i.split("|")[1] == str(length)} for length in (512, 1024)
    }
    assert by_length[512] == by_length[1024] and len(by_length[512]) == 2


def test_oracle_prediction_scores_one(smol_tokenizer):
    task = make()
    for s in task.samples(Grid(lengths=(1024,), depths=(), samples=4), smol_tokenizer):
        scores = task.scorer.score(s.metadata["oracle_prediction"], s)
        assert scores["answer_f1"] == 1.0 and scores["evidence_f1"] == 1.0
        assert (
            set(task.scorer.metrics) <= set(scores) <= {*task.scorer.metrics, *task.scorer.optional_metrics}
        )
        assert task.scorer.score("something else entirely", s)["answer_f1"] == 0.0


def test_scoring_samples_carry_the_benchmark_ids():
    samples = list(make().scoring_samples())
    assert [s.id for s in samples] == [QID, f"{QID}#2", f"{QID}#3", f"{QID}#4"]
    first = samples[0]
    assert first.references == ("a vocabulary", "using seed lexicon")
    assert first.metadata["answer_types"] == ["abstractive", "extractive"]
    assert samples[2].references == ("Unanswerable",)


def test_too_small_a_length_is_a_user_error(smol_tokenizer):
    with pytest.raises(LongctxError, match="too small"):
        list(make().samples(Grid(lengths=(100,), depths=(), samples=1), smol_tokenizer))


def test_data_path_folder_uses_the_split_file(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "qasper-dev-v0.3.json")
    task = get_task("qasper", {"data_path": str(tmp_path), "split": "validation"})
    assert len(list(task.scoring_samples())) == 4
    with pytest.raises(LongctxError, match="qasper-test-v0.3.json"):
        list(get_task("qasper", {"data_path": str(tmp_path)}).scoring_samples())
    with pytest.raises(LongctxError, match="no such file"):
        list(get_task("qasper", {"data_path": str(tmp_path / "nope.json")}).scoring_samples())
    (tmp_path / "other.json").write_text(json.dumps({"p1": {"title": "no questions here"}}))
    with pytest.raises(LongctxError, match="not QASPER data"):
        list(get_task("qasper", {"data_path": str(tmp_path / "other.json")}).scoring_samples())
    with pytest.raises(LongctxError, match="options"):
        get_task("qasper", {"no_such_option": "1"})


def to_hub_row(paper_id: str, paper: dict) -> dict:
    """A raw-JSON paper in the layout ``datasets`` gives ``allenai/qasper`` rows (sequences of
    structs become dicts of lists)."""

    def columns(records: list[dict]) -> dict:
        keys = list(records[0]) if records else []
        return {k: [r[k] for r in records] for k in keys}

    qas = [{**qa, "answers": columns(qa["answers"])} for qa in paper["qas"]]
    return {
        "id": paper_id,
        "title": paper["title"],
        "abstract": paper["abstract"],
        "full_text": columns(paper["full_text"]),
        "qas": columns(qas),
    }


def test_hub_rows_parse_like_the_raw_release():
    raw = json.loads(FIXTURE.read_text())
    hub = {pid: to_hub_row(pid, paper) for pid, paper in raw.items()}
    assert isinstance(hub["1909.00694"]["qas"]["answers"][0]["answer"], list)
    assert parse_corpus(hub, "hub") == parse_corpus(raw, "raw")


def test_without_hub_access_the_error_is_immediate_and_names_the_way_out(monkeypatch):
    import datasets

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(qasper_module, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("datasets must not be tried"))
    qasper_module._load_hub.cache_clear()
    start = time.monotonic()
    with pytest.raises(LongctxError) as err:
        list(get_task("qasper").scoring_samples())
    assert time.monotonic() - start < 1.0
    message = str(err.value)
    assert "allenai/qasper" in message and "data_path" in message and "\n" not in message


def test_hub_probe_fails_fast_on_a_closed_port(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    start = time.monotonic()
    assert hub_reachable(timeout=3.0) is False
    assert time.monotonic() - start < 3.5


def test_a_local_dataset_in_the_hub_layout_loads_through_datasets(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(
        qasper_module, "hub_reachable", lambda timeout=3.0: pytest.fail("no probe for a folder")
    )
    folder = tmp_path / "qasper"
    folder.mkdir()
    raw = json.loads(FIXTURE.read_text())
    rows = [json.dumps(to_hub_row(pid, paper)) for pid, paper in raw.items()]
    (folder / "test.jsonl").write_text("\n".join(rows) + "\n")
    qasper_module._load_hub.cache_clear()
    corpus = get_task("qasper", {"dataset": str(folder)}).corpus()
    assert corpus == parse_corpus(raw, "raw")


# ---- corpus metrics through the sweep's records (the optional corpus_scores hook) ------------------
CORPUS = Path(__file__).parent / "data" / "qasper_corpus_small.json"


def _sweep_results():
    """Results as the sweep writes them (to_result), two lengths: the oracle at 1K; at 2K plain
    answers without evidence (2K: "seed lexicon" 1, "Yes" 1 for q-boolean-yes, "No" 1 for
    q-boolean-no, "Unanswerable" 1, "network" vs "small convolutional network" 0.5) and one error."""
    import msgspec

    from longctx._records import Generation
    from longctx._sweep import to_result

    task = get_task("qasper", {"data_path": str(CORPUS)})
    plain = {"q-extractive": "seed lexicon", "q-boolean-yes": "Yes", "q-boolean-no": "No",
             "q-none": "Unanswerable", "q-abstractive": "network"}
    results = []
    for s in task.scoring_samples():
        for length in (1024, 2048):
            sample = msgspec.structs.replace(s, id=f"qasper|{length}|{s.id}", length=length)
            prediction = s.metadata["oracle_prediction"] if length == 1024 else plain[s.id]
            results.append(to_result(sample, Generation(sample.id, prediction), task, "x", "m"))
    results.append(to_result(sample, Generation(sample.id, None, error="timeout"), task, "x", "m"))
    return task, results


def test_the_corpus_hook_over_sweep_results_per_length():
    from longctx._scoring import corpus_hook, corpus_rows

    task, results = _sweep_results()
    hook = corpus_hook("qasper")
    assert hook is not None and corpus_hook("ruler/niah_single_1") is None and corpus_hook("nope") is None
    rows = corpus_rows(results, hook)
    assert [(r.length, r.n) for r in rows] == [(1024, 5), (2048, 5), (None, 10)]  # the error left out
    assert rows[0].metrics == dict.fromkeys(rows[0].metrics, 1.0)  # the oracle
    # 2K: answers 1, 0.5, 1, 1, 1 -> 0.9; abstractive 0.5; no evidence given -> no Evidence F1
    assert rows[1].metrics["answer_f1"] == pytest.approx(0.9)
    assert rows[1].metrics["answer_f1_abstractive"] == 0.5 and rows[1].metrics["evidence_f1"] is None
    # pooled: evidence given at 1K -> every item counts, 2K items with empty evidence: only q-none
    # (no gold evidence) scores 1 -> (5 + 1) / 10
    assert rows[2].metrics["evidence_f1"] == pytest.approx(0.6)
    assert rows[2].metrics["answer_f1"] == pytest.approx((5 + 4.5) / 10)


def test_the_sweep_summary_prints_corpus_metrics():
    from rich.console import Console

    from longctx.cli._tables import print_accuracy_table

    _, results = _sweep_results()
    console = Console(record=True, width=200)
    print_accuracy_table(results, console)
    text = console.export_text()
    assert "qasper  corpus metrics %" in text
    corpus = text[text.index("qasper  corpus metrics %"):]
    header = next(line for line in corpus.splitlines() if line.startswith("┃"))
    assert header.replace("┃", " ").split() == ["metric", "1K", "2K", "all"]
    rows = [line.replace("│", " ").split() for line in corpus.splitlines() if line.startswith("│")]
    assert rows == [
        ["answer_f1", "100.0", "90.0", "95.0"],
        ["answer_f1_extractive", "100.0", "100.0", "100.0"],
        ["answer_f1_abstractive", "100.0", "50.0", "75.0"],
        ["answer_f1_boolean", "100.0", "100.0", "100.0"],
        ["answer_f1_none", "100.0", "100.0", "100.0"],
        ["evidence_f1", "100.0", "-", "60.0"],
        ["scored", "5", "5", "10"],
    ]
