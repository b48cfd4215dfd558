"""QASPER's official metric: Answer F1 (overall and by answer type) and Evidence F1.

Re-implemented from the definitions in allenai/qasper-led-baseline ``scripts/evaluator.py``
(commit afd0fb96bf78ce8cd8157639c6f6a6995e4f9089; Apache-2.0), which the QASPER paper (Dasigi et
al., NAACL 2021) uses for the numbers it reports:

- ``normalize_answer``: SQuAD v1.1 normalisation, in this order: lowercase, drop every
  ``string.punctuation`` character, replace the words a/an/the by a space, collapse whitespace.
- ``token_f1_score``: SQuAD token F1 between the normalised prediction and reference tokens
  (multiset overlap); 0 when nothing overlaps, so an empty prediction or a reference that normalises
  to nothing scores 0.
- ``paragraph_f1_score``: F1 between predicted and gold evidence paragraphs (exact strings):
  overlap = size of the intersection of the two *sets*, precision = overlap / len(predicted list),
  recall = overlap / len(gold list); 1.0 when both are empty (an unanswerable question with no
  predicted evidence); 0 when nothing overlaps.
- ``get_answers_and_evidence``: every annotation of a question becomes one reference: unanswerable
  -> ``"Unanswerable"`` (type ``none``, no evidence); else extractive spans joined with ``", "``
  (``extractive``), else the free-form answer (``abstractive``), else ``yes_no`` true -> ``"Yes"`` /
  false -> ``"No"`` (``boolean``); an annotation with none of these is an error. With
  ``--text_evidence_only`` evidence strings containing ``"FLOAT SELECTED"`` (figure/table
  captions) are dropped.
- ``evaluate``: per question, Answer F1 = max over references; the question counts towards the
  type of the first reference reaching that max (a stable sort); Evidence F1 = max over references
  (independently of the answer); a question without a prediction scores 0 on both and counts towards
  no type. Corpus scores are means over questions (per type: over the questions of that type; 0.0
  for a type without questions).
- ``__main__``: the predictions file is JSON lines ``{"question_id", "predicted_answer",
  "predicted_evidence"}`` read into a dict by ``question_id``, so the last line of a repeated id
  wins; ``evaluate`` loops over the gold questions only, so a prediction for an id that is not in
  the gold data is ignored. The gold dict is keyed by ``question_id`` too (a repeated id keeps the
  last question).

Corpus numbers are not means of per-sample optional metrics: a missing prediction counts 0 in
Answer F1 and Evidence F1 but in no type, and a prediction without evidence counts in Evidence F1
(with an empty list). :func:`corpus_metrics` is what ``longctx score``, the sweep summary and the
report show; :func:`corpus_scores` reproduces the official script's output dict.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from longctx._errors import LongctxError

ANSWER_TYPES = ("extractive", "abstractive", "boolean", "none")
"""The official answer types, in the evaluator's order."""

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation, replace articles by spaces, collapse whitespace (SQuAD v1.1)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 of normalised ``prediction`` against one ``reference``."""
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(reference).split()
    overlap = sum((Counter(predicted) & Counter(gold)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def paragraph_f1(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """Evidence F1 over paragraph strings, as the official evaluator computes it (see module doc)."""
    if not predicted and not gold:
        return 1.0
    overlap = len(set(gold) & set(predicted))
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def annotation_reference(answer: Mapping[str, Any], text_evidence_only: bool = False) -> dict[str, Any]:
    """One annotation's ``answer`` dict -> ``{"answer", "type", "evidence"}`` (official rules)."""
    if answer.get("unanswerable"):
        return {"answer": "Unanswerable", "type": "none", "evidence": []}
    if answer.get("extractive_spans"):
        text, kind = ", ".join(answer["extractive_spans"]), "extractive"
    elif answer.get("free_form_answer"):
        text, kind = answer["free_form_answer"], "abstractive"
    elif answer.get("yes_no"):
        text, kind = "Yes", "boolean"
    elif answer.get("yes_no") is not None:
        text, kind = "No", "boolean"
    else:
        raise LongctxError(f"QASPER annotation {answer.get('annotation_id', '?')} holds no answer")
    evidence = list(answer.get("evidence") or [])
    if text_evidence_only:
        evidence = [e for e in evidence if "FLOAT SELECTED" not in e]
    return {"answer": text, "type": kind, "evidence": evidence}


def parse_prediction(prediction: str | None) -> tuple[str, list[str] | None]:
    """Split a prediction into (answer, evidence paragraphs or None).

    A plain string is the answer with no evidence. A JSON object with ``"answer"`` (or the official
    predictions-file key ``"predicted_answer"``) carries the answer, and optionally ``"evidence"``
    (or ``"predicted_evidence"``): a list of paragraph strings copied from the paper.
    """
    if not prediction:
        return "", None
    text = prediction.strip()
    if text.startswith("{") and text.endswith("}"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and ("answer" in obj or "predicted_answer" in obj):
            answer = obj.get("answer", obj.get("predicted_answer"))
            evidence = obj.get("evidence", obj.get("predicted_evidence"))
            if evidence is not None:
                if not isinstance(evidence, list):
                    evidence = [evidence]
                evidence = [str(e) for e in evidence]
            return ("" if answer is None else str(answer)), evidence
    return prediction, None


def prediction_with_evidence(answer: str, evidence: Sequence[str]) -> str:
    """The prediction string that carries evidence paragraphs (see :func:`parse_prediction`)."""
    return json.dumps({"answer": answer, "evidence": list(evidence)}, ensure_ascii=False)


def score_question(prediction: str | None, references: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Official per-question scores of one prediction against a question's references.

    Returns ``answer_f1``, ``answer_f1_<type>`` for the type of the first best reference only, and
    ``evidence_f1`` only when the prediction carries evidence (see :func:`parse_prediction`).
    """
    answer, evidence = parse_prediction(prediction)
    return _scores(answer, evidence, references)


def _scores(
    answer: str, evidence: list[str] | None, references: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    if not references:
        raise ValueError("a QASPER question needs at least one reference")
    best, best_type = -1.0, "none"
    for ref in references:  # the first reference reaching the max decides the type (stable sort)
        f1 = token_f1(answer, ref["answer"])
        if f1 > best:
            best, best_type = f1, ref["type"]
    scores = {"answer_f1": best, f"answer_f1_{best_type}": best}
    if evidence is not None:
        scores["evidence_f1"] = max(paragraph_f1(evidence, ref["evidence"]) for ref in references)
    return scores


class _Tally:
    """Per-question scores of a corpus, collected the way ``evaluate`` collects them."""

    def __init__(self, items: Iterable[tuple[Sequence[Mapping[str, Any]], str | None]]):
        self.answer_f1s: list[float] = []
        self.evidence_f1s: list[float] = []
        self.by_type: dict[str, list[float]] = {t: [] for t in ANSWER_TYPES}
        self.missing = 0
        self.with_evidence = False
        for refs, prediction in items:
            if prediction is None:  # no prediction: 0 on both, in no type
                self.missing += 1
                self.answer_f1s.append(0.0)
                self.evidence_f1s.append(0.0)
                continue
            answer, evidence = parse_prediction(prediction)
            self.with_evidence = self.with_evidence or evidence is not None
            scores = _scores(answer, evidence or [], refs)
            self.answer_f1s.append(scores["answer_f1"])
            self.evidence_f1s.append(scores["evidence_f1"])
            for kind in ANSWER_TYPES:
                if f"answer_f1_{kind}" in scores:
                    self.by_type[kind].append(scores[f"answer_f1_{kind}"])


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def corpus_metrics(
    items: Iterable[tuple[Sequence[Mapping[str, Any]], str | None]],
) -> dict[str, float | None]:
    """Corpus-level metrics over ``(references, prediction)`` items, computed as ``evaluate`` does.

    One item per question; ``prediction`` None = no prediction (0 on both, counted in no type).
    Returns ``answer_f1``, ``answer_f1_<type>`` for every type (None when no predicted question has
    that type, where the official script prints 0.0), and ``evidence_f1``: the official mean over
    every item, predictions without evidence scored with an empty list (the official predictions
    file must hold one), or None when no prediction carries evidence at all (a model that was never
    asked for evidence has no Evidence F1; the official number for empty lists would only count the
    questions some annotator marked unanswerable).
    """
    t = _Tally(items)
    out: dict[str, float | None] = {"answer_f1": _mean(t.answer_f1s) if t.answer_f1s else None}
    out.update({f"answer_f1_{k}": (_mean(v) if v else None) for k, v in t.by_type.items()})
    out["evidence_f1"] = _mean(t.evidence_f1s) if t.with_evidence else None
    return out


def corpus_scores(
    gold: Mapping[str, Sequence[Mapping[str, Any]]], predicted: Mapping[str, str]
) -> dict[str, Any]:
    """The official output of ``evaluate`` for ``{question_id: references}`` and ``{question_id: prediction}``.

    Same keys and values as the official script (``Answer F1``, ``Answer F1 by type`` with 0.0 for
    a type without questions, ``Evidence F1``, ``Missing predictions``); predictions that are not
    in ``gold`` are ignored, as there. Predictions without evidence are scored with empty evidence,
    as the official evaluator requires a ``predicted_evidence`` list for every prediction.
    """
    t = _Tally((refs, predicted.get(qid)) for qid, refs in gold.items())
    return {
        "Answer F1": _mean(t.answer_f1s),
        "Answer F1 by type": {k: _mean(v) for k, v in t.by_type.items()},
        "Evidence F1": _mean(t.evidence_f1s),
        "Missing predictions": t.missing,
    }
