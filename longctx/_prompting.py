"""Rendering prompts with the served model's chat template, and fitting text to token budgets.

Tasks build the user message around a ``{context}`` slot. :class:`PromptFrame` renders the chat
template once with a sentinel in that slot and splits it into a prefix and a suffix (as token ids),
so a context of ``n`` tokens always yields a prompt of ``frame.overhead + n`` tokens: the budget
is computed, never searched for by re-tokenizing candidate texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from longctx._errors import LongctxError
from longctx._protocols import Tokenizer
from longctx._records import Message, Prompt

_SLOT = "{context}"
_SENTINEL = "\u2063LONGCTX-CONTEXT\u2063"


@dataclass(frozen=True)
class PromptFrame:
    """A rendered prompt with a hole where the context goes (token ids on both sides)."""

    system: str | None
    """Optional system message."""
    user_template: str
    """User message with exactly one ``{context}`` slot."""
    answer_prefix: str
    """Prefilled after the assistant turn starts (completions mode)."""
    prefix_ids: tuple[int, ...]
    """Tokens before the context."""
    suffix_ids: tuple[int, ...]
    """Tokens after the context (question, end of turn, generation prompt, answer prefix)."""
    question: str | None = None
    """The task's question as text, separate from the context (``Prompt.question``)."""

    @property
    def overhead(self) -> int:
        """Prompt tokens that are not context."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    def messages(self, context: str) -> tuple[Message, ...]:
        """The conversation with ``context`` filled in (chat mode, RLM)."""
        user = Message("user", self.user_template.replace(_SLOT, context))
        return ((Message("system", self.system),) if self.system else ()) + (user,)

    def prompt(self, context_ids: Sequence[int], tokenizer: Tokenizer, context_text: str | None = None,
               text: str | None = None) -> Prompt:
        """The full prompt around ``context_ids`` (text decoded from the same ids unless the caller,
        who knows what the ids were tokenized from, gives ``context_text`` / the whole ``text``)."""
        joined = list(self.prefix_ids)  # one list, one tuple: a third of the copying of tuple + tuple
        joined += context_ids
        joined += self.suffix_ids
        ids = tuple(joined)
        context = context_text if context_text is not None else tokenizer.decode(context_ids)
        start = self.user_template.index(_SLOT)
        return Prompt(
            messages=self.messages(context),
            text=text if text is not None else tokenizer.decode(ids),
            answer_prefix=self.answer_prefix,
            token_ids=ids,
            context_span=(start, start + len(context)),
            context_token_span=(len(self.prefix_ids), len(self.prefix_ids) + len(context_ids)),
            question=self.question,
        )


def frame(
    tokenizer: Tokenizer, user_template: str, *, answer_prefix: str = "", system: str | None = None,
    question: str | None = None,
) -> PromptFrame:
    """Render ``user_template`` (one ``{context}`` slot) with the tokenizer's chat template.

    ``question`` is the task's question as text (what retrievers search with), kept on the prompt.
    """
    if user_template.count(_SLOT) != 1:
        raise ValueError("user_template needs exactly one {context} slot")
    msgs = [Message("user", user_template.replace(_SLOT, _SENTINEL))]
    if system:
        msgs.insert(0, Message("system", system))
    rendered = tokenizer.render_chat(msgs) + answer_prefix
    before, sep, after = rendered.partition(_SENTINEL)
    if not sep:
        raise LongctxError(f"the chat template of {tokenizer.name} drops the user message")
    return PromptFrame(
        system=system,
        user_template=user_template,
        answer_prefix=answer_prefix,
        prefix_ids=tuple(tokenizer.encode(before)),
        suffix_ids=tuple(tokenizer.encode(after)),
        question=question,
    )


def context_budget(length: int, frame_: PromptFrame, max_new_tokens: int) -> int:
    """Tokens left for the context so that prompt + generation budget <= ``length``."""
    budget = length - max_new_tokens - frame_.overhead
    if budget <= 0:
        raise LongctxError(
            f"length {length} is too small: the template takes {frame_.overhead} tokens and the "
            f"answer {max_new_tokens}"
        )
    return budget
