"""QASPER: questions about NLP papers, answered from the full text (Dasigi et al., NAACL 2021).

Data: the Hugging Face dataset ``allenai/qasper`` (splits train 888 / validation 281 / test 416
papers; loaded with ``datasets``) or the raw JSON release (``qasper-{train,dev,test}-v0.3.json``
from https://allenai.org/data/qasper, ``{paper_id: {title, abstract, full_text: [{section_name,
paragraphs}], qas: [{question, question_id, answers: [{answer: {unanswerable, extractive_spans,
yes_no, free_form_answer, evidence, highlighted_evidence}, annotation_id, worker_id}]}]}}``) given
with ``-O data_path=FILE_OR_FOLDER``. Without hub access and without ``data_path`` the task fails at
once with a one-line error (the hub is probed with a 3 s socket connect, not datasets' retries).

Context: the whole paper as markdown-like text (``# title``, ``## Abstract``, ``## section``,
``### sub-section`` for QASPER's ``"A ::: B"`` names, paragraphs), blocks separated by a blank line,
tokenized block by block once per paper and cut to the token budget (prompt + ``max_new_tokens``
<= length); ``metadata`` records ``paper_tokens``, ``truncated`` and ``kept_fraction``. The prompt
lets the model answer "Yes"/"No" and "Unanswerable". ``max_new_tokens`` defaults to 128 (LongBench's
budget for QASPER).

Position of the evidence (recorded, not placed: ``controls_depth = False``): ``needle_positions``
are the prompt token offsets of the gold evidence paragraphs (union over annotations) that are in
the context, earliest first; ``evidence_depth`` is the first one's offset within the paper's tokens
(``metadata["context_span"]``), in percent; evidence that is a figure/table caption ("FLOAT
SELECTED") or that the budget cut off has no position (``evidence_in_context`` /
``evidence_paragraphs`` in ``metadata``).

Scoring: the official Answer F1 and Evidence F1 (:mod:`longctx.tasks._qasper_metric`, which cites
allenai/qasper-led-baseline ``scripts/evaluator.py``). A prediction is the answer text, or a JSON
object ``{"answer": str, "evidence": [paragraph, ...]}`` from runners that return the paragraphs
they used (``longctx score`` also takes the official predictions file, ``{"question_id",
"predicted_answer", "predicted_evidence"}`` lines). Per question, the scorer's ``metrics`` is
``("answer_f1",)``, in every score; its ``optional_metrics`` appear only where they apply
(``evidence_f1`` for predictions that carry evidence, ``answer_f1_<type>`` for the type of the
best-matching reference). The official corpus numbers are not means of those: the scorer's
``corpus_scores`` hook (:class:`longctx._protocols.CorpusScorer`) computes Answer F1, Answer F1
by type (extractive, abstractive, boolean, none) and Evidence F1 over a group of results as the
official ``evaluate`` does (a missing prediction counts 0 and in no type; a prediction without
evidence counts in Evidence F1 with an empty list; Evidence F1 is None when no prediction carries
evidence, Answer F1 of a type None when no question has it), and ``longctx score``, the sweep
summary and the HTML report show them. Sample ids end in the benchmark's ``question_id`` (a
repeated id within the loaded data gets ``#2``, ``#3``...; the official evaluator keeps only the
last question with that id).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import msgspec

from longctx._errors import LongctxError
from longctx._prompting import context_budget, frame
from longctx._protocols import Grid, Tokenizer
from longctx._records import Prompt, Result, Sample
from longctx._registry import task
from longctx.tasks._qasper_metric import (
    ANSWER_TYPES,
    annotation_reference,
    corpus_metrics,
    normalize_answer,
    prediction_with_evidence,
    score_question,
    token_f1,
)

HF_DATASET = "allenai/qasper"
RAW_FILES = {
    "train": "qasper-train-v0.3.json",
    "validation": "qasper-dev-v0.3.json",
    "test": "qasper-test-v0.3.json",
}
TEMPLATE = (
    "Read the scientific paper below, then answer the question after it.\n\n"
    "{context}\n\n"
    "Question: {question}\n\n"
    "Answer as briefly as you can: a short phrase, copied from the paper when possible. "
    'If it is a yes/no question, answer "Yes" or "No". '
    'If the paper does not give the answer, answer "Unanswerable". Give no explanation.'
)
BLOCK_SEPARATOR = "\n\n"


# ---- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Paper:
    """A paper as text blocks (title, headings, paragraphs) in reading order."""

    paper_id: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """One question with its references (one per annotation, official rules)."""

    question_id: str
    """The benchmark's id (``#n`` appended to repeats)."""
    paper_id: str
    text: str
    references: tuple[dict[str, Any], ...]
    """``{"answer", "type", "evidence"}`` per annotation."""

    @property
    def evidence(self) -> tuple[str, ...]:
        """Gold evidence paragraphs of all annotations, first-seen order, no repeats."""
        return tuple(dict.fromkeys(e for ref in self.references for e in ref["evidence"]))


@dataclass(frozen=True)
class Corpus:
    """Papers by id and questions in data order."""

    papers: dict[str, Paper]
    questions: tuple[Question, ...]


def _rows(value: Any) -> list[dict[str, Any]]:
    """A list of records from either a list of dicts (raw JSON) or a dict of lists (HF sequences)."""
    if isinstance(value, Mapping):
        keys = list(value)
        return [dict(zip(keys, vals)) for vals in zip(*(value[k] for k in keys))] if keys else []
    return list(value or [])


def _blocks(raw: Mapping[str, Any]) -> tuple[str, ...]:
    blocks = [
        f"# {str(raw.get('title') or '').strip()}",
        "## Abstract",
        str(raw.get("abstract") or "").strip(),
    ]
    for section in _rows(raw.get("full_text")):
        parts = [p.strip() for p in str(section.get("section_name") or "").split(":::")]
        blocks.append("#" * (1 + len(parts)) + " " + parts[-1])
        blocks.extend(p.strip() for p in (section.get("paragraphs") or []) if p and p.strip())
    return tuple(b for b in blocks if b.strip("# "))


def parse_corpus(raw: Mapping[str, Any], source: str, text_evidence_only: bool = False) -> Corpus:
    """Raw-schema papers ``{paper_id: paper}`` -> :class:`Corpus` (questions without answers skipped)."""
    papers: dict[str, Paper] = {}
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for pid, paper in raw.items():
        if not isinstance(paper, Mapping) or "qas" not in paper or "full_text" not in paper:
            raise LongctxError(f"{source} is not QASPER data: paper {pid!r} lacks 'qas'/'full_text'")
        papers[pid] = Paper(pid, _blocks(paper))
        for qa in _rows(paper["qas"]):
            refs = tuple(
                annotation_reference(a["answer"], text_evidence_only) for a in _rows(qa.get("answers"))
            )
            if not refs:
                continue  # the official evaluator cannot score a question without annotations either
            qid = str(qa["question_id"])
            seen[qid] = seen.get(qid, 0) + 1
            unique = qid if seen[qid] == 1 else f"{qid}#{seen[qid]}"
            questions.append(Question(unique, pid, str(qa["question"]), refs))
    if not questions:
        raise LongctxError(f"{source} holds no QASPER questions")
    return Corpus(papers, tuple(questions))


def _raw_file(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        name = RAW_FILES.get(split, f"qasper-{split}-v0.3.json")
        if (path / name).is_file():
            return path / name
        raise LongctxError(f"QASPER data_path {path}: no {name} in this folder (split {split!r})")
    raise LongctxError(f"QASPER data_path {path}: no such file or folder")


@lru_cache(maxsize=4)
def _load_raw(path: str, mtime: float, text_evidence_only: bool) -> Corpus:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LongctxError(f"cannot read QASPER data {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise LongctxError(f"{path} is not QASPER's raw JSON (expected {{paper_id: paper}})")
    return parse_corpus(raw, path, text_evidence_only)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection within ``timeout`` seconds."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy only a real request can tell
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


@lru_cache(maxsize=4)
def _load_hub(dataset: str, split: str, text_evidence_only: bool) -> Corpus:
    hint = (
        f"pass -O data_path=PATH to the raw QASPER JSON ({RAW_FILES.get(split, 'qasper-<split>-v0.3.json')}, "
        "from https://allenai.org/data/qasper) or set HF_HUB_OFFLINE=1 to use a cached copy"
    )
    if not _offline_env() and not Path(dataset).expanduser().exists() and not hub_reachable():
        raise LongctxError(f"cannot reach the Hugging Face Hub for dataset {dataset!r}: {hint}")
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise LongctxError(f"loading {dataset!r} needs the datasets package: {hint}") from None
    try:
        rows = datasets.load_dataset(dataset, split=split)
    except Exception as exc:  # datasets raises many types; the user needs one line
        raise LongctxError(
            f"cannot load dataset {dataset!r} split {split!r} ({str(exc).splitlines()[0]}): {hint}"
        ) from None
    raw = {str(row["id"]): row for row in rows}
    return parse_corpus(raw, f"{dataset}:{split}", text_evidence_only)


# ---- scoring -------------------------------------------------------------------------------------
class QasperScorer:
    """Official QASPER Answer F1 (and by type) and Evidence F1, per question and per corpus."""

    metrics = ("answer_f1",)
    """In every score."""
    optional_metrics = (*(f"answer_f1_{t}" for t in ANSWER_TYPES), "evidence_f1")
    """In a per-question score only where they apply (see the module doc); the official corpus
    numbers come from :meth:`corpus_scores`, not from means of these."""

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:  # noqa: D102
        refs = sample.metadata.get("qasper_references")
        if refs:
            return score_question(prediction, refs)
        # A sample without the annotations (types, evidence): Answer F1 over the reference strings.
        return {"answer_f1": max((token_f1(prediction or "", r) for r in sample.references), default=0.0)}

    def corpus_scores(self, results: Sequence[Result]) -> dict[str, float | None]:
        """The official corpus numbers over ``results`` (the optional corpus hook).

        ``answer_f1``, ``answer_f1_<type>``, ``evidence_f1`` as
        :func:`~longctx.tasks._qasper_metric.corpus_metrics` computes them, one item per result
        (``prediction`` None = no prediction). A result without QASPER annotations in
        ``extra["metadata"]["qasper_references"]`` (a predictions line with bare reference strings)
        counts in Answer F1 only, as untyped references without evidence cannot count elsewhere.
        """
        annotated: list[tuple[list[dict[str, Any]], str | None]] = []
        bare: list[float] = []
        for r in results:
            if r.error is not None:
                continue
            meta = r.extra.get("metadata") if isinstance(r.extra, dict) else None
            refs = meta.get("qasper_references") if isinstance(meta, dict) else None
            if refs:
                annotated.append((refs, r.prediction))
            else:
                bare.append(max((token_f1(r.prediction or "", ref) for ref in r.references), default=0.0))
        out = corpus_metrics(annotated)
        if bare:
            total = (out["answer_f1"] or 0.0) * len(annotated) + sum(bare)
            out["answer_f1"] = total / (len(annotated) + len(bare))
        return out


def oracle_prediction(question: Question) -> str:
    """A prediction scoring 1 on Answer F1 (and Evidence F1): the first reference that can score."""
    ref = next((r for r in question.references if normalize_answer(r["answer"])), question.references[0])
    return prediction_with_evidence(ref["answer"], list(dict.fromkeys(ref["evidence"])))


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---- task ----------------------------------------------------------------------------------------
@task("qasper", summary="QASPER: questions about an NLP paper given in full; official Answer/Evidence F1")
class Qasper:
    """QASPER: answer a question about a scientific paper given its full text."""

    controls_depth = False

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        """``-O`` options of the qasper task."""

        data_path: str | None = None
        """Raw QASPER JSON file, or a folder holding ``qasper-{train,dev,test}-v0.3.json``."""
        dataset: str = HF_DATASET
        """Hugging Face dataset (or local dataset folder) used when ``data_path`` is not set."""
        split: str = "test"
        """``train``, ``validation`` or ``test`` (raw files: train/dev/test)."""
        max_new_tokens: int = 128
        """Generation budget."""
        text_evidence_only: bool = False
        """Drop figure/table evidence ("FLOAT SELECTED"), the evaluator's ``--text_evidence_only``."""

    def __init__(self, name: str, options: Options | None = None):
        self.name = name
        self.options = options or self.Options()
        if self.options.max_new_tokens <= 0:
            raise LongctxError(f"{name}: max_new_tokens must be positive")
        self.scorer = QasperScorer()
        self._tokenizer: Tokenizer | None = None
        self._papers: dict[str, tuple[list[int], list[int]]] = {}

    def corpus(self) -> Corpus:
        """Papers and questions from ``data_path`` or the hub dataset."""
        o = self.options
        if o.data_path:
            path = _raw_file(Path(o.data_path).expanduser(), o.split)
            return _load_raw(str(path.resolve()), path.stat().st_mtime, o.text_evidence_only)
        return _load_hub(o.dataset, o.split, o.text_evidence_only)

    def _metadata(self, q: Question) -> dict[str, Any]:
        return {
            "question_id": q.question_id,
            "paper_id": q.paper_id,
            "answer_types": [r["type"] for r in q.references],
            "qasper_references": [dict(r) for r in q.references],
            "oracle_prediction": oracle_prediction(q),
        }

    def scoring_samples(self) -> Iterator[Sample]:
        """One reference sample per question, id = the benchmark's ``question_id`` (no prompt)."""
        for q in self.corpus().questions:
            yield Sample(
                id=q.question_id,
                task=self.name,
                prompt=Prompt(messages=()),
                references=tuple(r["answer"] for r in q.references),
                length=0,
                context_tokens=0,
                max_new_tokens=self.options.max_new_tokens,
                metadata=self._metadata(q),
            )

    def _paper_ids(self, paper: Paper) -> tuple[list[int], list[int]]:
        """The paper's context ids (blocks joined by a blank line) and each block's start offset."""
        if paper.paper_id not in self._papers:
            tok = self._tokenizer
            sep = tok.encode(BLOCK_SEPARATOR)  # type: ignore[union-attr]
            ids: list[int] = []
            starts: list[int] = []
            for i, block in enumerate(paper.blocks):
                if i:
                    ids.extend(sep)
                starts.append(len(ids))
                ids.extend(tok.encode(block))  # type: ignore[union-attr]
            self._papers[paper.paper_id] = (ids, starts)
        return self._papers[paper.paper_id]

    def samples(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        """``grid.samples`` questions (at most all of them), the same at every length."""
        if tokenizer is not self._tokenizer:
            self._tokenizer, self._papers = tokenizer, {}
        corpus = self.corpus()
        questions = list(corpus.questions)
        _rng("qasper", self.options.split, grid.seed).shuffle(questions)
        gen = self.options.max_new_tokens
        for q in questions[: grid.samples]:
            paper = corpus.papers[q.paper_id]
            ids, starts = self._paper_ids(paper)
            where = {block: i for i, block in reversed(list(enumerate(paper.blocks)))}
            located = [where[e.strip()] for e in q.evidence if e.strip() in where]
            pf = frame(tokenizer, TEMPLATE.replace("{question}", q.text.replace("{context}", "(context)")),
                       question=q.text)
            for length in grid.lengths:
                budget = context_budget(length, pf, gen)
                context = ids[:budget]
                prompt = pf.prompt(context, tokenizer)
                total = len(prompt.token_ids or ())
                base = len(pf.prefix_ids)
                positions = sorted(base + starts[i] for i in set(located) if starts[i] < len(context))
                yield Sample(
                    id=f"{self.name}|{length}|{q.question_id}",
                    task=self.name,
                    prompt=prompt,
                    references=tuple(r["answer"] for r in q.references),
                    length=length,
                    context_tokens=total,
                    max_new_tokens=gen,
                    needle_positions=tuple(positions),
                    evidence_depth=round(100 * (positions[0] - base) / len(context), 2)
                    if positions
                    else None,
                    metadata={
                        **self._metadata(q),
                        "context_span": [base, base + len(context)],
                        "paper_tokens": len(ids),
                        "truncated": len(ids) > budget,
                        "kept_fraction": round(len(context) / len(ids), 4) if ids else 1.0,
                        "evidence_paragraphs": len(q.evidence),
                        "evidence_located": len(set(located)),
                        "evidence_in_context": len(positions),
                        "fill": round((total + gen) / length, 4),
                    },
                )
