"""The demo training script: data in the RULER niah_single_1 format, a few real training steps."""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("torch")

from longctx.runners.hope import train  # noqa: E402


def test_examples_follow_the_ruler_niah_single_1_format():
    rng = random.Random(0)
    ex = train.niah_example(rng, 3, multi=0.0)
    prompt, answer = ex.pieces[0][0], ex.pieces[1][0]
    assert prompt.startswith("<|user|>\nA special magic number is hidden within the following text.")
    assert prompt.count(train.NOISE_LINE[:40]) >= 2 and "One of the special magic numbers for " in prompt
    key = prompt.split("One of the special magic numbers for ")[1].split(" is: ")[0]
    value = prompt.split(f"{key} is: ")[1].split(".")[0]
    assert prompt.endswith(f"What is the special magic number for {key} mentioned in the provided text?<|end|>\n"
                           f"<|assistant|>\n The special magic number for {key} mentioned in the provided text is")
    assert answer == f" {value}.<|end|>" and len(value) == 7 and value.isdigit()
    adjective, noun = key.split("-")
    assert adjective in train.word_lists()["adjective"] and noun in train.word_lists()["noun"]
    assert ex.pieces[1][1] > ex.pieces[0][1]           # the answer carries the loss


def test_chat_template_matches_the_rendered_prompts(tiny_tokenizer):
    rendered = tiny_tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False,
                                                  add_generation_prompt=True)
    assert rendered == train.chat("q")


def test_batches_keep_answers_whole_and_weights_aligned(tiny_tokenizer):
    rng = random.Random(1)
    ids, targets, weights = train.make_batch(tiny_tokenizer, rng, 8, 128, 25, batch_tokens=512)
    assert ids.shape == targets.shape == weights.shape and ids.shape[0] == 4
    assert (ids[:, 1:] == targets[:, :-1])[weights[:, 1:] > 0].all()   # targets are the next ids
    digits = {tiny_tokenizer.convert_tokens_to_ids(str(i)) for i in range(10)}
    digits |= {tiny_tokenizer.convert_tokens_to_ids(f"{i:03d}") for i in range(1000)}  # 3-digit tokens
    supervised = targets[weights == 1.0].tolist()
    assert supervised and set(supervised) <= digits | {tiny_tokenizer.convert_tokens_to_ids(t) for t in
                                                        (" ", ".", "<|end|>", "\u0120")}


def test_a_few_training_steps_write_a_loadable_checkpoint(tmp_path, monkeypatch):
    from longctx.runners.hope.checkpoint import load_checkpoint

    build = train.build_tokenizer
    monkeypatch.setattr(train, "build_tokenizer", lambda seed, vocab_size: build(seed, vocab_size, corpus_size=200))
    folder = tmp_path / "ckpt"
    train.main(["--variant", "hope", "--out", str(folder), "--steps", "3", "--batch", "2", "--min-len", "96",
                "--max-len", "96", "--vocab-size", "300", "--log-every", "1"])
    model, config = load_checkpoint(folder)
    assert config["model"]["variant"] == "hope" and config["provenance"]["steps"] == 3
    assert config["model"]["memory_normalized_steps"] and model.cfg.vocab_size == 300 + 1000  # BPE entries + three-digit tokens
    assert "longctx.runners.hope.train" in config["provenance"]["command"]
    assert json.loads((folder / "tokenizer_config.json").read_text())["eos_token"] == "<|end|>"


def test_the_mix_options_choose_the_kinds_of_examples(tiny_tokenizer):
    """--text 0 --drill 0 --prose 0 gives only noise-haystack NIAH prompts and needle recall."""
    ids, targets, weights = train.make_batch(tiny_tokenizer, random.Random(2), 16, 160, 25, multi=0.0,
                                             drill=0.0, prose=0.0, text=0.0)
    rows = [tiny_tokenizer.decode(r[w > 0].tolist()) for r, w in zip(targets, weights)]
    assert all("magic number" in r for r in rows)                       # no drills, no plain text
    assert not any("Numbers:" in r or "The numbers again" in r for r in rows)
    ids, targets, weights = train.make_batch(tiny_tokenizer, random.Random(2), 16, 160, 25, drill=0.0, text=1.0)
    assert not (weights == 1.0).any()                                   # plain text only: no answers


def test_stop_step_and_kept_saves(tmp_path, monkeypatch):
    from longctx.runners.hope.checkpoint import read_config

    build = train.build_tokenizer
    monkeypatch.setattr(train, "build_tokenizer", lambda seed, vocab_size: build(seed, vocab_size, corpus_size=200))
    folder = tmp_path / "ckpt"
    train.main(["--variant", "transformer", "--out", str(folder), "--steps", "10", "--stop-step", "4",
                "--save-every", "2", "--keep-saves", "--batch", "2", "--min-len", "96", "--max-len", "96",
                "--vocab-size", "300", "--log-every", "1"])
    assert read_config(folder)["provenance"]["steps"] == 4
    assert read_config(folder)["provenance"]["steps_planned"] == 10
    assert read_config(tmp_path / "ckpt-step2")["provenance"]["steps"] == 2
    kept = tmp_path / "ckpt-step4"                                       # the last periodic save, copied
    assert (kept / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_init_continues_a_stage_and_keeps_its_provenance(tmp_path, monkeypatch):
    from longctx.runners.hope.checkpoint import read_config

    build = train.build_tokenizer
    monkeypatch.setattr(train, "build_tokenizer", lambda seed, vocab_size: build(seed, vocab_size, corpus_size=200))
    common = ["--variant", "transformer", "--steps", "2", "--batch", "2", "--min-len", "96", "--max-len", "96",
              "--vocab-size", "300", "--log-every", "1"]
    first, second = tmp_path / "A", tmp_path / "B"
    train.main(common + ["--out", str(first)])
    train.main(common + ["--out", str(second), "--init", str(first), "--seed", "1"])
    provenance = read_config(second)["provenance"]
    assert provenance["init"] == str(first)
    assert provenance["init_provenance"]["command"] == read_config(first)["provenance"]["command"]
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()   # the same BPE
    settings = json.loads((second / "tokenizer_config.json").read_text())
    assert "is_local" not in settings and "local_files_only" not in settings
    with pytest.raises(SystemExit, match="configuration differs"):
        train.main(common[:1] + ["hope"] + common[2:] + ["--out", str(tmp_path / "C"), "--init", str(first)])
