"""LongHealth: five-option questions about long fictional clinical records (tasks 1, 2 and 3).

Facts from the authors' repository kbressem/LongHealth (Apache-2.0; data/README.md, README.md, and
the functions ``create_prompt``, ``sample_distractions``, ``get_correct_answer``/``compute_metrics``
of their run/evaluation scripts). That repository could not be fetched where this was written; the
scripts were read in two public copies found by content (a vLLM script with ``get_correct_answer``,
``parse_model_choice`` and ``compute_metrics(model_prediction, correct_answer, task3=False)``, and a
text-generation-inference script with ``compute_metrics(model_prediction, question, task3=False)``;
the search index did not name their repositories). rballachay/DrLongHealth (commit 49fd0a8) pins
the repository as the submodule ``data/LongHealth`` (fork rballachay/LongHealth at 7e61715) and
imports ``SYSTEM_PROMPT`` and ``create_prompt`` from its ``utils.py``. Paper: Adams et al. 2024,
arXiv 2401.14490:

- ``data/benchmark_v5.json``: ``{patient_id: {texts: {text_0: str, ...}, name, birthday, diagnosis,
  questions: [{No, question, answer_a..answer_e, correct, answer_location}]}}``; ``correct`` is the
  text of the right option; ``answer_location`` is ``{text_i: {start: [...], end: [...]}}`` with
  positions given as fractions of the text's length. 20 patients x 20 questions. The authors ask
  that the data is not redistributed: pass your copy with ``-O data_path=.../benchmark_v5.json``.
- Prompt: the system prompt and user template below (theirs, so their numbers reproduce); options
  are listed ``"A: text"`` one per line; documents are joined with ``"\\n\\n--------------\\n\\n"``.
- Context building (``create_prompt``): the answer documents first, then the other documents while
  they fit; the first document that does not fit is truncated in tokens to the remaining budget and
  closes the list; then the chosen documents are shuffled.
- Task 1: the patient's own documents (answer documents, then the others in document order); the
  authors repeat every question 5 times with different shuffles, at 16,000 tokens.
- Tasks 2 and 3 (``sample_distractions``): distractors are documents of *other* patients drawn at
  random (10 per prompt); option F "Question cannot be answered with provided documents" is added.
  Task 2 adds the answer documents (answer: the original option), task 3 does not (answer: F).
- Answers: the letter of ``re.findall(r"The correct answer is (\\w):", output)[0]``; no match is
  wrong; task 3 is correct iff the letter is F. Generation budget 50 tokens (``max_new_tokens`` of
  the vLLM version of their script).
- The right letter (the answer key): ``correct`` is option text, and the authors find its letter by
  substring. Their repository itself (kbressem/LongHealth) could not be read here; two public copies
  of their evaluation script differ. The vLLM script's ``get_correct_answer(sample)`` returns the
  first option, in the question's key order, with ``sample["correct"] in sample[key]`` (keys
  starting with ``answer`` and not ending with ``location``; raw strings, nothing stripped; for
  tasks 2/3 ``answer_f`` = option F's text is set on the question first). The
  text-generation-inference script's ``compute_metrics(model_prediction, question, task3)`` runs
  the same test in a loop without ``break``: the last such option. longctx follows the vLLM script
  (:func:`answer_candidates`, first candidate). When ``correct`` is in more than one option the key
  is ambiguous (the two scripts disagree on it): tasks 1 and 2 mark such samples with
  ``metadata["ambiguous_answer"] = True`` and ``metadata["answer_candidates"]`` (the letters, key
  order), and the report counts and shows them. A question whose ``correct`` is in no option is a
  data error here (``get_correct_answer`` would return None and every answer would count as wrong).

Differences, recorded here: the budget is the sweep's length (prompt + ``max_new_tokens`` <= length,
chat template and system prompt included, counted exactly in the served model's tokens), and tasks
2/3 draw distractors until the budget is full instead of exactly 10 (``-O max_distractors=10``
restores the cap). Repeats of a question (when ``--samples`` exceeds the number of questions) use
new shuffles, as the authors' 5 repeats do. Evidence is not placed at a requested depth
(``controls_depth = False``); its achieved position is recorded: ``needle_positions`` are the
token offsets of the ``answer_location`` starts present in the prompt (the answer documents' starts
if none survive truncation), earliest first; ``evidence_depth`` is the first one's offset within the
documents, in percent of the documents' tokens (as the other families: 0 = first document token).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import count, islice
from pathlib import Path
from typing import Any

import msgspec

from longctx._choice import closed_choices
from longctx._errors import LongctxError
from longctx._prompting import PromptFrame, context_budget, frame
from longctx._protocols import Grid, Tokenizer
from longctx._records import Choices, Prompt, Sample
from longctx._registry import task

SYSTEM_PROMPT = """
You are a highly skilled and detail-oriented assistant, specifically trained to assist medical professionals in interpreting and extracting key information from medical documents. Your primary responsibility will be to analyze discharge letters from hospitals. When you receive one or more of these letters, you will be expected to carefully review the contents and accurately answer multiple-choice questions related to these documents. 

Your answers should be:
1. Accurate: Make sure your answers are based on the information provided in the letters.
2. Concise: Provide brief and direct answers without unnecessary elaboration.
3. Contextual: Consider the context and specifics of each question to provide the most relevant information.

Remember, your job is to streamline the physician's decision-making process by providing them with accurate and relevant information from discharge summaries. Efficiency and reliability are key.
"""
TEMPLATE = """
--------------BEGIN DOCUMENTS--------------

{context}

--------------END DOCUMENTS--------------

{question_text}
{options}

Please answer using the following format:
1. Begin your answer with the phrase "The correct answer is".
2. State the letter of the correct option (e.g., A, B, C, D, E).
3. Follow the letter with a colon and the exact text of the option you chose.
4. Make sure your answer is a single, concise sentence.

For example, if the correct answer to a question is option C, and the text for C is 'Acute Bronchitis', your answer should be: 
'The correct answer is C: Acute bronchitis.'
"""
SEPARATOR = "\n\n--------------\n\n"
UNANSWERABLE = "Question cannot be answered with provided documents"
ANSWER_PATTERN = re.compile(r"The correct answer is (\w):")
LETTERS = "ABCDE"
DATA_HINT = (
    "LongHealth needs the authors' benchmark_v5.json (not redistributed here): get data/benchmark_v5.json "
    "from https://github.com/kbressem/LongHealth and pass -O data_path=PATH"
)


# ---- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    """One benchmark question."""

    qid: str
    """``"<patient_id>/<question index>"`` (index in the patient's list, from 0)."""
    patient_id: str
    """The patient the question is about."""
    number: Any
    """The benchmark's own ``No`` field."""
    text: str
    """The question."""
    options: tuple[str, ...]
    """Texts of options A..E."""
    answer_letter: str
    """Letter of the first option (key order) whose text contains ``correct`` (the authors' rule)."""
    answer_candidates: tuple[str, ...]
    """Every option letter whose text contains ``correct``; more than one = an ambiguous answer key."""
    locations: tuple[tuple[str, tuple[tuple[float, float], ...]], ...]
    """``(text_id, ((start, end), ...))`` per answer document, fractions of the text's length."""
    correct: str = ""
    """The benchmark's ``correct`` text, as given."""

    @property
    def answer_docs(self) -> tuple[str, ...]:
        """Text ids of the answer documents, in ``answer_location`` order."""
        return tuple(text_id for text_id, _ in self.locations)


@dataclass(frozen=True)
class Patient:
    """One fictional patient: documents and questions."""

    patient_id: str
    """Top-level key in the benchmark file."""
    texts: dict[str, str]
    """Documents by text id, in file order."""
    questions: tuple[Question, ...]
    """The patient's questions, in file order."""


def answer_candidates(q: dict[str, Any]) -> tuple[str, ...]:
    """Letters of the options whose text contains ``correct``, in the question's key order.

    The authors' ``get_correct_answer(sample)`` (see the module doc): iterate over the question's
    keys, skip those that do not start with ``answer`` or that end with ``location``, and test
    ``sample["correct"] in sample[key]`` on the raw strings (no whitespace stripping, no exact-match
    preference); the letter is the key's last character, upper-cased. They return the first hit.
    """
    correct = str(q["correct"])
    return tuple(
        key[-1].upper()
        for key in q
        if key.startswith("answer") and not key.endswith("location") and correct in str(q[key])
    )


def _answer_letter(q: dict[str, Any], where: str) -> tuple[str, tuple[str, ...]]:
    candidates = answer_candidates(q)
    if not candidates:
        raise LongctxError(f"{where}: 'correct' ({q['correct']!r}) is contained in none of the answer_* options")
    if candidates[0] not in LETTERS:
        raise LongctxError(f"{where}: the first option holding 'correct' is not one of answer_a..answer_e")
    return candidates[0], candidates


def _parse_patient(pid: str, raw: dict[str, Any], path: str) -> Patient:
    texts = raw.get("texts")
    if not isinstance(texts, dict) or not texts or not all(isinstance(t, str) for t in texts.values()):
        raise LongctxError(f"{path}: patient {pid} has no 'texts' mapping of text id -> text")
    questions = []
    for i, q in enumerate(raw.get("questions") or []):
        where = f"{path}: {pid} question {i}"
        if not isinstance(q, dict):
            raise LongctxError(f"{where} is not an object")
        missing = [k for k in ("question", "correct", *(f"answer_{c}" for c in "abcde")) if k not in q]
        if missing:
            raise LongctxError(f"{where} lacks {', '.join(missing)}")
        locations = []
        for text_id, loc in (q.get("answer_location") or {}).items():
            if text_id not in texts:
                raise LongctxError(f"{where}: answer_location names unknown text {text_id!r}")
            try:
                spans = tuple(zip(map(float, loc["start"]), map(float, loc["end"])))
            except (KeyError, TypeError, ValueError):
                raise LongctxError(f"{where}: answer_location {text_id!r} needs start/end lists") from None
            if any(not (0.0 <= s <= 1.0 and 0.0 <= e <= 1.0) for s, e in spans):
                raise LongctxError(f"{where}: answer_location positions must be fractions in [0, 1]")
            locations.append((text_id, spans))
        letter, candidates = _answer_letter(q, where)
        questions.append(
            Question(
                qid=f"{pid}/{i}",
                patient_id=pid,
                number=q.get("No", i + 1),
                text=str(q["question"]),
                options=tuple(str(q[f"answer_{c}"]) for c in "abcde"),
                answer_letter=letter,
                answer_candidates=candidates,
                correct=str(q["correct"]),
                locations=tuple(locations),
            )
        )
    return Patient(pid, dict(texts), tuple(questions))


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> tuple[Patient, ...]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LongctxError(f"cannot read LongHealth data {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise LongctxError(f"{path} is not LongHealth's benchmark_v5.json (expected {{patient_id: patient}})")
    # Patients are dicts with "texts"; other top-level values (a canary string) are skipped.
    patients = tuple(
        _parse_patient(pid, p, path) for pid, p in raw.items() if isinstance(p, dict) and "texts" in p
    )
    if len(patients) < 2 or not any(p.questions for p in patients):
        raise LongctxError(
            f"{path}: expected at least two patients with questions (benchmark_v5.json schema)"
        )
    return patients


def load_benchmark(path: str | None) -> tuple[Patient, ...]:
    """The patients of a ``benchmark_v5.json`` file (cached per path and modification time)."""
    if not path:
        raise LongctxError(DATA_HINT)
    p = Path(path).expanduser()
    if not p.is_file():
        raise LongctxError(f"LongHealth data_path {path}: no such file. {DATA_HINT}")
    return _load(str(p.resolve()), p.stat().st_mtime)


# ---- scoring -------------------------------------------------------------------------------------
def parse_choice(prediction: str | None) -> str:
    """The chosen letter as the authors parse it (first ``The correct answer is X:``), or ``""``."""
    found = ANSWER_PATTERN.findall(prediction or "")
    return found[0] if found else ""


class LongHealthScorer:
    """Accuracy as the authors compute it, plus how often the model abstains (chooses F).

    ``accuracy``: the parsed letter equals the right one (F in task 3). ``abstention``: the parsed
    letter is F (task 3: the abstention rate, equal to accuracy; task 2: wrongly declining).
    ``answer_parsed``: the answer followed the required format at all.
    """

    metrics = ("accuracy", "abstention", "answer_parsed")

    def score(self, prediction: str, sample: Sample) -> dict[str, float]:
        choice = parse_choice(prediction)
        right = sample.metadata.get("answer_letter") or sample.references[0].split(":", 1)[0].strip()
        return {
            "accuracy": float(choice == right),
            "abstention": float(choice == "F"),
            "answer_parsed": float(bool(choice)),
        }


# ---- context building ----------------------------------------------------------------------------
def stable_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from ``parts`` independently of PYTHONHASHSEED."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def pack(docs: Sequence[tuple[str, Sequence[int]]], sep_len: int, budget: int) -> list[tuple[str, list[int]]]:
    """Take documents in order while they fit ``budget`` tokens (separators counted); the first one
    that does not fit is cut to the tokens left and ends the list (the authors' rule, exact)."""
    chosen: list[tuple[str, list[int]]] = []
    used = 0
    for label, ids in docs:
        room = budget - used - (sep_len if chosen else 0)
        if room <= 0:
            break
        if len(ids) <= room:
            chosen.append((label, list(ids)))
            used += len(ids) + (sep_len if len(chosen) > 1 else 0)
        else:
            chosen.append((label, list(ids[:room])))
            break
    return chosen


def char_to_token(ids: Sequence[int], char_offset: int, tokenizer: Tokenizer) -> int:
    """Index of the token of ``ids`` holding character ``char_offset`` of their text.

    Binary search on the length of decoded prefixes (decoding, not re-tokenizing); exact for
    byte-level BPE, within a token for SentencePiece.
    """
    lo, hi = 0, len(ids)
    while lo < hi:  # smallest k with len(decode(ids[:k])) > char_offset
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid])) > char_offset:
            hi = mid
        else:
            lo = mid + 1
    return max(lo - 1, 0)


@task(
    "longhealth/task1",
    variant=1,
    summary="LongHealth task 1: the patient's own records, shuffled, to the budget",
)
@task(
    "longhealth/task2",
    variant=2,
    summary="LongHealth task 2: answer records among other patients' records; option F available",
)
@task(
    "longhealth/task3",
    variant=3,
    summary="LongHealth task 3: other patients' records only; the answer is F (cannot be answered)",
)
class LongHealth:
    """LongHealth: multiple-choice questions about long fictional clinical records."""

    controls_depth = False

    class Options(msgspec.Struct, forbid_unknown_fields=True):
        """``-O`` options of longhealth/* tasks."""

        data_path: str | None = None
        """Path to the authors' ``benchmark_v5.json`` (required; not redistributed)."""
        max_new_tokens: int = 50
        """Generation budget (the authors': 50)."""
        max_distractors: int | None = None
        """Tasks 2/3: cap on other patients' documents per prompt (authors: 10); default: fill the budget."""
        system_prompt: bool = True
        """Send the authors' system prompt (turn off for chat templates without a system role)."""

    def __init__(self, name: str, options: Options | None = None, *, variant: int):
        if variant not in (1, 2, 3):
            raise ValueError(f"LongHealth has tasks 1, 2 and 3, not {variant}")
        self.name = name
        self.options = options or self.Options()
        if self.options.max_new_tokens <= 0:
            raise LongctxError(f"{name}: max_new_tokens must be positive")
        self.variant = variant
        self.scorer = LongHealthScorer()
        self._tokenizer: Tokenizer | None = None
        self._doc_ids: dict[tuple[str, str], list[int]] = {}
        self._char_tokens: dict[tuple[str, str, int], int] = {}

    # ---- data ------------------------------------------------------------------------------------
    def patients(self) -> tuple[Patient, ...]:
        """The benchmark's patients (``-O data_path``)."""
        return load_benchmark(self.options.data_path)

    def questions(self) -> list[Question]:
        """Every question of the benchmark, in file order."""
        return [q for p in self.patients() for q in p.questions]

    def _options_text(self, q: Question) -> str:
        options = list(q.options) + ([UNANSWERABLE] if self.variant > 1 else [])
        return "\n".join(f"{letter}: {text}" for letter, text in zip("ABCDEF", options))

    def _answer(self, q: Question) -> tuple[str, str]:
        if self.variant == 3:
            return "F", UNANSWERABLE
        return q.answer_letter, q.options[LETTERS.index(q.answer_letter)]

    def choices(self, q: Question) -> Choices:
        """Forced-choice candidates (:mod:`longctx._choice`): the start of the required answer up to
        each option's letter, ``"The correct answer is X:"`` for A..E (and F in tasks 2/3); the
        true one is the answer key's letter (F in task 3). The shared words score alike, so the
        ranking is the model's preference among the letters after them; option texts are left out
        so that their lengths do not weigh in."""
        letters = "ABCDEF" if self.variant > 1 else LETTERS
        return closed_choices([f"The correct answer is {c}:" for c in letters], letters.index(self._answer(q)[0]))

    def _metadata(self, q: Question) -> dict[str, Any]:
        letter, text = self._answer(q)
        meta = {
            "question_id": q.qid,
            "patient_id": q.patient_id,
            "question_no": q.number,
            "answer_letter": letter,
            "oracle_prediction": f"The correct answer is {letter}: {text}.",
        }
        candidates = list(q.answer_candidates)
        if self.variant == 2 and q.correct in UNANSWERABLE:
            candidates.append("F")  # the authors add answer_f before looking for the right option
        if self.variant != 3 and len(candidates) > 1:
            # ``correct`` is in several options: the authors' vLLM script takes the first (as here),
            # their text-generation-inference script the last; the key itself is ambiguous.
            meta["ambiguous_answer"] = True
            meta["answer_candidates"] = candidates
        return meta

    def scoring_samples(self) -> Iterator[Sample]:
        """One reference sample per question, id ``"<patient_id>/<index>"`` (no prompt)."""
        for q in self.questions():
            letter, text = self._answer(q)
            yield Sample(
                id=q.qid,
                task=self.name,
                prompt=Prompt(messages=()),
                references=(f"{letter}: {text}",),
                length=0,
                context_tokens=0,
                max_new_tokens=self.options.max_new_tokens,
                metadata=self._metadata(q),
            )

    # ---- tokens ----------------------------------------------------------------------------------
    def _ids(self, patient: Patient, text_id: str) -> list[int]:
        key = (patient.patient_id, text_id)
        if key not in self._doc_ids:
            self._doc_ids[key] = self._tokenizer.encode(patient.texts[text_id])  # type: ignore[union-attr]
        return self._doc_ids[key]

    def _token_of(self, patient: Patient, text_id: str, fraction: float) -> int:
        text = patient.texts[text_id]
        char = min(int(fraction * len(text)), max(len(text) - 1, 0))
        key = (patient.patient_id, text_id, char)
        if key not in self._char_tokens:
            self._char_tokens[key] = char_to_token(self._ids(patient, text_id), char, self._tokenizer)  # type: ignore[arg-type]
        return self._char_tokens[key]

    # ---- samples ---------------------------------------------------------------------------------
    def samples(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        """``grid.samples`` questions per length (the same questions at every length), fitted exactly."""
        if tokenizer is not self._tokenizer:
            self._tokenizer, self._doc_ids, self._char_tokens = tokenizer, {}, {}
        patients = {p.patient_id: p for p in self.patients()}
        questions = self.questions()
        stable_rng("longhealth", grid.seed).shuffle(questions)  # same order for tasks 1, 2 and 3
        picks = list(islice(((q, r) for r in count() for q in questions), grid.samples)) if questions else []
        sep = tokenizer.encode(SEPARATOR)
        gen = self.options.max_new_tokens
        for q, repeat in picks:
            patient = patients[q.patient_id]
            user = TEMPLATE.replace("{question_text}", q.text.replace("{context}", "(context)"))
            user = user.replace("{options}", self._options_text(q).replace("{context}", "(context)"))
            pf = self._frame(tokenizer, user, question=f"{q.text}\n{self._options_text(q)}")
            candidates = self._candidates(patient, patients, q, grid.seed, repeat)
            choices = self.choices(q) if grid.choices else None
            for length in grid.lengths:
                sample = self._sample(q, repeat, length, patient, pf, candidates, sep, gen, grid.seed, tokenizer)
                yield msgspec.structs.replace(sample, choices=choices) if choices else sample

    def _frame(self, tokenizer: Tokenizer, user: str, question: str | None = None) -> PromptFrame:
        if not self.options.system_prompt:
            return frame(tokenizer, user, question=question)
        try:
            return frame(tokenizer, user, system=SYSTEM_PROMPT, question=question)
        except LongctxError:
            raise
        except Exception as exc:  # e.g. a jinja TemplateError: "System role not supported"
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise LongctxError(
                f"{self.name}: the chat template of {tokenizer.name} rejects the system prompt ({first}); "
                "pass -O system_prompt=false"
            ) from None

    def _candidates(
        self, patient: Patient, patients: dict[str, Patient], q: Question, seed: int, repeat: int
    ) -> list[tuple[str, list[int]]]:
        """``("<patient_id>/<text_id>", ids)`` in the order they are taken: answer documents, then others."""
        own = patient.patient_id
        answer = [] if self.variant == 3 else [(f"{own}/{t}", self._ids(patient, t)) for t in q.answer_docs]
        if self.variant == 1:
            others = [(f"{own}/{t}", self._ids(patient, t)) for t in patient.texts if t not in q.answer_docs]
        else:
            pool = [
                (other, t)
                for other in patients.values()
                if other.patient_id != q.patient_id
                for t in other.texts
            ]
            stable_rng(self.name, seed, q.qid, repeat, "distractors").shuffle(pool)
            if self.options.max_distractors is not None:
                pool = pool[: self.options.max_distractors]
            others = [(f"{other.patient_id}/{t}", self._ids(other, t)) for other, t in pool]
        return answer + others

    def _sample(
        self,
        q: Question,
        repeat: int,
        length: int,
        patient: Patient,
        pf: PromptFrame,
        candidates: list[tuple[str, list[int]]],
        sep: list[int],
        gen: int,
        seed: int,
        tokenizer: Tokenizer,
    ) -> Sample:
        budget = context_budget(length, pf, gen)
        chosen = pack(candidates, len(sep), budget)
        truncated = (
            chosen[-1][0] if chosen and len(chosen[-1][1]) < len(dict(candidates)[chosen[-1][0]]) else None
        )
        stable_rng(self.name, seed, q.qid, repeat, length, "order").shuffle(chosen)

        context: list[int] = []
        base = len(pf.prefix_ids)
        doc_spans: list[list[int]] = []
        answer_spans: list[list[int]] = []
        locations = (
            {f"{q.patient_id}/{t}": (t, spans) for t, spans in q.locations} if self.variant != 3 else {}
        )
        for i, (label, ids) in enumerate(chosen):
            if i:
                context.extend(sep)
            start = base + len(context)
            context.extend(ids)
            if label in locations:
                text_id, spans = locations[label]
                doc_spans.append([start, start + len(ids)])
                for s, e in spans:
                    tok_s, tok_e = self._token_of(patient, text_id, s), self._token_of(patient, text_id, e)
                    if tok_s < len(ids):
                        answer_spans.append([start + tok_s, start + min(max(tok_e, tok_s + 1), len(ids))])
        prompt = pf.prompt(context, tokenizer)
        total = len(prompt.token_ids or ())
        targets = sorted(s for s, _ in answer_spans) or sorted(s for s, _ in doc_spans)
        letter, text = self._answer(q)
        lost = self.variant != 3 and (
            len(doc_spans) < len(locations)
            or truncated in locations
            or len(answer_spans) < sum(len(spans) for _, spans in q.locations)
        )
        suffix = f"|r{repeat}" if repeat else ""
        return Sample(
            id=f"{self.name}|{length}|{q.qid}{suffix}",
            task=self.name,
            prompt=prompt,
            references=(f"{letter}: {text}",),
            length=length,
            context_tokens=total,
            max_new_tokens=gen,
            needle_positions=tuple(targets),
            evidence_depth=round(100 * (targets[0] - base) / len(context), 2) if targets else None,
            metadata={
                **self._metadata(q),
                "repeat": repeat,
                "documents": [label for label, _ in chosen],
                "truncated_document": truncated,
                "context_span": [base, base + len(context)],
                "answer_documents": sorted(doc_spans),
                "answer_spans": sorted(answer_spans),
                "evidence_lost": bool(lost),
                "fill": round((total + gen) / length, 4),
            },
        )
