"""The plug-in points: Tokenizer, Task, Scorer, Runner, Progress.

Small protocols, as in inspect_ai. Implementations register with :func:`longctx.task` /
:func:`longctx.runner`; nothing else is needed to plug in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec

from longctx._records import Generation, Message, Result, Sample


class Grid(msgspec.Struct, frozen=True):
    """The cells a sweep asks a task for."""

    lengths: tuple[int, ...]
    """Context budgets in tokens (prompt + generation budget <= length)."""
    depths: tuple[float, ...]
    """Evidence depths in percent; tasks that cannot place evidence ignore them."""
    samples: int
    """Samples per (length, depth) cell (per length for tasks that ignore depth)."""
    seed: int = 42
    """Seed; same seed, same samples, same ids."""
    choices: int = 0
    """Distractors per sample for forced-choice scoring (``--scoring choice``, ``--choices K``):
    tasks with a closed answer set attach ``Sample.choices`` (K drawn distractors, or their whole
    fixed set); 0 = none (generated answers)."""


@runtime_checkable
class Tokenizer(Protocol):
    """The served model's tokenizer, as tasks need it to count and place tokens."""

    name: str
    """Identity for manifests (path or endpoint + model)."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` (special tokens kept)."""

    def render_chat(self, messages: Sequence[Message]) -> str:
        """The chat template applied to ``messages`` with the generation prompt appended."""


class Scorer(Protocol):
    """Scores one prediction against its references; the first metric is the primary one."""

    metrics: tuple[str, ...]
    """Metric names, primary first."""

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        """Every metric in [0, 1] for this prediction."""


class CorpusScorer(Protocol):
    """Optional Scorer hook: metrics defined over a corpus, not as means of per-sample scores.

    Some benchmarks' official numbers are not means of one per-sample score (QASPER: Answer F1 by
    answer type counts each question in one type, a missing prediction counts in no type, Evidence
    F1 counts predictions without evidence). A scorer that also has ``corpus_scores`` gets it
    called by ``longctx score`` (one predictions file), the sweep summary and the HTML report (per
    run and task: per length and all lengths pooled); detected with ``hasattr``, nothing to
    register. Numbers shown elsewhere (accuracy, heatmaps) stay means of the primary metric.
    """

    def corpus_scores(self, results: Sequence[Result]) -> dict[str, float | None]:
        """Corpus metrics of ``results``: one group of one task, errors left out, one result per
        sample (duplicates resolved by the caller). A result whose ``prediction`` is None stands
        for a sample without a prediction (``longctx score --missing zero``); the sample's metadata
        is ``result.extra["metadata"]``. Values lie in [0, 1]; None = undefined for this group
        (e.g. no question of that kind). Keys are stable across groups, in display order."""


class Task(Protocol):
    """A task family instance bound to its variant parameters and options."""

    name: str
    """Registered name."""
    scorer: Scorer
    """How predictions are scored (the benchmark's official metric first)."""
    controls_depth: bool
    """True when the task can place evidence at a requested depth."""

    def samples(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        """The samples of every cell of ``grid``, fitted with ``tokenizer``."""


class Progress(Protocol):
    """How library code reports progress; the CLI renders it (library code never imports rich)."""

    def start(self, label: str, total: int | None = None) -> None:
        """Begin a phase with an optional total."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units done in the current phase."""

    def log(self, message: str) -> None:
        """A line for the user."""

    def done(self) -> None:
        """End the current phase."""


class NullProgress:
    """Progress that reports nothing (tests, library use)."""

    def start(self, label: str, total: int | None = None) -> None:  # noqa: D102
        pass

    def advance(self, n: int = 1) -> None:  # noqa: D102
        pass

    def log(self, message: str) -> None:  # noqa: D102
        pass

    def done(self) -> None:  # noqa: D102
        pass


class Runner(Protocol):
    """Turns samples into generations. Used as a context manager (start/stop engines)."""

    name: str
    """Registered name."""

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the model this runner serves (tasks fit lengths with it)."""

    def context_window(self) -> int | None:
        """The model's context window in tokens, if known (checked before any work)."""

    def identity(self) -> dict[str, Any]:
        """Model identity for the manifest (name, path, file hash, engine version...)."""

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Generations for ``samples``, yielded as they finish (order not guaranteed).

        Optional hook: a runner may define ``check(samples)``, which the sweep calls with the first
        pending sample of each task and length (samples are built as they run) before the run
        folder is opened or an engine started; it raises
        :class:`~longctx.LongctxError` for samples the runner cannot handle (``rag``: a task without
        a question).

        Optional hook: ``choose(samples)``, the same contract as ``generate`` for forced-choice
        scoring (``--scoring choice``): every sample carries ``Sample.choices`` and each generation
        holds every candidate's log-likelihood (:func:`longctx._choice.choice_generation`); runners
        without it are refused for such sweeps (``hf``, ``hope`` and ``vllm`` have it)."""


class RunnerConfig(msgspec.Struct, frozen=True):
    """What every runner is constructed with (the common CLI flags of ``longctx sweep``)."""

    model: str
    """``--model``: a named model (``longctx models``), a local folder, or an endpoint's model name."""
    endpoint: str | None = None
    """``--endpoint``: base URL of an OpenAI-compatible server to attach to (``.../v1``)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (never stored in the run folder)."""
    concurrency: int = 4
    """Requests in flight at once."""
    timeout_s: float = 600.0
    """Per-request timeout, seconds."""
    retries: int = 3
    """Retries on transient errors (connection errors, 429, 5xx), with exponential backoff."""
    mode: str = "completions"
    """``completions`` (prompt text/ids with the answer prefix prefilled) or ``chat`` (messages only)."""
    seed: int = 42
    """Sampling seed passed to engines (decoding is greedy)."""
    endpoints: tuple[str, ...] = ()
    """``--endpoint`` given more than once (or ``--endpoints-file``): every server to spread the
    requests over, ``endpoint`` being the first; () with one server or none."""

    def servers(self) -> tuple[str, ...]:
        """The endpoints to attach to (``endpoints``, else ``endpoint``); () = launch a server."""
        return self.endpoints or ((self.endpoint,) if self.endpoint else ())


class ScoringSource(Protocol):
    """Optional task hook for ``longctx score``: reference samples without a tokenizer.

    Returned samples carry ids, references and metadata (the benchmark's own question ids where it
    has them); prompts may be empty and ``context_tokens`` 0.
    """

    def scoring_samples(self) -> Iterator[Sample]:
        """Every sample the task can score predictions for."""
