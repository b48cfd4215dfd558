"""Runner ``hf``, forced choice, with the real default model (slow: loads SmolLM2-135M)."""

from __future__ import annotations

import msgspec
import pytest
from longctx.runners.hf import HFRunner

from longctx._choice import choice_scores
from longctx._protocols import RunnerConfig
from longctx._records import Choices


def test_without_the_model_loaded_choose_refuses(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"max_position_embeddings": 1024}')
    with pytest.raises(RuntimeError, match="context manager"):
        list(HFRunner(RunnerConfig(model=str(folder))).choose([]))


def full_forward_logliks(runner, prompt_ids, candidates):
    """Reference: one forward over prompt + candidate, the candidate's token log-probs summed."""
    torch = runner._torch
    out = []
    with torch.inference_mode():
        for cand in candidates:
            cids = runner._tok.encode(cand, add_special_tokens=False)
            ids = torch.tensor([list(prompt_ids) + cids])
            logp = torch.log_softmax(runner._lm(input_ids=ids).logits[0, :-1].float(), -1)
            n = len(prompt_ids)
            out.append(float(logp[n - 1:].gather(-1, ids[0, n:, None]).sum()))
    return out


@pytest.mark.slow
def test_the_needle_outscores_distractors_and_logliks_equal_a_full_forward(smol_tokenizer, niah_sample):
    easy = niah_sample(smol_tokenizer, "hf-choice", 7340291, repeats=3)
    cands = (" 5028316", " 7340291", " 1199402", " 7340921")
    easy = msgspec.structs.replace(easy, choices=Choices(cands, 1))
    as_text = msgspec.structs.replace(easy, id="hf-choice-text", prompt=msgspec.structs.replace(easy.prompt,
                                                                                               token_ids=None))
    with HFRunner(RunnerConfig(model="default")) as runner:
        gens = {g.sample_id: g for g in runner.choose([easy, as_text])}
        reference = full_forward_logliks(runner, easy.prompt.token_ids, cands)
    gen = gens["hf-choice"]
    assert gen.error is None, gen.error
    choice = gen.extra["choice"]
    assert choice["logliks"] == pytest.approx(reference, abs=2e-3)  # KV cache vs one forward: float noise
    assert choice["chosen"] == 1 and gen.prediction == " 7340291" and choice["margin"] > 0
    assert choice_scores(choice, easy) == {"choice_accuracy": 1.0}
    # the same model, the true value declared to be a distractor: wrong
    assert choice_scores(choice, msgspec.structs.replace(easy, choices=Choices(cands, 0))) == {"choice_accuracy": 0.0}
    assert gens["hf-choice-text"].extra["choice"]["logliks"] == pytest.approx(choice["logliks"], abs=1e-4)
