"""Monotonic chunkwise attention (MoChA; Chiu & Raffel, 2018), built on hard monotonic attention (Raffel et al., 2017).

Test time (hard, online): at output step i a reader scans the memory left to right from the frame where it stopped
at step i−1 and halts at the first frame t_i whose selection probability p_i,j = σ(e_i,j) is ≥ 0.5; the decoder then
attends with a softmax over the chunk of w frames ending at t_i. No frame after t_i is read, so a decoder can run
while the audio arrives. If the reader passes the last frame without halting, the context is zero and the reader
stays past the end for every later step (Raffel et al.'s convention; it is also the limit of the soft version).

Training (soft): the halt is not differentiable, so the decoder uses its expectation. With α_0 = δ(frame 0),
    q_i,j = (1 − p_i,j−1) q_i,j−1 + α_i−1,j,    α_i,j = p_i,j q_i,j
(the probability that the reader halts at j), and the chunk attention β_i,j = Σ_{k=j}^{j+w−1} α_i,k ·
exp(u_i,j) / Σ_{l=k−w+1}^{k} exp(u_i,l). Both are computed in parallel over frames, in log space and float64:
log q_j = L_j + logcumsumexp_k≤j(log α_i−1,k − L_k) with L_j = Σ_{l<j} log(1 − p_l), which has none of the
underflow of the cumprod form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG = -1e9  # "log 0" that stays finite: exp() gives exactly 0, and no (−inf) − (−inf) = NaN reaches a gradient


def initial_alignment(n: int, t: int, device: torch.device | None = None) -> Tensor:
    """log α_0 [n, t]: the reader starts on frame 0 (log 1 there, NEG elsewhere), float64."""
    log_alpha = torch.full((n, t), NEG, dtype=torch.float64, device=device)
    log_alpha[:, 0] = 0.0
    return log_alpha


def expected_alignment(energy: Tensor, mask: Tensor, log_alpha_prev: Tensor) -> Tensor:
    """Soft monotonic alignment: energies e [N, T] (pre-sigmoid), mask [N, T] True on real frames, log α_{i−1}
    [N, T] → log α_i [N, T] (float64). Padded frames are never selected (p = 0) and get α = 0 (log = NEG)."""
    e = energy.double()
    log_p = F.logsigmoid(e).masked_fill(~mask, NEG)
    log_1mp = F.logsigmoid(-e).masked_fill(~mask, 0.0)
    cum = log_1mp.cumsum(-1) - log_1mp  # L_j = Σ_{l<j} log(1 − p_l), exclusive
    log_q = cum + torch.logcumsumexp(log_alpha_prev.double() - cum, dim=-1)
    return (log_p + log_q).masked_fill(~mask, NEG)


def chunk_attention(log_alpha: Tensor, chunk_energy: Tensor, mask: Tensor, chunk: int) -> Tensor:
    """Expected chunkwise attention β [N, T] (float64) from log α [N, T] and chunk energies u [N, T]: each frame k
    passes its halting probability α_k on to the w frames ending at k, split by a softmax of u over them."""
    u = chunk_energy.double().masked_fill(~mask, NEG)
    # log Σ_{l=k−w+1}^{k} exp(u_l): windows ending at k
    log_den = torch.logsumexp(F.pad(u, (chunk - 1, 0), value=NEG).unfold(-1, chunk, 1), dim=-1)
    ratio = (log_alpha.double() - log_den).masked_fill(~mask, NEG)  # log(α_k / den_k)
    # β_j = exp(u_j) Σ_{k=j}^{j+w−1} α_k / den_k: windows starting at j
    windows = F.pad(ratio, (0, chunk - 1), value=NEG).unfold(-1, chunk, 1)
    return (windows + u[..., None]).exp().sum(-1).masked_fill(~mask, 0.0)


def hard_monotonic_step(energy: Tensor, chunk_energy: Tensor, prev: Tensor, lens: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """Hard MoChA: energies e, u [N, T], previous halt `prev` [N], valid frames `lens` [N] → (chunk weights [N, T],
    halt index [N], found [N]). The halt is the first frame j ≥ prev, j < lens with σ(e_j) ≥ 0.5 (e_j ≥ 0); where
    there is none, found is False, the index is `lens` (past the end) and the weights are all zero."""
    t = torch.arange(energy.size(-1), device=energy.device)
    candidates = (t >= prev[:, None]) & (t < lens[:, None]) & (energy >= 0)
    found = candidates.any(-1)
    index = torch.where(found, candidates.int().argmax(-1), lens)  # argmax returns the first maximum
    window = (t <= index[:, None]) & (t > (index - chunk)[:, None]) & (t < lens[:, None]) & found[:, None]
    weights = chunk_energy.masked_fill(~window, NEG).softmax(-1) * window
    return weights, index, found


class MonotonicChunkwiseAttention(nn.Module):
    """MoChA's two energy functions and its soft (training) and hard (inference) attention.

    Monotonic energy (weight-normalized, Raffel et al., 2017): e = g · vᵀ tanh(W q + V h + b) / ‖v‖ + r, with g
    initialised to 1/√dim and r to `init_bias` (−4: the reader first moves on past almost every frame, so the
    expected alignment does not collapse onto the first frames). Chunk energy: u = wᵀ tanh(W' q + V' h + b').
    `noise_std` > 0 adds Gaussian noise to e in training, which pushes p towards 0/1 so the hard reader at test
    time behaves like the soft one it was trained as.
    """

    def __init__(self, query_dim: int, memory_dim: int, dim: int, chunk: int = 4, init_bias: float = -4.0,
                 noise_std: float = 1.0) -> None:
        super().__init__()
        if chunk < 1:
            raise ValueError(f"MoChA chunk width must be ≥ 1, got {chunk}")
        self.chunk, self.noise_std, self.dim = chunk, noise_std, dim
        self.query = nn.Linear(query_dim, 2 * dim, bias=False)
        self.key = nn.Linear(memory_dim, 2 * dim)  # [monotonic | chunk] projections of the memory, computed once
        self.v = nn.Parameter(torch.empty(dim).uniform_(-dim**-0.5, dim**-0.5))
        self.gain = nn.Parameter(torch.tensor(dim**-0.5))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        self.chunk_v = nn.Linear(dim, 1, bias=False)

    def energies(self, query: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """query [N, Q], keys = self.key(memory) [N, T, 2A] → (monotonic energies e [N, T], chunk energies u [N, T])."""
        hidden = torch.tanh(keys + self.query(query)[:, None])
        mono, chunky = hidden.split(self.dim, dim=-1)
        e = self.gain * (mono @ self.v) / self.v.norm() + self.bias
        return e, self.chunk_v(chunky).squeeze(-1)

    def soft(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor, log_alpha_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Expected attention → (context [N, D], β [N, T], log α [N, T] float64); noisy energies in training mode."""
        e, u = self.energies(query, keys)
        if self.training and self.noise_std > 0:
            e = e + self.noise_std * torch.randn_like(e)
        log_alpha = expected_alignment(e, mask, log_alpha_prev)
        beta = chunk_attention(log_alpha, u, mask, self.chunk).to(memory.dtype)
        return torch.bmm(beta[:, None], memory).squeeze(1), beta, log_alpha

    def hard(self, query: Tensor, keys: Tensor, memory: Tensor, lens: Tensor, prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Hard attention over the frames given → (context [N, D] (zero where nothing was selected), weights [N, T],
        halt index [N] (`lens` where not found), found [N]). Frames before prev − w + 1 may be left out by the caller
        (indices are then relative to the first frame given)."""
        e, u = self.energies(query, keys)
        weights, index, found = hard_monotonic_step(e, u, prev, lens, self.chunk)
        weights = weights.to(memory.dtype)
        return torch.bmm(weights[:, None], memory).squeeze(1), weights, index, found

