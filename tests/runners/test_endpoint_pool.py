"""Several servers behind one sweep: spreading, prefix affinity, token cap, failover, recovery
(fake OpenAI servers on 127.0.0.1; fast)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from longctx.runners._endpoint_pool import (
    PoolPolicy,
    PoolServer,
    Scheduler,
    ServerState,
    generate_pooled,
    rendezvous_rank,
)
from longctx.runners._openai_client import ClientConfig, RequestSpec

from longctx._errors import EngineGone
from longctx._records import Message, Prompt, Sample

from .conftest import FakeOpenAI

SPEC = RequestSpec(model="fake-model")


def make(i: int, group: str | None = None, tokens: int = 10, task: str = "t") -> Sample:
    ids = tuple(range(i * 1000, i * 1000 + 3))
    prompt = Prompt(messages=(Message("user", f"q{i}"),), text=f"p{i}", token_ids=ids)
    metadata = {"prefix_group": group} if group is not None else {}
    return Sample(id=f"s{i}", task=task, prompt=prompt, references=("x",), length=tokens + 8,
                  context_tokens=tokens, max_new_tokens=4, metadata=metadata)


def pool(*fakes: FakeOpenAI, retries: int = 2, gone_after: int = 8, alive=None) -> list[PoolServer]:
    return [PoolServer(ClientConfig(base_url=f.base_url, timeout_s=10, retries=retries, backoff_s=0.01,
                                    gone_after=gone_after), alive) for f in fakes]


@pytest.fixture
def fakes():
    made: list[FakeOpenAI] = []

    def start(n: int) -> list[FakeOpenAI]:
        made.extend(FakeOpenAI() for _ in range(n))
        return made[-n:]

    yield start
    for fake in made:
        fake.close()


def groups_preferring(names: list[str], per_server: int) -> list[str]:
    """Group names such that each server is the rendezvous choice of ``per_server`` of them."""
    chosen: dict[int, list[str]] = defaultdict(list)
    for k in range(1000):
        name = f"g{k}"
        top = rendezvous_rank(("t", name), names)[0]
        if len(chosen[top]) < per_server:
            chosen[top].append(name)
        if all(len(chosen[i]) == per_server for i in range(len(names))):
            break
    return [g for i in range(len(names)) for g in chosen[i]]


# ---- the scheduler alone -----------------------------------------------------------------------


def states(n: int) -> list[ServerState]:
    return [ServerState(i, PoolServer(ClientConfig(base_url=f"http://h{i}:1/v1"))) for i in range(n)]


def test_rendezvous_is_stable_and_moves_only_the_groups_of_a_server_that_leaves():
    names = [f"http://h{i}:1/v1" for i in range(4)]
    keys = [("t", f"g{k}") for k in range(200)]
    first = {k: names[rendezvous_rank(k, names)[0]] for k in keys}
    assert first == {k: names[rendezvous_rank(k, names)[0]] for k in keys}
    assert min(Counter(first.values()).values()) > 25  # spread over all four
    fewer = names[:3]
    after = {k: fewer[rendezvous_rank(k, fewer)[0]] for k in keys}
    assert all(after[k] == first[k] for k in keys if first[k] != names[3])


def test_leader_alone_then_the_group_follows_on_the_server_that_cached_it():
    servers = states(2)
    names = [s.name for s in servers]
    g0, g1 = groups_preferring(names, 1)  # g0 prefers server 0, g1 server 1
    samples = [make(i, g0) for i in range(3)] + [make(10 + i, g1) for i in range(3)]
    sched = Scheduler(samples, servers, PoolPolicy(concurrency=4, prefix_scheduler=True))
    a, b = servers
    lead_a, lead_b = sched.take(a), sched.take(b)
    assert (lead_a.id, lead_b.id) == ("s0", "s10")
    # while the leaders run, their followers wait; the idle slots would take other groups' leaders
    # (none left here: a cold leader of the other group is allowed, it caches that group there too)
    stolen = sched.take(a)
    assert stolen is not None and stolen.metadata["prefix_group"] == g1 and sched.take(a) is None
    sched.release(a, lead_a, answered=True)  # g0 is now cached on a: its followers go there
    assert [sched.take(a).id, sched.take(a).id] == ["s1", "s2"]


def test_without_prefix_scheduler_one_server_sends_in_order():
    servers = states(1)
    samples = [make(i, "g") for i in range(5)]
    sched = Scheduler(samples, servers, PoolPolicy(concurrency=3))
    assert [sched.take(servers[0]).id for _ in range(3)] == ["s0", "s1", "s2"]
    assert sched.take(servers[0]) is None  # concurrency 3


def test_token_cap_counts_prompt_tokens_and_lets_a_big_prompt_run_alone():
    (server,) = states(1)
    samples = [make(0, tokens=100), make(1, tokens=100), make(2, tokens=500), make(3, tokens=10)]
    sched = Scheduler(samples, [server], PoolPolicy(concurrency=8, max_tokens_in_flight=250))
    first, second = sched.take(server), sched.take(server)
    assert (first.id, second.id) == ("s0", "s1") and sched.take(server) is None  # 500 does not fit
    sched.release(server, first, True)
    assert sched.take(server) is None  # 100 + 500 > 250
    sched.release(server, second, True)
    big = sched.take(server)
    assert big.id == "s2" and server.tokens == 500 and sched.take(server) is None  # alone


# ---- over HTTP -----------------------------------------------------------------------------------


def by_server(generations) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for g in generations:
        out[g.extra["server"]].append(g.sample_id)
    return out


def test_spreads_over_servers_and_each_record_names_the_one_that_answered(fakes):
    a, b = fakes(2)
    a.completion_delay_s = b.completion_delay_s = 0.05
    samples = [make(i) for i in range(24)]
    got = list(generate_pooled(pool(a, b), samples, SPEC, PoolPolicy(concurrency=2)))
    assert sorted(g.sample_id for g in got) == sorted(s.id for s in samples)
    assert all(g.error is None for g in got)
    served = by_server(got)
    assert set(served) == {a.base_url, b.base_url} and min(len(v) for v in served.values()) >= 6
    for fake in (a, b):  # the server named in the record is the one that got the prompt
        prompts = {tuple(p.body["prompt"]) for p in fake.posts()}
        for g in got:
            if g.extra["server"] == fake.base_url:
                assert tuple(int(x) for x in g.prediction.removeprefix("echo:").split(",")) in prompts
    assert a.max_in_flight <= 2 and b.max_in_flight <= 2


def test_groups_stay_on_their_server(fakes):
    a, b = fakes(2)
    a.completion_delay_s = b.completion_delay_s = 0.02
    names = [a.base_url, b.base_url]
    groups = groups_preferring(names, 3)
    samples = [make(10 * k + i, g) for k, g in enumerate(groups) for i in range(4)]
    got = list(generate_pooled(pool(a, b), samples, SPEC, PoolPolicy(concurrency=1, prefix_scheduler=True)))
    assert sorted(g.sample_id for g in got) == sorted(s.id for s in samples)
    group_of = {s.id: s.metadata["prefix_group"] for s in samples}
    servers_of: dict[str, set[str]] = defaultdict(set)
    for g in got:
        servers_of[group_of[g.sample_id]].add(g.extra["server"])
    leaders = {s.metadata["prefix_group"]: s.id for s in reversed(samples)}
    for group in groups:  # each group's leader runs on the server the group hashes to
        leader = next(g for g in got if g.sample_id == leaders[group])
        assert leader.extra["server"] == names[rendezvous_rank(("t", group), names)[0]]
    # balanced preferences, equal speed: a group spills over at most at the very end
    assert sum(len(s) == 1 for s in servers_of.values()) >= len(groups) - 2


def test_prefix_scheduler_sends_the_leader_alone_on_one_server(fake_openai):
    fake_openai.push(delay_s=0.4)  # the leader's answer (the first POST) is slow
    fake_openai.completion_delay_s = 0.05
    samples = [make(i, "g") for i in range(5)]
    server = pool(fake_openai)
    got = [g.sample_id for g in generate_pooled(server, samples, SPEC, PoolPolicy(concurrency=4,
                                                                                  prefix_scheduler=True))]
    assert got[0] == "s0" and sorted(got) == [f"s{i}" for i in range(5)]
    fake_openai.received.clear()
    # s0's own request is slow (not "the first POST": without the scheduler the client's threads send
    # in any order); a wide margin: the followers (0.05 s) must finish first even on a busy machine
    fake_openai.delay_for = lambda body: 2.0 if body.get("prompt") == list(samples[0].prompt.token_ids) else None
    got = [g.sample_id for g in generate_pooled(server, samples, SPEC, PoolPolicy(concurrency=4))]
    assert got[0] != "s0"  # without it the followers run beside the leader and finish first


def test_token_cap_is_respected_by_the_server(fake_openai):
    fake_openai.completion_delay_s = 0.1
    samples = [make(i, tokens=100) for i in range(8)]
    got = list(generate_pooled(pool(fake_openai), samples, SPEC,
                               PoolPolicy(concurrency=8, max_tokens_in_flight=300)))
    assert len(got) == 8 and all(g.error is None for g in got)
    assert fake_openai.max_in_flight == 3


def test_in_flight_requests_of_a_dead_server_move_to_the_others(fakes):
    a, b = fakes(2)
    a.completion_delay_s = b.completion_delay_s = 0.2
    samples = [make(i) for i in range(16)]
    got = []
    for g in generate_pooled(pool(a, b), samples, SPEC, PoolPolicy(concurrency=2)):
        got.append(g)
        if len(got) == 2:
            b.die()  # its requests in flight get no answer, new connections are refused
    assert sorted(g.sample_id for g in got) == sorted(s.id for s in samples)  # each exactly once
    assert all(g.error is None for g in got)  # the failure is the server's, never a sample's
    moved = [g for g in got if g.extra.get("moved_from")]
    assert moved and all(g.extra["server"] == a.base_url and g.extra["moved_from"] == [b.base_url]
                         for g in moved)


def test_a_server_taken_out_is_probed_and_put_back(fakes):
    a, b = fakes(2)
    a.completion_delay_s = b.completion_delay_s = 0.05
    b.push(drop=True, times=3)  # b drops its first three requests, then recovers
    samples = [make(i) for i in range(60)]
    start = time.monotonic()
    got = list(generate_pooled(pool(a, b, retries=1, gone_after=2), samples, SPEC,
                               PoolPolicy(concurrency=1, probe_s=0.3)))
    assert sorted(g.sample_id for g in got) == sorted(s.id for s in samples)
    assert all(g.error is None for g in got)
    assert any(g.extra.get("moved_from") == [b.base_url] for g in got)  # it was taken out
    health = [r for r in b.received if r.method == "GET" and r.path == "/health"]
    assert health  # probed
    assert by_server(got)[b.base_url]  # and answered again afterwards
    assert time.monotonic() - start < 10


def test_5xx_with_a_failing_health_check_takes_the_server_out(fakes):
    a, b = fakes(2)
    b.push(status=500, body={"error": {"message": "EngineDeadError"}}, times=100)
    b.health_status = 503
    samples = [make(i) for i in range(10)]
    got = list(generate_pooled(pool(a, b, retries=1), samples, SPEC, PoolPolicy(concurrency=2)))
    assert sorted(g.sample_id for g in got) == sorted(s.id for s in samples)
    assert all(g.error is None and g.extra["server"] == a.base_url for g in got)


def test_5xx_with_a_healthy_server_is_the_samples_error(fake_openai):
    fake_openai.push(status=500, body={"error": {"message": "bad prompt"}}, times=2)
    (g,) = generate_pooled(pool(fake_openai, retries=1), [make(0)], SPEC, PoolPolicy())
    assert g.error == "HTTP 500: bad prompt (after 2 attempts)" and g.extra["server"] == fake_openai.base_url


def test_a_launched_server_whose_process_exited_is_out_at_once(fakes):
    a, b = fakes(2)
    b.push(status=503, times=100)
    servers = [pool(a)[0], pool(b, retries=5, alive=lambda: False)[0]]
    got = list(generate_pooled(servers, [make(i) for i in range(6)], SPEC, PoolPolicy(concurrency=2)))
    assert all(g.error is None and g.extra["server"] == a.base_url for g in got) and len(got) == 6
    assert len(b.posts()) <= 2  # no retries against a dead engine


def test_all_servers_gone_is_engine_gone_and_nothing_is_recorded_for_the_lost(fakes):
    a, b = fakes(2)
    a.completion_delay_s = b.completion_delay_s = 0.2
    got = []
    with pytest.raises(EngineGone, match="all 2 servers are gone"):
        for g in generate_pooled(pool(a, b), [make(i) for i in range(12)], SPEC, PoolPolicy(concurrency=2)):
            got.append(g)
            if len(got) == 1:
                a.die()
                b.die()
    assert all(g.error is None for g in got) and len(got) < 12


def test_a_server_down_at_the_start_is_skipped_then_used_when_it_answers(fakes):
    a, b = fakes(2)
    a.completion_delay_s = b.completion_delay_s = 0.05
    servers = pool(a, b)
    servers[1].up, servers[1].down_reason = False, "unreachable at start"
    got = list(generate_pooled(servers, [make(i) for i in range(40)], SPEC,
                               PoolPolicy(concurrency=1, probe_s=0.2)))
    assert len(got) == 40 and by_server(got)[b.base_url]
