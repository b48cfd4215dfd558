"""Runner ``hope`` on samples built with the prompt frame and the checkpoint's own tokenizer."""

from __future__ import annotations

import msgspec
import pytest

pytest.importorskip("torch")

from longctx._errors import LongctxError  # noqa: E402
from longctx._models import NAMED  # noqa: E402
from longctx._prompting import frame  # noqa: E402
from longctx._protocols import RunnerConfig  # noqa: E402
from longctx._records import Sample  # noqa: E402
from longctx._registry import get_runner_entry, parse_options, runners  # noqa: E402
from longctx._tokenizer import hf_tokenizer  # noqa: E402


def make_runner(folder, **options):
    entry = get_runner_entry("hope")
    opts = parse_options(entry.factory, options, "runner hope")
    return entry.factory(config=RunnerConfig(model=str(folder)), options=opts)


def niah_samples(folder, n=2, haystack_lines=12, max_new_tokens=12):
    tok = hf_tokenizer(str(folder))
    out = []
    for i in range(n):
        key, value = f"key-{i}", str(1234567 + 1111 * i)
        lines = ["The grass is green. The sky is blue."] * haystack_lines
        lines.insert(i + 2, f"One of the special magic numbers for {key} is: {value}.")
        pf = frame(tok, "A special magic number is hidden.\n{context}\nWhat is the number for " + key + "?",
                   answer_prefix=f" The special magic number for {key} is")
        context = "\n".join(lines)
        prompt = pf.prompt(tok.encode(context), tok, context)
        out.append(Sample(id=f"t|{i}", task="test", prompt=prompt, references=(value,), length=4096,
                          context_tokens=len(prompt.token_ids), max_new_tokens=max_new_tokens))
    return out


def test_registered_with_named_demo_models():
    assert "hope" in runners()
    for name in ("hope-demo", "transformer-demo"):
        model = NAMED[name]
        assert model.kind == "hope" and model.path.is_absolute()
        assert model.path.parent.name == "checkpoints" and model.path.parent.parent.name == "hope"


@pytest.mark.parametrize("variant", ["hope", "transformer"])
def test_generate_streams_and_decodes(tiny_checkpoint, variant):
    folder = tiny_checkpoint(variant)
    samples = niah_samples(folder)
    with make_runner(folder, prefill_chunk=512) as r:
        assert r.context_window() == 4096
        assert r.tokenizer().encode("hi") == hf_tokenizer(str(folder)).encode("hi")
        gens = list(r.generate(samples))
        ident = r.identity()
    assert [g.sample_id for g in gens] == [s.id for s in samples]
    for g, s in zip(gens, samples):
        assert g.error is None and isinstance(g.prediction, str)
        assert 1 <= g.completion_tokens <= s.max_new_tokens and g.prompt_tokens == s.context_tokens
        assert g.extra["state_position"] == s.context_tokens + g.completion_tokens - 1   # reset per sample
    assert ident["variant"] == variant and ident["engine"] == "longctx-hope" and ident["weights_sha256"]
    if variant == "hope":   # fast state only: same size for both prompts
        assert gens[0].extra["state_bytes"] == gens[1].extra["state_bytes"]


def test_prefill_chunk_does_not_change_the_answer(tiny_checkpoint):
    folder = tiny_checkpoint("hope")
    samples = niah_samples(folder, n=1)
    with make_runner(folder, prefill_chunk=512) as r:
        one = next(iter(r.generate(samples)))
    with make_runner(folder, prefill_chunk=7) as r:
        streamed = next(iter(r.generate(samples)))
    assert streamed.prediction == one.prediction and streamed.completion_tokens == one.completion_tokens


def test_state_is_reset_per_sample_unless_carried(tiny_checkpoint):
    folder = tiny_checkpoint("hope")
    a, b = niah_samples(folder, n=2)
    with make_runner(folder) as r:
        alone = next(iter(r.generate([b])))
    with make_runner(folder) as r:
        reset = list(r.generate([a, b]))
    with make_runner(folder, carry_state=True) as r:
        carried = list(r.generate([a, b]))
        position = r._state.position
    assert reset[1].prediction == alone.prediction                       # nothing leaks from a into b
    fed = [s.context_tokens + g.completion_tokens - 1 for s, g in zip((a, b), carried)]
    assert carried[1].extra["state_position"] == position == sum(fed)    # b continued a's state
    assert carried[0].prediction == reset[0].prediction


def test_chat_mode_and_context_window(tiny_checkpoint):
    folder = tiny_checkpoint("hope")
    sample = niah_samples(folder, n=1)[0]
    entry = get_runner_entry("hope")
    with entry.factory(config=RunnerConfig(model=str(folder), mode="chat"), options=None) as r:
        gen = next(iter(r.generate([sample])))
    assert gen.error is None and gen.prompt_tokens < sample.context_tokens   # no answer prefix in chat mode
    long = Sample(id="long", task="t", prompt=sample.prompt, references=(), length=8192,
                  context_tokens=sample.context_tokens, max_new_tokens=4096)
    with make_runner(folder) as r:
        gen = next(iter(r.generate([long])))
    assert gen.prediction is None and "exceeds the context window of 4096" in gen.error


def test_chat_prompt_and_answer_text_are_those_of_transformers(tiny_checkpoint):
    """Runner hope reads the folder with longctx's tokenizer (no transformers import): the chat
    prompt's ids and the decoded answer (special tokens skipped) are what transformers gives."""
    transformers = pytest.importorskip("transformers")
    from longctx.runners._in_process import prompt_ids

    folder = tiny_checkpoint("hope")
    sample = niah_samples(folder, n=1)[0]
    ref = transformers.AutoTokenizer.from_pretrained(str(folder))
    msgs = [{"role": m.role, "content": m.content} for m in sample.prompt.messages]
    want = ref.encode(ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True), add_special_tokens=False)
    with make_runner(folder) as r:
        assert prompt_ids(r._tok, sample, "chat") == want == prompt_ids(ref, sample, "chat")
        ids = want[:5] + [ref.eos_token_id] + want[5:9]
        assert r._tok.decode(ids, skip_special=True) == ref.decode(ids, skip_special_tokens=True)
        assert r._tok.decode(ids) != r._tok.decode(ids, skip_special=True)


def test_runner_hope_does_not_import_transformers():
    """Start-up: a generation with the shipped hope-demo imports torch, not transformers (~4 s)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from longctx._protocols import RunnerConfig\n"
        "from longctx._records import Prompt, Sample\n"
        "from longctx._registry import get_runner_entry\n"
        "s = Sample(id='a', task='t', prompt=Prompt(messages=(), text='x', token_ids=(5, 6, 7)), references=('1',),\n"
        "           length=3, context_tokens=3, max_new_tokens=2)\n"
        "with get_runner_entry('hope').factory(config=RunnerConfig(model='hope-demo'), options=None) as r:\n"
        "    g = next(iter(r.generate([s])))\n"
        "assert g.error is None and g.completion_tokens >= 1, g\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_bad_configuration_is_a_user_error(tiny_checkpoint, default_model_path, tmp_path):
    entry = get_runner_entry("hope")
    with pytest.raises(LongctxError, match="not a longctx HOPE checkpoint"):
        entry.factory(config=RunnerConfig(model=str(default_model_path)), options=None)
    with pytest.raises(LongctxError, match="does not take --endpoint"):
        entry.factory(config=RunnerConfig(model="x", endpoint="http://localhost:1/v1"), options=None)
    with pytest.raises(LongctxError, match="bad option for runner hope"):
        parse_options(entry.factory, {"carry": "yes"}, "runner hope")
    with pytest.raises(LongctxError, match="no such folder"):
        entry.factory(config=RunnerConfig(model=str(tmp_path / "nope")), options=None)


@pytest.mark.slow
def test_shipped_demo_checkpoints_run_on_ruler_niah():
    """The committed checkpoints load by name and run; hope-demo answers RULER niah_single_1 at 1K
    (README: 15/15 there) with a state that does not grow. transformer-demo, trained on the same
    data and steps (stages A and B), does not retrieve: only that it runs is checked."""
    from longctx._protocols import Grid
    from longctx._registry import get_task

    task = get_task("ruler/niah_single_1")
    scores = {}
    for name in ("transformer-demo", "hope-demo"):
        with get_runner_entry("hope").factory(config=RunnerConfig(model=name), options=None) as r:
            samples = list(task.samples(Grid(lengths=(1024,), depths=(10.0, 90.0), samples=2), r.tokenizer()))
            gens = list(r.generate(samples))
            cfg = r._lm.cfg  # released when the runner exits
        assert all(g.error is None for g in gens)
        scores[name] = [task.scorer.score(g.prediction, s)["string_match_all"] for g, s in zip(gens, samples)]
        if name == "hope-demo":   # flat: samples differ only by the tokens pending in a chunk (< one chunk)
            sizes = [g.extra["state_bytes"] for g in gens]
            assert max(sizes) - min(sizes) < cfg.chunk_size * (2 * cfg.dim + 2) * 4 * cfg.n_layers * 2
    assert sum(scores["hope-demo"]) >= 3


@pytest.mark.parametrize("variant", ["hope", "transformer"])
def test_batched_streaming_gives_the_answers_of_one_at_a_time(tiny_checkpoint, variant):
    """Prompts of different lengths streamed in batches answer as when run one by one; a sample
    that cannot run keeps its own error and the others still answer."""
    folder = tiny_checkpoint(variant)
    samples = [s for n in (8, 12, 15) for s in niah_samples(folder, n=2, haystack_lines=n)]
    samples = [msgspec.structs.replace(s, id=f"{s.id}|{i}") for i, s in enumerate(samples)]
    too_long = msgspec.structs.replace(samples[1], id="too-long", max_new_tokens=5000)   # beyond the window
    with make_runner(folder, batch=1) as r:
        alone = list(r.generate(samples))
    with make_runner(folder, batch=4, prefill_chunk=16) as r:
        assert r._batches()
        batched = list(r.generate(samples[:2] + [too_long] + samples[2:]))
    assert [g.sample_id for g in batched] == [s.id for s in samples[:2]] + ["too-long"] + [s.id for s in samples[2:]]
    assert batched.pop(2).error
    for one, many in zip(alone, batched):
        assert many.error is None and many.prediction == one.prediction
        assert many.completion_tokens == one.completion_tokens and many.prompt_tokens == one.prompt_tokens
        assert many.extra["state_position"] == one.extra["state_position"] and many.latency_s > 0
    with make_runner(folder, batch=4, carry_state=True) as r:
        assert not r._batches()                        # carried state: one at a time, in order
