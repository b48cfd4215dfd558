"""Convert checkpoints of the community reproduction ``nested-learning`` into the longctx format.

Facts about the source format, read from the reproduction's source (PyPI ``nested-learning``
0.2.0, GitHub kmccleary3301/nested_learning; not imported: its pins, ``datasets<3`` and
``huggingface-hub<1``, conflict with vLLM's):

- a checkpoint is ``torch.save({"model": state_dict, "optimizer": ..., "step": int,
  "config": resolved Hydra config})`` next to ``<stem>.yaml`` (the same config) and
  ``<stem>.meta.json``; the model section holds ``ModelConfig`` fields (``block_variant``,
  ``dim``, ``num_layers``, ``heads``, ``cms_levels`` [{name, update_period}], ``self_mod_*``,
  ``qk_l2_norm``, ``local_conv_window``, ...); the tokenizer is a SentencePiece model at
  ``data.tokenizer_path``;
- variants ``hope_selfmod`` (the paper's HOPE), ``hope_attention``, ``transformer`` and
  ``hope_hybrid`` (the reproduction's own: attention + a memory MLP + CMS; not in the paper);
- the LM head is tied to the embedding; at inference (no label-driven "teach signal") its CMS
  levels and hybrid memory are static;
- its forward for ``hope_selfmod`` does NOT write the self-modifying Titans memories:
  ``HOPESelfModBlock.forward`` calls ``SelfModifyingTitans.forward``, which reads M_memory at its
  stored weights for every token (``m_memory(normalize(w_q(conv(x))))``); the chunkwise writes of
  Eqs. 88-93 happen only in ``SelfModifyingTitans.forward_with_updates``, called by the separate
  update pass (``apply_updates_inplace``, after an outer backward, with a teach signal) or on a
  fast state given a teach signal. Checked against the installed package 0.2.0
  (``nested_learning/hope/block.py``, ``nested_learning/titan/self_modifying.py``).

Converted ``hope`` checkpoints therefore set ``titans_writes`` false: they compute what the
package's forward computes (tested against logits the package produced,
``tests/runners/hope/data/nested_learning_0.2.0``). ``-R titans_writes=true`` runs them with
longctx's in-context writes instead (the package's ``forward_with_updates`` read-then-write order,
also tested); the provenance's ``titans_semantics`` says which one the folder holds.

Converted checkpoints keep every setting that changes the function computed at inference
(``eta_scale`` = ``self_mod_lr``, chunk sizes, ``use_skip``, q/k normalisation, conv windows) and
set ``cms_lr`` to 0 (their CMS updates need labels). Settings the longctx model does not
implement (adaptive q, momentum, the ``dot`` objective, no stop-gradient on v_hat, no rank-1
preconditioner, no alpha) are refused with the list of them.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from longctx._errors import LongctxError
from longctx.runners._openai_client import one_line

#: Recorded in converted ``hope`` folders: what the reproduction computes and what the folder does.
TITANS_SEMANTICS = ("nested-learning 0.2.0's forward reads the Titans memories without writing them "
                    "(writes only in its teach-signal update pass); titans_writes=false reproduces it, "
                    "-R titans_writes=true runs longctx's in-context writes")

#: Reproduction variant -> longctx variant.
VARIANTS = {"hope_selfmod": "hope", "hope_attention": "hope_attention", "transformer": "transformer",
            "hope_hybrid": "hope_hybrid"}
#: Variants that are not in the paper: refused unless ``allow_nonpaper``.
NONPAPER = {"hope_hybrid"}

#: (reproduction key regex, longctx key template); ``{i}`` layer, ``{j}`` CMS level index.
_LAYER_KEYS = [
    (r"selfmod\.local_conv\.weight", "titans.conv.conv.weight"),
    (r"selfmod\.w_q\.weight", "titans.w_q.weight"),
    (r"selfmod\.m_(k|v|eta|alpha|memory)\.(w1|w2|w_skip)\.weight", "titans.m_{0}.{1}"),
    (r"attn\.(qkv|out_proj)\.weight", "attn.{0}.weight"),
    (r"attn\.norm\.(weight|bias)", "attn.norm.{0}"),
    (r"attn\.local_conv\.weight", "attn.conv.conv.weight"),
    (r"cms\.blocks\.(?P<level>[^.]+)\.net\.0\.(weight|bias)", "cms.levels.{j}.norm.{1}"),
    (r"cms\.blocks\.(?P<level>[^.]+)\.net\.1\.(weight|bias)", "cms.levels.{j}.fc1.{1}"),
    (r"cms\.blocks\.(?P<level>[^.]+)\.net\.3\.(weight|bias)", "cms.levels.{j}.fc2.{1}"),
    (r"mlp\.norm\.(weight|bias)", "mlp.norm.{0}"),
    (r"mlp\.net\.0\.weight", "mlp.fc1.weight"),
    (r"mlp\.net\.2\.weight", "mlp.fc2.weight"),
    (r"titan_memory\.net\.0\.(weight|bias)", "memory.fc1.{0}"),
    (r"titan_memory\.net\.2\.(weight|bias)", "memory.fc2.{0}"),
    (r"titan_memory\.norm\.(weight|bias)", "memory.norm.{0}"),
]
#: Keys dropped on purpose, with the reason (recorded in the provenance).
_DROPPED = [
    (r"lm_head\.weight", "tied to embed.weight"),
    (r"blocks\.\d+\.selfmod\.m_q\..*", "M_q is unused with a fixed q projection (adaptive_q false)"),
    (r"blocks\.\d+\.self_modifier\..*", "used only by the reproduction's label-driven updates"),
]


def _get(cfg: dict[str, Any], key: str, default: Any) -> Any:
    value = cfg.get(key, default)
    return default if value is None and default is not None else value


def hope_config(model_cfg: dict[str, Any], *, allow_nonpaper: bool = False) -> Any:
    """The longctx :class:`HopeConfig` equivalent of a reproduction ``model`` config section."""
    from longctx.runners.hope.model import HopeConfig

    if model_cfg.get("type", "hope") != "hope":
        raise LongctxError(f"nested-learning model type {model_cfg.get('type')!r} is not a HOPE model")
    variant = str(model_cfg.get("block_variant", "hope_hybrid")).strip().lower()
    if variant not in VARIANTS:
        raise LongctxError(f"unknown nested-learning block_variant {variant!r} (known: {', '.join(VARIANTS)})")
    if variant in NONPAPER and not allow_nonpaper:
        raise LongctxError(f"block_variant {variant!r} is not in the paper (the reproduction's own); "
                           "pass --allow-nonpaper to convert it anyway")
    unsupported = []
    if variant == "hope_selfmod":
        checks = {"self_mod_adaptive_q": (False, "adaptive q (paper: fixed q projection)"),
                  "self_mod_objective": ("l2", "objective other than l2"),
                  "self_mod_stopgrad_vhat": (True, "no stop-gradient on v_hat"),
                  "self_mod_use_rank1_precond": (True, "no rank-1 preconditioner"),
                  "self_mod_use_alpha": (True, "no alpha decay"),
                  "self_mod_momentum": (0.0, "momentum")}
        for key, (paper, label) in checks.items():
            if _get(model_cfg, key, paper) != paper:
                unsupported.append(f"{key}={model_cfg[key]!r} ({label})")
    if variant == "transformer" and _get(model_cfg, "transformer_activation", "gelu") != "gelu":
        unsupported.append(f"transformer_activation={model_cfg['transformer_activation']!r}")
    if unsupported:
        raise LongctxError(f"cannot convert: settings the longctx model does not implement: {'; '.join(unsupported)}")
    levels = list(model_cfg.get("cms_levels") or [])
    if variant != "transformer" and not levels:
        raise LongctxError("nested-learning config has no cms_levels")
    dim = int(model_cfg["dim"])
    chunk = int(_get(model_cfg, "self_mod_chunk_size", 1))
    conv = model_cfg.get("self_mod_local_conv_window", 4)
    attn_conv = model_cfg.get("local_conv_window")
    qk = bool(_get(model_cfg, "qk_l2_norm", False))
    try:
        return HopeConfig(
            variant=VARIANTS[variant], vocab_size=int(model_cfg["vocab_size"]), dim=dim,
            n_layers=int(model_cfg["num_layers"]), n_heads=int(_get(model_cfg, "heads", 1)),
            memory_hidden=dim, memory_skip=bool(_get(model_cfg, "self_mod_use_skip", True)),
            memory_conv_window=None if conv is None else int(conv), memory_qk_norm=qk,
            memory_input_l2norm=False, chunk_size=chunk,
            chunk_size_memory=int(_get(model_cfg, "self_mod_chunk_size_memory", chunk)),
            eta_scale=float(_get(model_cfg, "self_mod_lr", 1e-3)), eta_activation="softplus",
            alpha_logit_offset=0.0, titans_writes=False,
            cms_periods=tuple(int(lv["update_period"]) for lv in levels) or (1,),
            cms_lr=tuple(0.0 for _ in levels) or (0.0,), cms_hidden_mult=4,
            cms_layernorm=bool(_get(model_cfg, "cms_use_layernorm", True)),
            attn_conv_window=None if attn_conv is None else int(attn_conv), attn_qk_norm=qk,
            mlp_hidden_mult=int(_get(model_cfg, "transformer_mlp_hidden_multiplier", 4))
            if variant == "transformer" else 4,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise LongctxError(f"nested-learning config cannot be converted: {exc}") from None


def map_state_dict(state: dict[str, Any], level_names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Rename reproduction keys to longctx keys; returns (weights, dropped keys). Unknown keys raise."""
    import torch

    state = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}
    out: dict[str, Any] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if any(re.fullmatch(pattern, key) for pattern, _ in _DROPPED):
            dropped.append(key)
            continue
        if key in ("embed.weight",):
            out[key] = value
            continue
        m = re.fullmatch(r"norm\.(weight|bias)", key)
        if m:
            out[f"norm_f.{m.group(1)}"] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        target = None
        if m:
            layer, rest = m.groups()
            for pattern, template in _LAYER_KEYS:
                hit = re.fullmatch(pattern, rest)
                if hit:
                    level = hit.groupdict().get("level")
                    if level is not None and level not in level_names:
                        break
                    j = level_names.index(level) if level is not None else None
                    target = f"blocks.{layer}." + template.format(*hit.groups(), j=j)
                    break
        if target is None:
            unknown.append(key)
        else:
            out[target] = value
    if unknown:
        raise LongctxError(f"unexpected keys in the nested-learning checkpoint: {', '.join(sorted(unknown))}")
    head = state.get("lm_head.weight")
    if head is not None and "embed.weight" in out and not torch.equal(head, out["embed.weight"]):
        raise LongctxError("lm_head.weight differs from embed.weight: untied heads are not supported")
    return out, sorted(dropped)


def read_source(checkpoint: Path, config_path: Path | None = None) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(state_dict, full config, step) of a reproduction checkpoint: its ``.pt`` dict and YAML config."""
    import torch
    import yaml

    try:
        blob = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LongctxError(f"{checkpoint}: no such file") from None
    except Exception as exc:  # pickle/zip errors: not a torch checkpoint
        raise LongctxError(f"{checkpoint}: not a loadable torch checkpoint ({one_line(str(exc))})") from None
    if not isinstance(blob, dict) or "model" not in blob:
        raise LongctxError(f"{checkpoint}: expected a dict with a 'model' state dict (nested-learning format)")
    config_path = config_path or (checkpoint.with_suffix(".yaml") if checkpoint.with_suffix(".yaml").exists() else None)
    if config_path is not None:
        try:
            config = yaml.safe_load(Path(config_path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise LongctxError(f"{config_path}: unreadable YAML config ({exc})") from None
    elif isinstance(blob.get("config"), dict):
        config = blob["config"]
    else:
        raise LongctxError(f"{checkpoint}: no config inside and no {checkpoint.with_suffix('.yaml').name} next to it")
    for wrapper in ("hope", "ablations"):   # Hydra group configs nest under the group name
        if isinstance(config, dict) and "model" not in config and isinstance(config.get(wrapper), dict):
            config = config[wrapper]
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise LongctxError(f"{config_path or checkpoint}: config has no 'model' section")
    return blob["model"], config, blob.get("step")


def sentencepiece_tokenizer(model_file: Path) -> Any:
    """A transformers fast tokenizer equivalent to a SentencePiece *unigram* model (no protobuf)."""
    import sentencepiece as spm
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    if any(sp.is_unused(i) for i in range(sp.get_piece_size())) or sp.unk_id() < 0:
        raise LongctxError(f"{model_file}: only SentencePiece unigram models are converted; "
                           "pass --tokenizer with a Hugging Face tokenizer folder instead")
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    special = {name: sp.id_to_piece(i) for name, i in (("bos_token", sp.bos_id()), ("eos_token", sp.eos_id()),
                                                          ("unk_token", sp.unk_id())) if i >= 0}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1 << 20, **special)


def load_tokenizer(path: Path) -> Any:
    """A Hugging Face tokenizer folder, or a SentencePiece ``.model`` file."""
    from transformers import AutoTokenizer

    if path.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise LongctxError(f"{path}: cannot load a tokenizer ({one_line(str(exc))})") from None
    if path.suffix == ".model" and path.exists():
        return sentencepiece_tokenizer(path)
    raise LongctxError(f"{path}: expected a tokenizer folder or a SentencePiece .model file")


def convert(checkpoint: str | Path, out: str | Path, *, config_path: str | Path | None = None,
            tokenizer: str | Path | None = None, allow_nonpaper: bool = False,
            context_window: int = 131072) -> Path:
    """Convert a nested-learning ``.pt`` (+ ``.yaml``) into a longctx HOPE checkpoint folder."""
    import torch

    from longctx.runners.hope.checkpoint import check_state_dict, save_checkpoint
    from longctx.runners.hope.model import HopeLM

    checkpoint = Path(checkpoint)
    state, config, step = read_source(checkpoint, Path(config_path) if config_path else None)
    model_cfg = config["model"]
    cfg = hope_config(model_cfg, allow_nonpaper=allow_nonpaper)
    level_names = [str(lv["name"]) for lv in model_cfg.get("cms_levels") or []]
    weights, dropped = map_state_dict(state, level_names)
    if tokenizer is None:
        data_tok = (config.get("data") or {}).get("tokenizer_path")
        if not data_tok or not Path(data_tok).exists():
            raise LongctxError("no tokenizer: pass --tokenizer (a tokenizer folder or the SentencePiece "
                               f".model of data.tokenizer_path{' = ' + data_tok if data_tok else ''})")
        tokenizer = data_tok
    tok = load_tokenizer(Path(tokenizer))
    if len(tok) > cfg.vocab_size:
        raise LongctxError(f"tokenizer has {len(tok)} tokens but the model's vocab_size is {cfg.vocab_size}")
    with torch.device("meta"):
        model = HopeLM(cfg)
    check_state_dict(model.state_dict(), weights, str(checkpoint))
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True, assign=True)
    provenance = {
        "source": "nested-learning",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "step": step,
        "block_variant": model_cfg.get("block_variant"),
        "dropped_keys": dropped,
        "note": "CMS levels frozen at test time (cms_lr 0): the reproduction updates them only from "
                "label-driven teach signals",
    }
    if cfg.variant == "hope":
        provenance["titans_semantics"] = TITANS_SEMANTICS
    return save_checkpoint(out, model, tok, context_window=context_window, provenance=provenance)
