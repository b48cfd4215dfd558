"""The async OpenAI-compatible client against a fake server on 127.0.0.1 (fast)."""

from __future__ import annotations

import time

import pytest

from longctx._errors import EngineGone
from longctx._records import Message, Prompt, Sample
from longctx.runners._openai_client import (
    ClientConfig,
    RequestSpec,
    generate_all,
    normalise_base_url,
    request_body,
    server_root,
)
from longctx.runners._vllm_server import free_port


def make_sample(
    i: int = 0,
    token_ids: tuple[int, ...] | None = None,
    text: str = "hello there world",
    max_new_tokens: int = 7,
) -> Sample:
    prompt = Prompt(messages=(Message("user", f"question {i}"),), text=text, token_ids=token_ids)
    return Sample(
        id=f"s{i}",
        task="fake",
        prompt=prompt,
        references=("x",),
        length=100,
        context_tokens=3,
        max_new_tokens=max_new_tokens,
    )


def run(
    base_url: str, samples: list[Sample], mode: str = "completions", concurrency: int = 2, **client: float
) -> dict[str, object]:
    config = ClientConfig(
        base_url=base_url,
        timeout_s=client.pop("timeout_s", 10.0),
        retries=int(client.pop("retries", 3)),
        backoff_s=client.pop("backoff_s", 0.01),
    )
    spec = RequestSpec(model="fake-model", mode=mode, seed=7)
    return {g.sample_id: g for g in generate_all(config, samples, spec, concurrency)}


def test_token_ids_are_sent_as_the_prompt(fake_openai):
    out = run(fake_openai.base_url, [make_sample(0, token_ids=(5, 6, 7, 8))])
    (post,) = fake_openai.posts()
    assert post.path == "/v1/completions"
    assert post.body["prompt"] == [5, 6, 7, 8]
    assert post.body["max_tokens"] == 7 and post.body["temperature"] == 0 and post.body["seed"] == 7
    assert post.body["model"] == "fake-model"
    g = out["s0"]
    assert g.error is None and g.prediction == "echo:5,6,7,8"
    assert g.prompt_tokens == 4 and g.completion_tokens == 7
    assert g.latency_s > 0 and g.extra == {"finish_reason": "length", "server": fake_openai.base_url}


def test_text_prompt_when_no_token_ids(fake_openai):
    out = run(fake_openai.base_url, [make_sample(0, text="a b c")])
    assert fake_openai.posts()[0].body["prompt"] == "a b c"
    assert out["s0"].prediction == "echo:a b c" and out["s0"].prompt_tokens == 3


def test_cached_tokens_parsed_and_missing_details_give_none(fake_openai):
    fake_openai.cached_tokens = 96
    assert run(fake_openai.base_url, [make_sample(0)])["s0"].cached_tokens == 96
    fake_openai.push(
        body={"choices": [{"text": "ok"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    )
    g = run(fake_openai.base_url, [make_sample(1)])["s1"]
    assert g.prediction == "ok" and g.cached_tokens is None and g.prompt_tokens == 3


def test_chat_mode_posts_messages(fake_openai):
    out = run(fake_openai.base_url, [make_sample(3, token_ids=(1, 2))], mode="chat")
    (post,) = fake_openai.posts()
    assert post.path == "/v1/chat/completions"
    assert post.body["messages"] == [{"role": "user", "content": "question 3"}]
    assert "prompt" not in post.body
    assert out["s3"].prediction == "echo:question 3"


def test_retries_500_and_429_then_succeeds(fake_openai):
    fake_openai.push(status=500, body={"error": {"message": "engine hiccup"}})
    fake_openai.push(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
    g = run(fake_openai.base_url, [make_sample(0, token_ids=(1,))], backoff_s=0.05)["s0"]
    assert g.error is None and g.prediction == "echo:1"
    assert g.extra["attempts"] == 3
    assert len(fake_openai.posts()) == 3


def test_backoff_grows_exponentially(fake_openai):
    fake_openai.push(status=503, times=3)
    start = time.monotonic()
    g = run(fake_openai.base_url, [make_sample(0)], backoff_s=0.2, retries=3)["s0"]
    elapsed = time.monotonic() - start
    assert g.error is None and g.extra["attempts"] == 4
    # delays are 0.2 * 2**k jittered to [50%, 100%]: at least 0.1 + 0.2 + 0.4 = 0.7 s in total
    assert elapsed >= 0.7


def test_gives_up_after_retries_with_one_line_error(fake_openai):
    fake_openai.push(status=502, body={"error": {"message": "bad\ngateway"}}, times=10)
    g = run(fake_openai.base_url, [make_sample(0)], retries=2)["s0"]
    assert g.prediction is None
    assert g.error == "HTTP 502: bad gateway (after 3 attempts)"
    assert len(fake_openai.posts()) == 3


def test_client_errors_are_not_retried(fake_openai):
    msg = "This model's maximum context length is 4096 tokens."
    fake_openai.push(status=400, body={"error": {"message": msg}})
    g = run(fake_openai.base_url, [make_sample(0)])["s0"]
    assert g.prediction is None and g.error == f"HTTP 400: {msg}"
    assert len(fake_openai.posts()) == 1


def test_timeout_becomes_error_without_retry(fake_openai):
    fake_openai.push(delay_s=2.0)
    start = time.monotonic()
    out = run(fake_openai.base_url, [make_sample(0), make_sample(1)], timeout_s=0.5, concurrency=1)
    assert time.monotonic() - start < 1.8
    assert out["s0"].prediction is None and out["s0"].error == "timeout after 0.5 s"
    assert out["s1"].error is None  # the next request is unaffected
    assert len(fake_openai.posts()) == 2


def test_connection_refused_is_engine_gone_not_a_sample_error():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    got: list = []
    with pytest.raises(EngineGone, match="unreachable.*ConnectError") as err:
        got.extend(generate_all(ClientConfig(base_url=url, retries=1, backoff_s=0.01),
                                [make_sample(0), make_sample(1)], RequestSpec(model="m"), 2))
    assert got == []  # no Generation at all: nothing to record as the samples' errors
    assert "\n" not in str(err.value)


def test_one_reset_is_retried_and_the_sample_answered(fake_openai):
    fake_openai.push(drop=True)  # the first attempt's connection closes without an answer
    g = run(fake_openai.base_url, [make_sample(0, token_ids=(1,))], retries=2)["s0"]
    assert g.error is None and g.prediction == "echo:1" and g.extra["attempts"] == 2


def test_consecutive_connection_failures_over_all_requests_mean_the_engine_is_gone(fake_openai):
    fake_openai.push(drop=True, times=50)
    config = ClientConfig(base_url=fake_openai.base_url, retries=10, backoff_s=0.01, gone_after=4)
    samples = [make_sample(i) for i in range(6)]
    got: list = []
    with pytest.raises(EngineGone, match="4 connection failures in a row"):
        got.extend(generate_all(config, samples, RequestSpec(model="fake-model"), concurrency=2))
    assert got == [] and 4 <= len(fake_openai.posts()) <= 5  # stopped at the 4th failure


def test_an_answer_resets_the_count_of_connection_failures(fake_openai):
    for _ in range(3):
        fake_openai.push(drop=True)
        fake_openai.push()  # answered: the count starts again
    config = ClientConfig(base_url=fake_openai.base_url, retries=3, backoff_s=0.01, gone_after=2)
    out = {g.sample_id: g for g in generate_all(config, [make_sample(i) for i in range(3)],
                                                RequestSpec(model="fake-model"), concurrency=1)}
    assert all(g.error is None for g in out.values()) and len(out) == 3


def test_server_gone_mid_request_drops_what_is_in_flight(fake_openai):
    fake_openai.completion_delay_s = 0.4
    samples = [make_sample(i) for i in range(8)]
    config = ClientConfig(base_url=fake_openai.base_url, retries=2, backoff_s=0.05)
    got: list = []
    gen = generate_all(config, samples, RequestSpec(model="fake-model"), concurrency=2)
    with pytest.raises(EngineGone):
        for g in gen:
            got.append(g)
            if len(got) == 2:  # two answered; two more are in flight when the server goes away
                fake_openai.die()
    assert [g.error for g in got] == [None, None]  # the in-flight requests were never yielded


def test_engine_alive_false_stops_at_once_without_retries(fake_openai):
    fake_openai.push(status=503, times=10)
    config = ClientConfig(base_url=fake_openai.base_url, retries=5, backoff_s=0.01)
    with pytest.raises(EngineGone, match="is gone .*HTTP 503"):
        list(generate_all(config, [make_sample(0)], RequestSpec(model="fake-model"), 1, lambda: False))
    assert len(fake_openai.posts()) == 1


def test_malformed_response_becomes_error(fake_openai):
    fake_openai.push(body={"unexpected": True})
    g = run(fake_openai.base_url, [make_sample(0)])["s0"]
    assert g.prediction is None and g.error.startswith("malformed response")


def test_submission_order_kept_with_one_worker(fake_openai):
    samples = [make_sample(i, token_ids=(i,)) for i in range(8)]
    out = run(fake_openai.base_url, samples, concurrency=1)
    assert [p.body["prompt"] for p in fake_openai.posts()] == [[i] for i in range(8)]
    assert sorted(out) == sorted(s.id for s in samples)


def test_concurrency_is_bounded_and_used(fake_openai):
    fake_openai.completion_delay_s = 0.2
    samples = [make_sample(i, token_ids=(i,)) for i in range(9)]
    start = time.monotonic()
    out = run(fake_openai.base_url, samples, concurrency=3)
    elapsed = time.monotonic() - start
    assert len(out) == 9 and all(g.error is None for g in out.values())
    assert fake_openai.max_in_flight == 3
    assert elapsed < 9 * 0.2  # requests overlapped
    # each wave of three starts only after earlier samples were submitted: starts stay in order by wave
    firsts = [p.body["prompt"][0] for p in fake_openai.posts()]
    assert sorted(firsts[:3]) == [0, 1, 2] and sorted(firsts[3:6]) == [3, 4, 5]


def test_closing_early_cancels_the_rest(fake_openai):
    fake_openai.completion_delay_s = 0.3
    config = ClientConfig(base_url=fake_openai.base_url, timeout_s=10)
    samples = [make_sample(i) for i in range(20)]
    gen = generate_all(config, samples, RequestSpec(model="fake-model"), concurrency=2)
    first = next(gen)
    gen.close()
    assert first.error is None
    time.sleep(0.5)
    assert len(fake_openai.posts()) <= 4  # not all 20


def test_api_key_header(fake_openai):
    config = ClientConfig(base_url=fake_openai.base_url, api_key="sk-test")
    list(generate_all(config, [make_sample(0)], RequestSpec(model="fake-model")))
    assert fake_openai.posts()[0].headers["Authorization"] == "Bearer sk-test"


def test_request_body_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown request mode"):
        request_body(make_sample(0), RequestSpec(model="m", mode="embeddings"))


def test_urls():
    assert normalise_base_url("http://h:1") == "http://h:1/v1"
    assert normalise_base_url("http://h:1/v1/") == "http://h:1/v1"
    assert normalise_base_url("h:1") == "http://h:1/v1"
    assert server_root("http://h:1/v1") == "http://h:1"
