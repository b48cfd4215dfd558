"""The HOPE model: streaming = one call, chunkwise = the token-level recurrence, state semantics."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from longctx.runners.hope.model import HopeConfig, HopeLM, LayerState, SelfReferentialTitans  # noqa: E402

SPLITS = [(0, 3), (3, 4), (4, 13), (13, 30), (30, 37)]


def tiny(variant: str = "hope", **kw) -> HopeConfig:
    base = dict(variant=variant, vocab_size=50, dim=16, n_layers=2, n_heads=2, memory_hidden=12,
                chunk_size=4, chunk_size_memory=8, cms_periods=(4, 8), cms_lr=(0.0, 0.0),
                attn_conv_window=3, memory_skip=True, eta_activation="sigmoid", memory_input_l2norm=True,
                alpha_logit_offset=2.0)
    base.update(kw)
    return HopeConfig(**base)


def streamed(model: HopeLM, ids, splits=SPLITS):
    state, outs = None, []
    for a, b in splits:
        logits, state = model(ids[:, a:b], state)
        outs.append(logits)
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("variant", ["hope", "hope_attention", "transformer", "hope_hybrid"])
@pytest.mark.parametrize("conv_after", [False, True])
def test_streaming_in_pieces_equals_one_call(variant, conv_after):
    torch.manual_seed(0)
    model = HopeLM(tiny(variant, conv_after_projection=conv_after, memory_normalized_steps=conv_after)).eval()
    ids = torch.randint(0, 50, (2, 37))
    with torch.no_grad():
        full, full_state = model(ids)
        pieces, state = streamed(model, ids)
    assert full.shape == (2, 37, 50)
    torch.testing.assert_close(pieces, full, atol=1e-5, rtol=1e-4)
    assert state.position == full_state.position == 37


def test_streaming_with_test_time_cms_learning_equals_one_call():
    torch.manual_seed(0)
    model = HopeLM(tiny(cms_lr=(1e-3, 5e-4))).eval()
    ids = torch.randint(0, 50, (2, 37))
    with torch.no_grad():
        full, _ = model(ids)
        pieces, _ = streamed(model, ids)
        frozen = HopeLM(tiny()).eval()
        frozen.load_state_dict(model.state_dict())
        no_learning, _ = frozen(ids)
    torch.testing.assert_close(pieces, full, atol=1e-5, rtol=1e-4)
    # the CMS did learn: after the first block of 4 tokens the outputs differ from the frozen model
    torch.testing.assert_close(full[:, :4], no_learning[:, :4], atol=1e-5, rtol=1e-4)
    assert (full[:, 8:] - no_learning[:, 8:]).abs().max() > 1e-4


def test_last_position_logits_match():
    torch.manual_seed(0)
    model = HopeLM(tiny()).eval()
    ids = torch.randint(0, 50, (1, 21))
    with torch.no_grad():
        full, _ = model(ids)
        last, _ = model(ids, logits="last")
    torch.testing.assert_close(last[:, 0], full[:, -1])


# --- the token-level definition (Eqs. 88-91), written independently with autograd ---------------


def _mlp(w2, w1, w_skip, x, residual):
    out = F.gelu(x @ w2.T) @ w1.T
    if residual:
        out = out + x
    if w_skip is not None:
        out = out + x @ w_skip.T
    return out


def recurrent_reference(titans: SelfReferentialTitans, x, chunk_other: int, chunk_memory: int):
    """Per token: read with the state at the start of the current chunk; write every memory with
    M <- M(alpha I - eta k k^T) - eta grad ||M(k) - M(v)||^2 (gradient by autograd at the chunk-start
    state, v_hat held fixed), W1 decayed by alpha. With ``memory_normalized_steps``: the W2/W_skip
    gradients divided by their curvature, and W1 <- W1(alpha I - eta a^ a^T) - eta (r - v_hat)/|a| a^T
    with a, r, v_hat from the chunk start and W1 current (NLMS)."""
    cfg = titans.cfg
    B, T, d = x.shape
    x = F.normalize(x, dim=-1, eps=1e-6) if cfg.memory_input_l2norm else x
    w = titans.conv.window
    weight = titans.conv.conv.weight                                   # (channels, 1, w)
    if not cfg.conv_after_projection:
        x = F.conv1d(F.pad(x.transpose(1, 2), (w - 1, 0)), weight, groups=d).transpose(1, 2)
    names = ["k", "v", "eta", "alpha", "memory"]
    mods = {n: getattr(titans, f"m_{n}") for n in names}
    outs = []
    for b in range(B):
        state = {n: [mods[n].w2.detach().clone(), mods[n].w1.detach().clone(),
                     None if mods[n].w_skip is None else mods[n].w_skip.detach().clone()] for n in names}
        start = {n: [t if t is None else t.clone() for t in state[n]] for n in names}
        seq, raw = [], []
        for t in range(T):
            for n in names:
                if t % (chunk_memory if n == "memory" else chunk_other) == 0:
                    start[n] = [u if u is None else u.clone() for u in state[n]]
            read = lambda n, inp: _mlp(*start[n], inp, mods[n].residual)  # noqa: E731
            q, k, v = x[b, t] @ titans.w_q.weight.T, read("k", x[b, t]), read("v", x[b, t])
            if cfg.conv_after_projection:   # conv over time of the produced q, k, v
                raw.append(torch.cat([q, k, v]))
                hist = torch.stack(([torch.zeros(3 * d, dtype=x.dtype)] * (w - 1) + raw)[-w:])  # (w, 3d)
                q, k, v = (weight[:, 0, :].T * hist).sum(0).split(d)
            k, q = F.normalize(k, dim=-1, eps=1e-6), F.normalize(q, dim=-1, eps=1e-6)
            eta = torch.sigmoid(read("eta", x[b, t])) * cfg.eta_scale   # the output memory's
            alpha = torch.sigmoid(read("alpha", x[b, t]) + cfg.alpha_logit_offset)
            seq.append(read("memory", q))
            for n in names:
                eta_n = eta / cfg.eta_scale * cfg.eta_scale_other if n != "memory" and cfg.eta_scale_other is not None else eta
                w2, w1, ws = [u if u is None else u.detach().clone().requires_grad_() for u in start[n]]
                loss = ((_mlp(w2, w1, ws, k, mods[n].residual) - _mlp(w2, w1, ws, v, mods[n].residual).detach()) ** 2).sum()
                grads = list(torch.autograd.grad(loss, [p for p in (w2, w1, ws) if p is not None]))
                precond = alpha * torch.eye(d, dtype=x.dtype) - eta_n * torch.outer(k, k)
                if not cfg.memory_normalized_steps:
                    state[n][1] = alpha * state[n][1] - eta_n * grads[1]
                else:
                    z = w2.detach() @ k
                    slope = torch.autograd.functional.jacobian(F.gelu, z).diagonal()
                    grads[0] = grads[0] / (2 * (w1.detach() * slope).square().sum() + 1e-6)
                    if ws is not None:
                        grads[2] = grads[2] / 2
                    a = F.gelu(z)
                    r = k if mods[n].residual else (ws.detach() @ k if ws is not None else torch.zeros(1, dtype=x.dtype))
                    v_hat = _mlp(*[u if u is None else u.detach() for u in (w2, w1, ws)], v, mods[n].residual)
                    a_hat = a / a.norm()
                    state[n][1] = state[n][1] @ (alpha * torch.eye(len(a), dtype=x.dtype) - eta_n * torch.outer(a_hat, a_hat)) \
                        - eta_n * torch.outer((r - v_hat) / a.norm(), a_hat)
                state[n][0] = state[n][0] @ precond - eta_n * grads[0]
                if ws is not None:
                    state[n][2] = state[n][2] @ precond - eta_n * grads[2]
        outs.append(torch.stack(seq))
    return torch.stack(outs)


@pytest.mark.parametrize("chunks", [(1, 1), (3, 5), (4, 8)])
@pytest.mark.parametrize("skip, normalized, conv_after, eta_other", [
    (False, False, False, None), (True, False, False, None),      # the reproduction's rules
    (False, True, False, None), (True, True, True, 0.2),          # the demo's switches
    (False, True, True, 0.0), (True, True, True, 0.0),            # frozen k, v, eta, alpha (the demo's recipe)
])
def test_chunkwise_parallel_form_equals_token_recurrence(chunks, skip, normalized, conv_after, eta_other):
    """Chunk size 1 is the recurrent definition; larger chunks match the sequential chunked rule."""
    torch.manual_seed(1)
    cfg = tiny(dim=8, memory_hidden=6, chunk_size=chunks[0], chunk_size_memory=chunks[1], memory_skip=skip,
               eta_scale=0.7, memory_conv_window=3, memory_normalized_steps=normalized,
               conv_after_projection=conv_after, eta_scale_other=eta_other)
    titans = SelfReferentialTitans(cfg).double()
    x = torch.randn(2, 19, 8, dtype=torch.float64)
    state = LayerState()
    titans.init_state(state, 2)
    with torch.no_grad():
        out = titans(x, state, 0)
    torch.testing.assert_close(out, recurrent_reference(titans, x, *chunks), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("chunks, eta_scale", [((4, 4), 0.7), ((4, 8), 0.7), ((4, 4), 0.0)])
def test_frozen_members_skip_the_gradient_pass_with_the_same_result(chunks, eta_scale):
    """Members with eta scale 0 are only decayed: outputs and gradients equal the full write's
    (frozen k, v, eta, alpha: the demo recipe; or a frozen output memory, the last member)."""
    torch.manual_seed(6)
    cfg = tiny(chunk_size=chunks[0], chunk_size_memory=chunks[1], memory_skip=False, eta_scale=eta_scale,
               eta_scale_other=0.0 if eta_scale else 0.5,
               memory_normalized_steps=True, conv_after_projection=True, memory_value_target=True)
    fast = HopeLM(cfg)
    groups = [g for m in fast.modules() if isinstance(m, SelfReferentialTitans) for g in m.groups.values()]
    frozen = {tuple(g.names[i] for i in g.frozen) for g in groups}
    if not eta_scale:
        assert frozen == {("memory",)} and all(g.learners.names == ("k", "v", "eta", "alpha") for g in groups)
    else:
        assert frozen == {("k", "v", "eta", "alpha")} | ({()} if chunks[0] != chunks[1] else set())   # the shortcut is taken
    if chunks[0] == chunks[1] and eta_scale:
        assert all(g.learners.names == ("memory",) for g in groups)
    full = HopeLM(cfg)
    full.load_state_dict(fast.state_dict())
    for m in full.modules():
        if isinstance(m, SelfReferentialTitans):
            for g in m.groups.values():
                g.frozen, g.learners = (), None                   # the general write for every member
    ids = torch.randint(0, 50, (2, 29))
    results = []
    for model in (fast, full):
        logits, _ = model(ids)
        logits.square().mean().backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-6, rtol=1e-5, msg=name)
    learner = "memory" if eta_scale else "k"
    assert results[0][1][f"blocks.0.titans.m_{learner}.w2"].abs().sum() > 0


def test_chunks_count_absolute_positions():
    """A stream that starts mid-chunk writes at the same boundaries as one call."""
    torch.manual_seed(2)
    titans = SelfReferentialTitans(tiny(chunk_size=4, chunk_size_memory=8)).double()
    x = torch.randn(1, 20, 16, dtype=torch.float64)
    one, parts = LayerState(), LayerState()
    titans.init_state(one, 1)
    titans.init_state(parts, 1)
    with torch.no_grad():
        full = titans(x, one, 0)
        a = titans(x[:, :5], parts, 0)
        b = titans(x[:, 5:], parts, 5)
    torch.testing.assert_close(torch.cat([a, b], 1), full)


# --- state semantics ----------------------------------------------------------------------------


def test_fresh_state_is_a_reset_and_carried_state_continues():
    torch.manual_seed(3)
    model = HopeLM(tiny()).eval()
    first, second = torch.randint(0, 50, (1, 16)), torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        alone, _ = model(second)                                  # reset: nothing before
        _, state = model(first)
        carried, state = model(second, state)                     # carry: second continues the first
        concat, _ = model(torch.cat([first, second], 1))
        again, _ = model(second)
    torch.testing.assert_close(again, alone)                      # a new state forgets everything
    torch.testing.assert_close(carried, concat[:, 16:], atol=1e-5, rtol=1e-4)
    assert (carried - alone).abs().max() > 1e-4                   # what the first wrote is used
    assert state.position == 28


def test_hope_state_size_is_flat_in_context_length_attention_grows():
    torch.manual_seed(4)
    sizes = {}
    for variant in ("hope", "transformer"):
        model = HopeLM(tiny(variant)).eval()
        state, per_length = None, []
        with torch.no_grad():
            for _ in range(4):
                _, state = model(torch.randint(0, 50, (1, 64)), state, logits="last")
                per_length.append(state.nbytes())
        sizes[variant] = per_length
    assert len(set(sizes["hope"])) == 1
    growth = {b - a for a, b in zip(sizes["transformer"], sizes["transformer"][1:])}
    assert growth == {2 * 2 * 64 * 16 * 4}   # K and V, 2 layers, 64 tokens, d=16, float32: linear


def test_training_backpropagates_through_the_memory_writes():
    """The meta-learned initial states get gradients from reads after the writes (not only direct reads)."""
    torch.manual_seed(5)
    model = HopeLM(tiny(n_layers=1, chunk_size=2, chunk_size_memory=2))
    logits, _ = model(torch.randint(0, 50, (2, 12)))
    logits[:, -1].sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("k", "v", "eta", "alpha"):   # used only through the writes for the last token's read
        assert grads[f"blocks.0.titans.m_{name}.w2"].abs().sum() > 0


def test_config_validation():
    with pytest.raises(ValueError, match="variant"):
        HopeConfig(variant="mamba")
    with pytest.raises(ValueError, match="multiples"):
        HopeConfig(cms_periods=(4, 6), cms_lr=(0.0, 0.0))
    with pytest.raises(ValueError, match="one entry per CMS level"):
        HopeConfig(cms_periods=(4, 8), cms_lr=(0.0,))
    cfg = tiny(cms_lr=(0.1, 0.0))
    assert cfg.cms_learns and HopeConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("conv_after", [False, True])
def test_read_only_titans_read_the_initial_memory_and_stream(conv_after):
    """titans_writes=False: every token reads the meta-learned M_memory; the fast state never changes."""
    torch.manual_seed(6)
    model = HopeLM(tiny(conv_after_projection=conv_after, titans_writes=False)).eval()
    ids = torch.randint(0, 50, (2, 37))
    with torch.no_grad():
        full, state = model(ids)
        pieces, _ = streamed(model, ids)
        titans = model.blocks[0].titans
        x = F.normalize(model.embed(ids), dim=-1, eps=1e-6)
        if not conv_after:
            x = titans.conv(x, LayerState())
        q = titans.w_q(x)
        if conv_after:
            w = titans.conv.conv.weight[:16]                              # the q channels
            q = F.conv1d(F.pad(q.transpose(1, 2), (w.shape[-1] - 1, 0)), w, groups=16).transpose(1, 2)
        q = F.normalize(q, dim=-1, eps=1e-6)
        mem = titans.m_memory
        expected = q + F.gelu(q @ mem.w2.T) @ mem.w1.T                    # M_memory at its initial state
    torch.testing.assert_close(pieces, full, atol=1e-5, rtol=1e-4)
    fresh = model.initial_state(2)
    for layer, layer0 in zip(state.layers, fresh.layers):
        for (a, b), (a0, b0) in zip(layer.fast.values(), layer0.fast.values()):
            assert torch.equal(a, a0) and torch.equal(b, b0)
    st = LayerState()
    titans.init_state(st, 2)
    with torch.no_grad():
        out = titans(model.embed(ids), st, 0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
