"""What a run spent: tokens sent, computed and generated, LM calls, retrieved tokens, wall time,
throughput and memory-state size, per (run, task, length). Pure functions, no I/O.

Runner-specific fields are read from ``Result.extra`` when present: ``extra["rlm"]`` (``root_calls``,
``sub_calls``, ``cost_usd``: :meth:`longctx.runners.rlm.agent.Budget.summary`), ``extra["rag"]``
(``retrieved_tokens``) and ``extra["state_bytes"]`` (the ``hope`` runner's memory state).

USD (:mod:`longctx._prices`): each result is priced from its own token counts, the cached share
at the cached-input rate, with the price of its model in the table given (a local engine at 0 USD
unless the table prices it); every group says which table entries it used (``pricing``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import msgspec

from longctx._prices import Pricing, PriceTable, manifest_is_local, result_usd
from longctx._records import Result
from longctx.reports.aggregate import DepthAxis, group, sort_bins

#: result -> the price it is charged at (None: no price)
Pricer = Callable[[Result], "Pricing | None"]



class Cost(msgspec.Struct, frozen=True):
    """What one run spent on one task at one length (or all lengths), per sample unless noted.

    Every sample counts, errors included (a failed request cost time too). A field is None when
    no sample of the group reports it.
    """

    run: str
    """Run label."""
    task: str
    """Task name."""
    length: int | None
    """Context budget; None = all lengths."""
    samples: int
    """Results in the group."""
    prompt_tokens: float | None
    """Prompt tokens sent to the engine (summed over all LM calls for ``rlm``)."""
    computed_tokens: float | None
    """Prompt tokens computed, i.e. not served from the prefix cache (samples reporting both)."""
    cached_share: float | None
    """Share of the prompt tokens served from the prefix cache."""
    completion_tokens: float | None
    """Generated tokens."""
    root_calls: float | None
    """Root-LM calls (``rlm``: ``extra["rlm"]["root_calls"]``)."""
    sub_calls: float | None
    """Sub-LM calls (``rlm``: ``extra["rlm"]["sub_calls"]``)."""
    retrieved_tokens: float | None
    """Context tokens the retriever passed to the model (``rag``: ``extra["rag"]["retrieved_tokens"]``)."""
    latency_s: float | None
    """Wall time per sample, seconds."""
    tokens_per_s: float | None
    """(computed prompt + generated tokens) / wall time, over samples reporting all three."""
    generated_per_s: float | None
    """Generated tokens / wall time."""
    state_bytes: int | None
    """Largest memory-state size, bytes (``hope``: ``extra["state_bytes"]``)."""
    cost_usd: float | None
    """Total API cost reported by the runner (``rlm``), dollars."""
    tokens_estimated: int = 0
    """Samples whose token counts the runner estimated from characters (``rlm`` with an engine that
    reported no usage: ``extra["rlm"]["tokens_estimated"]``)."""
    usd_per_sample: float | None = None
    """Mean USD of a sample, over the samples with a known cost (:mod:`longctx._prices`)."""
    usd_total: float | None = None
    """USD of those samples together."""
    usd_unknown: int = 0
    """Samples of unknown cost: their model has no price, or their engine reported no tokens."""
    pricing: list[Pricing] = []
    """The prices used (one per model; which table entry, from which file or the default table)."""
    unpriced: list[str] = []
    """Models of the group without a price (not local, not in the table)."""


class CellCost(msgspec.Struct, frozen=True):
    """USD of one (run, task, length, depth bin) cell."""

    run: str
    """Run label."""
    task: str
    """Task name."""
    length: int
    """Context budget, tokens."""
    depth_bin: float | None
    """Depth bin (:class:`~longctx.reports.aggregate.DepthAxis`)."""
    samples: int
    """Results in the cell."""
    usd_per_sample: float | None
    """Mean USD of a sample with a known cost."""
    usd_total: float | None
    """USD of the cell's samples with a known cost."""
    usd_unknown: int
    """Samples of unknown cost."""


def pricer(prices: PriceTable | None, local: bool = False) -> Pricer:
    """Result -> its :class:`~longctx._prices.Pricing` from ``prices`` (one lookup per model);
    ``local``: the run used a local engine (unpriced models cost 0 USD). No table: no USD."""
    seen: dict[str, Pricing | None] = {}

    def price(r: Result) -> Pricing | None:
        if prices is None:
            return None
        if r.model not in seen:
            seen[r.model] = prices.pricing(r.model, local)
        return seen[r.model]

    return price


def pricers(runs: Sequence[Any], prices: PriceTable | None) -> dict[str, Pricer]:
    """Run label -> :func:`pricer`, for loaded runs (:class:`~longctx.reports.runs.RunData`):
    local engines come from each manifest (:func:`~longctx._prices.manifest_is_local`)."""
    return {run.label: pricer(prices, manifest_is_local(run.manifest)) for run in runs}


def _usd(
    results: Sequence[Result], price: Pricer | None
) -> tuple[list[float], int, list[Pricing], list[str]]:
    """(known USD per result, how many unknown, prices used, unpriced models)."""
    known: list[float] = []
    used: dict[str, Pricing] = {}
    unpriced: dict[str, None] = {}
    for r in results:
        p = price(r) if price is not None else None
        if p is None:
            unpriced[r.model] = None
            continue
        used[r.model] = p
        value = result_usd(r, p)
        if value is not None:
            known.append(value)
    return known, len(results) - len(known), list(used.values()), list(unpriced) if price else []


def _extra(r: Result, *path: str) -> Any:
    node: Any = r.extra
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def cost_of(
    results: Sequence[Result], run: str, task: str, length: int | None, price: Pricer | None = None
) -> Cost:
    """:class:`Cost` of one group of results (USD with ``price``)."""
    prompt = [r.prompt_tokens for r in results if r.prompt_tokens is not None]
    both = [
        (r.prompt_tokens, r.cached_tokens)
        for r in results
        if r.prompt_tokens is not None and r.cached_tokens is not None
    ]
    completion = [r.completion_tokens for r in results if r.completion_tokens is not None]
    latency = [r.latency_s for r in results]
    rates = [
        (r.prompt_tokens - (r.cached_tokens or 0), r.completion_tokens, r.latency_s)
        for r in results
        if r.prompt_tokens is not None and r.completion_tokens is not None and r.latency_s > 0
    ]
    gen = [
        (r.completion_tokens, r.latency_s)
        for r in results
        if r.completion_tokens is not None and r.latency_s > 0
    ]
    state = [v for r in results if (v := _extra(r, "state_bytes")) is not None]
    usd = [v for r in results if (v := _extra(r, "rlm", "cost_usd")) is not None]
    prompt_sum = sum(p for p, _ in both)
    known, unknown, used, unpriced = _usd(results, price)
    return Cost(
        run=run,
        task=task,
        length=length,
        samples=len(results),
        prompt_tokens=_mean(prompt),
        computed_tokens=_mean([p - c for p, c in both]),
        cached_share=sum(c for _, c in both) / prompt_sum if prompt_sum else None,
        completion_tokens=_mean(completion),
        root_calls=_mean([v for r in results if (v := _extra(r, "rlm", "root_calls")) is not None]),
        sub_calls=_mean([v for r in results if (v := _extra(r, "rlm", "sub_calls")) is not None]),
        retrieved_tokens=_mean(
            [v for r in results if (v := _extra(r, "rag", "retrieved_tokens")) is not None]
        ),
        latency_s=_mean(latency),
        tokens_per_s=sum(p + c for p, c, _ in rates) / sum(t for *_, t in rates) if rates else None,
        generated_per_s=sum(c for c, _ in gen) / sum(t for _, t in gen) if gen else None,
        state_bytes=int(max(state)) if state else None,
        cost_usd=sum(usd) if usd else None,
        tokens_estimated=sum(
            1
            for r in results
            if isinstance(r.extra.get("rlm"), dict) and r.extra["rlm"].get("tokens_estimated")
        ),
        usd_per_sample=_mean(known),
        usd_total=sum(known) if known else None,
        usd_unknown=unknown,
        pricing=used,
        unpriced=unpriced,
    )


def costs(runs: Mapping[str, Sequence[Result]], prices: Mapping[str, Pricer] | None = None) -> list[Cost]:
    """Per run and task: a :class:`Cost` per length, then one over all lengths (``length`` None);
    USD for the runs ``prices`` has a :func:`pricer` for."""
    out: list[Cost] = []
    for run, results in runs.items():
        price = (prices or {}).get(run)
        for task, task_results in group(results, lambda r: r.task).items():
            by_len = group(task_results, lambda r: r.length)
            out += [cost_of(by_len[n], run, task, n, price) for n in sorted(by_len)]
            out.append(cost_of(task_results, run, task, None, price))
    return out


def cell_costs(
    runs: Mapping[str, Sequence[Result]], axes: Mapping[str, DepthAxis], prices: Mapping[str, Pricer]
) -> list[CellCost]:
    """USD per (run, task, length, depth bin), for the runs ``prices`` has a pricer for."""
    out: list[CellCost] = []
    for run, results in runs.items():
        if run not in prices:
            continue
        for task, task_results in group(results, lambda r: r.task).items():
            axis = axes[task]
            groups = group(task_results, lambda r, a=axis: (r.length, a.bin(r)))
            for length in sorted({k[0] for k in groups}):
                for depth in sort_bins(k[1] for k in groups if k[0] == length):
                    cell = groups[(length, depth)]
                    known, unknown, _, _ = _usd(cell, prices[run])
                    out.append(CellCost(run, task, length, depth, len(cell), _mean(known),
                                        sum(known) if known else None, unknown))
    return out


def price_notes(rows: Collection[Cost]) -> list[str]:
    """One line per price used (``gpt-4o-mini: gpt-4o-mini from the default table (read ...)``,
    rates included) and per model without a price, for the pages."""
    notes: dict[str, None] = {}
    for c in rows:
        for p in c.pricing:
            rates = "" if p.entry is None else (
                f": ${p.input:g} input, ${p.cached_input:g} cached input, ${p.output:g} output "
                "per million tokens"
            )
            notes[f"{p.model}: {p.label}{rates}"] = None
        for m in c.unpriced:
            notes[f"{m}: no price (add it to a price file: --prices FILE)"] = None
    return list(notes)
