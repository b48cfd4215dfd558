"""Reasoning models against the fake OpenAI server (fast): the thinking is split from the answer and
only the answer is scored; the thinking budget is separate from the answer's (budget forcing: the
requests the server received are checked); records keep the thinking."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import msgspec
import pytest
import yaml
from click.testing import CliRunner

from longctx._errors import LongctxError
from longctx._protocols import RunnerConfig
from longctx._records import Generation, Message, Prompt, Result, Sample, decode, encode
from longctx.cli.main import cli
from longctx.runners._openai_client import ClientConfig, RequestSpec, generate_all, parse_generation
from longctx.runners._reasoning import ThinkingSpec, split_thinking, template_mentions
from longctx.runners.vllm import VLLMOptions, VLLMRunner

from .conftest import FakeOpenAI, completion_body

NEEDLE = re.compile(r"special magic numbers? for [\w-]+ (?:mentioned in the provided text )?is:? (\d+)")


# ---- splitting ----------------------------------------------------------------------------------


def test_split_thinking_cases():
    assert split_thinking("<think>\nhmm, 42?\n</think>\n\nThe answer is 42.") == (
        "hmm, 42?", "The answer is 42.", True)
    assert split_thinking("The answer is 42.") == (None, "The answer is 42.", True)
    # never closed: all thinking, no answer
    assert split_thinking("<think> still going") == ("still going", "", False)
    # the template opened the thinking (DeepSeek-R1, QwQ): no start marker in the output
    assert split_thinking("so it is 7 </think> 7", opened=True) == ("so it is 7", "7", True)
    assert split_thinking("so it is 7 </think> 7") == ("so it is 7", "7", True)
    assert split_thinking("cut short", opened=True) == ("cut short", "", False)
    # a marker in the middle of an answer is not a thinking
    assert split_thinking("I use <think> tags") == (None, "I use <think> tags", True)
    assert split_thinking("[[x]] 5", start="[[", end="]]") == ("x", "5", True)


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_a_servers_reasoning_field_is_the_thinking(field):
    data = completion_body("/v1/chat/completions", "The number is 5.", reasoning="Find it: 5.",
                           reasoning_field=field)
    data["usage"]["completion_tokens_details"] = {"reasoning_tokens": 3}
    gen = parse_generation("s", "chat", data, 0.1)
    assert (gen.prediction, gen.thinking, gen.thinking_tokens, gen.thinking_truncated) == (
        "The number is 5.", "Find it: 5.", 3, False)


def test_think_tags_in_plain_text_are_split_unless_disabled():
    data = completion_body("/v1/completions", "<think>it says 12</think>\n\n12")
    gen = parse_generation("s", "completions", data, 0.1)
    assert (gen.prediction, gen.thinking, gen.thinking_truncated) == ("12", "it says 12", False)
    unclosed = completion_body("/v1/completions", "<think>it says", finish_reason="length")
    cut = parse_generation("s", "completions", unclosed, 0.1)
    assert (cut.prediction, cut.thinking, cut.thinking_truncated) == ("", "it says", True)
    verbatim = parse_generation("s", "completions", data, 0.1, think_markers=None)
    assert verbatim.prediction == "<think>it says 12</think>\n\n12" and verbatim.thinking is None
    plain = parse_generation("s", "completions", completion_body("/v1/completions", " 12"), 0.1)
    assert plain.prediction == " 12" and plain.thinking is None


def test_template_mentions(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert not template_mentions(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "default", "template": "<think>{{ x }}"}]}))
    assert template_mentions(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "chat_template.jinja").write_text("{{ '<|im_start|>assistant\\n<think>\\n' }}")
    assert template_mentions(other) and not template_mentions(other, "<reason>")
    assert not template_mentions(tmp_path / "missing")


def test_records_round_trip_and_older_lines_load():
    gen = Generation("s", "42", thinking="it is 42", thinking_tokens=4, thinking_truncated=True)
    assert decode(encode(gen), Generation) == gen
    old_line = (b'{"sample_id":"s","task":"t","runner":"vllm","model":"m","length":1024,"context_tokens":900,'
                b'"depth":50.0,"needle_positions":[],"evidence_depth":50.0,"prediction":"42",'
                b'"references":["42"],"score":1.0,"scores":{"m":1.0},"error":null,"latency_s":0.1,'
                b'"prompt_tokens":900,"cached_tokens":0}')
    old = decode(old_line, Result)
    assert (old.thinking, old.thinking_tokens, old.thinking_truncated) == (None, None, False)
    new = decode(encode(old), Result)
    new.thinking, new.thinking_tokens, new.thinking_truncated = "hmm", 7, True
    assert decode(encode(new), Result) == new


# ---- a scripted model that thinks --------------------------------------------------------------


class ThinkingModel:
    """Answers like a reasoning model: ``think_words`` words of thinking (which always name the
    needle), then an answer (the needle when it is even, else a refusal: so a score that read the
    thinking would be wrong on odd needles). Understands budget forcing's two requests and
    one-request generations."""

    def __init__(self, think_words: int = 5, reasoning_parser: bool = False, opened: bool = False):
        self.think_words = think_words
        self.reasoning_parser = reasoning_parser
        self.opened = opened

    def _needle(self, text: str) -> str:
        found = NEEDLE.findall(text)
        return found[0] if found else "0"

    def _thinking(self, needle: str) -> list[str]:
        words = [f"w{i}" for i in range(self.think_words)]
        return [f"needle={needle}", *words]

    def _answer(self, needle: str) -> str:
        return f"The special magic number is {needle}." if int(needle) % 2 == 0 else "I do not know."

    def __call__(self, path: str, body: dict) -> dict:
        chat = path.endswith("/chat/completions")
        prompt = "\n".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        needle = self._needle(prompt)
        thinking = self._thinking(needle)
        start = "" if self.opened else "<think>\n"
        if body.get("stop") == ["</think>"]:  # request 1: think within max_tokens, stop at the end marker
            budget = body["max_tokens"]
            if len(thinking) + 1 > budget:
                text = start + " ".join(thinking[: budget - 1])
                return self._reply(path, text, "length", None, budget)
            return self._reply(path, start + " ".join(thinking) + "\n", "stop", "</think>", len(thinking) + 1)
        continued = chat and body["messages"][-1]["role"] == "assistant"
        if continued or (not chat and prompt.endswith(("</think>\n\n", " is"))):
            answer = self._answer(needle).split()[: body["max_tokens"]]
            return self._reply(path, " ".join(answer), "stop", None, len(answer))
        # one request: think and answer together
        text = f"{start}{' '.join(thinking)}\n</think>\n\n{self._answer(needle)}"
        return self._reply(path, text, "stop", None, len(text.split()))

    def _reply(self, path: str, text: str, finish: str, stop_reason, tokens: int) -> dict:
        if self.reasoning_parser and path.endswith("/chat/completions") and "needle=" in text:
            thinking, _, answer = text.partition("</think>")
            return completion_body(path, answer.strip(), reasoning=thinking.replace("<think>", "").strip(),
                                   finish_reason=finish, stop_reason=stop_reason, completion_tokens=tokens)
        return completion_body(path, text, finish_reason=finish, stop_reason=stop_reason,
                               completion_tokens=tokens)


def _sample(sample_id: str, needle: int, answer_prefix: str = " The special magic number is") -> Sample:
    question = f"One of the special magic numbers for key-{needle} is: {needle}. What is it?"
    messages = (Message("user", question),)
    text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer_prefix}"
    return Sample(id=sample_id, task="test/niah", prompt=Prompt(messages, text, answer_prefix, (1, 2, 3)),
                  references=(str(needle),), length=256, context_tokens=40, max_new_tokens=16)


def _generate(fake: FakeOpenAI, samples: list[Sample], mode: str = "completions", budget: int = 8):
    spec = RequestSpec(model="fake-model", mode=mode, thinking=ThinkingSpec(budget=budget))
    return {g.sample_id: g for g in generate_all(ClientConfig(fake.base_url, retries=0), samples, spec, 1)}


def test_thinking_within_the_budget_then_the_answer(fake_openai):
    fake_openai.responder = ThinkingModel(think_words=5)
    gen = _generate(fake_openai, [_sample("a", 42)])["a"]
    assert gen.error is None
    assert gen.prediction == "The special magic number is 42."
    assert gen.thinking == "needle=42 w0 w1 w2 w3 w4" and not gen.thinking_truncated
    assert gen.thinking_tokens == 7 and gen.completion_tokens == 7 + 6
    first, second = (r.body for r in fake_openai.posts())
    prompt = "<|im_start|>user\nOne of the special magic numbers for key-42 is: 42. What is it?<|im_end|>\n" \
             "<|im_start|>assistant\n"
    # request 1: the chat prompt without the answer prefix (text, not the ids that hold the prefix)
    assert first["prompt"] == prompt and first["max_tokens"] == 8 and first["stop"] == ["</think>"]
    # request 2: the thinking as generated, closed, then the answer with the sample's own budget
    assert second["prompt"] == prompt + "<think>\nneedle=42 w0 w1 w2 w3 w4\n</think>\n\n"
    assert second["max_tokens"] == 16 and "stop" not in second


def test_thinking_over_the_budget_is_cut_closed_and_answered(fake_openai):
    fake_openai.responder = ThinkingModel(think_words=30)
    gen = _generate(fake_openai, [_sample("a", 42)], budget=8)["a"]
    assert gen.thinking_truncated and gen.thinking_tokens == 8
    assert gen.thinking == "needle=42 w0 w1 w2 w3 w4 w5"
    assert gen.prediction == "The special magic number is 42."
    assert gen.extra["thinking_finish_reason"] == "length" and gen.extra["finish_reason"] == "stop"
    first, second = (r.body for r in fake_openai.posts())
    assert first["max_tokens"] == 8
    assert second["prompt"].endswith("<think>\nneedle=42 w0 w1 w2 w3 w4 w5\n</think>\n\n")
    assert second["max_tokens"] == 16  # the answer budget, not what the thinking left over


def test_answer_prefix_after_the_thinking(fake_openai):
    fake_openai.responder = ThinkingModel(think_words=2)
    spec = RequestSpec(model="fake-model", thinking=ThinkingSpec(budget=8, prefill_answer=True))
    gens = list(generate_all(ClientConfig(fake_openai.base_url, retries=0), [_sample("a", 42)], spec, 1))
    assert gens[0].error is None
    assert fake_openai.posts()[1].body["prompt"].endswith("</think>\n\n The special magic number is")


def test_a_template_that_opens_the_thinking(fake_openai):
    fake_openai.responder = ThinkingModel(think_words=3, opened=True)
    sample = _sample("a", 8, answer_prefix="")
    opened = Prompt(sample.prompt.messages, sample.prompt.text + "<think>\n")
    sample = msgspec.structs.replace(sample, prompt=opened)
    gen = _generate(fake_openai, [sample])["a"]
    assert gen.thinking == "needle=8 w0 w1 w2" and gen.prediction == "The special magic number is 8."
    assert fake_openai.posts()[1].body["prompt"].endswith("<think>\nneedle=8 w0 w1 w2\n</think>\n\n")


def test_chat_mode_continues_the_assistant_message(fake_openai):
    fake_openai.responder = ThinkingModel(think_words=30, reasoning_parser=True)
    gen = _generate(fake_openai, [_sample("a", 4)], mode="chat", budget=6)["a"]
    assert gen.prediction == "The special magic number is 4."
    assert gen.thinking == "needle=4 w0 w1 w2 w3" and gen.thinking_truncated
    first, second = (r.body for r in fake_openai.posts())
    assert first["messages"][-1]["role"] == "user" and first["stop"] == ["</think>"]
    last = second["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == "<think>\nneedle=4 w0 w1 w2 w3\n</think>\n\n"
    assert second["continue_final_message"] is True and second["add_generation_prompt"] is False


def test_a_model_that_answers_without_thinking_takes_one_request(fake_openai):
    fake_openai.responder = lambda path, body: completion_body(path, "The special magic number is 6.")
    gen = _generate(fake_openai, [_sample("a", 6)])["a"]
    assert gen.prediction == "The special magic number is 6." and gen.thinking is None
    assert len(fake_openai.posts()) == 1


def test_a_failed_answer_request_is_the_samples_error(fake_openai):
    fake_openai.responder = ThinkingModel(think_words=2)
    fake_openai.push(body=completion_body("/v1/completions", "<think>\nhm\n", stop_reason="</think>"))
    fake_openai.push(status=400, body={"error": {"message": "This model's maximum context length is 4096"}})
    gen = _generate(fake_openai, [_sample("a", 2)])["a"]
    assert gen.prediction is None
    assert gen.error == "answer request: HTTP 400: This model's maximum context length is 4096"


# ---- the sweep ---------------------------------------------------------------------------------


@pytest.fixture
def reasoning_tokenizer(tmp_path, default_model_path) -> Path:
    """The default model's tokenizer with a chat template that mentions <think> (as Qwen3's does)."""
    folder = tmp_path / "reasoning-tokenizer"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        if (default_model_path / name).exists():
            shutil.copy(default_model_path / name, folder / name)
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text() + "{#- assistant turns keep their <think>...</think> #}")
    return folder


def _sweep(fake: FakeOpenAI, out: Path, tokenizer: Path | None, *extra: str):
    args = ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "--depths", "0,100", "-n", "3",
            "--runner", "vllm", "--endpoint", fake.base_url, "--model", "fake-model",
            *(["-R", f"tokenizer={tokenizer}"] if tokenizer else []), "--retries", "0", "-c", "2",
            "--out", str(out), *extra]
    return CliRunner().invoke(cli, args)


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line]


def test_sweep_scores_the_answer_only_and_records_the_thinking(fake_openai, tmp_path, reasoning_tokenizer):
    fake_openai.responder = ThinkingModel(think_words=40)
    out = tmp_path / "run"
    res = _sweep(fake_openai, out, reasoning_tokenizer, "--max-thinking-tokens", "12")
    assert res.exit_code == 0, res.output
    rows = _results(out)
    assert len(rows) == 6 and len(fake_openai.posts()) == 12  # two requests per sample
    for row in rows:
        needle = row["references"][0]
        assert f"needle={needle}" in row["thinking"]  # the thinking always names the needle...
        assert row["score"] == (1.0 if int(needle) % 2 == 0 else 0.0)  # ...the score reads the answer
        assert row["thinking_truncated"] is True and row["thinking_tokens"] == 12
        assert row["conditions"]["max_thinking_tokens"] == 12
    answers = {f"The special magic number is {r['references'][0]}." for r in rows} | {"I do not know."}
    assert {r["prediction"] for r in rows} <= answers
    thinking_requests = [p.body for p in fake_openai.posts() if p.body.get("stop") == ["</think>"]]
    assert len(thinking_requests) == 6 and all(b["max_tokens"] == 12 for b in thinking_requests)
    assert all(not b["prompt"].rstrip().endswith("is") for b in thinking_requests)  # no answer prefix
    answer_requests = [p.body for p in fake_openai.posts() if "stop" not in p.body]
    assert all(b["max_tokens"] == 128 for b in answer_requests)  # RULER NIAH's answer budget
    assert "thinking: mean 12 tokens (max 12), 6 of 6 cut by the budget" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_identity"]["reasoning"]["max_thinking_tokens"] == 12
    assert yaml.safe_load((out / "config.yaml").read_text())["max-thinking-tokens"] == 12
    again = CliRunner().invoke(cli, ["sweep", "--config", str(out)])  # the config file resumes it
    assert again.exit_code == 0, again.output
    assert "0 new, 6 already done" in again.output


def test_budget_from_a_config_file_and_conflicts(fake_openai, tmp_path, reasoning_tokenizer):
    fake_openai.responder = ThinkingModel(think_words=3)
    config = tmp_path / "run.yaml"
    options = {"tokenizer": str(reasoning_tokenizer), "max_thinking_tokens": 9}
    config.write_text(yaml.safe_dump({"runner-option": options}))
    out = tmp_path / "run"
    res = _sweep(fake_openai, out, None, "--config", str(config))
    assert res.exit_code == 0, res.output
    assert {p.body["max_tokens"] for p in fake_openai.posts() if p.body.get("stop")} == {9}
    assert all(r["thinking_truncated"] is False and r["thinking_tokens"] == 5 for r in _results(out))
    clash = _sweep(fake_openai, tmp_path / "other", reasoning_tokenizer, "-R", "max_thinking_tokens=5",
                   "--max-thinking-tokens", "6")
    assert clash.exit_code == 2 and "disagree" in clash.output


def test_a_plain_model_ignores_the_budget(fake_openai, tmp_path, default_model_path):
    """--max-thinking-tokens with a model whose template does not mention <think>: one request per
    sample, as without the flag (answer prefix prefilled), and a note."""
    out = tmp_path / "run"
    res = _sweep(fake_openai, out, default_model_path, "--max-thinking-tokens", "64")
    assert res.exit_code == 0, res.output
    assert "not a reasoning model" in res.output
    posts = fake_openai.posts()
    assert len(posts) == 6 and all("stop" not in p.body and p.body["max_tokens"] == 128 for p in posts)
    rows = _results(out)
    assert all(r["thinking"] is None and r["conditions"]["max_thinking_tokens"] is None for r in rows)


def test_a_runner_without_a_thinking_budget_refuses_the_flag(tmp_path):
    res = CliRunner().invoke(cli, ["sweep", "-t", "ruler/niah_single_1", "--lengths", "1k", "-n", "1",
                                   "--runner", "oracle", "--max-thinking-tokens", "8",
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "runner oracle has no thinking budget" in res.output


def test_budget_and_window(fake_openai, reasoning_tokenizer):
    config = RunnerConfig(model="fake-model", endpoint=fake_openai.base_url)
    runner = VLLMRunner(config, VLLMOptions(tokenizer=str(reasoning_tokenizer), max_thinking_tokens=100))
    assert runner.thinking == ThinkingSpec(budget=100)
    runner.check([_sample("a", 2)])  # 256 + 100 fits the fake's 4096
    long = msgspec.structs.replace(_sample("b", 2), length=4096)
    with pytest.raises(LongctxError, match="thinking budget 100 .* exceeds the context window"):
        runner.check([long])
    assert VLLMRunner(config, VLLMOptions(tokenizer=str(reasoning_tokenizer))).thinking.budget == 2048
    plain = VLLMOptions(tokenizer=str(reasoning_tokenizer), reasoning="false")
    assert VLLMRunner(config, plain).thinking is None
    assert VLLMRunner(config, VLLMOptions(reasoning="true")).thinking is not None  # forced, no template
    assert VLLMRunner(config).thinking is None  # an endpoint without a tokenizer folder: not detected
    with pytest.raises(LongctxError, match="at least 1"):
        VLLMRunner(config, VLLMOptions(reasoning="true", max_thinking_tokens=0))


def test_the_python_api_takes_the_budget(fake_openai, tmp_path, reasoning_tokenizer):
    import longctx

    fake_openai.responder = ThinkingModel(think_words=30)
    outcome = longctx.sweep(
        "ruler/niah_single_1", lengths="1k", depths=[50], samples=2, runner="vllm", model="fake-model",
        endpoint=fake_openai.base_url, runner_options={"tokenizer": str(reasoning_tokenizer)},
        max_thinking_tokens=7, retries=0, out=tmp_path / "api-run",
    )
    results = outcome.store.latest_results()
    assert len(results) == 2 and all(r.thinking_truncated and r.thinking_tokens == 7 for r in results)
    assert yaml.safe_load((tmp_path / "api-run" / "config.yaml").read_text())["max-thinking-tokens"] == 7


# ---- real engines, default model (no reasoning model exists on this machine) -------------------


@pytest.mark.slow
def test_hf_budget_forcing_with_the_default_model(smol_tokenizer, niah_sample):
    """SmolLM2 does not think; forced to (``reasoning=true``) with a budget of 4 tokens, its start of
    an answer is cut as thinking, closed with </think>, and an answer generated after it."""
    from longctx.runners.hf import HFOptions, HFRunner

    sample = niah_sample(smol_tokenizer, "hf-think", 7340291, repeats=2)
    assert HFRunner(RunnerConfig(model="default")).thinking_budget is None  # its template: no <think>
    forced = HFOptions(reasoning="true", max_thinking_tokens=4)
    with HFRunner(RunnerConfig(model="default"), forced) as runner:
        (gen,) = runner.generate([sample])
        ident, conditions = runner.identity(), runner.conditions()
    assert gen.error is None, gen.error
    assert gen.thinking_truncated and gen.thinking_tokens == 4 and gen.thinking
    assert gen.prediction and 4 < gen.completion_tokens <= 4 + sample.max_new_tokens
    assert ident["reasoning"]["max_thinking_tokens"] == 4 and conditions == {"max_thinking_tokens": 4}


@pytest.mark.slow
def test_real_vllm_budget_forcing_and_a_plain_model_unchanged(vllm_server, smol_tokenizer, niah_sample):
    """Against the real vLLM server: (1) the default model with --max-thinking-tokens answers exactly
    as without it (not a reasoning model: one request, nothing split); (2) forced to think with a
    budget of 4 tokens, vLLM takes the text prompt and the stop string, the thinking is cut at 4
    tokens, closed, and answered in a second request whose prompt holds it."""
    samples = [niah_sample(smol_tokenizer, f"v{i}", n, repeats=2) for i, n in enumerate((7340291, 5518230))]
    config = RunnerConfig(model=vllm_server.model_name, endpoint=vllm_server.endpoint, concurrency=2)
    folder = str(vllm_server.model_path)

    def run(**options):
        with VLLMRunner(config, VLLMOptions(tokenizer=folder, deterministic=True, **options)) as runner:
            return {g.sample_id: g for g in runner.generate(samples)}, runner

    plain, _ = run()
    budgeted, runner = run(max_thinking_tokens=64)
    assert runner.thinking is None
    for sid, gen in plain.items():
        assert gen.error is None and budgeted[sid].prediction == gen.prediction
        assert budgeted[sid].thinking is None and budgeted[sid].completion_tokens == gen.completion_tokens

    forced, runner = run(reasoning="true", max_thinking_tokens=4)
    assert runner.identity()["reasoning"]["max_thinking_tokens"] == 4
    for sample in samples:
        gen = forced[sample.id]
        assert gen.error is None, gen.error
        assert gen.thinking_truncated and gen.thinking_tokens == 4 and gen.thinking
        assert gen.prediction is not None and 4 < gen.completion_tokens <= 4 + sample.max_new_tokens
        # request 2's prompt: request 1's (no answer prefix) + the 4 thinking tokens + the closing marker
        assert gen.extra["answer_prompt_tokens"] > gen.prompt_tokens + 4
        assert gen.prompt_tokens < sample.context_tokens  # the answer prefix is not in the prompt


def test_local_models_detected_from_their_template(reasoning_tokenizer, default_model_path):
    from longctx.runners.hf import HFOptions, HFRunner

    assert HFRunner(RunnerConfig(model=str(reasoning_tokenizer))).thinking_budget == 2048
    config = RunnerConfig(model=str(reasoning_tokenizer))
    assert HFRunner(config, HFOptions(max_thinking_tokens=64)).thinking_budget == 64
    assert HFRunner(config, HFOptions(reasoning="false")).thinking_budget is None
    assert HFRunner(RunnerConfig(model=str(default_model_path))).thinking_budget is None
    assert VLLMRunner(RunnerConfig(model=str(reasoning_tokenizer))).thinking.budget == 2048
    assert VLLMRunner(RunnerConfig(model=str(default_model_path))).thinking is None
    with pytest.raises(LongctxError, match="engine=offline has no thinking budget"):
        VLLMRunner(RunnerConfig(model=str(reasoning_tokenizer)), VLLMOptions(engine="offline"))
