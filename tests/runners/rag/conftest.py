"""Test doubles for runner ``rag``: a fake generator that answers only what its prompt shows, and
real RULER samples built with the default model's tokenizer."""

from __future__ import annotations

import pytest

from longctx import _registry
from longctx._protocols import Grid, RunnerConfig
from longctx._records import Generation
from longctx._registry import Entry, get_task


class ReadingGenerator:
    """A generator runner that "reads" its prompt: it answers with the references that appear in the
    prompt text (so a sample is scored 1 only when retrieval put the needle in front of it), else
    ``"nothing"``. Records every ``generate()`` call."""

    name = "reading-gen"
    tokenizer_ = None
    built: list[ReadingGenerator] = []

    def __init__(self, config: RunnerConfig | None = None, options: None = None, progress: object = None,
                 window: int | None = 8192, report_tokens: bool = True):
        self.config, self.window, self.report_tokens = config, window, report_tokens
        self.calls: list[list] = []
        self.entered = 0
        ReadingGenerator.built.append(self)

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def tokenizer(self):
        return ReadingGenerator.tokenizer_

    def context_window(self):
        return self.window

    def identity(self):
        return {"name": "reading-gen", "window": self.window}

    def generate(self, samples):
        self.calls.append(list(samples))
        for s in samples:
            seen = [r for r in s.references if r in s.prompt.text]
            yield Generation(s.id, " ".join(seen) or "nothing", latency_s=0.5,
                             prompt_tokens=len(s.prompt.token_ids) if self.report_tokens else None,
                             extra={"finish_reason": "stop"})


@pytest.fixture
def reading_generator(monkeypatch, smol_tokenizer):
    """The :class:`ReadingGenerator` class, registered as runner ``reading-gen`` for the test."""
    ReadingGenerator.built = []
    ReadingGenerator.tokenizer_ = smol_tokenizer
    _registry.load_plugins()
    monkeypatch.setitem(_registry._RUNNERS, "reading-gen", Entry("reading-gen", ReadingGenerator))
    return ReadingGenerator


@pytest.fixture(scope="session")
def ruler_samples(smol_tokenizer):
    """``ruler_samples(task, length, depths, n=1)``: real samples of a RULER task (cached)."""
    cache: dict = {}

    def build(task: str, length: int, depths=(0.0, 50.0, 100.0), n: int = 1):
        key = (task, length, tuple(depths), n)
        if key not in cache:
            cache[key] = list(get_task(task).samples(Grid((length,), tuple(depths), n), smol_tokenizer))
        return cache[key]

    return build
