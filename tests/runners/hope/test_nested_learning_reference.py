"""A checkpoint written by the real nested-learning 0.2.0, converted, computes the package's logits.

The data (``data/nested_learning_0.2.0``, made by ``make.py`` there with the installed package)
hold the package's logits in its two semantics: its forward (the Titans memories read, not
written) and its ``forward_with_updates`` pass (read the chunk-start state, write every chunk).
Converted folders default to the first (``titans_writes`` false); ``titans_writes`` true is the second.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")

from longctx._protocols import RunnerConfig  # noqa: E402
from longctx._registry import get_runner_entry  # noqa: E402
from longctx.runners.hope import convert as cv  # noqa: E402
from longctx.runners.hope.checkpoint import load_checkpoint  # noqa: E402
from longctx.runners.hope.runner import HopeOptions  # noqa: E402

DATA = Path(__file__).parent / "data" / "nested_learning_0.2.0"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_tokenizer):
    tmp = tmp_path_factory.mktemp("nl")
    tiny_tokenizer.save_pretrained(tmp / "tok")
    return cv.convert(DATA / "step_000001.pt", tmp / "out", tokenizer=tmp / "tok")


def reference():
    from safetensors.torch import load_file

    return load_file(str(DATA / "logits.safetensors"))


def test_both_semantics_reproduce_the_package(converted):
    ref = reference()
    model, config = load_checkpoint(converted)
    assert config["model"]["titans_writes"] is False
    assert config["provenance"]["titans_semantics"] == cv.TITANS_SEMANTICS
    # the two semantics really differ on this checkpoint (the test can tell them apart)
    assert (ref["logits_forward"] - ref["logits_updates"]).abs().max() > 1.0
    with torch.no_grad():
        read_only = model(ref["tokens"])[0][..., :128]
        model.cfg.titans_writes = True
        written = model(ref["tokens"])[0][..., :128]
    torch.testing.assert_close(read_only, ref["logits_forward"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(written, ref["logits_updates"], atol=1e-4, rtol=1e-4)


def test_runner_option_overrides_the_checkpoint(converted):
    ref = reference()
    entry = get_runner_entry("hope")
    for value in (None, True):
        with entry.factory(config=RunnerConfig(model=str(converted)), options=HopeOptions(titans_writes=value)) as r:
            assert r.identity()["titans_writes"] is bool(value)
            with torch.no_grad():
                logits = r._lm(ref["tokens"])[0][..., :128]
        expected = ref["logits_updates"] if value else ref["logits_forward"]
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
