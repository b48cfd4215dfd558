"""Runner ``vllm``, forced choice: prompt log-prob requests against a scripted server (fast) and the
real session server (slow)."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest
from longctx.runners._vllm_choice import choice_body, parse_choice_response
from longctx.runners.vllm import VLLMOptions, VLLMRunner

from longctx._protocols import RunnerConfig
from longctx._records import Choices, Message, Prompt, Sample


class CharTokenizer:
    name = "chars"

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(map(chr, ids))

    def render_chat(self, messages) -> str:
        return "".join(m.content for m in messages)


def sample(i: int, candidates=(" 17", " 99", " 12"), correct=0) -> Sample:
    ids = tuple(ord(c) for c in f"prompt {i}:")
    return Sample(id=f"s{i}", task="t", prompt=Prompt((Message("user", "q"),), "", "", ids), references=("17",),
                  length=64, context_tokens=len(ids), max_new_tokens=4, choices=Choices(tuple(candidates), correct))


def logprob(token: int) -> float:
    """The scripted model: likes the digit 1 (and 7), dislikes everything else."""
    return {ord("1"): -0.1, ord("7"): -0.5}.get(token, -3.0)


def vllm_like(path: str, body: dict) -> dict:
    """A /completions answer shaped as vLLM 0.32's, with prompt_logprobs for each prompt."""
    assert path.endswith("/completions")
    choices = []
    for index, ids in enumerate(body["prompt"]):
        plp = [None] + [{str(t): {"logprob": logprob(t), "rank": 1, "decoded_token": chr(t)}} for t in ids[1:]]
        choices.append({"index": index, "text": "x", "finish_reason": "length", "prompt_logprobs": plp})
    return {"id": "cmpl", "object": "text_completion", "choices": choices,
            "usage": {"prompt_tokens": sum(map(len, body["prompt"])), "completion_tokens": 1}}


def expected(cand: str) -> float:
    return sum(logprob(ord(c)) for c in cand)


def test_body_and_parse():
    body = choice_body("m", [1, 2], [[3], [4, 5]], seed=7)
    assert body["prompt"] == [[1, 2, 3], [1, 2, 4, 5]] and body["prompt_logprobs"] == 0 and body["max_tokens"] == 1
    data = vllm_like("/v1/completions", body)
    data["choices"].reverse()  # matched by index, not by order
    assert parse_choice_response(data, 2, [[3], [4, 5]]) == [-3.0, -6.0]
    with pytest.raises(ValueError, match="no prompt_logprobs"):
        parse_choice_response({"choices": [{"index": 0}, {"index": 1}]}, 2, [[3], [4, 5]])
    with pytest.raises(ValueError, match="2 choices in the response for 1 candidates"):
        parse_choice_response(data, 2, [[3]])


@pytest.fixture
def chars(monkeypatch):
    import longctx.runners.vllm as vllm_module

    monkeypatch.setattr(vllm_module, "hf_tokenizer", lambda path: CharTokenizer())


def test_choose_through_an_endpoint_sums_the_candidate_positions(fake_openai, tmp_path, chars):
    fake_openai.responder = vllm_like
    samples = [sample(0), sample(1, correct=1), sample(2, candidates=(" 11", " 17"), correct=1)]
    with VLLMRunner(RunnerConfig(model="fake-model", endpoint=fake_openai.base_url, concurrency=2),
                    VLLMOptions(tokenizer=str(tmp_path))) as runner:
        gens = {g.sample_id: g for g in runner.choose(samples)}
    for s in samples:
        choice = gens[s.id].extra["choice"]
        assert choice["logliks"] == pytest.approx([expected(c) for c in s.choices.candidates])
    assert gens["s0"].extra["choice"]["chosen"] == 0 and gens["s0"].prediction == " 17"
    assert gens["s1"].extra["choice"]["chosen"] == 0  # the model's " 17" against the declared " 99"
    assert gens["s2"].prediction == " 11"
    posts = fake_openai.posts()
    assert len(posts) == 3 and all(p.body["prompt_logprobs"] == 0 for p in posts)  # one request per sample
    first = next(p.body for p in posts if p.body["prompt"][0][:8] == list(samples[0].prompt.token_ids)[:8])
    assert first["prompt"] == [list(samples[0].prompt.token_ids) + [ord(c) for c in cand]
                               for cand in samples[0].choices.candidates]


def test_a_server_without_prompt_logprobs_or_a_rejected_request_is_the_samples_error(fake_openai, tmp_path, chars):
    fake_openai.push(body={"choices": [{"index": 0, "text": "x"}, {"index": 1, "text": "y"}, {"index": 2, "text": "z"}]})
    fake_openai.push(status=400, body={"error": {"message": "This model's maximum context length is 8"}})
    with VLLMRunner(RunnerConfig(model="fake-model", endpoint=fake_openai.base_url, concurrency=1),
                    VLLMOptions(tokenizer=str(tmp_path))) as runner:
        a, b = list(runner.choose([sample(0), sample(1)]))
    assert a.prediction is None and "no prompt_logprobs" in a.error
    assert b.prediction is None and b.error.startswith("HTTP 400: This model's maximum context length")


@pytest.mark.slow
def test_the_real_server_scores_candidates_like_transformers(vllm_server, smol_tokenizer, niah_sample):
    """vLLM's prompt log-probs (deterministic session server: float32) against one transformers
    forward over prompt + candidate."""
    import torch
    from transformers import AutoModelForCausalLM

    easy = niah_sample(smol_tokenizer, "vllm-choice", 7340291, repeats=3)
    cands = (" 5028316", " 7340291", " 1199402")
    easy = msgspec.structs.replace(easy, choices=Choices(cands, 1))
    (gen,) = list(vllm_server.runner.choose([easy]))
    assert gen.error is None, gen.error
    choice = gen.extra["choice"]
    lm = AutoModelForCausalLM.from_pretrained(vllm_server.model_path, dtype=torch.float32).eval()
    reference = []
    with torch.inference_mode():
        for cand in cands:
            ids = torch.tensor([list(easy.prompt.token_ids) + smol_tokenizer.encode(cand)])
            logp = torch.log_softmax(lm(input_ids=ids).logits[0, :-1].float(), -1)
            n = len(easy.prompt.token_ids)
            reference.append(float(logp[n - 1:].gather(-1, ids[0, n:, None]).sum()))
    assert choice["logliks"] == pytest.approx(reference, abs=0.05)
    assert choice["chosen"] == 1 and gen.prediction == " 7340291"


class FakeLLM:
    """``vllm.LLM`` as ``choose_offline`` uses it: a tokenizer and ``generate`` with prompt log-probs;
    a batch holding a prompt longer than ``max_len`` is rejected as a whole (as vLLM validates)."""

    def __init__(self, max_len: int = 1000):
        self.max_len, self.calls = max_len, []

    def get_tokenizer(self):
        class Tok:
            def encode(self, text, add_special_tokens=False):
                return [ord(c) for c in text]

        return Tok()

    def generate(self, prompts, params, use_tqdm=False):
        from types import SimpleNamespace

        self.calls.append(len(prompts))
        assert params.kw["prompt_logprobs"] == 0 and params.kw["max_tokens"] == 1
        if any(len(p["prompt_token_ids"]) > self.max_len for p in prompts):
            raise ValueError("prompt too long")
        return [SimpleNamespace(prompt_logprobs=[None] + [{t: SimpleNamespace(logprob=logprob(t))}
                                                          for t in p["prompt_token_ids"][1:]]) for p in prompts]


def test_offline_engine_path_and_a_rejected_batch(monkeypatch):
    import sys
    from types import SimpleNamespace

    from longctx.runners._vllm_choice import choose_offline

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=lambda **kw: SimpleNamespace(kw=kw)))
    long = msgspec.structs.replace(sample(9), prompt=Prompt((Message("user", "q"),), "", "", tuple(range(50, 90))))
    llm = FakeLLM(max_len=30)
    gens = {g.sample_id: g for g in choose_offline(llm, [sample(0), long, sample(1, correct=1)], seed=1, batch_size=3)}
    assert llm.calls == [9, 3, 3, 3]  # the batch, then each sample alone
    assert gens["s9"].error == "prompt too long"
    for s in (sample(0), sample(1, correct=1)):
        assert gens[s.id].extra["choice"]["logliks"] == pytest.approx([expected(c) for c in s.choices.candidates])
