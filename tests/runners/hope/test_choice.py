"""Runner ``hope``, forced choice: candidate log-likelihoods equal a full forward over prompt + candidate."""

from __future__ import annotations

import msgspec
import pytest

torch = pytest.importorskip("torch")

from longctx._choice import choice_scores
from longctx._prompting import frame
from longctx._protocols import RunnerConfig
from longctx._records import Choices, Sample
from longctx._registry import get_runner_entry, parse_options
from longctx._tokenizer import hf_tokenizer


def make_runner(folder, **options):
    entry = get_runner_entry("hope")
    return entry.factory(config=RunnerConfig(model=str(folder)),
                         options=parse_options(entry.factory, options, "runner hope"))


def niah_samples(folder, n=2, haystack_lines=12):
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
                          context_tokens=len(prompt.token_ids), max_new_tokens=12))
    return out


def with_choices(sample, candidates, correct=0):
    return msgspec.structs.replace(sample, choices=Choices(tuple(candidates), correct))


def full_forward_logliks(folder, prompt_ids, candidates):
    """Reference: one fresh forward over prompt + candidate per candidate, summed log-probs."""
    from longctx.runners.hope.checkpoint import load_checkpoint

    lm, _ = load_checkpoint(folder)
    tok = hf_tokenizer(str(folder))
    out = []
    with torch.inference_mode():
        for cand in candidates:
            cids = tok.encode(cand)
            ids = torch.tensor([list(prompt_ids) + cids])
            logits, _ = lm(ids, None, learn=False, logits="all")                # (1, T, V)
            logp = torch.log_softmax(logits[0, :-1].float(), -1)
            n = len(prompt_ids)
            out.append(float(logp[n - 1:].gather(-1, ids[0, n:, None]).sum()))
    return out


@pytest.mark.parametrize("variant", ["hope", "transformer"])
def test_logliks_equal_a_full_forward(tiny_checkpoint, variant):
    folder = tiny_checkpoint(variant)
    sample = with_choices(niah_samples(folder, n=1)[0], [" 1234567", " 7654321", " 42"])
    with make_runner(folder, prefill_chunk=7) as runner:
        (gen,) = list(runner.choose([sample]))
    assert gen.error is None, gen.error
    choice = gen.extra["choice"]
    expected = full_forward_logliks(folder, sample.prompt.token_ids, sample.choices.candidates)
    assert choice["logliks"] == pytest.approx(expected, abs=1e-4)
    assert choice["tokens"] == [len(hf_tokenizer(str(folder)).encode(c)) for c in sample.choices.candidates]
    best = max(range(3), key=lambda i: choice["logliks"][i])
    assert choice["chosen"] == best and gen.prediction == sample.choices.candidates[best]
    # scored against whichever candidate is declared true: right for the model's favourite only
    for correct in range(3):
        relabelled = with_choices(sample, sample.choices.candidates, correct)
        assert choice_scores(choice, relabelled)["choice_accuracy"] == float(correct == best)


def test_carry_state_keeps_the_prompt_state_not_a_candidate(tiny_checkpoint):
    folder = tiny_checkpoint("hope")
    a, b = niah_samples(folder, n=2)
    a = with_choices(a, [" 1", " 2"])
    b = with_choices(b, [" 3", " 4"])
    with make_runner(folder, carry_state=True) as runner:
        gens = list(runner.choose([a, b]))
        position = gens[-1].extra["state_position"]
    assert all(g.error is None for g in gens)
    assert position == len(a.prompt.token_ids) + len(b.prompt.token_ids)
