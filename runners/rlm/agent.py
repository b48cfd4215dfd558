"""The RLM root loop: a root LM writes code against a REPL holding the context, sub-LMs read pieces.

One :class:`Episode` answers one sample: it starts a :class:`~.sandbox.Sandbox` holding ``context``,
then per iteration asks the root LM for a turn, runs every ```` ```repl ```` block of the reply in
the sandbox (answering the code's ``llm_query`` calls with the sub-LM), shows the truncated output
back, and stops when an answer is submitted (``answer["ready"] = True`` in code, ``FINAL(...)`` or
``FINAL_VAR(name)`` outside code), when ``max_iterations`` run out, or when a budget is exceeded.
Prompt text and parsing: :mod:`.prompts` (after the paper, source cited there).

Budgets (:class:`Budget`, shared with recursive child episodes) are checked before every root
call and at *every* sub-call, inside the cell that makes it: a cell that fans out past
``max_sub_calls`` is stopped at the first call over the limit (the sandbox is killed), and the
episode ends with ``error = "budget exceeded: sub_calls (...)"``. Exceeding a budget never
produces an answer.

Trajectory schema (``Generation.extra["trajectory"]``, copied to ``Result.extra`` by the sweep;
plain JSON): a list with one dict per iteration, in order::

    {"iteration": 1,            # 1-based
     "response": "...",         # the root LM's reply
     "code": "...",             # the ```repl blocks run, joined by blank lines ("" if none)
     "stdout": "...",           # what the REPL output shown back to the root was
     "sub_calls": [             # every sub-LM call the code made, in order
         {"prompt": "...",                        # cut at trajectory_prompt_chars (paper's marker)
          "response": "..." | None, "tokens": 123, "latency_s": 0.8,
          "error": None | "...",                  # (optional) failed call
          "trajectory": [...]}],                  # (optional) a recursive rlm_query's own iterations
     "tokens": 456,             # root + sub-call tokens of this iteration (estimated when unknown)
     "time_s": 1.2,             # wall time of the iteration
     "error": None | "...",     # cell traceback's last line or containment reason or LM failure
     "reasons": [...],          # every containment event of the iteration's cells
     "final": None | "..."}     # the answer submitted in this iteration
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from longctx._records import Message
from longctx.runners.rlm import prompts
from longctx.runners.rlm.sandbox import CellResult, Sandbox, SandboxConfig, SandboxStop, SubCallFailed


@dataclass(frozen=True)
class Completion:
    """One chat completion of a root or sub LM."""

    text: str | None
    """The reply; None when ``error`` is set."""
    prompt_tokens: int | None = None
    """Prompt tokens as counted by the engine."""
    completion_tokens: int | None = None
    """Generated tokens."""
    latency_s: float = 0.0
    """Wall time of the request."""
    error: str | None = None
    """One-line failure."""
    prompt_chars: int = 0
    """Characters of the prompt (for token estimates when the engine reports none)."""


class ChatLM(Protocol):
    """A chat model as the RLM needs it (root or sub): conversations in, completions out."""

    name: str
    """Identity for trajectories and manifests."""

    def chat(self, conversations: Sequence[Sequence[Message]], max_tokens: int) -> list[Completion]:
        """One completion per conversation, in order (run concurrently where the backend can)."""

    def context_window(self) -> int | None:
        """The model's context window in tokens, if known."""


def estimate_tokens(chars: int) -> int:
    """Tokens of ``chars`` characters when the engine does not say (4 characters per token)."""
    return math.ceil(chars / 4)


@dataclass(frozen=True)
class Limits:
    """Per-episode budgets; None = unlimited."""

    max_sub_calls: int | None = 200
    """Sub-LM calls (each prompt of a batch counts; recursive calls count too)."""
    max_tokens: int | None = None
    """Root + sub tokens, prompt and completion."""
    max_time_s: float | None = 1800.0
    """Wall time of the episode."""
    max_cost_usd: float | None = None
    """Spend, priced with the two prices below."""
    price_prompt_per_mtok: float | None = None
    """USD per million prompt tokens (cost is tracked only when both prices are set)."""
    price_completion_per_mtok: float | None = None
    """USD per million completion tokens."""


class BudgetExceeded(SandboxStop):
    """A budget ran out; ``reason`` = ``"budget exceeded: <what> (...)"``."""


class Budget:
    """Counters of one episode tree (children share their parent's), checked at every call."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.started = time.monotonic()
        self.sub_calls = 0
        self.root_calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.estimated = False
        priced = limits.price_prompt_per_mtok is not None and limits.price_completion_per_mtok is not None
        self.cost_usd: float | None = 0.0 if priced else None
        self._lock = threading.Lock()

    @property
    def tokens(self) -> int:
        """Tokens used so far."""
        return self.prompt_tokens + self.completion_tokens

    def remaining_s(self) -> float | None:
        """Seconds left of the time budget."""
        if self.limits.max_time_s is None:
            return None
        return self.limits.max_time_s - (time.monotonic() - self.started)

    def check(self) -> None:
        """Raise :class:`BudgetExceeded` if time, tokens or cost are used up."""
        lim = self.limits
        left = self.remaining_s()
        if left is not None and left <= 0:
            raise BudgetExceeded(f"budget exceeded: time ({lim.max_time_s:g} s)")
        if lim.max_tokens is not None and self.tokens > lim.max_tokens:
            raise BudgetExceeded(f"budget exceeded: tokens ({self.tokens} of {lim.max_tokens})")
        if lim.max_cost_usd is not None and self.cost_usd is not None and self.cost_usd > lim.max_cost_usd:
            raise BudgetExceeded(f"budget exceeded: cost (${self.cost_usd:.4f} of ${lim.max_cost_usd:g})")

    def reserve_sub_calls(self, n: int) -> None:
        """Count ``n`` sub-calls about to be made; refuse them all if that passes the limit."""
        with self._lock:
            limit = self.limits.max_sub_calls
            if limit is not None and self.sub_calls + n > limit:
                raise BudgetExceeded(
                    f"budget exceeded: sub_calls (limit {limit}; {self.sub_calls} made, {n} more asked)"
                )
            self.sub_calls += n

    def charge(self, completion: Completion) -> int:
        """Add a completion's tokens (and cost); returns its tokens."""
        with self._lock:
            prompt = completion.prompt_tokens
            done = completion.completion_tokens
            if prompt is None:
                prompt, self.estimated = estimate_tokens(completion.prompt_chars), True
            if done is None:
                done = estimate_tokens(len(completion.text or ""))
                self.estimated = self.estimated or bool(completion.text)
            self.prompt_tokens += prompt
            self.completion_tokens += done
            if self.cost_usd is not None:
                lim = self.limits
                self.cost_usd += (
                    prompt * lim.price_prompt_per_mtok + done * lim.price_completion_per_mtok
                ) / 1e6
            return prompt + done

    def summary(self) -> dict[str, Any]:
        """Plain-JSON usage for ``Generation.extra``."""
        return {
            "root_calls": self.root_calls,
            "sub_calls": self.sub_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens_estimated": self.estimated,
            "cost_usd": self.cost_usd,
            "time_s": round(time.monotonic() - self.started, 3),
        }


@dataclass(frozen=True)
class AgentSettings:
    """How the root loop runs."""

    max_iterations: int = 30
    """Root turns (the paper's default: 30)."""
    max_depth: int = 1
    """1: sub-calls are plain LM calls (the paper's default); 2+: ``rlm_query`` runs child RLMs."""
    root_max_tokens: int = 1024
    """Generation budget of one root turn."""
    sub_max_tokens: int = 512
    """Generation budget of one sub-LM call."""
    answer_convention: Literal["answer", "final"] = "answer"
    """What the prompt teaches: ``answer`` (dict) or ``final`` (FINAL/FINAL_VAR); both are accepted."""
    on_max_iterations: Literal["ask", "error"] = "ask"
    """Out of turns: ``ask`` the root once more for an answer (the paper) or record an ``error``."""
    trajectory_prompt_chars: int | None = 4000
    """Sub-call prompts longer than this are cut in the trajectory (they carry context chunks);
    None keeps them whole."""


@dataclass
class EpisodeResult:
    """The outcome of one episode."""

    answer: str | None
    """The submitted answer; None when ``error`` is set."""
    error: str | None
    """Why there is no answer (budget, root LM failure, sandbox failure, no answer)."""
    finish: str
    """``answer``, ``final``, ``final_var``, ``max_iterations``, ``budget``, ``error``."""
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    """One dict per iteration (schema in the module docstring)."""
    layers: dict[str, str] = field(default_factory=dict)
    """The sandbox's isolation layers."""


class RootFailed(Exception):
    """The root LM returned an error."""


class Episode:
    """One RLM run over one context (a child episode for each recursive ``rlm_query``)."""

    def __init__(
        self,
        root: ChatLM,
        sub: ChatLM,
        settings: AgentSettings,
        sandbox: SandboxConfig,
        budget: Budget,
        depth: int = 0,
    ):
        self.root, self.sub, self.settings, self.sandbox_config = root, sub, settings, sandbox
        self.budget, self.depth = budget, depth
        self._calls: list[dict[str, Any]] = []

    # -- LM calls ----------------------------------------------------------------------------
    def _ask_root(self, messages: list[Message]) -> tuple[str, int]:
        self.budget.check()
        [completion] = self.root.chat([messages], self.settings.root_max_tokens)
        self.budget.root_calls += 1
        tokens = self.budget.charge(completion)
        if completion.error is not None or completion.text is None:
            raise RootFailed(f"root LM failed: {completion.error or 'no text'}")
        self.budget.check()
        return completion.text, tokens

    def _on_llm(self, prompt_list: list[str], recursive: bool) -> list[str]:
        """Answer a cell's sub-calls; budgets are checked before and after, inside the cell."""
        self.budget.check()
        self.budget.reserve_sub_calls(len(prompt_list))
        if recursive and self.depth + 1 < self.settings.max_depth:
            return [self._child(p) for p in prompt_list]
        convs = [[Message("user", p)] for p in prompt_list]
        completions = self.sub.chat(convs, self.settings.sub_max_tokens)
        failed = None
        for prompt, done in zip(prompt_list, completions):
            tokens = self.budget.charge(done)
            record = {
                "prompt": self._kept(prompt),
                "response": done.text,
                "tokens": tokens,
                "latency_s": round(done.latency_s, 4),
            }
            if done.error is not None or done.text is None:
                record["error"] = done.error or "no text"
                failed = failed or record["error"]
            self._calls.append(record)
        self.budget.check()
        if failed:
            raise SubCallFailed(f"sub-LM failed: {failed}")
        return [c.text or "" for c in completions]

    def _kept(self, prompt: str) -> str:
        """``prompt`` as stored in the trajectory."""
        limit = self.settings.trajectory_prompt_chars
        return prompt if limit is None else prompts.truncate(prompt, limit)

    def _child(self, prompt: str) -> str:
        start = time.monotonic()
        tokens_before = self.budget.tokens
        child = Episode(self.sub, self.sub, self.settings, self.sandbox_config, self.budget, self.depth + 1)
        result = child.run(prompts.TaskView(prompt, "The task is written in `context`; do what it asks."))
        record = {
            "prompt": self._kept(prompt),
            "response": result.answer,
            "tokens": self.budget.tokens - tokens_before,
            "latency_s": round(time.monotonic() - start, 4),
            "trajectory": result.trajectory,
        }
        if result.error:
            record["error"] = result.error
        self._calls.append(record)
        if result.error and result.error.startswith("budget exceeded"):
            raise BudgetExceeded(result.error)
        if result.error:
            raise SubCallFailed(f"recursive RLM failed: {result.error}")
        return result.answer or ""

    # -- the loop ----------------------------------------------------------------------------
    def _cell_limit(self) -> tuple[float, str]:
        cell = self.sandbox_config.cell_timeout_s
        left = self.budget.remaining_s()
        if left is not None and left < cell:
            return max(left, 0.01), "budget exceeded: time"
        return cell, "cell timeout"

    def run(self, view: prompts.TaskView) -> EpisodeResult:
        """Run the root loop over ``view`` until an answer, a budget or the iteration limit."""
        s = self.settings
        sub_window = self.sub.context_window()
        messages = [
            Message(
                "system",
                prompts.system_prompt(
                    answer_convention=s.answer_convention,
                    recursive=self.depth + 1 < s.max_depth,
                    sub_chars=sub_window * 3 if sub_window else None,
                    stdout_chars=self.sandbox_config.stdout_chars,
                ),
            ),
            Message("user", prompts.first_user_message(view)),
        ]
        trajectory: list[dict[str, Any]] = []
        sandbox = Sandbox(view.context, self.sandbox_config, on_llm=self._on_llm)
        try:
            try:
                sandbox.start()
            except Exception as exc:  # noqa: BLE001 - any start-up failure is this episode's error
                return EpisodeResult(None, f"sandbox failed: {exc}", "error")
            for iteration in range(1, s.max_iterations + 1):
                messages.append(Message("user", prompts.turn_message(iteration, s.max_iterations)))
                entry, outcome = self._iteration(iteration, messages, sandbox)
                trajectory.append(entry)
                if outcome is not None:
                    outcome.trajectory, outcome.layers = trajectory, dict(sandbox.layers)
                    return outcome
            outcome = self._out_of_turns(messages, trajectory)
            outcome.trajectory, outcome.layers = trajectory, dict(sandbox.layers)
            return outcome
        finally:
            sandbox.close()

    def _iteration(
        self, iteration: int, messages: list[Message], sandbox: Sandbox
    ) -> tuple[dict[str, Any], EpisodeResult | None]:
        start = time.monotonic()
        self._calls = []
        entry: dict[str, Any] = {
            "iteration": iteration,
            "response": "",
            "code": "",
            "stdout": "",
            "sub_calls": self._calls,
            "tokens": 0,
            "time_s": 0.0,
            "error": None,
            "reasons": [],
            "final": None,
        }

        def finish(outcome: EpisodeResult | None) -> tuple[dict[str, Any], EpisodeResult | None]:
            entry["time_s"] = round(time.monotonic() - start, 4)
            entry["tokens"] += sum(c.get("tokens") or 0 for c in self._calls)
            return entry, outcome

        try:
            text, tokens = self._ask_root(messages)
        except (RootFailed, BudgetExceeded) as exc:
            entry["error"] = str(exc)
            return finish(
                EpisodeResult(None, str(exc), "budget" if isinstance(exc, BudgetExceeded) else "error")
            )
        entry["response"], entry["tokens"] = text, tokens
        blocks = prompts.code_blocks(text)
        entry["code"] = "\n\n".join(blocks)
        outputs: list[str] = []
        final: dict[str, str] | None = None
        for number, code in enumerate(blocks, 1):
            limit, why = self._cell_limit()
            cell = sandbox.exec(code, timeout_s=limit, timeout_reason=why)
            entry["reasons"] += cell.reasons
            entry["error"] = _cell_error(cell) or entry["error"]
            header = f"REPL output (block {number}):" if len(blocks) > 1 else "REPL output:"
            outputs.append(f"{header}\n{self._show(cell)}")
            budget_stop = next((r for r in cell.reasons if r.startswith("budget exceeded")), None)
            if budget_stop:
                entry["stdout"] = "\n\n".join(outputs)
                entry["error"] = budget_stop
                return finish(EpisodeResult(None, budget_stop, "budget"))
            if cell.final is not None:
                final = cell.final
                break
        if final is None and (marker := prompts.final_marker(text)) is not None:
            kind, value = marker
            if kind == "final":
                final = {"kind": "final", "content": value}
            else:
                found = sandbox.get_var(value)
                if found is None:
                    outputs.append(
                        f"FINAL_VAR({value}): there is no REPL variable named {value!r}; create it first."
                    )
                else:
                    final = {"kind": "final_var", "content": found}
        entry["stdout"] = "\n\n".join(outputs)
        messages.append(Message("assistant", text))
        if outputs:
            messages.append(Message("user", "\n\n".join(outputs)))
        if final is not None:
            entry["final"] = final["content"]
            return finish(EpisodeResult(final["content"], None, final["kind"]))
        return finish(None)

    def _show(self, cell: CellResult) -> str:
        """A cell's output as the root LM sees it (the paper's truncation)."""
        parts = [cell.stdout] if cell.stdout else []
        if cell.error:
            parts.append(cell.error.rstrip())
        for reason in cell.reasons:
            parts.append(f"[sandbox] {reason}")
        if cell.stopped:
            parts.append(
                "[sandbox] the REPL was restarted: variables from earlier cells are gone "
                "(`context` is still there)"
            )
        text = "\n".join(parts) if parts else "No output"
        limit = self.sandbox_config.stdout_chars
        return prompts.truncate(text, limit)

    def _out_of_turns(self, messages: list[Message], trajectory: list[dict[str, Any]]) -> EpisodeResult:
        n = self.settings.max_iterations
        if self.settings.on_max_iterations != "ask":
            return EpisodeResult(None, f"no answer after {n} iterations", "error")
        start = time.monotonic()
        entry: dict[str, Any] = {
            "iteration": n + 1,
            "response": "",
            "code": "",
            "stdout": "",
            "sub_calls": [],
            "tokens": 0,
            "time_s": 0.0,
            "error": None,
            "reasons": [],
            "final": None,
        }
        trajectory.append(entry)
        try:
            text, tokens = self._ask_root(messages + [Message("user", prompts.last_chance_message())])
        except (RootFailed, BudgetExceeded) as exc:
            entry["error"], entry["time_s"] = str(exc), round(time.monotonic() - start, 4)
            return EpisodeResult(None, str(exc), "budget" if isinstance(exc, BudgetExceeded) else "error")
        entry.update(
            response=text, tokens=tokens, final=text.strip(), time_s=round(time.monotonic() - start, 4)
        )
        return EpisodeResult(text.strip(), None, "max_iterations")


_INFORMATIONAL = ("output truncated", "stray processes killed")


def _cell_error(cell: CellResult) -> str | None:
    """The reason that stopped or broke a cell, else its exception's last line, else None."""
    serious = [r for r in cell.reasons if not r.startswith(_INFORMATIONAL)]
    if serious:
        return serious[0]
    if cell.error:
        return cell.error.strip().splitlines()[-1]
    return None
