"""The checkpoint format: round trip, strict loading, documented fields, tokenizer in the folder."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from longctx._errors import LongctxError  # noqa: E402
from longctx.runners.hope import checkpoint as ck  # noqa: E402
from longctx.runners.hope.model import HopeConfig  # noqa: E402


@pytest.mark.parametrize("variant", ["hope", "transformer"])
def test_save_load_round_trip_gives_the_same_model(tiny_checkpoint, variant):
    folder = tiny_checkpoint(variant)
    model, config = ck.load_checkpoint(folder)
    again, _ = ck.load_checkpoint(folder)
    ids = torch.randint(0, model.cfg.vocab_size, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], again(ids)[0])
    assert config["format"] == "longctx-hope" and config["format_version"] == 1
    assert config["model"]["variant"] == variant and config["context_window"] == 4096
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
    assert "embed.weight" in keys and not any("lm_head" in k for k in keys)   # tied head stored once
    assert keys == set(model.state_dict())


def test_saved_weights_are_the_models(tiny_checkpoint, tmp_path, tiny_tokenizer):
    from longctx.runners.hope.model import HopeLM

    torch.manual_seed(7)
    model = HopeLM(HopeConfig(vocab_size=len(tiny_tokenizer), dim=16, memory_hidden=16, chunk_size=4,
                              chunk_size_memory=4, cms_periods=(4,), cms_lr=(0.0,))).eval()
    folder = ck.save_checkpoint(tmp_path / "m", model, tiny_tokenizer, context_window=512, provenance={})
    loaded, _ = ck.load_checkpoint(folder)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_tokenizer_loads_from_the_folder(tiny_checkpoint):
    from longctx._records import Message
    from longctx._tokenizer import HFTokenizer

    tok = HFTokenizer(tiny_checkpoint("hope"))
    assert tok.render_chat([Message("user", "hi")]) == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert tok.decode(tok.encode("magic 1234567.")) == "magic 1234567."
    assert tok.eos_token_id is not None and tok.encode("<|end|>") == [tok.eos_token_id]


def test_loading_is_strict_and_lists_the_keys_on_one_line(tiny_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint("hope"), folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights.pop("blocks.1.titans.m_eta.w1")
    weights["blocks.0.extra.weight"] = torch.zeros(2)
    weights["norm_f.weight"] = torch.zeros(3)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(LongctxError) as err:
        ck.load_checkpoint(folder)
    message = str(err.value)
    assert "\n" not in message
    assert "missing [blocks.1.titans.m_eta.w1]" in message
    assert "unexpected [blocks.0.extra.weight]" in message
    assert "wrong shape [norm_f.weight (3,) != (16,)]" in message


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(format="other"), "format is 'other'"),
    (lambda c: c.update(format_version=99), "format_version 99 is not supported"),
    (lambda c: c.update(surprise=1), "unknown fields surprise"),
    (lambda c: c["model"].update(warp=1), "invalid model config"),
    (lambda c: c["model"].update(variant="mamba"), "invalid model config"),
])
def test_bad_config_is_one_line_error(tiny_checkpoint, tmp_path, edit, match):
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint("hope"), folder)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LongctxError, match=match):
        ck.load_checkpoint(folder)


def test_missing_folder_or_weights(tmp_path, tiny_checkpoint):
    import shutil

    with pytest.raises(LongctxError, match="no config.json"):
        ck.read_config(tmp_path)
    folder = tmp_path / "noweights"
    shutil.copytree(tiny_checkpoint("hope"), folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(LongctxError, match="model.safetensors is missing"):
        ck.load_checkpoint(folder)


def test_every_config_field_is_documented():
    docs = ck.model_field_docs()
    assert set(docs) == set(HopeConfig().to_dict())
    assert all(len(doc) > 10 for doc in docs.values())
    assert set(ck.TOP_FIELDS) == {"format", "format_version", "model", "context_window", "dtype", "provenance"}


def test_models_resolve_a_checkpoint_folder_as_hope(tiny_checkpoint):
    from longctx._models import resolve_model

    resolved = resolve_model(str(tiny_checkpoint("hope")))
    assert resolved.kind == "hope" and resolved.context_window == 4096
