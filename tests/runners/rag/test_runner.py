"""Runner ``rag``: options, refusals, the window check and a sweep through a fake generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from longctx import _registry
from longctx._errors import LongctxError, UnknownNameError
from longctx._protocols import Grid, RunnerConfig
from longctx._registry import Entry, get_task, parse_options
from longctx._sweep import SweepSpec, run_sweep
from longctx.runners.rag.runner import RAGOptions, RAGRunner, generator_option_pairs

from .conftest import ReadingGenerator

CONFIG = RunnerConfig(model="default")
RAG_KEYS = {"retriever", "k", "chunk_tokens", "overlap", "n_chunks", "chunks", "needles_retrieved", "recall",
            "retrieved_tokens"}


def rag(runner_=None, **options) -> RAGRunner:
    """A rag runner with ``-R``-style options around ``runner_`` (default: a fresh ReadingGenerator)."""
    opts = parse_options(RAGRunner, {k: str(v) for k, v in options.items()}, "runner rag")
    return RAGRunner(CONFIG, opts, generator=runner_ or ReadingGenerator())


def test_sweep_beyond_the_generators_window_with_a_fake_generator(reading_generator, tmp_path: Path):
    spec = SweepSpec(
        tasks=["ruler/niah_single_1"], grid=Grid(lengths=(16384,), depths=(0.0, 50.0, 100.0), samples=1),
        runner="rag", runner_config=RunnerConfig(model="default", concurrency=2), out=tmp_path / "run",
        runner_options={"generator": "reading-gen"},
    )
    outcome = run_sweep(spec)
    assert outcome.new == 3 and outcome.errors == 0
    [gen] = reading_generator.built
    assert gen.entered == 1 and len(gen.calls) == 1 and len(gen.calls[0]) == 3  # one call: engine concurrency
    sent = {s.id: s for s in gen.calls[0]}
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["score"] == 1.0 and row["error"] is None  # the needle was in front of the generator
        assert 16000 < row["context_tokens"] <= 16384  # the full context (original sample)
        assert row["prompt_tokens"] == len(sent[row["sample_id"]].prompt.token_ids) < 8192 - 128
        info = row["extra"]["rag"]
        assert set(info) == RAG_KEYS
        assert (info["retriever"], info["k"], info["chunk_tokens"], info["overlap"]) == ("bm25", 8, 128, 32)
        assert [c["rank"] for c in info["chunks"]] == list(range(1, 9))
        assert set(info["chunks"][0]) == {"start", "end", "rank", "score"}
        assert info["needles_retrieved"] == [True] and info["recall"] == 1.0
        scores = [c["score"] for c in info["chunks"]]
        assert scores == sorted(scores, reverse=True)
        assert info["retrieved_tokens"] <= 8 * 128 and info["n_chunks"] > 160
        needle = row["needle_positions"][0]
        assert any(c["start"] <= needle < c["end"] for c in info["chunks"])
        assert row["extra"]["finish_reason"] == "stop"  # the generator's own extra is kept
        assert row["latency_s"] >= 0.5 and row["extra"]["rag_retrieval_s"] >= 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    ident = manifest["model_identity"]
    assert ident["generator"] == {"runner": "reading-gen", "name": "reading-gen", "window": 8192}
    assert ident["retriever"]["name"] == "bm25" and ident["retriever"]["bm25s_version"]
    # resume: nothing new, no duplicate
    assert run_sweep(spec).new == 0


def test_missed_needle_is_scored_by_the_task_and_recall_says_why(ruler_samples):
    samples = ruler_samples("ruler/niah_single_1", 4096, (50.0,))
    # two chunks of 64 tokens: the question's words are in the needle only, so BM25 finds it ...
    runner = rag(top_k=2, chunk_tokens=64, overlap=32)
    with runner:
        [gen] = runner.generate(samples)
    assert gen.extra["rag"]["recall"] == 1.0 and gen.prediction == samples[0].references[0]
    # ... a retriever that returns the first chunks in document order misses it
    runner = rag(top_k=2, chunk_tokens=64, overlap=32)
    runner.retriever.rank = lambda queries, corpora: [[(i, 0.0) for i in range(len(c))] for c in corpora]
    with runner:
        [gen] = runner.generate(samples)
    assert gen.extra["rag"]["recall"] == 0.0 and gen.extra["rag"]["needles_retrieved"] == [False]
    assert gen.prediction == "nothing"


def test_prompt_tokens_fall_back_to_the_ids_sent(ruler_samples):
    generator = ReadingGenerator(report_tokens=False)
    runner = rag(generator)
    with runner:
        [gen] = runner.generate(ruler_samples("ruler/niah_single_1", 4096, (50.0,)))
    assert gen.prompt_tokens == len(generator.calls[0][0].prompt.token_ids)


def test_chat_mode_swaps_the_context_in_the_message(ruler_samples):
    [sample] = ruler_samples("ruler/niah_single_1", 8192, (50.0,))
    generator = ReadingGenerator()
    runner = RAGRunner(msgspec.structs.replace(CONFIG, mode="chat"), RAGOptions(top_k=2), generator=generator)
    with runner:
        [gen] = runner.generate([sample])
    sent = generator.calls[0][0]
    message = sent.prompt.messages[-1].content
    assert len(message) < len(sample.prompt.messages[-1].content) / 10
    assert sample.references[0] in message and message.endswith(sample.prompt.question)


def test_a_missing_generation_becomes_an_error(ruler_samples):
    class Silent(ReadingGenerator):
        def generate(self, samples):
            self.calls.append(list(samples))
            return iter(())

    runner = rag(Silent())
    with runner:
        [gen] = runner.generate(ruler_samples("ruler/niah_single_1", 4096, (50.0,)))
    assert gen.prediction is None and "returned no generation" in gen.error and gen.extra["rag"]["recall"] == 1.0


@pytest.mark.parametrize("options,message", [
    ({"retriever": "nope"}, "unknown retriever 'nope'"),
    ({"top_k": 0}, "top_k must be at least 1"),
    ({"chunk_tokens": 0}, "chunk_tokens must be at least 1"),
    ({"overlap": 128}, "overlap must be at least 0 and less than chunk_tokens (128)"),
    ({"overlap": -1}, "overlap must be at least 0"),
    ({"generator": "rag"}, "cannot be its own generator"),
    ({"top_k": 64}, "top_k * chunk_tokens = 8192 tokens do not fit the generator's window of 8192"),
])
def test_bad_options_are_refused_at_construction(options, message):
    with pytest.raises(LongctxError) as err:
        rag(**options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_generator_options_are_validated_against_the_generators_own_options(reading_generator):
    assert generator_option_pairs("engine=offline,dtype=float32") == {"engine": "offline", "dtype": "float32"}
    assert generator_option_pairs("server_args=--a 1,--b 2, dtype=auto") == {"server_args": "--a 1,--b 2",
                                                                           "dtype": "auto"}
    assert generator_option_pairs(" ") == {}
    with pytest.raises(LongctxError, match="bad -R generator_options 'oops'"):
        generator_option_pairs("oops")
    runner = RAGRunner(CONFIG, RAGOptions(generator="vllm", generator_options="engine=offline,dtype=float32"))
    assert (runner.generator.options.engine, runner.generator.options.dtype) == ("offline", "float32")
    assert runner.identity()["generator"]["runner"] == "vllm" and runner.context_window() is None
    with pytest.raises(LongctxError, match="bad option for runner vllm"):
        RAGRunner(CONFIG, RAGOptions(generator="vllm", generator_options="dtype=float64"))
    with pytest.raises(LongctxError, match="runner reading-gen .generator of rag. takes no options"):
        RAGRunner(CONFIG, RAGOptions(generator="reading-gen", generator_options="x=1"))
    with pytest.raises(UnknownNameError, match="did you mean 'vllm'"):
        RAGRunner(CONFIG, RAGOptions(generator="vlm"))


def test_retrieved_prompt_must_fit_the_window_before_any_work(ruler_samples):
    generator = ReadingGenerator(window=1200)  # 8 * 128 fits, but not with template and answer
    runner = rag(generator)
    with runner, pytest.raises(LongctxError, match=r"= \d+ tokens exceed the generator's window of 1200"):
        list(runner.generate(ruler_samples("ruler/niah_single_1", 4096, (50.0,))))
    assert generator.calls == []
    with rag(ReadingGenerator(window=1200), top_k=6) as runner:  # 6 * 128 + template + 128 fits
        assert len(list(runner.generate(ruler_samples("ruler/niah_single_1", 4096, (50.0,))))) == 1


def test_samples_without_question_or_context_span_are_refused(ruler_samples, niah_sample, smol_tokenizer):
    [sample] = ruler_samples("ruler/niah_single_1", 2048, (50.0,))
    no_question = msgspec.structs.replace(sample, prompt=msgspec.structs.replace(sample.prompt, question=None))
    generator = ReadingGenerator()
    with rag(generator) as runner:
        with pytest.raises(LongctxError, match="gives no question apart from its context"):
            list(runner.generate([sample, no_question]))
        bare = niah_sample(smol_tokenizer, "x", 1234)  # no context span either
        bare = msgspec.structs.replace(bare, prompt=msgspec.structs.replace(bare.prompt, question="q?"))
        with pytest.raises(LongctxError, match="does not say where its context sits"):
            list(runner.generate([bare]))
    assert generator.calls == []


class NoQuestionTask:
    """ruler/niah_single_1 whose samples do not separate their question (as some tasks cannot)."""

    def __init__(self, name, options):
        self.inner = get_task("ruler/niah_single_1")
        self.name, self.options, self.scorer, self.controls_depth = name, None, self.inner.scorer, True

    def samples(self, grid, tokenizer):
        for s in self.inner.samples(grid, tokenizer):
            yield msgspec.structs.replace(s, task=self.name,
                                          prompt=msgspec.structs.replace(s.prompt, question=None))


def test_sweep_of_a_task_without_question_is_refused_before_any_work(reading_generator, monkeypatch, tmp_path):
    monkeypatch.setitem(_registry._TASKS, "test/no-question", Entry("test/no-question", NoQuestionTask))
    spec = SweepSpec(tasks=["test/no-question"], grid=Grid((2048,), (50.0,), 1), runner="rag",
                     runner_config=CONFIG, out=tmp_path / "run", runner_options={"generator": "reading-gen"})
    with pytest.raises(LongctxError, match="task test/no-question gives no question"):
        run_sweep(spec)
    assert not (tmp_path / "run").exists(), "the run folder was touched before the refusal"
    assert reading_generator.built[0].calls == []


def longctx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longctx", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("option,needle", [
    ("retriever=nope", "unknown retriever 'nope'"),
    ("top_k=0", "top_k must be at least 1"),
    ("overlap=200", "overlap must be at least 0 and less than chunk_tokens"),
    ("colour=red", "bad option for runner rag"),
])
def test_bad_options_through_the_cli_one_line_exit_2(option, needle, tmp_path):
    out = tmp_path / "r"
    proc = longctx("sweep", "-t", "ruler/niah_single_1", "-r", "rag", "-R", option, "-o", str(out))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()
