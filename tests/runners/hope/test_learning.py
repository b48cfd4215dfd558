"""The attention-free HOPE learns in-context associative recall: its memories are trainable end to end.

Multi-query associative recall (MQAR): 8 (key, value) token pairs, a gap, then the keys again in
another order; the loss is on the values after the repeated keys. Nothing but the fast memory
carries a value from its pair to its query (the local conv sees 4 tokens; there is no attention
and no positional signal), so accuracy above chance (1/64) is in-context learning by the delta-rule
writes. With the output memory's learning rate forced to zero the same training stays at chance,
which checks that the test can fail.
"""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from longctx.runners.hope.model import HopeLM  # noqa: E402
from longctx.runners.hope.train import demo_config, init_demo_weights  # noqa: E402

PAIRS, KEYS, VALUES, GAP = 8, 64, 64, 16


def mqar_batch(gen: torch.Generator, batch: int = 32):
    keys = torch.stack([torch.randperm(KEYS, generator=gen)[:PAIRS] for _ in range(batch)])     # (B, P)
    values = torch.randint(KEYS, KEYS + VALUES, (batch, PAIRS), generator=gen)                  # (B, P)
    order = torch.stack([torch.randperm(PAIRS, generator=gen) for _ in range(batch)])
    pairs = torch.stack([keys, values], -1).flatten(1)                                           # (B, 2P)
    queries = torch.stack([keys.gather(1, order), values.gather(1, order)], -1).flatten(1)       # (B, 2P)
    seq = torch.cat([pairs, torch.zeros(batch, GAP, dtype=torch.long), queries], 1)             # (B, 4P + GAP)
    mask = torch.zeros(batch, seq.shape[1] - 1, dtype=torch.bool)
    mask[:, 2 * PAIRS + GAP::2] = True                                                           # predict values
    return seq[:, :-1], seq[:, 1:], mask


def train_mqar(steps: int, eta_scale: float) -> float:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = dataclasses.replace(demo_config("hope", KEYS + VALUES, chunk_size=16, chunk_size_memory=16),
                              eta_scale=eta_scale)
    model = HopeLM(cfg)
    init_demo_weights(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        ids, targets, mask = mqar_batch(gen)
        logits, _ = model(ids)                                                                   # (B, T, V)
        loss = F.cross_entropy(logits[mask], targets[mask])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        ids, targets, mask = mqar_batch(torch.Generator().manual_seed(1), batch=256)
        logits, _ = model(ids)
    return (logits.argmax(-1)[mask] == targets[mask]).float().mean().item()


@pytest.mark.slow
def test_hope_learns_associative_recall_in_context():
    chance = 1 / VALUES
    with_memory = train_mqar(150, eta_scale=1.0)
    without_writes = train_mqar(150, eta_scale=0.0)
    print(f"MQAR accuracy: {with_memory:.3f} with memory writes, {without_writes:.3f} without, chance {chance:.3f}")
    assert with_memory > 4 * chance, with_memory
    assert without_writes < 2 * chance, without_writes
