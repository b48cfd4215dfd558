"""HOPE, HOPE-Attention and a Transformer baseline in one file, readable top-down (nanoGPT style).

HOPE is the architecture of Behrouz, Razaviyayn, Zhong and Mirrokni, "Nested Learning: The Illusion
of Deep Learning Architectures" (NeurIPS 2025; extended version arXiv:2512.24695). Equation numbers
are those of the extended version, as cited by the community reproduction
(kmccleary3301/nested_learning): self-referential Titans Eqs. 83-93, its memories Eq. 91, the HOPE
block Eqs. 94-97, chunkwise training Sec. 8.2, the Continuum Memory System (CMS) Eqs. 70-71.

One HOPE block (variant ``hope``, attention-free) maps the token states x_t to

    x_t  <- causal depthwise conv of x (window 4)                        local conv (or on q, k, v)
    q_t   = normalize(W_q x_t)                                           fixed projection (Eq. 83)
    k_t   = normalize(M_k(x_t)),  v_t = M_v(x_t)                         self-generated keys/values
    eta_t = softplus(M_eta(x_t)) * eta_scale,  alpha_t = sigmoid(M_alpha(x_t))   (eta: or sigmoid)
    o_t   = M_memory(q_t)                                                read (Eq. 94)
    y_t   = MLP^(f_K)( ... MLP^(f_1)(o_t))                               CMS (Eqs. 70, 97)

and writes every memory M_box in {k, v, eta, alpha, memory} with the delta rule with decay on an L2
regression objective against its own self-generated target v_hat = M_box(v_t) (Eqs. 88-90):

    M_box <- M_box (alpha_t I - eta_t k_t k_t^T) - eta_t grad L(M_box; k_t, v_hat),
    L(M; k, v_hat) = || M(k) - v_hat ||^2.

Each memory is a 2-layer residual MLP M(x) = x + W1 gelu(W2 x) (Eq. 91) whose initial state
(W1, W2) is meta-learned (an ``nn.Parameter``) and copied per sequence into the fast state. The
rank-1 term acts on W2, the matrix whose input is the key; W1 (whose input is the hidden
activation) is decayed by alpha_t. The scalar memories M_eta, M_alpha have no identity path (the
residual is undefined for a 1-d output); the reproduction's optional projection skip W_skip (its
``use_skip``) is kept as ``memory_skip`` for converted checkpoints.

Chunkwise (Sec. 8.2): within a chunk every token reads the state at the end of the previous chunk,
and the gradients of the chunk's tokens are taken at that state; the recurrence above is then
applied token by token, solved in parallel (a triangular system, the "WY" form of the delta rule).
The output memory and the other memories have their own chunk sizes. With chunk size 1 this is
exactly the token-level recurrence. Chunks are counted in absolute positions, so feeding a
sequence in pieces of any size (streaming) gives the same result as one call.

Departures, each a config switch that is off by default (the paper's/reproduction's behaviour)
and on in the shipped demo checkpoints, because with the plain rule the memories diverged within a
few updates in small-scale CPU training: ``memory_input_l2norm`` (L2-normalised Titans input),
``eta_activation="sigmoid"`` (eta bounded) and ``memory_normalized_steps`` (each in-context step
divided by the loss curvature in that weight, NLMS style, so that eta <= 1 is stable).

CMS: level l is a residual MLP whose parameters are updated every C^(l) tokens with the summed
gradients of the next-token loss over that span (Eq. 71), at learning rate ``cms_lr[l]``;
``cms_lr = 0`` freezes a level at test time (the pre-trained-MLP limit of the paper). Gradients are
taken per block of ``min(cms_periods)`` tokens, over the next-token pairs inside the block.

Variants (same code, for controlled comparisons): ``hope`` (above), ``hope_attention`` (softmax
attention followed by the CMS, the paper's HOPE-Attention), ``transformer`` (attention followed by
an MLP), and ``hope_hybrid`` (the reproduction's non-paper attention + static memory MLP + CMS,
kept only so its checkpoints can be converted). Where the paper is silent, the layout follows the
reproduction so converted checkpoints compute the same function: no positional encoding, attention
sub-layer ``LayerNorm(x + Attn(conv(x)))``, residual pre-norm MLPs, tied LM head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longctx.runners.hope.titans import CausalConv, GroupState, SelfReferentialTitans

VARIANTS = ("hope", "hope_attention", "transformer", "hope_hybrid")
#: Variants described in the paper (``hope_hybrid`` is the reproduction's own).
PAPER_VARIANTS = ("hope", "hope_attention", "transformer")


@dataclass
class HopeConfig:
    """Every hyper-parameter of the model; passed to every module. Field docs are the format's docs."""

    variant: str = "hope"
    """``hope`` (attention-free), ``hope_attention``, ``transformer`` or ``hope_hybrid`` (non-paper)."""
    vocab_size: int = 2048
    """Embedding rows (= LM head rows; the head is tied to the embedding)."""
    dim: int = 128
    """Model width d."""
    n_layers: int = 2
    """Number of blocks."""
    n_heads: int = 4
    """Attention heads (attention variants)."""
    memory_hidden: int = 128
    """Hidden width of each Titans memory MLP (the reproduction uses d)."""
    memory_skip: bool = False
    """Projection skip W_skip on the scalar memories M_eta, M_alpha (reproduction's ``use_skip``)."""
    memory_conv_window: int | None = 4
    """Window of the Titans causal depthwise conv (paper: 4); None = no conv."""
    conv_after_projection: bool = False
    """Apply the causal depthwise convs to q, k, v after they are produced (Titans, and the usual
    short conv of linear attention; what copying needs: a projection can route the previous token
    into channels the conv shifts) instead of to the block input (the reproduction's layout)."""
    memory_qk_norm: bool = True
    """L2-normalise the Titans q and k (paper: yes)."""
    titans_writes: bool = True
    """The Titans memories write themselves in context at every chunk boundary (the paper's HOPE;
    longctx's semantics). False: they are only read, at their meta-learned initial state, which is
    what nested-learning 0.2.0's forward computes for ``hope_selfmod`` (``HOPESelfModBlock.forward``
    -> ``SelfModifyingTitans.forward``; it writes only in its separate, teach-signal-driven update
    pass). Runner option ``-R titans_writes=...`` overrides it."""
    chunk_size: int = 16
    """Chunk size of the k, v, eta, alpha memories (tokens between their updates)."""
    chunk_size_memory: int = 64
    """Chunk size of the output memory M_memory."""
    eta_scale: float = 1.0
    """eta_t = act(M_eta(x_t)) * eta_scale (reproduction's ``self_mod_lr``)."""
    eta_scale_other: float | None = None
    """Scale of eta for the k, v, eta, alpha memories (None: eta_scale, as in the paper). Smaller
    keeps the self-generated keys and values stable while the output memory learns fast."""
    eta_activation: str = "softplus"
    """``softplus`` (the reproduction's) or ``sigmoid`` (eta_t < eta_scale: with normalised keys and
    eta_scale <= 1 the rank-1 factor alpha_t - eta_t stays in (-1, 1), a stable recurrence)."""
    memory_normalized_steps: bool = False
    """Normalise each in-context gradient step by the curvature of the memory's loss in that weight
    (NLMS): W1 by |a_t|^2 (a_t = gelu(W2 k_t); W1's own term then stays exact within a chunk: a delta
    rule with unit key a_t/|a_t|), W2 by |W1 diag gelu'(z_t)|_F^2, W_skip by |k_t|^2 = 1. eta_t is
    then the fraction of the error corrected per write, stable for eta_t <= 1; the plain step (the
    paper's, the reproduction's: False) diverged in our small-scale training once eta |a|^2 > 1."""
    memory_input_l2norm: bool = False
    """L2-normalise the Titans input x_t (paper, reproduction: no). Keeps the self-generated targets
    v_hat on the scale of the unit-norm keys; without it the memories diverged in our training."""
    memory_value_target: bool = False
    """The output memory regresses on the value v_t itself, L = ||M_memory(k_t) - v_t||^2 (the Titans
    rule), instead of its self-generated target M_memory(v_t) (Eq. 88; paper, reproduction: False).
    With the self-generated target its W1 is pulled towards W1 a(v)/|a(k)| at every write, a
    geometric growth: the demo configuration at random initialisation reached inf within 60 chunks
    (1K tokens), and the first demo checkpoint (trained on 192 tokens) turned to NaN near 1K."""
    alpha_logit_offset: float = 0.0
    """alpha_t = sigmoid(M_alpha(x_t) + offset); > 0 starts training with long retention."""
    cms_periods: tuple[int, ...] = (16, 256)
    """Update period C^(l) of each CMS level in tokens (fastest first); all multiples of the smallest."""
    cms_lr: tuple[float, ...] = (0.0, 0.0)
    """Test-time learning rate of each CMS level (0 = frozen at test time)."""
    cms_hidden_mult: int = 4
    """CMS MLP hidden width = cms_hidden_mult * d."""
    cms_layernorm: bool = True
    """Pre-norm (LayerNorm) inside each CMS level."""
    attn_conv_window: int | None = None
    """Causal depthwise conv before attention (attention variants); None = no conv."""
    attn_qk_norm: bool = False
    """L2-normalise attention q and k (reproduction's ``qk_l2_norm``; no learned temperature)."""
    mlp_hidden_mult: int = 4
    """Transformer MLP hidden width = mlp_hidden_mult * d (``transformer``; ``hope_hybrid``'s memory)."""

    def __post_init__(self) -> None:
        self.cms_periods = tuple(int(p) for p in self.cms_periods)
        self.cms_lr = tuple(float(lr) for lr in self.cms_lr)
        if self.eta_activation not in ("softplus", "sigmoid"):
            raise ValueError(f"eta_activation must be softplus or sigmoid, got {self.eta_activation!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if min(self.chunk_size, self.chunk_size_memory) < 1:
            raise ValueError("chunk sizes must be >= 1")
        if self.variant != "transformer":
            if not self.cms_periods or len(self.cms_lr) != len(self.cms_periods):
                raise ValueError("cms_periods and cms_lr need one entry per CMS level")
            if any(p < 1 or p % min(self.cms_periods) for p in self.cms_periods):
                raise ValueError("cms_periods must be positive multiples of the smallest period")

    @property
    def cms_learns(self) -> bool:
        """True when some CMS level learns at test time."""
        return self.variant != "transformer" and any(lr > 0 for lr in self.cms_lr)

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> HopeConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# The language model
# ----------------------------------------------------------------------------------------------


class HopeLM(nn.Module):
    """Embedding -> blocks -> LayerNorm -> LM head tied to the embedding."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        block = {"hope": HopeBlock, "hope_attention": HopeAttentionBlock,
                 "transformer": TransformerBlock, "hope_hybrid": HybridBlock}[cfg.variant]
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.LayerNorm(cfg.dim)

    def initial_state(self, batch: int) -> HopeState:
        """A fresh state: meta-learned memories, empty buffers, empty caches (one per sequence)."""
        return HopeState(batch=batch, layers=[blk.initial_state(batch) for blk in self.blocks])

    def forward(self, ids: Tensor, state: HopeState | None = None, *, learn: bool = True,
                logits: str = "all") -> tuple[Tensor, HopeState]:
        """Logits for ``ids`` (B, T) continuing ``state`` (a fresh one if None); the state advances.

        ``logits="last"`` computes the head only at the last position (prefill of long prompts).
        ``learn=False`` skips test-time CMS learning for these tokens (used while decoding); a
        partially filled CMS block is then discarded.
        """
        state = state if state is not None else self.initial_state(ids.shape[0])
        if not (self.cfg.cms_learns and learn):
            state.block_logits, state.block_ids = [], []
            hidden = self._run_blocks(ids, state)                     # (B, T, d)
            state.position += ids.shape[1]
            return self._head(hidden[:, -1:] if logits == "last" else hidden), state
        # Test-time CMS learning: process blocks of P tokens; learn at each completed block.
        period, outs, start = min(self.cfg.cms_periods), [], 0
        with torch.enable_grad():
            state.track_cms_grad_()
            while start < ids.shape[1]:
                end = start + min(period - state.position % period, ids.shape[1] - start)
                piece_logits = self._head(self._run_blocks(ids[:, start:end], state))  # (B, n, V)
                state.position += end - start
                state.block_logits.append(piece_logits)
                state.block_ids.append(ids[:, start:end])
                if state.position % period == 0:
                    self._cms_learning_step(state)
                outs.append(piece_logits if logits == "all" else piece_logits[:, -1:])
                start = end
        out = torch.cat(outs, dim=1)
        return (out if logits == "all" else out[:, -1:]), state

    def _run_blocks(self, ids: Tensor, state: HopeState) -> Tensor:
        x = self.embed(ids)                                           # (B, T, d)
        for blk, layer_state in zip(self.blocks, state.layers):
            x = blk(x, layer_state, state.position)
        return x

    def _head(self, x: Tensor) -> Tensor:
        return F.linear(self.norm_f(x), self.embed.weight)           # (B, T, V)

    def _cms_learning_step(self, state: HopeState) -> None:
        """Eq. 71: accumulate the block's next-token-loss gradients; step levels at their period."""
        logits = torch.cat(state.block_logits, dim=1)                 # (B, P, V)
        ids = torch.cat(state.block_ids, dim=1)                       # (B, P)
        state.block_logits, state.block_ids = [], []
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        levels = [(ls, lvl) for ls in state.layers for lvl in range(len(ls.cms_fast or []))]
        params = [p for ls, lvl in levels for p in ls.cms_fast[lvl].values()]
        grads = iter(torch.autograd.grad(loss, params, retain_graph=self.training, allow_unused=True))
        for ls, lvl in levels:
            acc = ls.cms_grad[lvl]
            for name in ls.cms_fast[lvl]:
                g = next(grads)
                if g is not None:
                    acc[name] = acc.get(name, 0) + g.detach()
            if state.position % self.cfg.cms_periods[lvl] == 0 and acc:
                lr = self.cfg.cms_lr[lvl]
                ls.cms_fast[lvl] = {n: p - lr * acc[n] if n in acc else p for n, p in ls.cms_fast[lvl].items()}
                ls.cms_grad[lvl] = {}
        if not self.training:   # inference: keep the graph of one block at most
            state.detach_()
            state.track_cms_grad_()


# ----------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------


class HopeBlock(nn.Module):
    """HOPE (Eqs. 94-97): self-referential Titans followed by the CMS (no outer residual)."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.titans = SelfReferentialTitans(cfg)
        self.cms = ContinuumMemory(cfg)

    def initial_state(self, batch: int) -> LayerState:
        st = LayerState()
        self.titans.init_state(st, batch)
        self.cms.init_state(st, batch)
        return st

    def forward(self, x: Tensor, st: LayerState, position: int) -> Tensor:
        return self.cms(self.titans(x, st, position), st)


class HopeAttentionBlock(nn.Module):
    """HOPE-Attention: softmax attention followed by the CMS."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.cms = ContinuumMemory(cfg)

    def initial_state(self, batch: int) -> LayerState:
        st = LayerState()
        self.cms.init_state(st, batch)
        return st

    def forward(self, x: Tensor, st: LayerState, position: int) -> Tensor:
        return self.cms(self.attn(x, st), st)


class TransformerBlock(nn.Module):
    """Baseline: attention followed by a residual MLP (no test-time learning)."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = ResidualMLP(cfg.dim, cfg.mlp_hidden_mult * cfg.dim, bias=False, layernorm=True)

    def initial_state(self, batch: int) -> LayerState:
        return LayerState()

    def forward(self, x: Tensor, st: LayerState, position: int) -> Tensor:
        return self.mlp(self.attn(x, st))


class HybridBlock(nn.Module):
    """Reproduction-only ``hope_hybrid`` at inference: attention, + LayerNorm(MLP(a)), then CMS.

    Its memory MLP is only updated by the reproduction's label-driven teach signal, never in a
    plain forward, so here it is static. Not in the paper; kept for checkpoint conversion.
    """

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.attn = Attention(cfg)
        hidden = cfg.mlp_hidden_mult * cfg.dim
        self.memory = nn.ModuleDict({"fc1": nn.Linear(cfg.dim, hidden), "fc2": nn.Linear(hidden, cfg.dim),
                                     "norm": nn.LayerNorm(cfg.dim)})
        self.cms = ContinuumMemory(cfg)

    def initial_state(self, batch: int) -> LayerState:
        st = LayerState()
        self.cms.init_state(st, batch)
        return st

    def forward(self, x: Tensor, st: LayerState, position: int) -> Tensor:
        a = self.attn(x, st)
        m = self.memory
        return self.cms(a + m["norm"](m["fc2"](F.gelu(m["fc1"](a)))), st)


# ----------------------------------------------------------------------------------------------
# Continuum Memory System (Eqs. 70-71)
# ----------------------------------------------------------------------------------------------


class ContinuumMemory(nn.Module):
    """A chain of residual MLP levels, level l updated every C^(l) tokens (fastest first)."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.cfg = cfg
        self.levels = nn.ModuleList(
            ResidualMLP(cfg.dim, cfg.cms_hidden_mult * cfg.dim, bias=True, layernorm=cfg.cms_layernorm)
            for _ in cfg.cms_periods)

    def init_state(self, st: LayerState, batch: int) -> None:
        """Per-sequence copies of the levels' parameters when they learn at test time."""
        if self.cfg.cms_learns:
            st.cms_fast = [lvl.batched_params(batch) for lvl in self.levels]
            st.cms_grad = [{} for _ in self.levels]

    def forward(self, x: Tensor, st: LayerState) -> Tensor:
        for i, level in enumerate(self.levels):
            x = level(x, st.cms_fast[i] if st.cms_fast is not None else None)
        return x


class ResidualMLP(nn.Module):
    """x + fc2(gelu(fc1(LayerNorm(x)))); parameters may be replaced by per-sequence copies."""

    def __init__(self, dim: int, hidden: int, *, bias: bool, layernorm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim) if layernorm else None
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def batched_params(self, batch: int) -> dict[str, Tensor]:
        """Parameters expanded to (B, out, in) matrices and (B, 1, n) vectors."""
        return {n: p.expand(batch, *p.shape) if p.ndim == 2 else p.expand(batch, 1, p.shape[0])
                for n, p in self.named_parameters()}

    def forward(self, x: Tensor, fast: dict[str, Tensor] | None = None) -> Tensor:
        p = fast if fast is not None else dict(self.named_parameters())
        h = x
        if self.norm is not None:
            h = F.layer_norm(x, x.shape[-1:], eps=self.norm.eps) * p["norm.weight"] + p["norm.bias"]
        h = h @ p["fc1.weight"].mT
        if "fc1.bias" in p:
            h = h + p["fc1.bias"]
        h = F.gelu(h) @ p["fc2.weight"].mT
        if "fc2.bias" in p:
            h = h + p["fc2.bias"]
        return x + h


# ----------------------------------------------------------------------------------------------
# Attention (attention variants)
# ----------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Causal softmax attention, LayerNorm(x + out(attn(x))) with a causal depthwise conv on its input
    or on q, k, v; the KV cache is kept in the state."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.cfg = cfg
        conv_channels = 3 * cfg.dim if cfg.conv_after_projection else cfg.dim
        self.conv = CausalConv(conv_channels, cfg.attn_conv_window) if cfg.attn_conv_window else None
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, x: Tensor, st: LayerState) -> Tensor:
        B, T, d = x.shape
        H = self.cfg.n_heads
        if self.conv is None:
            qkv = self.qkv(x)                                           # (B, T, 3d)
        elif self.cfg.conv_after_projection:
            qkv = self.conv(self.qkv(x), st)
        else:
            qkv = self.qkv(self.conv(x, st))
        q, k, v = qkv.view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hd)
        if self.cfg.attn_qk_norm:
            q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
        past = 0
        if st.kv is not None:
            past = st.kv[0].shape[2]
            k, v = torch.cat([st.kv[0], k], dim=2), torch.cat([st.kv[1], v], dim=2)  # (B, H, past+T, hd)
        st.kv = (k, v)
        if past == 0:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i sits at position past + i
            mask = torch.arange(past + T, device=x.device)[None, :] <= past + torch.arange(T, device=x.device)[:, None]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(B, T, d)                          # (B, T, d)
        return self.norm(x + self.out_proj(o))


# ----------------------------------------------------------------------------------------------
# State
# ----------------------------------------------------------------------------------------------


@dataclass
class LayerState:
    """What one block carries between calls; its size does not grow with context for ``hope``."""

    fast: dict[str, GroupState] | None = None
    """Titans fast weights per memory group: (W2 (B*M, h [+ 1], d), W1 (B*M, o_max, h)), see titans.py."""
    pending: dict[str, Tensor | None] | None = None
    """Per group, (k, v, eta, log alpha) of the tokens since its last write: (B, < chunk, 2d + 2)."""
    conv_tail: Tensor | None = None
    """Last ``window - 1`` conv inputs: (B, window - 1, d)."""
    kv: tuple[Tensor, Tensor] | None = None
    """Attention cache (B, H, T_past, hd) x 2 (attention variants only; grows with context)."""
    cms_fast: list[dict[str, Tensor]] | None = None
    """Per-sequence CMS level parameters (only when some level learns at test time)."""
    cms_grad: list[dict[str, Tensor]] | None = None
    """Gradients accumulated since each level's last update."""

    def tensors(self) -> list[Tensor]:
        """Every tensor carried."""
        out = [t for group in (self.fast or {}).values() for t in group]
        out += [t for t in (self.pending or {}).values() if t is not None]
        out += [t for t in (self.conv_tail,) if t is not None] + list(self.kv or ())
        return out + [p for lvl in (self.cms_fast or []) for p in lvl.values()]

    def detach_(self) -> None:
        """Cut the autograd history of every carried tensor."""
        if self.fast is not None:
            self.fast = {g: (w2.detach(), w1.detach()) for g, (w2, w1) in self.fast.items()}
        if self.pending is not None:
            self.pending = {g: None if t is None else t.detach() for g, t in self.pending.items()}
        if self.conv_tail is not None:
            self.conv_tail = self.conv_tail.detach()
        if self.kv is not None:
            self.kv = (self.kv[0].detach(), self.kv[1].detach())
        if self.cms_fast is not None:
            self.cms_fast = [{n: p.detach() for n, p in lvl.items()} for lvl in self.cms_fast]

    def select(self, i: int, batch: int) -> LayerState:
        """Sequence ``i`` of a batch of ``batch``: copies of its rows (the fast weights' G = B * M
        rows are sequence-major, every other tensor has the batch first)."""
        def row(t: Tensor) -> Tensor:
            return t[i:i + 1].clone()

        def members(t: Tensor) -> Tensor:
            m = t.shape[0] // batch
            return t[i * m:(i + 1) * m].clone()

        def levels(lvls: list[dict[str, Tensor]] | None) -> list[dict[str, Tensor]] | None:
            return None if lvls is None else [{n: row(p) for n, p in lvl.items()} for lvl in lvls]

        return LayerState(
            fast=None if self.fast is None else {g: (members(w2), members(w1)) for g, (w2, w1) in self.fast.items()},
            pending=None if self.pending is None else {g: None if t is None else row(t) for g, t in self.pending.items()},
            conv_tail=None if self.conv_tail is None else row(self.conv_tail),
            kv=None if self.kv is None else (row(self.kv[0]), row(self.kv[1])),
            cms_fast=levels(self.cms_fast), cms_grad=levels(self.cms_grad))


@dataclass
class HopeState:
    """The whole model's state for a batch of sequences (reset = a new one; carry = keep it)."""

    batch: int
    """Sequences in the batch."""
    layers: list[LayerState]
    """One per block."""
    position: int = 0
    """Tokens consumed so far (chunk and CMS boundaries are counted from here)."""
    block_logits: list[Tensor] = field(default_factory=list)
    """Logits of the current CMS block (kept with their graph until the block completes)."""
    block_ids: list[Tensor] = field(default_factory=list)
    """Token ids of the current CMS block."""

    def detach_(self) -> None:
        """Cut the autograd history of every carried tensor."""
        for ls in self.layers:
            ls.detach_()
        self.block_logits = [t.detach() for t in self.block_logits]

    def track_cms_grad_(self) -> None:
        """Make the per-sequence CMS parameters differentiable (states built under no_grad)."""
        for ls in self.layers:
            if ls.cms_fast is not None:
                ls.cms_fast = [{n: p if p.requires_grad else p.detach().requires_grad_()
                                for n, p in lvl.items()} for lvl in ls.cms_fast]

    def split(self) -> list[HopeState]:
        """One state per sequence (copies): each continues exactly as if its sequence had run alone
        (up to float rounding: batched kernels may round differently)."""
        if self.block_logits:
            raise ValueError("cannot split a state inside a test-time CMS learning block")
        return [HopeState(batch=1, layers=[ls.select(i, self.batch) for ls in self.layers], position=self.position)
                for i in range(self.batch)]

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (fast weights, buffers, caches)."""
        return sum(t.numel() * t.element_size() for ls in self.layers for t in ls.tensors())
