"""Chunk boundaries, merging, needle bookkeeping and the rebuilt prompt of runner ``rag``."""

from __future__ import annotations

import msgspec
import pytest

from longctx._records import Sample
from longctx.runners.rag.chunks import (
    chunk_spans,
    ids_key,
    merge_spans,
    needles_inside,
    rag_record,
    rag_sample,
    target_recall,
)


def test_chunks_have_the_size_and_overlap_asked_and_cover_the_context():
    spans = chunk_spans(10, 300, 128, 32)
    assert spans == [(10, 138), (106, 234), (202, 300)]  # stride 96; the last one ends at the context's end
    assert all(b[0] == a[0] + 96 for a, b in zip(spans, spans[1:]))
    assert all(a[1] - b[0] == 32 for a, b in zip(spans, spans[1:]))
    covered = {t for s, e in spans for t in range(s, e)}
    assert covered == set(range(10, 300))


def test_chunk_edge_cases():
    assert chunk_spans(5, 5, 128, 0) == []
    assert chunk_spans(0, 128, 128, 32) == [(0, 128)]  # fits exactly: no extra tail chunk
    assert chunk_spans(0, 129, 128, 32) == [(0, 128), (96, 129)]
    assert chunk_spans(0, 10, 4, 0) == [(0, 4), (4, 8), (8, 10)]  # no overlap: adjacent
    with pytest.raises(ValueError):
        chunk_spans(0, 10, 4, 4)


def test_merge_overlapping_and_adjacent_spans_in_document_order():
    assert merge_spans([(300, 400), (10, 138), (106, 234), (234, 250), (500, 600)]) == [
        (10, 250), (300, 400), (500, 600)]
    assert merge_spans([(0, 10), (2, 5)]) == [(0, 10)]  # contained
    assert merge_spans([]) == []


def test_a_needle_counts_only_when_its_first_token_is_inside_a_retrieved_chunk():
    spans = [(100, 228), (500, 628)]
    assert needles_inside([100, 227, 228, 99, 550, 628, 629], spans) == [True, True, False, False, True, False,
                                                                          False]


def test_recall_is_over_targets_only():
    assert target_recall([True, False, False], 1) == 1.0  # distractors retrieved or not: no matter
    assert target_recall([False, True, True], 1) == 0.0
    assert target_recall([True, False, True, False], None) == 0.5  # no n_targets: every needle is a target
    assert target_recall([], None) is None


def test_ids_key_is_a_content_key():
    assert ids_key([1, 2, 3]) == ids_key((1, 2, 3)) != ids_key([1, 2, 4])
    assert ids_key([1, 23]) != ids_key([12, 3])


def test_record_schema(ruler_samples):
    sample = ruler_samples("ruler/niah_single_1", 2048, (50.0,))[0]
    start, end = sample.prompt.context_token_span
    spans = chunk_spans(start, end, 128, 32)
    needle = sample.needle_positions[0]
    inside = next(i for i, (s, e) in enumerate(spans) if s <= needle < e)
    far = next(i for i, (s, e) in enumerate(spans) if e < needle)
    record = rag_record(retriever="bm25", k=2, chunk_tokens=128, overlap=32, spans=spans,
                        ranking=[(inside, 7.5), (far, 1.25)], sample=sample)
    assert record == {
        "retriever": "bm25", "k": 2, "chunk_tokens": 128, "overlap": 32, "n_chunks": len(spans),
        "chunks": [{"start": spans[inside][0], "end": spans[inside][1], "rank": 1, "score": 7.5},
                   {"start": spans[far][0], "end": spans[far][1], "rank": 2, "score": 1.25}],
        "needles_retrieved": [True], "recall": 1.0, "retrieved_tokens": 256,
    }
    missed = rag_record(retriever="bm25", k=1, chunk_tokens=128, overlap=32, spans=spans, ranking=[(far, 1.0)],
                        sample=sample)
    assert missed["needles_retrieved"] == [False] and missed["recall"] == 0.0
    no_needles = msgspec.structs.replace(sample, needle_positions=())
    assert rag_record(retriever="bm25", k=1, chunk_tokens=128, overlap=32, spans=spans, ranking=[(far, 1.0)],
                      sample=no_needles)["recall"] is None


def test_multi_needle_recall_counts_targets_first(ruler_samples):
    sample = ruler_samples("ruler/niah_multikey_1", 4096, (50.0,))[0]
    n_targets = sample.metadata["n_targets"]
    assert len(sample.needle_positions) > n_targets == 1
    start, end = sample.prompt.context_token_span
    spans = chunk_spans(start, end, 64, 0)
    where = [next(i for i, (s, e) in enumerate(spans) if s <= p < e) for p in sample.needle_positions]
    distractor_only = [(i, 1.0) for i in dict.fromkeys(where[1:]) if i != where[0]]
    record = rag_record(retriever="bm25", k=len(distractor_only), chunk_tokens=64, overlap=0, spans=spans,
                        ranking=distractor_only, sample=sample)
    assert record["recall"] == 0.0 and any(record["needles_retrieved"][1:])
    record = rag_record(retriever="bm25", k=1, chunk_tokens=64, overlap=0, spans=spans, ranking=[(where[0], 1.0)],
                        sample=sample)
    assert record["recall"] == 1.0


def test_rag_prompt_keeps_template_and_answer_prefix_and_puts_chunks_in_document_order(
        ruler_samples, smol_tokenizer):
    sample: Sample = ruler_samples("ruler/niah_single_1", 4096, (50.0,))[0]
    ids = sample.prompt.token_ids
    start, end = sample.prompt.context_token_span
    spans = chunk_spans(start, end, 128, 32)
    chosen = [spans[9], spans[2], spans[3], spans[20]]  # rank order, not document order; 2 and 3 overlap
    new = rag_sample(sample, chosen, smol_tokenizer)
    new_ids = new.prompt.token_ids
    # template before the context and question + end of turn + answer prefix after it: token for token
    assert new_ids[:start] == ids[:start]
    assert new_ids[len(new_ids) - (len(ids) - end):] == ids[end:]
    middle = new_ids[start: len(new_ids) - (len(ids) - end)]
    expected = [t for s, e in [(spans[2][0], spans[3][1]), spans[9], spans[20]] for t in ids[s:e]]
    assert list(middle) == expected  # document order, the overlap of chunks 2 and 3 once
    assert len(middle) == 3 * 128 + 96
    assert new.prompt.context_token_span == (start, start + len(middle))
    assert new.prompt.text == smol_tokenizer.decode(new_ids)
    assert new.prompt.text.endswith(sample.prompt.answer_prefix)
    assert new.prompt.answer_prefix == sample.prompt.answer_prefix
    assert new.prompt.question == sample.prompt.question
    # chat form: the message with the context char span swapped for the retrieved text
    old_msg, new_msg = sample.prompt.messages[-1].content, new.prompt.messages[-1].content
    c0, c1 = sample.prompt.context_span
    n0, n1 = new.prompt.context_span
    assert n0 == c0 and new_msg[:c0] == old_msg[:c0] and new_msg[n1:] == old_msg[c1:]
    assert new_msg[n0:n1] == smol_tokenizer.decode(expected)
    assert new_msg.endswith(sample.prompt.question)
    # same id and references; needle bookkeeping stays with rag
    assert (new.id, new.references, new.max_new_tokens) == (sample.id, sample.references, sample.max_new_tokens)
    assert new.context_tokens == len(new_ids) and new.needle_positions == ()


def test_retrieving_every_chunk_gives_back_the_original_prompt(ruler_samples, smol_tokenizer):
    sample = ruler_samples("ruler/niah_single_1", 2048, (50.0,))[0]
    spans = chunk_spans(*sample.prompt.context_token_span, 128, 32)
    new = rag_sample(sample, spans[::-1], smol_tokenizer)
    assert new.prompt.token_ids == sample.prompt.token_ids
    assert new.prompt.messages == sample.prompt.messages
