"""Make the test data of this folder with the real nested-learning 0.2.0 (run once; not a test).

    python3.11 -m venv /work/notes/nl-venv
    /work/notes/nl-venv/bin/pip install --no-deps nested-learning==0.2.0 einops omegaconf hydra-core \
        antlr4-python3-runtime==4.9.3
    # torch, safetensors, yaml from the longctx venv: a .pth file in nl-venv's site-packages holding
    # the path of /work/main/.venv/lib/python3.11/site-packages
    /work/notes/nl-venv/bin/python tests/runners/hope/data/nested_learning_0.2.0/make.py

Writes, next to this file: ``step_000001.pt`` (+ ``.yaml``, ``.meta.json``, ``.sha256``) by the
package's own ``training.maybe_save_checkpoint`` for a tiny seeded ``hope_selfmod`` model, and
``logits.safetensors``: ``tokens`` (1, 23) and the package's logits for them (the first 128 vocabulary
columns) in its two semantics:

- ``logits_forward``: ``HOPEModel(tokens)``, the package's forward (Titans memories read, never written);
- ``logits_updates``: the same forward with each block's ``selfmod`` reading through
  ``SelfModifyingTitans.forward_with_updates`` on a fresh fast state (read the chunk-start state,
  then write every chunk: longctx's ``titans_writes=true``).

Chunk sizes 3 (k, v, eta, alpha) and 5 (memory), ``self_mod_lr`` 0.5 so that the writes change the
output; the initial memories' W1 are scaled up (the package initialises them small) for the same reason.
"""

import os
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from nested_learning.levels import LevelSpec
from nested_learning.model import HOPEModel, ModelConfig
from nested_learning.training import maybe_save_checkpoint

HERE = Path(__file__).resolve().parent
MODEL = dict(type="hope", vocab_size=1536, dim=8, num_layers=2, heads=2, block_variant="hope_selfmod",
             titan_level={"name": "titan", "update_period": 1},
             cms_levels=[{"name": "cms_fast", "update_period": 2}, {"name": "cms_slow", "update_period": 4}],
             qk_l2_norm=True, self_mod_lr=0.5, self_mod_chunk_size=3, self_mod_chunk_size_memory=5,
             self_mod_local_conv_window=3, self_mod_use_skip=True)


def main() -> None:
    os.chdir(HERE)   # the checkpoint is written to train.checkpoint.dir = "."
    torch.manual_seed(0)
    fields = {k: v for k, v in MODEL.items() if k != "type"}
    fields["titan_level"] = LevelSpec(**fields["titan_level"])
    fields["cms_levels"] = [LevelSpec(**lv) for lv in fields["cms_levels"]]
    model = HOPEModel(ModelConfig(**fields)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w1.weight") and ".selfmod.m_" in name:
                p.mul_(8.0)
    cfg = OmegaConf.create({"model": MODEL, "data": {"tokenizer_path": None},
                            "train": {"checkpoint": {"enable": True, "dir": ".", "save_interval": 1}}})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    maybe_save_checkpoint(cfg, model, optimizer, step=0, total_steps=1, distributed=False, dist_ctx=None)
    tokens = torch.randint(0, 1536, (1, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        forward = model(tokens)
        for block in model.blocks:   # the package's read-then-write pass in place of its read-only one
            sm = block.selfmod
            sm.forward = lambda x, sm=sm: sm.forward_with_updates(x, sm.init_fast_state())[0]
        updates = model(tokens)
    print("max |forward - updates| =", (forward - updates).abs().max().item())
    save_file({"tokens": tokens, "logits_forward": forward[..., :128].contiguous(),   # 128 columns suffice
               "logits_updates": updates[..., :128].contiguous()},
              str(HERE / "logits.safetensors"))


if __name__ == "__main__":
    main()
