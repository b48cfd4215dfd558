"""``longctx score``: rescore predictions produced elsewhere with a task's official metric.

Every prediction is scored by ``task.scorer.score(prediction, sample)``, the call the sweep makes,
so a number printed here and one in a run folder mean the same thing. Accepted files:

- ``.csv`` with columns ``target``, ``output`` and optionally ``question`` (the layout of the
  BABILong authors' published outputs, ``,target,output,question`` with the pandas index first).
  Each row is scored against ``references=(target,)`` with ``metadata["question"]``. As in the
  authors' ``babilong/collect_results.py`` (``pandas.read_csv`` defaults, then ``fillna('')``),
  empty outputs and outputs pandas reads as missing (``NA``, ``None``, ``nan``, ...) count as ``""``.
- ``.jsonl`` (or ``.json`` holding a list): objects with ``sample_id`` or ``question_id`` and
  ``prediction``; optional ``references`` (string or list), ``question`` and ``metadata``. Lines
  without references are looked up among the task's ``scoring_samples()`` (by ``Sample.id`` or
  ``metadata["question_id"]``); ``--missing zero`` scores the task's samples that have no prediction
  as 0 (QASPER's evaluator does that). A longctx run's ``results.jsonl`` is accepted as it is: lines
  of other tasks and lines recording a runner error are left out (errors are never scored).
- QASPER's official predictions file (allenai/qasper-led-baseline ``scripts/evaluator.py``, commit
  afd0fb96bf78ce8cd8157639c6f6a6995e4f9089: JSON lines ``{"question_id", "predicted_answer",
  "predicted_evidence"}``) as it is: such a line is the prediction
  ``{"answer": predicted_answer, "evidence": predicted_evidence}``.

As in that evaluator, a line whose id is not a sample of the task is ignored (a warning, not an
error) and, when an id appears on several lines, the last line is scored (a warning too). In a
``results.jsonl`` the last line of a sample decides as in the report: an error followed by its
retry is not an error (no warning), a result followed by an error line is not scored. Warnings
are returned in :attr:`FileScore.warnings`; the CLI prints them on stderr.

When the task's scorer has the optional ``corpus_scores`` hook (:class:`longctx._protocols.
CorpusScorer`; QASPER), its corpus-level numbers are reported too (``FileScore.corpus``, the JSON
key ``corpus``), computed over the scored predictions, with ``--missing zero`` over every sample
of the task: the official way, which a mean of per-sample scores is not.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from longctx._errors import LongctxError
from longctx._parsing import parse_options
from longctx._records import Prompt, Result, Sample
from longctx._scoring import scorer_corpus_hook

#: Cells ``pandas.read_csv`` turns into NaN by default (pandas ``_libs.parsers.STR_NA_VALUES``).
PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
_INDEX_COLUMNS = ("", "Unnamed: 0")
_ID_KEYS = ("sample_id", "question_id")


@dataclass
class FileScore:
    """Scores of one predictions file."""

    path: str
    """The file."""
    n: int = 0
    """Predictions scored (plus unanswered samples with ``--missing zero``)."""
    sums: dict[str, float] = field(default_factory=dict)
    """Per metric, the sum of the scores."""
    missing: int = 0
    """Samples of the task without a prediction (JSONL resolved by id)."""
    errors: int = 0
    """Lines recording a runner error (``results.jsonl``): never scored, as in the sweep."""
    other_tasks: int = 0
    """Lines of other tasks (a ``results.jsonl`` of several tasks), left out."""
    ignored: int = 0
    """Lines for ids that are not samples of the task, left out (as the official evaluators do)."""
    duplicates: int = 0
    """Lines replaced by a later line for the same sample (the last one is scored)."""
    warnings: list[str] = field(default_factory=list)
    """One line per problem that did not stop scoring (unknown ids, repeated ids)."""
    corpus: dict[str, float | None] | None = None
    """The scorer's corpus metrics (optional ``corpus_scores`` hook) over the scored items."""

    def means(self) -> dict[str, float]:
        """Mean of every metric over the scored items (0 when there are none)."""
        return {k: (v / self.n if self.n else 0.0) for k, v in self.sums.items()}

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable form (``--json``)."""
        return {
            "file": self.path,
            "n": self.n,
            "missing": self.missing,
            "errors": self.errors,
            "other_tasks": self.other_tasks,
            "ignored": self.ignored,
            "duplicates": self.duplicates,
            "scores": self.means(),
            "sums": self.sums,
            "corpus": self.corpus,
            "warnings": self.warnings,
        }


def _empty_sample(sample_id: str, task: str, references: tuple[str, ...], metadata: dict[str, Any]) -> Sample:
    return Sample(
        id=sample_id,
        task=task,
        prompt=Prompt(messages=()),
        references=references,
        length=0,
        context_tokens=0,
        max_new_tokens=0,
        metadata=metadata,
    )


def csv_items(path: Path, task_name: str) -> Iterator[tuple[str, Sample]]:
    """(prediction, sample) for every row of a ``target,output[,question]`` CSV."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise LongctxError(f"{path}: empty file")
        index_col = 0 if header and header[0] in _INDEX_COLUMNS else None
        named = [h for i, h in enumerate(header) if i != index_col]
        unknown = [h for h in named if h not in ("target", "output", "question")]
        if unknown or "target" not in named or "output" not in named:
            what = (
                f"unknown column(s) {', '.join(map(repr, unknown))}"
                if unknown
                else "no target/output columns"
            )
            raise LongctxError(
                f"{path}: {what}; expected columns target,output[,question] (got {','.join(header)})"
            )
        col = {h: i for i, h in enumerate(header) if i != index_col}
        for line_no, row in enumerate(reader, 2):
            if not row or all(not c.strip() for c in row):
                continue  # pandas skips blank lines
            if len(row) != len(header):
                raise LongctxError(f"{path}:{line_no}: {len(row)} fields, the header has {len(header)}")
            output = row[col["output"]]
            key = row[index_col] if index_col is not None else str(line_no - 2)
            metadata = {"question": row[col["question"]]} if "question" in col else {}
            yield (
                "" if output in PANDAS_NA else output,
                _empty_sample(f"{path.name}:{key}", task_name, (row[col["target"]],), metadata),
            )


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise LongctxError(f"{path}: expected a JSON list of prediction objects")
            yield from enumerate(data, 1)
            return
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield line_no, json.loads(line)
    except json.JSONDecodeError as exc:
        raise LongctxError(f"{path}: not valid JSON ({exc})") from None


def _prediction(rec: dict[str, Any], where: str) -> str:
    """The prediction text of one JSONL line (``prediction``, or QASPER's official keys)."""
    if "prediction" in rec:
        prediction = rec["prediction"]
        if prediction is not None and not isinstance(prediction, str):
            raise LongctxError(f"{where}: 'prediction' must be a string")
        return prediction or ""
    if "predicted_answer" in rec:  # QASPER's official predictions file
        answer = rec["predicted_answer"]
        if answer is not None and not isinstance(answer, str):
            raise LongctxError(f"{where}: 'predicted_answer' must be a string")
        obj: dict[str, Any] = {"answer": answer or ""}
        if "predicted_evidence" in rec:
            evidence = rec["predicted_evidence"]
            if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
                raise LongctxError(f"{where}: 'predicted_evidence' must be a list of paragraph strings")
            obj["evidence"] = evidence
        return json.dumps(obj, ensure_ascii=False)
    raise LongctxError(f"{where}: no 'prediction' (keys: {', '.join(rec)})")


def _examples(pairs: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{ident!r} (line {line})" for ident, line in pairs[:3])
    return shown + (", ..." if len(pairs) > 3 else "")


def jsonl_items(path: Path, task: Any, missing: str, counts: FileScore) -> list[tuple[str | None, Sample]]:
    """(prediction, sample) for every sample of ``task`` with a line; ``counts`` gets the missing,
    error, other-task, ignored and duplicate counts and the warnings. With ``missing="zero"``
    samples of the task without a prediction are included with prediction None (it scores 0).

    Lines of a longctx ``results.jsonl`` work as they are: their ``task`` picks the lines, an
    ``error`` leaves the line out, ``extra.metadata`` supplies the sample metadata. A line for an
    id the task does not know is ignored; of several lines for one sample the last one is kept.
    """
    raw: list[tuple[int, str | None, dict[str, Any]]] = []
    for line_no, rec in _records(path):
        where = f"{path}:{line_no}"
        if not isinstance(rec, dict):
            raise LongctxError(f"{where}: expected an object with sample_id/question_id and prediction")
        if rec.get("task") not in (None, task.name):
            counts.other_tasks += 1
            continue
        if rec.get("scoring") == "choice":
            raise LongctxError(f"{where}: a forced-choice result (--scoring choice): its prediction is the "
                               "chosen candidate and its score choice_accuracy; it is not rescored as a "
                               "generated answer")
        ident = next((str(rec[k]) for k in _ID_KEYS if rec.get(k) is not None), None)
        if ident is None and not rec.get("error"):
            raise LongctxError(f"{where}: no sample_id or question_id (keys: {', '.join(rec) or 'none'})")
        raw.append((line_no, ident, rec))
    last = {ident: (line_no, bool(rec.get("error"))) for line_no, ident, rec in raw}
    lines: list[tuple[int, str, str, dict[str, Any]]] = []
    replaced_by_error: list[tuple[str, int]] = []
    for line_no, ident, rec in raw:
        if rec.get("error"):  # an error that a later line for the sample replaces was retried
            counts.errors += ident is None or last[ident][0] == line_no
            continue
        assert ident is not None
        if last[ident][1]:  # the last line for this sample is an error: that is what counts
            replaced_by_error.append((ident, line_no))
            counts.duplicates += 1
            continue
        lines.append((line_no, ident, _prediction(rec, f"{path}:{line_no}"), rec))
    if replaced_by_error:
        counts.warnings.append(
            f"{path}: {len(replaced_by_error)} line(s) replaced by a later error line for the same id "
            f"(not scored), e.g. {_examples(replaced_by_error)}"
        )

    by_id: dict[str, Sample] = {}
    unique: dict[str, Sample] = {}
    if any(rec.get("references") is None for *_, rec in lines) or missing == "zero":
        source = getattr(task, "scoring_samples", None)
        if source is None:
            first = next((n for n, *_, rec in lines if rec.get("references") is None), 1)
            raise LongctxError(
                f"{path}:{first}: task {task.name} cannot look up samples by id; give every line 'references'"
            )
        for sample in source():
            unique.setdefault(sample.id, sample)
            by_id.setdefault(sample.id, sample)
            qid = sample.metadata.get("question_id")
            if qid is not None:
                by_id.setdefault(str(qid), sample)

    kept: dict[str, tuple[int, str, Sample, str]] = {}  # sample id -> (line, prediction, sample, ident)
    unknown: list[tuple[str, int]] = []
    repeated: dict[str, list[int]] = {}
    for line_no, ident, prediction, rec in lines:
        refs = rec.get("references")
        if refs is None:
            found = by_id.get(ident)
            if found is None:
                unknown.append((ident, line_no))
                continue
            sample = found
        else:
            refs = (refs,) if isinstance(refs, str) else tuple(str(r) for r in refs)
            extra = rec.get("extra") if isinstance(rec.get("extra"), dict) else {}
            metadata = dict(rec.get("metadata") or extra.get("metadata") or {})
            if "question" in rec:
                metadata["question"] = rec["question"]
            sample = _empty_sample(ident, task.name, refs, metadata)
        if sample.id in kept:
            repeated.setdefault(sample.id, [kept[sample.id][0]]).append(line_no)
            counts.duplicates += 1
        kept[sample.id] = (line_no, prediction, sample, ident)

    if unknown:
        counts.ignored = len(unknown)
        counts.warnings.append(
            f"{path}: {len(unknown)} line(s) for ids that are not samples of {task.name} ignored "
            f"({len(unique)} known), e.g. {_examples(unknown)}"
        )
    if repeated:
        shown = "; ".join(f"{i!r} (lines {', '.join(map(str, ns))})" for i, ns in list(repeated.items())[:3])
        counts.warnings.append(
            f"{path}: {len(repeated)} id(s) on more than one line, the last line of each is scored: {shown}"
            + ("; ..." if len(repeated) > 3 else "")
        )
    items: list[tuple[str | None, Sample]] = [(p, s) for _, p, s, _ in kept.values()]
    if unique:
        answered = set(kept) | {ident for *_, ident in kept.values()}
        unanswered = [
            s
            for s in unique.values()
            if s.id not in answered and str(s.metadata.get("question_id")) not in answered
        ]
        counts.missing = len(unanswered)
        if missing == "zero":
            items.extend((None, s) for s in unanswered)
    return items


def _as_result(prediction: str | None, sample: Sample, task_name: str) -> Result:
    """A bare result record of one prediction, as the corpus hook reads results."""
    return Result(
        sample_id=sample.id, task=task_name, runner="", model="", length=sample.length,
        context_tokens=sample.context_tokens, depth=sample.depth, needle_positions=sample.needle_positions,
        evidence_depth=sample.evidence_depth, prediction=prediction, references=sample.references,
        score=None, scores={}, error=None, latency_s=0.0, prompt_tokens=None, cached_tokens=None,
        extra={"metadata": dict(sample.metadata)},
    )


def rescore(task: Any, path: Path, missing: str = "skip") -> FileScore:
    """Score every prediction in ``path`` with ``task.scorer`` (see module docstring for formats)."""
    if not path.is_file():
        raise LongctxError(f"{path}: no such file")
    suffix = path.suffix.lower()
    result = FileScore(str(path))
    if suffix == ".csv":
        items: Any = csv_items(path, task.name)
    elif suffix in (".jsonl", ".json"):
        items = jsonl_items(path, task, missing, result)
    else:
        raise LongctxError(
            f"{path}: unknown format {suffix or '(none)'}; use .csv (target,output,question) or .jsonl"
        )
    result.sums = {m: 0.0 for m in task.scorer.metrics}
    hook = scorer_corpus_hook(task.scorer)
    records: list[Result] = []
    for prediction, sample in items:
        scores = task.scorer.score(prediction or "", sample)
        for metric in task.scorer.metrics:
            value = float(scores[metric])
            if math.isnan(value) or not 0.0 <= value <= 1.0:
                raise LongctxError(
                    f"{task.name}: metric {metric} gave {value} for {sample.id} (expected [0, 1])"
                )
            result.sums[metric] += value
        result.n += 1
        if hook is not None:
            records.append(_as_result(prediction, sample, task.name))
    if result.n == 0:
        why = [f"{result.other_tasks} lines of other tasks"] if result.other_tasks else []
        why += [w.split(": ", 1)[1] for w in result.warnings if result.ignored and "ignored" in w]
        raise LongctxError(f"{path}: no predictions for {task.name}" + (f" ({'; '.join(why)})" if why else ""))
    if hook is not None:
        result.corpus = hook(records)
    return result


@click.command(
    epilog="""\b
Examples:
  longctx score --task babilong/qa1 qa1_4k_instruction_yes_examples_yes_post_prompt_yes.csv
  longctx score --task babilong/qa2 --json babilong_evals/MODEL/qa2_*.csv
  longctx score --task babilong/qa1 -O data_dir=DIR -O dataset_length=4k predictions.jsonl
  longctx score --task qasper -O data_path=qasper-test-v0.3.json --missing zero predictions.jsonl"""
)
@click.option("--task", "-t", "task_name", required=True, help="Task whose metric scores the predictions.")
@click.option(
    "--option",
    "-O",
    "task_opts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Task option (repeatable), e.g. where the task finds references for ids.",
)
@click.option(
    "--missing",
    type=click.Choice(["skip", "zero"]),
    default="skip",
    show_default=True,
    help="Task samples without a prediction (JSONL by id): leave out, or score as 0.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.argument("predictions", nargs=-1, required=True, type=click.Path(path_type=Path))
def score(
    task_name: str, task_opts: tuple[str, ...], missing: str, as_json: bool, predictions: tuple[Path, ...]
) -> None:
    """Rescore predictions produced elsewhere with a task's official metric."""
    from longctx._registry import get_task

    task = get_task(task_name, parse_options(task_opts, "-O"))
    results = [rescore(task, path, missing) for path in predictions]
    for r in results:
        for warning in r.warnings:
            click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "task": task.name,
                    "metrics": list(task.scorer.metrics),
                    "corpus_metrics": list(next((r.corpus for r in results if r.corpus), {}) or {}),
                    "results": [r.to_dict() for r in results],
                },
                indent=1,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"{task.name}: scores in % ({task.scorer.metrics[0]} is the official metric)",
        title_justify="left",
    )
    table.add_column("predictions", overflow="fold")
    table.add_column("n", justify="right")
    for metric in task.scorer.metrics:
        table.add_column(metric, justify="right")
    for r in results:
        table.add_row(r.path, str(r.n), *[f"{100 * v:.2f}" for v in r.means().values()])
    console.print(table)
    corpus_keys = list(next((r.corpus for r in results if r.corpus), {}) or {})
    if corpus_keys:
        corpus = Table(
            title=f"{task.name}: corpus metrics in % (computed as the official evaluator does; - = undefined)",
            title_justify="left",
        )
        corpus.add_column("metric", style="bold")
        for r in results:
            corpus.add_column(Path(r.path).name, justify="right", overflow="fold")
        for key in corpus_keys:
            values = [(r.corpus or {}).get(key) for r in results]
            corpus.add_row(key, *["-" if v is None else f"{100 * v:.2f}" for v in values])
        corpus.add_row("n", *[str(r.n) for r in results], style="dim")
        console.print(corpus)
    for r in results:
        if r.missing and missing == "skip":
            click.echo(
                f"{r.path}: {r.missing} samples of {task.name} have no prediction "
                "(not scored; --missing zero counts them as 0)",
                err=True,
            )
        if r.errors:
            click.echo(f"{r.path}: {r.errors} lines record a runner error (never scored)", err=True)
