"""Tokenizers tasks fit lengths with: a local Hugging Face tokenizer folder.

A folder whose ``tokenizer.json`` is a plain fast tokenizer (``tokenizer_config.json`` names no
custom class or remote code) is read with the Rust ``tokenizers`` library and its chat template
rendered with jinja2 the way ``transformers``' ``apply_chat_template`` does (sandboxed, trimmed
blocks, ``tojson``/``raise_exception``/``strftime_now``, the special tokens as variables): the
same ids and text without importing ``transformers`` (seconds of start-up, torch included). Any
other folder goes through ``transformers.AutoTokenizer`` (lazy).

Remote tokenizers (a served model's ``/tokenize``) live with the runner that talks to the server.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from longctx._errors import LongctxError
from longctx._records import Message

#: ``tokenizer_class`` values that are nothing but ``tokenizer.json`` (transformers 4 and 5 names).
_PLAIN_CLASSES = {None, "PreTrainedTokenizerFast", "TokenizersBackend", "GPT2TokenizerFast"}
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
#: Files that decide what a tokenizer folder produces (hashed into :attr:`HFTokenizer.fingerprint`).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def folder_fingerprint(path: str | Path) -> str:
    """sha256 over the tokenizer files of a folder (names and bytes): equal = same tokenization."""
    folder = Path(path)
    digest = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        file = folder / name
        if file.is_file():
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


class _RustBackend:
    """``tokenizer.json`` through ``tokenizers`` and the chat template through jinja2."""

    def __init__(self, folder: Path, config: dict[str, Any]):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        self.chat_template: str | None = template if isinstance(template, str) else None
        self.special = {k: _token_text(config.get(k)) for k in
                        ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")}
        self.special = {k: v for k, v in self.special.items() if v is not None}
        eos = self.special.get("eos_token")
        self.eos_token_id = self._tok.token_to_id(eos) if eos else None
        self._compiled: Any = None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if len(texts) <= 16:  # waking the Rust thread pool costs more than a few short texts
            return [self.encode(t) for t in texts]
        batch = getattr(self._tok, "encode_batch_fast", None) or self._tok.encode_batch  # fast: no offsets
        return [e.ids for e in batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def render(self, msgs: list[dict[str, str]]) -> str:
        if self._compiled is None:
            self._compiled = _compile(self.chat_template or "")
        return self._compiled.render(messages=msgs, tools=None, documents=None, add_generation_prompt=True,
                                     **self.special)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # AddedToken as saved by transformers 4
        value = value.get("content")
    return value if isinstance(value, str) else None


def _compile(template: str) -> Any:
    """The template compiled as transformers' ``_cached_compile_jinja_template`` does."""
    from datetime import datetime

    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _plain_fast(folder: Path) -> dict[str, Any] | None:
    """``tokenizer_config.json`` when the folder is a plain fast tokenizer the Rust path can read."""
    if not (folder / "tokenizer.json").is_file():
        return None
    try:
        import jinja2  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("auto_map") or config.get("tokenizer_class") not in _PLAIN_CLASSES:
        return None
    if config.get("clean_up_tokenization_spaces") or config.get("add_prefix_space") is not None:
        return None  # transformers post-processes decode / pre-tokenization: keep its behaviour
    template = config.get("chat_template")
    if (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if template is not None and (not isinstance(template, str) or _GENERATION_TAG.search(template)):
        return None  # named templates or {% generation %} blocks: transformers' own renderer
    return config


class HFTokenizer:
    """A local tokenizer folder (``tokenizer.json`` / chat template)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.name = self.path
        folder = Path(self.path).expanduser()
        config = _plain_fast(folder)
        self._rust: _RustBackend | None = None
        self._tok: Any = None
        if config is not None:
            try:
                self._rust = _RustBackend(folder, config)
            except Exception:  # noqa: BLE001 - an unusual tokenizer.json: transformers decides
                self._rust = None
        if self._rust is None:
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise LongctxError(
                    "reading a local model's tokenizer needs transformers: pip install 'longctx[hf]'"
                ) from None
            try:
                self._tok = AutoTokenizer.from_pretrained(self.path)
            except (OSError, ValueError) as exc:
                raise LongctxError(f"cannot load a tokenizer from {self.path}: {str(exc).splitlines()[0]}") from None
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 of the folder's tokenizer files (cache key: same files, same tokens)."""
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(Path(self.path).expanduser())
        return self._fingerprint

    @property
    def eos_token_id(self) -> int | None:
        """End-of-sequence id, if the tokenizer has one."""
        return self._rust.eos_token_id if self._rust is not None else self._tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        if self._rust is not None:
            return self._rust.encode(text)
        return self._tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts in one call (fast tokenizers batch in Rust)."""
        if not texts:
            return []
        if self._rust is not None:
            return self._rust.encode_batch(texts)
        return self._tok(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of ``ids``: special tokens kept (so chat markup round-trips) unless ``skip_special``
        (a generated answer, as ``transformers``' ``skip_special_tokens=True`` and vLLM give it)."""
        if self._rust is not None:
            return self._rust.decode(ids, skip_special)
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def render_chat(self, messages: Sequence[Message]) -> str:
        """Chat template with the generation prompt; plain user text when there is no template."""
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        if self._rust is not None:
            if self._rust.chat_template:
                return self._rust.render(msgs)
        elif getattr(self._tok, "chat_template", None):
            return self._tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in msgs)


@lru_cache(maxsize=8)
def hf_tokenizer(path: str) -> HFTokenizer:
    """Cached :class:`HFTokenizer` per folder."""
    return HFTokenizer(path)
