"""Forced choice through vLLM: candidate log-likelihoods from prompt log-probabilities.

Each candidate is appended (in tokens) to the sample's prompt ids and vLLM is asked for the
log-probability of every prompt token (``prompt_logprobs=0``: the prompt token's own, no
alternatives); a candidate's log-likelihood is the sum over its positions (see
:mod:`longctx._choice`). Facts from the installed vLLM (0.32) source:

- ``/v1/completions`` takes ``prompt_logprobs`` (``entrypoints/openai/completion/protocol.py``)
  and returns, per choice, ``prompt_logprobs``: a list aligned with the prompt tokens, None first,
  then ``{token_id: {"logprob", "rank", "decoded_token"}}`` holding the prompt token itself
  (``completion/serving.py``; JSON keys are strings; ``-inf`` is clamped to ``-9999.0``); a list of
  token-id prompts in one request gives one choice per prompt (``index``). ``max_tokens`` must be at
  least 1 unless ``echo`` (with ``echo`` and ``max_tokens=0`` it runs 1 anyway): 1 here.
- The offline engine takes ``SamplingParams(prompt_logprobs=0)``; ``RequestOutput.prompt_logprobs``
  is the same list with ``Logprob`` objects.
- A request with ``prompt_logprobs`` does not read the prefix cache
  (``SamplingParams.skip_reading_prefix_cache`` defaults to True then, ``sampling_params.py``):
  cached tokens have no logits. Every candidate therefore recomputes the whole prompt: a sample
  costs (candidates) prefills, against one for generation.

One request per sample carries all its candidates; ``concurrency`` samples are in flight at a time
(submitted in the order given). A request that fails for good becomes the sample's error; an
engine that cannot be reached raises :class:`~longctx._errors.EngineGone` (from the client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from longctx.runners._openai_client import AsyncOpenAIClient, ClientConfig, RequestFailed, one_line

from longctx._choice import candidate_ids, choice_generation
from longctx._errors import EngineGone
from longctx._records import Generation, Sample

Encode = Callable[[str], Sequence[int]]


def prompt_and_candidates(sample: Sample, encode: Encode) -> tuple[list[int], list[list[int]]]:
    """The prompt ids (the sample's, else its text encoded) and each candidate's ids."""
    ids = sample.prompt.token_ids
    prompt = list(ids) if ids is not None else list(encode(sample.prompt.text))
    return prompt, candidate_ids(encode, sample)


def choice_body(model: str, prompt: Sequence[int], candidates: Sequence[Sequence[int]], seed: int) -> dict[str, Any]:
    """One ``/completions`` body asking for the prompt log-probs of prompt + each candidate."""
    return {
        "model": model,
        "prompt": [list(prompt) + list(c) for c in candidates],
        "max_tokens": 1,
        "temperature": 0.0,
        "seed": seed,
        "prompt_logprobs": 0,
    }


def _entry_logprob(entry: Any, token: int) -> float:
    """The log-prob of ``token`` in one position's entry (a JSON dict or vLLM's ``Logprob`` mapping)."""
    value = entry.get(str(token), entry.get(token)) if isinstance(entry, dict) else None
    if value is None:
        raise ValueError(f"no log-prob for token {token} at its position")
    return float(value["logprob"] if isinstance(value, dict) else value.logprob)


def candidate_loglik(prompt_logprobs: Sequence[Any] | None, n_prompt: int, candidate: Sequence[int]) -> float:
    """Sum of the candidate's token log-probs in a prompt-logprobs list of prompt + candidate."""
    if prompt_logprobs is None:
        raise ValueError("the server returned no prompt_logprobs (vLLM does; this endpoint may not)")
    if len(prompt_logprobs) != n_prompt + len(candidate):
        raise ValueError(f"prompt_logprobs has {len(prompt_logprobs)} positions, expected "
                         f"{n_prompt + len(candidate)}")
    return sum(_entry_logprob(prompt_logprobs[n_prompt + i], tok) for i, tok in enumerate(candidate))


def parse_choice_response(data: dict[str, Any], n_prompt: int, candidates: Sequence[Sequence[int]]) -> list[float]:
    """Every candidate's log-likelihood from a ``/completions`` response to :func:`choice_body`."""
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != len(candidates):
        raise ValueError(f"{len(choices)} choices in the response for {len(candidates)} candidates")
    return [candidate_loglik(c.get("prompt_logprobs"), n_prompt, cand) for c, cand in zip(choices, candidates)]


async def _choose_one(client: AsyncOpenAIClient, sample: Sample, encode: Encode, model: str, seed: int) -> Generation:
    start = time.monotonic()
    try:
        prompt, cands = prompt_and_candidates(sample, encode)
        data, latency, attempts = await client.post_json("/completions", choice_body(model, prompt, cands, seed))
        logliks = parse_choice_response(data, len(prompt), cands)
    except RequestFailed as exc:
        return Generation(sample.id, None, error=str(exc), latency_s=time.monotonic() - start)
    except ValueError as exc:
        return Generation(sample.id, None, error=one_line(str(exc)), latency_s=time.monotonic() - start)
    return choice_generation(sample, logliks, [len(c) for c in cands], latency_s=latency, prompt_tokens=len(prompt),
                             extra={"attempts": attempts} if attempts > 1 else {})


def choose_all(
    config: ClientConfig, samples: Sequence[Sample], encode: Encode, *, model: str, seed: int,
    concurrency: int = 4, engine_alive: Callable[[], bool] | None = None,
) -> Iterator[Generation]:
    """Forced-choice generations for ``samples`` through a server, ``concurrency`` samples at a time
    (in the order given; a batch's results are yielded when the batch is done)."""
    workers = max(1, int(concurrency))
    with asyncio.Runner() as loop:
        client = loop.run(_open(config, workers, engine_alive))
        try:
            for i in range(0, len(samples), workers):
                batch = samples[i:i + workers]
                done = loop.run(_gather(client, batch, encode, model, seed))
                yield from done
        finally:
            loop.run(client.__aexit__(None, None, None))


async def _open(config: ClientConfig, workers: int, engine_alive: Callable[[], bool] | None) -> AsyncOpenAIClient:
    return AsyncOpenAIClient(config, max_connections=workers, engine_alive=engine_alive)


async def _gather(client: AsyncOpenAIClient, batch: Sequence[Sample], encode: Encode, model: str,
                  seed: int) -> list[Generation]:
    return list(await asyncio.gather(*(_choose_one(client, s, encode, model, seed) for s in batch)))


def choose_offline(llm: Any, samples: Sequence[Sample], seed: int, batch_size: int = 4) -> Iterator[Generation]:
    """Forced-choice generations through a ``vllm.LLM``, ``batch_size`` samples per call; a batch
    vLLM rejects is retried one sample at a time, so only the bad sample gets the error."""
    import vllm

    params = vllm.SamplingParams(temperature=0.0, max_tokens=1, seed=seed, prompt_logprobs=0)
    tokenizer = llm.get_tokenizer()

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    size = max(1, batch_size)
    for i in range(0, len(samples), size):
        batch = samples[i:i + size]
        start = time.monotonic()
        prepared: list[tuple[Sample, list[int], list[list[int]]]] = []
        for sample in batch:
            try:
                prepared.append((sample, *prompt_and_candidates(sample, encode)))
            except ValueError as exc:
                yield Generation(sample.id, None, error=one_line(str(exc)))
        prompts = [{"prompt_token_ids": prompt + cand} for _, prompt, cands in prepared for cand in cands]
        if not prompts:
            continue
        try:
            outputs = list(llm.generate(prompts, params, use_tqdm=False))
        except Exception as exc:  # noqa: BLE001 - vLLM rejected the batch (e.g. a prompt too long)
            if type(exc).__name__ == "EngineDeadError":
                raise EngineGone(f"vLLM offline engine died: {one_line(str(exc) or 'EngineDeadError')}") from None
            if len(prepared) > 1:
                yield from choose_offline(llm, [s for s, _, _ in prepared], seed, batch_size=1)
            else:
                yield Generation(prepared[0][0].id, None, error=one_line(str(exc) or type(exc).__name__),
                                 latency_s=time.monotonic() - start)
            continue
        latency = time.monotonic() - start
        at = 0
        for sample, prompt, cands in prepared:
            mine, at = outputs[at:at + len(cands)], at + len(cands)
            try:
                logliks = [candidate_loglik(out.prompt_logprobs, len(prompt), c) for out, c in zip(mine, cands)]
            except ValueError as exc:
                yield Generation(sample.id, None, error=one_line(str(exc)), latency_s=latency)
                continue
            yield choice_generation(sample, logliks, [len(c) for c in cands], latency_s=latency,
                                    prompt_tokens=len(prompt), extra={"batch_size": len(prepared)})
