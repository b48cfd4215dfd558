"""Self-referential Titans (Eqs. 83-93 of Nested Learning), computed chunk by chunk with batched ops.

See :mod:`longctx.runners.hope.model` for the equations. This module holds the memories and their
chunkwise delta-rule writes, laid out for speed on small CPU models, where the cost is the number
of tensor operations per chunk rather than their size:

* every member of a memory group (memories written at the same boundaries) lives in one batched
  tensor, ``W2`` (B*M, h [+ 1 skip row], d) and ``W1`` (B*M, o_max, h) (scalar memories padded
  with zero rows that provably stay zero), so a group reads with two matmuls and writes with one
  gradient pass and two triangular solves whatever its number of members; with
  ``chunk_size == chunk_size_memory`` all five memories form one group;
* everything that does not depend on the fast state (the q projection, its conv, its norm, the
  conv of the block input) is computed for the whole call before the loop over chunks;
* the decay factors of a chunk are shared by both delta rules (W2 and W1), and ``k S_0^T`` of the
  triangular system is the gradient pass's own pre-activation (not recomputed);
* members whose eta scale is 0 (the demo recipe's ``--eta-scale-other 0``: k, v, eta, alpha) are
  only decayed, S_C = gamma_C S_0, which is what the delta rule gives with eta = 0: their gradient
  pass and triangular solves are skipped (``MemoryGroup.learners``, the members that write). In
  training this is 1.25x-1.6x per step; in streaming at chunk 16 nothing (the loop is bound by the
  number of operations per chunk, not their size), at chunk 64 1.6x (measured in-process, bench/RESULTS.md).

The loop over chunks is the one the maths needs: a chunk's keys and values are read from the state
that the previous chunk wrote (the memories generate their own keys and values).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from longctx.runners.hope.model import HopeConfig, LayerState

#: Memory names, in their order inside a group; ``memory`` (the output memory) reads q, the others x.
MEMORIES = ("k", "v", "eta", "alpha", "memory")

#: Fast state of a memory group: (W2 (G, h [+ 1 skip row], d), W1 (G, o_max, h)), G = batch x members.
GroupState = tuple[Tensor, Tensor]


def memory_groups(cfg: HopeConfig) -> dict[str, tuple[tuple[str, ...], int]]:
    """Group name -> (members, chunk size). One group when both chunk sizes agree (the demo)."""
    if cfg.chunk_size == cfg.chunk_size_memory:
        return {"all": (MEMORIES, cfg.chunk_size)}
    return {"other": (MEMORIES[:4], cfg.chunk_size), "output": (("memory",), cfg.chunk_size_memory)}


class SelfReferentialTitans(nn.Module):
    """Fixed q projection; memories M_k, M_v, M_eta, M_alpha, M_memory writing themselves."""

    def __init__(self, cfg: HopeConfig):
        super().__init__()
        self.cfg = cfg
        d, h = cfg.dim, cfg.memory_hidden
        conv_channels = 3 * d if cfg.conv_after_projection else d   # [q; k; v] or the input x
        self.conv = CausalConv(conv_channels, cfg.memory_conv_window) if cfg.memory_conv_window else None
        self.w_q = nn.Linear(d, d, bias=False)
        self.m_k = MLPMemory(d, h, d, skip=False)
        self.m_v = MLPMemory(d, h, d, skip=False)
        self.m_eta = MLPMemory(d, h, 1, skip=cfg.memory_skip)
        self.m_alpha = MLPMemory(d, h, 1, skip=cfg.memory_skip)
        self.m_memory = MLPMemory(d, h, d, skip=False)
        scale_other = cfg.eta_scale if cfg.eta_scale_other is None else cfg.eta_scale_other
        self.groups = {g: MemoryGroup([getattr(self, f"m_{n}") for n in names], names, chunk,
                                      [cfg.eta_scale if n == "memory" else scale_other for n in names],
                                      value_target=[n == "memory" and cfg.memory_value_target for n in names])
                       for g, (names, chunk) in memory_groups(cfg).items()}

    def init_state(self, st: LayerState, batch: int) -> None:
        """Copy the meta-learned initial states into the fast state (one per sequence)."""
        st.fast = {g: group.initial_state(batch) for g, group in self.groups.items()}
        st.pending = {g: None for g in self.groups}

    def forward(self, x: Tensor, st: LayerState, position: int) -> Tensor:
        cfg, d = self.cfg, self.cfg.dim
        if cfg.memory_input_l2norm:
            x = F.normalize(x, dim=-1, eps=1e-6)
        conv_qkv = self.conv is not None and cfg.conv_after_projection
        if self.conv is not None and not conv_qkv:
            x = self.conv(x, st)                                       # (B, T, d)
        q = self.w_q(x)                                                # (B, T, d): state-free
        kv_weight = kv_tail = None
        if conv_qkv:   # the conv is depthwise: its q channels run on the whole call, k, v per chunk
            weight = self.conv.conv.weight[:, 0]                       # (3d, w)
            tail = st.conv_tail if st.conv_tail is not None else x.new_zeros(x.shape[0], self.conv.window - 1, 3 * d)
            q_ext = torch.cat([tail[..., :d], q], 1)                   # (B, w - 1 + T, d)
            q = causal_conv(q_ext, weight[:d])
            kv_weight, kv_tail = weight[d:], tail[..., d:]
            q_tail = q_ext[:, q_ext.shape[1] - (self.conv.window - 1):]
        if cfg.memory_qk_norm:
            q = F.normalize(q, dim=-1, eps=1e-6)
        if not cfg.titans_writes:   # read-only: every token reads the initial M_memory
            group = next(g for g in self.groups.values() if "memory" in g.names)
            name = next(n for n, g in self.groups.items() if g is group)
            if conv_qkv:   # k, v are not produced: their conv channels stay zero
                st.conv_tail = torch.cat([q_tail, torch.zeros_like(kv_tail)], -1)
            return group.read_one(st.fast[name], q, "memory")
        groups, outputs, start, T = self.groups, [], 0, x.shape[1]
        while start < T:
            pos = position + start
            # a piece ends at the next chunk boundary of any group (absolute positions)
            n = min(min(g.chunk - pos % g.chunk for g in groups.values()), T - start)
            xp, qp = x[:, start:start + n], q[:, start:start + n]      # (B, n, d)
            read = {}
            for name, group in groups.items():
                read.update(group.read(st.fast[name], xp, qp))
            k, v = read["k"], read["v"]                                # (B, n, d)
            if conv_qkv:   # the k, v channels of the conv, tail carried chunk to chunk
                kv_ext = torch.cat([kv_tail, torch.cat([k, v], -1)], 1)   # (B, w - 1 + n, 2d)
                k, v = causal_conv(kv_ext, kv_weight).split(d, -1)      # (B, n, d) x 2
                kv_tail = kv_ext[:, kv_ext.shape[1] - (self.conv.window - 1):]
            if cfg.memory_qk_norm:
                k = F.normalize(k, dim=-1, eps=1e-6)
            eta = (F.softplus if cfg.eta_activation == "softplus" else torch.sigmoid)(read["eta"])   # (B, n)
            log_alpha = F.logsigmoid(read["alpha"] + cfg.alpha_logit_offset)   # (B, n)
            outputs.append(read["memory"])                             # o_t = M_memory(q_t)
            for name, group in groups.items():
                pending, boundary = st.pending[name], (pos + n) % group.chunk == 0
                if pending is None and boundary:                       # a whole chunk in this piece
                    st.fast[name] = group.write(st.fast[name], k, v, eta, log_alpha, cfg.memory_normalized_steps)
                    continue
                tokens = torch.cat([k, v, eta[..., None], log_alpha[..., None]], dim=-1)   # (B, n, 2d + 2)
                pending = tokens if pending is None else torch.cat([pending, tokens], 1)
                st.pending[name] = None if boundary else pending
                if boundary:                                           # end of this group's chunk
                    st.fast[name] = group.write(st.fast[name], pending[..., :d], pending[..., d:2 * d],
                                                pending[..., 2 * d], pending[..., 2 * d + 1],
                                                cfg.memory_normalized_steps)
            start += n
        if conv_qkv:
            st.conv_tail = torch.cat([q_tail, kv_tail], -1)            # (B, w - 1, 3d)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)   # (B, T, d)


class MLPMemory(nn.Module):
    """One Titans memory, M(x) = x + W1 gelu(W2 x) (Eq. 91); its meta-learned initial state.

    Scalar memories (out_dim 1) have no identity path; ``skip`` adds the reproduction's W_skip x.
    """

    def __init__(self, dim: int, hidden: int, out_dim: int, skip: bool):
        super().__init__()
        self.dim, self.hidden, self.out_dim = dim, hidden, out_dim
        self.residual = out_dim == dim
        self.w2 = nn.Parameter(_uniform(hidden, dim))
        self.w1 = nn.Parameter(_uniform(out_dim, hidden))
        self.w_skip = nn.Parameter(_uniform(out_dim, dim)) if skip and not self.residual else None


class MemoryGroup:
    """Memories written at the same chunk boundaries, batched along a member axis: every state is a
    3-d tensor over G = B * M (sequence-major), so that each step is one ``bmm``-style kernel call.

    Reads: M(x) = W1 gelu(W2 x) [+ x] [+ W_skip x] for every member at once. Writes (Eqs. 88-90):
    each member's gradient of L(M; k_t, v_hat_t = M(v_t)) at the chunk-start state, then the delta
    rule with decay on W2 (and the skip row, whose input is also the key) and on W1.
    """

    def __init__(self, memories: list[MLPMemory], names: tuple[str, ...], chunk: int, eta_scales: list[float],
                 value_target: list[bool] | None = None):
        self.memories, self.names, self.chunk = memories, names, chunk
        self.value_target = list(value_target or [False] * len(memories))   # target v_t, not M(v_t)
        if any(vt and not m.residual for vt, m in zip(self.value_target, memories)):
            raise ValueError("a value target needs a memory whose output has the value's width")
        self.hidden = memories[0].hidden
        self.out_max = max(m.out_dim for m in memories)
        self.skip = any(m.w_skip is not None for m in memories)
        self.reads_q = [n == "memory" for n in names]                 # the output memory reads q
        self.eta_scales = list(eta_scales)
        self.any_residual = any(m.residual for m in memories)
        self._constants: dict[tuple, tuple[Tensor, ...]] = {}
        # Members with eta scale 0 write nothing: their delta rule is the decay alone (r_t = 0 in
        # ChunkDecay.delta_rule, so S_C = gamma_C S_0 exactly). Their gradient pass is skipped and
        # only the learning members form the sub-group that writes (the demo: M_memory alone).
        frozen = [i for i, s in enumerate(self.eta_scales) if s == 0]
        self.learners: MemoryGroup | None = None
        self.frozen: tuple[int, ...] = ()
        self._restore: list[int] | None = None
        if frozen and len(frozen) < len(memories):
            keep = [i for i in range(len(memories)) if i not in frozen]
            sub = MemoryGroup([memories[i] for i in keep], tuple(names[i] for i in keep), chunk,
                              [self.eta_scales[i] for i in keep], [self.value_target[i] for i in keep])
            if sub.skip == self.skip and sub.out_max == self.out_max:   # same state layout
                self.learners, self.frozen = sub, tuple(frozen)
                order = list(self.frozen) + keep                    # frozen members first, then learners
                self._restore = None if order == sorted(order) else [order.index(i) for i in range(len(order))]
        elif len(frozen) == len(memories):
            self.frozen = tuple(frozen)

    def constants(self, like: Tensor, batch: int) -> tuple[Tensor, ...]:
        """(eta scales (1, M, 1), residual mask (G, 1, 1), skip placement (G, 1, o_max): 1 at column 0
        of members with W_skip, the scalar 1, value-target mask (G, 1, 1)) in ``like``'s dtype and
        device, built once per batch size (the module may be created on the meta device and loaded later)."""
        key = (like.dtype, like.device, batch)
        if key not in self._constants:
            M, o = len(self.memories), self.out_max
            skip_place = torch.zeros(M, 1, o, dtype=torch.float64)
            for i, m in enumerate(self.memories):
                if m.w_skip is not None:
                    skip_place[i, 0, 0] = 1.0
            residual = torch.tensor([float(m.residual) for m in self.memories], dtype=torch.float64).view(M, 1, 1)
            scales = torch.tensor(self.eta_scales, dtype=torch.float64).view(1, M, 1)
            value = torch.tensor(self.value_target, dtype=torch.float64).view(M, 1, 1)
            self._constants[key] = tuple(t.to(like) for t in (scales, residual.repeat(batch, 1, 1),
                                                               skip_place.repeat(batch, 1, 1), torch.ones(()))) \
                + (value.repeat(batch, 1, 1).to(like.device, torch.bool),)
        return self._constants[key]

    def initial_state(self, batch: int) -> GroupState:
        """The meta-learned (W2 [; W_skip], W1) of every member, zero-padded, one copy per sequence."""
        w2s, w1s = [], []
        for m in self.memories:
            w2 = m.w2
            if self.skip:
                w2 = torch.cat([w2, m.w_skip if m.w_skip is not None else w2.new_zeros(1, m.dim)], 0)
            w2s.append(w2)
            w1s.append(F.pad(m.w1, (0, 0, 0, self.out_max - m.out_dim)))
        w2, w1 = torch.stack(w2s), torch.stack(w1s)                   # (M, h [+ 1], d), (M, o, h)
        return w2.repeat(batch, 1, 1), w1.repeat(batch, 1, 1)         # (G, h [+ 1], d), (G, o, h)

    def _per_member(self, t: Tensor) -> Tensor:
        """(B, n, c) -> (G, n, c): the same rows for every member."""
        B, M = t.shape[0], len(self.memories)
        return t[:, None].expand(B, M, *t.shape[1:]).reshape(B * M, *t.shape[1:])

    def _inputs(self, xp: Tensor, qp: Tensor) -> Tensor:
        """Each member's input (G, n, d): x for M_k, M_v, M_eta, M_alpha, q for M_memory."""
        if not any(self.reads_q):
            return self._per_member(xp)
        if all(self.reads_q):
            return self._per_member(qp)
        B, n, d = xp.shape
        n_x = self.reads_q.index(True)                                # x readers first, then q
        return torch.cat([xp[:, None].expand(B, n_x, n, d), qp[:, None]], 1).view(-1, n, d)

    def _mlp(self, state: GroupState, inp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z = W2 inp (G, n, h [+ 1]), a = gelu of its hidden part, y = M(inp) (G, n, o_max))."""
        w2, w1 = state
        z = torch.bmm(inp, w2.mT)
        a = F.gelu(z[..., :self.hidden] if self.skip else z)
        y = torch.bmm(a, w1.mT)
        _, residual, skip_place, _, _ = self.constants(inp, inp.shape[0] // len(self.memories))
        if self.any_residual:
            y = torch.addcmul(y, inp, residual)
        if self.skip:
            y = torch.addcmul(y, z[..., self.hidden:], skip_place)
        return z, a, y

    def read(self, state: GroupState, xp: Tensor, qp: Tensor) -> dict[str, Tensor]:
        """M(input) of every member: {name: (B, n, d)} for vector memories, (B, n) for scalar ones."""
        B, n = xp.shape[:2]
        y = self._mlp(state, self._inputs(xp, qp))[2].view(B, len(self.memories), n, self.out_max)
        return {name: y[:, i, :, 0] if m.out_dim == 1 else y[:, i, :, :m.out_dim]
                for i, (name, m) in enumerate(zip(self.names, self.memories))}

    def read_one(self, state: GroupState, inp: Tensor, name: str) -> Tensor:
        """M_name(inp) of one member for ``inp`` (B, T, d): (B, T, out_dim)."""
        B, M, i = inp.shape[0], len(self.memories), self.names.index(name)
        w2, w1 = (t.view(B, M, *t.shape[1:])[:, i] for t in state)
        mem = self.memories[i]
        z = torch.bmm(inp, w2.mT)
        y = torch.bmm(F.gelu(z[..., :self.hidden]), w1[:, :mem.out_dim].mT)
        if mem.residual:
            return y + inp
        return y + z[..., self.hidden:] if mem.w_skip is not None else y

    def write(self, state: GroupState, k: Tensor, v: Tensor, eta: Tensor, log_alpha: Tensor,
              normalized: bool) -> GroupState:
        """One chunk of delta-rule updates (Eq. 90): keys ``k``, values ``v`` (B, C, d), the output
        memory's ``eta`` and ``log_alpha`` (B, C); returns the state at the chunk's end."""
        if self.frozen:
            return self._write_frozen(state, k, v, eta, log_alpha, normalized)
        w2, w1 = state
        B, C = k.shape[:2]
        h = self.hidden
        eta_scales, _, skip_place, one, value_target = self.constants(k, B)
        eta = (eta[:, None] * eta_scales).view(-1, C)                 # (G, C): each member's eta
        kv = self._per_member(torch.cat([k, v], 1))                   # (G, 2C, d)
        z, a, y = self._mlp(state, kv)
        target = y[:, C:]                                              # v_hat_t = M(v_t) (Eq. 88)
        if any(self.value_target):                                     # or v_t itself
            target = torch.where(value_target, kv[:, C:], target)
        e = y[:, :C] - target                                          # (G, C, o): M(k_t) - v_hat_t
        zk, ak = z[:, :C], a[:, :C]                                    # at the keys
        zh = zk[..., :h] if self.skip else zk
        if normalized:   # u / curvature in z = W2 k, 2 |W1 diag(gelu'(z))|_F^2 (|k| = 1); the 2s cancel
            slope = torch.ops.aten.gelu_backward(one.expand_as(zh), zh)        # (G, C, h)
            curvature = torch.bmm(slope.square(), w1.square().sum(-2)[..., None])      # (G, C, 1)
            u = torch.bmm(e, w1) * slope / (curvature + 5e-7)          # grad_{W2} L = u_t k_t^T
        else:
            u = 2 * torch.ops.aten.gelu_backward(torch.bmm(e, w1), zh)
        if self.skip:    # the skip row: grad = 2 e k^T (curvature 2 |k|^2 = 2 when normalised)
            e0 = e[..., :1] * skip_place[..., :1]
            u = torch.cat([u, e0 if normalized else 2 * e0], -1)
        decay = ChunkDecay(self._per_member(log_alpha[..., None])[..., 0], eta)
        w2 = decay.delta_rule(w2, u, kv[:, :C], zk)
        if normalized:
            # NLMS on W1 with key a^_t = a_t/|a_t|: the delta rule with unit keys, error r_t - v_hat_t
            inv = ak.norm(dim=-1, keepdim=True).clamp_min(1e-6).reciprocal()   # (G, C, 1)
            a_hat = ak * inv
            read_k = torch.bmm(a_hat, w1.mT)                           # a^_t W1^T
            w1 = decay.delta_rule(w1, e * inv - read_k, a_hat, read_k)
        else:   # W1 decayed by alpha_t and stepped by -eta_t grad_W1 = -eta_t 2 e_t a_t^T
            w1 = torch.baddbmm(decay.gamma * w1, (e * (-2 * decay.to_end * eta[..., None])).mT, ak)
        return w2, w1

    def _write_frozen(self, state: GroupState, k: Tensor, v: Tensor, eta: Tensor, log_alpha: Tensor,
                      normalized: bool) -> GroupState:
        """:meth:`write` when some members have eta scale 0: those are decayed by gamma_C (the value
        ChunkDecay computes, with the same rounding), the others written by the learners' sub-group."""
        B, M = k.shape[0], len(self.memories)
        gamma = log_alpha.cumsum(1)[:, -1:].exp()[..., None, None]     # (B, 1, 1, 1): gamma_C / gamma_0
        members = [t.view(B, M, *t.shape[1:]) for t in state]         # (B, M, rows, cols) x 2
        if self.learners is None:                                      # nothing learns in this group
            return tuple((t * gamma).view_as(s) for t, s in zip(members, state))
        n = len(self.frozen)
        if self._restore is None:                                      # frozen members first: slices
            frozen, learning = [t[:, :n] for t in members], [t[:, n:] for t in members]
        else:
            f_idx = torch.tensor(self.frozen, device=k.device)
            l_idx = torch.tensor([i for i in range(M) if i not in self.frozen], device=k.device)
            frozen, learning = [t.index_select(1, f_idx) for t in members], [t.index_select(1, l_idx) for t in members]
        learned = self.learners.write(tuple(t.flatten(0, 1) for t in learning), k, v, eta, log_alpha, normalized)
        out = []
        for f, new in zip(frozen, learned):
            t = torch.cat([f * gamma, new.view(B, M - n, *f.shape[2:])], 1)   # (B, M, rows, cols)
            out.append((t if self._restore is None else t[:, self._restore]).flatten(0, 1))
        return tuple(out)


class ChunkDecay:
    """Decay products of one chunk, shared by the delta rules of its memories, for G = B * M rows.

    With gamma_t = prod_{s<=t} alpha_s: ``eta_rel`` (G, C, C) = eta_t gamma_{t-1}/gamma_s below the
    diagonal, 0 elsewhere; ``prev`` (G, C, 1) = gamma_{t-1}; ``to_end`` (G, C, 1) = gamma_C/gamma_t;
    ``gamma`` (G, 1, 1) = gamma_C; ``neg_eta`` (G, C, 1) = -eta_t.
    """

    def __init__(self, log_alpha: Tensor, eta: Tensor):
        C = log_alpha.shape[1]
        lg = F.pad(log_alpha.cumsum(1), (1, 0))                        # (G, C + 1): log gamma_0..C
        # ratio[t, s] = gamma_t / gamma_s for s <= t, else 0: every product the chunk needs
        ratio = (lg[:, :, None] - lg[:, None, :]).masked_fill(_above_diagonal(C + 1, lg.device), -math.inf).exp()
        eta = eta[..., None]                                           # (G, C, 1)
        self.eta_rel = eta * ratio[:, :C, 1:]                          # [t-1, s]: gamma_{t-1}/gamma_s, s < t
        self.neg_eta = -eta
        self.prev = ratio[:, :C, :1]                                   # gamma_{t-1} / gamma_0
        self.to_end = ratio[:, C, 1:, None]                            # gamma_C / gamma_t
        self.gamma = ratio[:, C:, :1]                                  # gamma_C / gamma_0

    def delta_rule(self, s0: Tensor, u: Tensor, k: Tensor, k_s0: Tensor) -> Tensor:
        """S_t = S_{t-1}(alpha_t I - eta_t k_t k_t^T) - eta_t u_t k_t^T over the chunk, in parallel.

        ``s0`` (G, R, dk) is S_0; ``u`` (G, C, R) gradient factors taken at S_0; ``k`` (G, C, dk);
        ``k_s0`` = k_t S_0^T (G, C, R), passed in because the caller has it.
        S_t = gamma_t S_0 + sum_{s<=t} (gamma_t/gamma_s) r_s k_s^T where the rows
        r_t = -eta_t (S_{t-1} k_t + u_t) solve the unit lower-triangular system
        r_t + eta_t sum_{s<t} (gamma_{t-1}/gamma_s)(k_s . k_t) r_s = -eta_t (u_t + gamma_{t-1} S_0 k_t).
        Returns S_C (G, R, dk).
        """
        lower = torch.bmm(k, k.mT) * self.eta_rel                      # (G, C, C), zero on/above diag
        rhs = torch.addcmul(u, self.prev, k_s0) * self.neg_eta         # (G, C, R)
        r = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        return torch.baddbmm(self.gamma * s0, r.mT, k * self.to_end)


@lru_cache(maxsize=64)
def _above_diagonal(n: int, device: torch.device) -> Tensor:
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


# ----------------------------------------------------------------------------------------------
# Causal depthwise conv
# ----------------------------------------------------------------------------------------------


def causal_conv(x_ext: Tensor, weight: Tensor) -> Tensor:
    """Depthwise causal conv of ``x_ext`` = [previous window - 1 inputs; x] (B, w - 1 + T, c) with
    ``weight`` (c, w): (B, T, c); out_t = sum_j weight[:, j] x_ext[t + j] (nn.Conv1d's order)."""
    return (x_ext.unfold(1, weight.shape[1], 1) * weight).sum(-1)


class CausalConv(nn.Module):
    """Depthwise causal conv over time; the last ``window - 1`` inputs are carried in the state."""

    def __init__(self, dim: int, window: int):
        super().__init__()
        self.window = window
        self.conv = nn.Conv1d(dim, dim, kernel_size=window, groups=dim, bias=False)

    def forward(self, x: Tensor, st: LayerState) -> Tensor:
        B, T, d = x.shape
        tail = st.conv_tail if st.conv_tail is not None else x.new_zeros(B, self.window - 1, d)
        xx = torch.cat([tail, x], dim=1)                                # (B, window - 1 + T, d)
        st.conv_tail = xx[:, xx.shape[1] - (self.window - 1):]
        return self.conv(xx.transpose(1, 2)).transpose(1, 2)           # (B, T, d)


def _uniform(out_dim: int, in_dim: int) -> Tensor:
    """nn.Linear's default initialisation for an (out, in) matrix."""
    bound = 1.0 / math.sqrt(in_dim)
    return torch.empty(out_dim, in_dim).uniform_(-bound, bound)
