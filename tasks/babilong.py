"""BABILong: bAbI reasoning questions whose facts are hidden in long background text.

Kuratov et al., "BABILong: Testing the Limits of LLMs with Long Context Reasoning-in-a-Haystack"
(arXiv 2406.10149); code and data: booydar/babilong, ``RMT-team/babilong``,
``RMT-team/babilong-1k-samples``. Twenty variants ``babilong/qa1`` ... ``babilong/qa20`` (the bAbI
tasks), two sources:

- ``-O source=dataset`` (default): the published samples. Each sweep length maps to the largest
  published length whose inputs fit the budget (``Nk`` inputs hold ``N*1000 - 300`` GPT-2
  tokens); rows that do not fit with the served tokenizer are passed over for others, and when
  none fits the next shorter published length is used. ``-O dataset_length=4k`` pins it.
  Placement is the authors' (random), so ``controls_depth`` is False; the facts are located in
  each input (sentences made only of the task's bAbI vocabulary, learnt from the facts-only ``0k``
  inputs) and their token positions recorded (all facts, story order: the published data does not
  say which facts support the answer).
- ``-O source=generate``: new samples at any length from bAbI stories (``facts_dir`` or
  ``facebook/babi_qa``) and a background corpus (``background_dir``; PG19 in the original), built as
  the authors build theirs (:mod:`longctx.tasks._babilong_generate`), every prompt exactly
  ``length - max_new_tokens`` tokens. The requested depth sets the facts' window
  (``depth_window`` points wide); positions are the supporting facts first, then the others.

Prompt: the authors' template, per-task instruction / examples / post-prompt
(:mod:`longctx.tasks._babilong_prompts`), each switchable like their ``--use_*`` flags, the served
model's chat template by default (``-O chat_template=false`` sends the bare text). Greedy,
``max_new_tokens=20``. Metric: the authors' ``compare_answers`` (:mod:`longctx.tasks._babilong_metric`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import msgspec
from longctx.tasks import _babilong_data as data
from longctx.tasks._babilong_generate import (
    SentencePool,
    build_context,
    depth_window,
    locate_facts,
    segment_ids,
    stable_rng,
    story_vocabulary,
)
from longctx.tasks._babilong_metric import TASK_LABELS, BabilongScorer
from longctx.tasks._babilong_prompts import MAX_NEW_TOKENS, PROMPTS, user_message
from longctx.tasks._haystacks import encode_many

from longctx._choice import closed_choices
from longctx._errors import LongctxError
from longctx._prompting import PromptFrame, context_budget, frame
from longctx._protocols import Grid, Tokenizer
from longctx._records import Choices, Prompt, Sample
from longctx._registry import task

#: bAbI task names (booydar/babilong ``data/README.md``).
BABI_TASKS = {
    "qa1": "single supporting fact",
    "qa2": "two supporting facts",
    "qa3": "three supporting facts",
    "qa4": "two argument relations",
    "qa5": "three argument relations",
    "qa6": "yes/no questions",
    "qa7": "counting",
    "qa8": "lists/sets",
    "qa9": "simple negation",
    "qa10": "indefinite knowledge",
    "qa11": "basic coreference",
    "qa12": "conjunction",
    "qa13": "compound coreference",
    "qa14": "time reasoning",
    "qa15": "basic deduction",
    "qa16": "basic induction",
    "qa17": "positional reasoning",
    "qa18": "size reasoning",
    "qa19": "path finding",
    "qa20": "agent's motivations",
}
#: Lengths each published dataset has (Hugging Face dataset cards).
PUBLISHED_LENGTHS = {
    "babilong": ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1M", "10M"),
    "babilong-1k-samples": ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k"),
}


class Babilong:
    """BABILong: answer a bAbI question whose facts are hidden in long background text."""

    class Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        """``-O`` options of babilong/qa* tasks."""

        source: Literal["dataset", "generate"] = "dataset"
        """``dataset``: the published samples; ``generate``: new samples from bAbI + a background corpus."""
        dataset: Literal["babilong", "babilong-1k-samples"] = "babilong"
        """Published dataset (``RMT-team/<name>``)."""
        data_dir: str | None = None
        """Local copy of the published dataset (``<length>/<task>*.parquet`` or ``.json``)."""
        dataset_length: str = "auto"
        """Published length to use (``4k``...); ``auto`` picks the largest that fits each sweep length."""
        facts_dir: str | None = None
        """Folder of bAbI text files ``qaN_*_train.txt``/``_test.txt`` (default: ``facebook/babi_qa``)."""
        facts_split: Literal["train", "test"] = "train"
        """bAbI split the stories come from (the authors use en-10k train)."""
        background_dir: str | None = None
        """Background corpus: ``.txt`` books, or ``.jsonl``/``.json``/``.parquet`` with a ``text`` field."""
        depth_window: float = 20.0
        """Width (percent of the context) of the window the facts are spread over, centred on the depth."""
        instruction: bool = True
        """Include the task instruction (the authors' ``--use_instruction``)."""
        examples: bool = True
        """Include the in-context examples (``--use_examples``)."""
        post_prompt: bool = True
        """Include the answer-format post-prompt (``--use_post_prompt``)."""
        chat_template: bool = True
        """Wrap the prompt in the served model's chat template (``--use_chat_template``)."""
        system_prompt: str = ""
        """System message (chat template only; the authors' ``--system_prompt``)."""
        max_new_tokens: int = MAX_NEW_TOKENS
        """Generation budget (the authors: 20)."""

    def __init__(self, name: str, options: Options | None = None, *, qa: str):
        if qa not in PROMPTS:
            raise ValueError(f"unknown bAbI task {qa!r}")
        self.name, self.qa = name, qa
        self.options = opts = options or self.Options()
        if not 0 < opts.depth_window <= 100:
            raise LongctxError(f"{name}: depth_window must be in (0, 100], got {opts.depth_window}")
        if opts.max_new_tokens < 1:
            raise LongctxError(f"{name}: max_new_tokens must be positive")
        if opts.dataset_length != "auto":
            data.nominal_input_tokens(opts.dataset_length)  # validates the name
        if opts.source == "generate" and not opts.background_dir:
            raise LongctxError(
                f"{name}: -O source=generate needs -O background_dir=DIR (a folder of .txt books, "
                "e.g. PG19's test split as the authors use, or .jsonl/.parquet with a 'text' field)"
            )
        self.scorer = BabilongScorer(qa)
        self.controls_depth = opts.source == "generate"
        self._questions: list[data.BabiQuestion] | None = None
        self._corpus: data.BackgroundCorpus | None = None

    # ---- prompts ------------------------------------------------------------------------------
    def _frame(self, tokenizer: Tokenizer, question: str) -> PromptFrame:
        o = self.options
        user = user_message(
            self.qa, question, instruction=o.instruction, examples=o.examples, post_prompt=o.post_prompt
        )
        if o.chat_template:
            return frame(tokenizer, user, system=o.system_prompt or None, question=question)
        before, _, after = user.partition("{context}")
        return PromptFrame(
            system=None,
            user_template=user,
            answer_prefix="",
            prefix_ids=tuple(tokenizer.encode(before)),
            suffix_ids=tuple(tokenizer.encode(after)),
            question=question,
        )

    def _sample(
        self,
        *,
        sample_id: str,
        pf: PromptFrame,
        context: Sequence[int],
        tokenizer: Tokenizer,
        length: int,
        depth: float | None,
        offsets: Sequence[int],
        target: str,
        question: str,
        metadata: dict,
        with_choices: bool = False,
    ) -> Sample:
        """A sample from a context; ``offsets`` (context tokens) are in needle order, targets first."""
        prompt = pf.prompt(context, tokenizer)
        choices = self.choices(question, target) if with_choices else None
        return Sample(
            id=sample_id,
            task=self.name,
            prompt=prompt,
            references=(target,),
            length=length,
            context_tokens=len(prompt.token_ids or ()),
            max_new_tokens=self.options.max_new_tokens,
            depth=depth,
            needle_positions=tuple(len(pf.prefix_ids) + o for o in offsets),
            evidence_depth=round(100 * offsets[0] / len(context), 2) if offsets and context else None,
            metadata={"qa": self.qa, "question": question, "source": self.options.source, **metadata},
            choices=choices,
        )

    def choices(self, question: str, target: str) -> Choices | None:
        """Forced-choice candidates (:mod:`longctx._choice`), qa1 only: the answer sentence the
        post-prompt asks for, ``"The most recent location of X is Y."``, for each of the task's six
        locations (``TASK_LABELS``; after ``"\\nAnswer: "`` as in the examples when no chat template
        is used). None for other tasks, a question not of the form ``Where is X?``, or a target
        outside the labels."""
        found = re.fullmatch(r"\s*Where is (\w+)\?\s*", question)
        labels = TASK_LABELS.get(self.qa, ())
        if self.qa != "qa1" or found is None or target not in labels:
            return None
        lead = "" if self.options.chat_template else "\nAnswer: "
        person = found.group(1)
        return closed_choices([f"{lead}The most recent location of {person} is {label}." for label in labels],
                              labels.index(target))

    def samples(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        """Samples for every length (and depth, when generating) of ``grid``."""
        if self.options.source == "generate":
            return self._generated(grid, tokenizer)
        return self._published(grid, tokenizer)

    # ---- published dataset ----------------------------------------------------------------------
    def _vocabulary(self) -> frozenset[str] | None:
        """The task's bAbI words, from the facts-only ``0k`` inputs; None when they are unavailable."""
        try:
            rows = data.load_published(self.options.dataset, "0k", self.qa, self.options.data_dir, ("input",))
        except LongctxError:
            return None
        return story_vocabulary(r["input"] for r in rows) or None

    def _candidate_lengths(self, length: int, tokenizer: Tokenizer) -> list[str]:
        o = self.options
        if o.dataset_length != "auto":
            return [o.dataset_length]
        if o.data_dir:
            known = data.local_configs(Path(o.data_dir).expanduser(), self.qa)
        else:
            known = list(PUBLISHED_LENGTHS[o.dataset])
        rough = length - o.max_new_tokens - self._frame(tokenizer, "Where is Mary?").overhead
        fitting = [c for c in known if data.nominal_input_tokens(c) <= rough]
        if not fitting:
            raise LongctxError(
                f"{self.name}: no published length fits {length} tokens "
                f"(lengths available: {', '.join(known) or 'none'})"
            )
        return fitting[::-1]

    def _published(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        vocabulary = self._vocabulary()
        pinned = self.options.dataset_length != "auto"
        for length in grid.lengths:
            for config in self._candidate_lengths(length, tokenizer):
                cell = self._published_cell(config, length, grid, tokenizer, vocabulary)
                if cell:
                    yield from cell
                    break
                if pinned:
                    raise LongctxError(
                        f"{self.name}: no published {config} sample fits length {length} with this "
                        "tokenizer; use a larger length or a shorter -O dataset_length"
                    )
            else:
                raise LongctxError(
                    f"{self.name}: no published sample fits {length} tokens with this tokenizer"
                )

    def _published_cell(
        self, config: str, length: int, grid: Grid, tokenizer: Tokenizer, vocabulary: frozenset[str] | None
    ) -> list[Sample]:
        """Up to ``grid.samples`` samples of published ``config`` that fit ``length``.

        Rows are taken in a seeded order; a row whose prompt would not fit (the served tokenizer
        counts more tokens than GPT-2 did) is passed over for the next one.
        """
        o = self.options
        rows = data.load_published(o.dataset, config, self.qa, o.data_dir)
        order = list(range(len(rows)))
        stable_rng(self.name, grid.seed, config).shuffle(order)
        out: list[Sample] = []
        for row_index in order:
            if len(out) == grid.samples:
                break
            row = rows[row_index]
            text = str(row["input"]).strip()
            spans = locate_facts(text, vocabulary) if vocabulary else []
            context, offsets = segment_ids(text, spans, tokenizer)
            pf = self._frame(tokenizer, str(row["question"]))
            if len(context) > context_budget(length, pf, o.max_new_tokens):
                continue
            out.append(
                self._sample(
                    sample_id=f"{self.name}|{length}|{config}|i{row_index}",
                    pf=pf,
                    context=context,
                    tokenizer=tokenizer,
                    length=length,
                    depth=None,
                    offsets=offsets,
                    target=str(row["target"]),
                    question=str(row["question"]),
                    with_choices=bool(grid.choices),
                    metadata={
                        "dataset": o.dataset,
                        "dataset_length": config,
                        "row": row_index,
                        "question_id": f"{self.qa}/{config}/{row_index}",
                        "facts_located": len(offsets) if vocabulary else None,
                    },
                )
            )
        return sorted(out, key=lambda s: s.metadata["row"])

    # ---- generated samples ----------------------------------------------------------------------
    def _babi(self) -> list[data.BabiQuestion]:
        if self._questions is None:
            self._questions = data.babi_questions(self.qa, self.options.facts_dir, self.options.facts_split)
        return self._questions

    def _generated(self, grid: Grid, tokenizer: Tokenizer) -> Iterator[Sample]:
        o = self.options
        questions = self._babi()
        if self._corpus is None:
            self._corpus = data.BackgroundCorpus(o.background_dir or "")
        pool = SentencePool(self._corpus, tokenizer)
        order = list(range(len(questions)))
        stable_rng(self.name, grid.seed, "stories").shuffle(order)
        fact_ids: dict[str, list[int]] = {}
        frames: dict[str, PromptFrame] = {}
        depths: Sequence[float | None] = grid.depths or (None,)
        for length in grid.lengths:
            index = 0
            for qi in order:
                if index == grid.samples:
                    break
                q = questions[qi]
                if q.question not in frames:
                    frames[q.question] = self._frame(tokenizer, q.question)
                pf = frames[q.question]
                budget = context_budget(length, pf, o.max_new_tokens)
                # the authors' filter: max_n_facts = length // 8, the question's row included
                if len(q.facts) + 1 > budget // 8:
                    continue
                missing = [f for f in q.facts if f not in fact_ids]
                if missing:
                    fact_ids.update(
                        zip(missing, encode_many(tokenizer, [" " + f for f in missing]), strict=True)
                    )
                facts = [fact_ids[f] for f in q.facts]
                if sum(len(f) for f in facts) > budget:
                    continue
                needle_order = list(q.supporting) + [i for i in range(len(facts)) if i not in q.supporting]
                for depth in depths:
                    ctx = build_context(
                        facts,
                        pool,
                        (self.name, grid.seed, length, index, "background"),
                        (self.name, grid.seed, length, index, depth, "placement"),
                        budget,
                        depth_window(depth, o.depth_window),
                        tokenizer,
                    )
                    depth_tag = "all" if depth is None else f"{depth:g}"
                    yield self._sample(
                        sample_id=f"{self.name}|{length}|d{depth_tag}|i{index}",
                        pf=pf,
                        context=ctx.ids,
                        tokenizer=tokenizer,
                        length=length,
                        depth=None if depth is None else float(depth),
                        offsets=[ctx.fact_offsets[i] for i in needle_order],
                        target=q.answer,
                        question=q.question,
                        with_choices=bool(grid.choices),
                        metadata={
                            "babi": q.ref,
                            "n_facts": len(facts),
                            "n_targets": len(q.supporting),
                            "fact_window": list(ctx.window),
                            "prefix_group": f"{self.name}|{length}|{index}",
                        },
                    )
                index += 1
            if index < grid.samples:
                raise LongctxError(
                    f"{self.name}: only {index} of {grid.samples} bAbI questions fit length {length}"
                )

    # ---- longctx score ------------------------------------------------------------------------
    def scoring_samples(self) -> Iterator[Sample]:
        """Published samples (question + target) for ``longctx score``; ids ``<task>|<length>|i<row>``,
        ``metadata["question_id"]`` = ``qaN/<length>/<row>``."""
        o = self.options
        if o.source == "generate":
            raise LongctxError(
                f"{self.name}: generated samples depend on the tokenizer; give each prediction "
                "line 'references' and 'question' instead"
            )
        if o.dataset_length != "auto":
            configs = [o.dataset_length]
        elif o.data_dir:
            configs = data.local_configs(Path(o.data_dir).expanduser(), self.qa)
        else:
            raise LongctxError(
                f"{self.name}: say which published length the ids refer to "
                "(-O dataset_length=4k) or pass -O data_dir=DIR"
            )
        for config in configs:
            rows = data.load_published(o.dataset, config, self.qa, o.data_dir, ("question", "target"))
            for i, row in enumerate(rows):
                yield Sample(
                    id=f"{self.name}|{config}|i{i}",
                    task=self.name,
                    prompt=Prompt(messages=()),
                    references=(str(row["target"]),),
                    length=0,
                    context_tokens=0,
                    max_new_tokens=o.max_new_tokens,
                    metadata={
                        "qa": self.qa,
                        "question": str(row["question"]),
                        "dataset_length": config,
                        "row": i,
                        "question_id": f"{self.qa}/{config}/{i}",
                    },
                )


for _qa, _title in BABI_TASKS.items():
    task(
        f"babilong/{_qa}", qa=_qa, summary=f"BABILong {_qa}: {_title}, facts hidden in long background text"
    )(Babilong)
