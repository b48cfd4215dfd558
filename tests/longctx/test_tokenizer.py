"""The Rust/jinja2 path of HFTokenizer gives transformers' ids, text and chat rendering."""

from __future__ import annotations

import json
import random
import shutil
import sys

import pytest

from longctx._records import Message
from longctx._tokenizer import HFTokenizer, folder_fingerprint

TEXTS = ["héllo \u2063x\u2063 <|im_start|> 🎉 tab\tnl\n  two  spaces ", " lead", "trail ", "", "\n\n\n",
         "One of the special magic numbers for tall-tree is: 1234567.", "日本語のテキスト。"]


@pytest.fixture(scope="module")
def pair(default_model_path):
    transformers = pytest.importorskip("transformers")
    fast = HFTokenizer(default_model_path)
    assert fast._rust is not None, "the default model's folder is a plain fast tokenizer"
    return fast, transformers.AutoTokenizer.from_pretrained(str(default_model_path))


def test_ids_text_and_chat_match_transformers(pair):
    fast, ref = pair
    from longctx.tasks import _haystacks as hs

    essay = hs.text_files(hs.essay_dir())[:60000]
    rng = random.Random(0)
    texts = TEXTS + [essay[i:i + rng.randint(1, 3000)] for i in range(0, len(essay), 2000)]
    for text in texts:
        ids = fast.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False), text[:60]
        assert fast.decode(ids) == ref.decode(ids, skip_special_tokens=False)
    assert fast.encode_batch(texts) == ref(texts, add_special_tokens=False)["input_ids"]
    for msgs in ([Message("user", "hi {context}")], [Message("system", "S"), Message("user", "q\nz")]):
        plain = [{"role": m.role, "content": m.content} for m in msgs]
        assert fast.render_chat(msgs) == ref.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    assert fast.eos_token_id == ref.eos_token_id


def test_start_up_does_not_import_transformers(default_model_path):
    import subprocess

    code = (f"from longctx._tokenizer import HFTokenizer; t = HFTokenizer({str(default_model_path)!r}); "
            "t.render_chat([]); t.encode('x'); import sys; print('transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_unusual_folders_go_through_transformers(default_model_path, tmp_path):
    pytest.importorskip("transformers")
    folder = tmp_path / "tok"
    shutil.copytree(default_model_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["clean_up_tokenization_spaces"] = True
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    tok = HFTokenizer(folder)
    assert tok._rust is None and tok._tok is not None
    assert tok.decode(tok.encode("a , b")) == tok._tok.decode(tok._tok.encode("a , b", add_special_tokens=False))


def test_fingerprint_follows_the_tokenizer_files(default_model_path, tmp_path):
    folder = tmp_path / "tok"
    shutil.copytree(default_model_path, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    before = folder_fingerprint(folder)
    assert before == HFTokenizer(folder).fingerprint == folder_fingerprint(default_model_path)
    (folder / "config.json").write_text("{}")  # not a tokenizer file
    assert folder_fingerprint(folder) == before
    (folder / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert folder_fingerprint(folder) != before
