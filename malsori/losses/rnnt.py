"""RNN-T (transducer) loss in plain PyTorch: the forward/backward recursions run along anti-diagonals of the
(t, u) lattice, one vectorized step per diagonal, and the gradient is written by hand from the alpha·beta posteriors.

The lattice: node (t, u) means "u labels emitted, at frame t". From (t, u) a blank moves to (t+1, u) and the label
y_{u+1} moves to (t, u+1); an utterance ends with the blank out of (T-1, U). All nodes on a diagonal n = t + u depend
only on diagonal n-1, so each step updates a whole diagonal for the whole batch at once (T+U steps, not T·U).
Only the blank and target-label log-probs are gathered ([B, T, U+1] each), so memory beyond the logits is O(B·T·U).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

NEG_INF = float("-inf")


def _skew(x: Tensor) -> Tensor:
    """[B, T, U+1] → [B, T+U, U+1] with row n holding the diagonal t + u = n (cells off the lattice are -inf)."""
    B, T, U1 = x.shape
    n = torch.arange(T + U1 - 1, device=x.device)[:, None]
    t = n - torch.arange(U1, device=x.device)[None, :]
    out = x.gather(1, t.clamp(0, T - 1).expand(B, -1, -1))
    return out.masked_fill_(((t < 0) | (t >= T)).expand(B, -1, -1), NEG_INF)


def _unskew(x: Tensor, T: int) -> Tensor:
    """Inverse of `_skew`: [B, T+U, U+1] → [B, T, U+1]."""
    B, _, U1 = x.shape
    n = torch.arange(T, device=x.device)[:, None] + torch.arange(U1, device=x.device)[None, :]
    return x.gather(1, n.expand(B, -1, -1))


def _alphas(lb: Tensor, ly: Tensor) -> Tensor:
    """Forward variables on the skewed lattice: A[b, n, u] = log P(reach node (t=n-u, u)), before emitting there."""
    B, N, U1 = lb.shape
    A = lb.new_full((B, N, U1), NEG_INF)
    A[:, 0, 0] = 0.0
    for n in range(1, N):
        prev = A[:, n - 1]
        A[:, n] = prev + lb[:, n - 1]  # blank from (t-1, u)
        A[:, n, 1:] = torch.logaddexp(A[:, n, 1:], prev[:, :-1] + ly[:, n - 1, :-1])  # label from (t, u-1)
    return A


def _betas(lb: Tensor, ly: Tensor, end: Tensor) -> Tensor:
    """Backward variables on the skewed lattice: log P(finish | at node), emission at the node included.
    `end` [B, N, U+1] marks each utterance's last node (T_b-1, U_b), where beta = its final blank."""
    B, N, U1 = lb.shape
    Bt = lb.new_full((B, N, U1), NEG_INF)
    for n in range(N - 1, -1, -1):
        if n < N - 1:
            nxt = Bt[:, n + 1]
            Bt[:, n] = nxt + lb[:, n]  # blank to (t+1, u)
            Bt[:, n, :-1] = torch.logaddexp(Bt[:, n, :-1], nxt[:, 1:] + ly[:, n, :-1])  # label to (t, u+1)
        Bt[:, n] = torch.where(end[:, n], lb[:, n], Bt[:, n])
    return Bt


class _RNNTLoss(torch.autograd.Function):
    """Per-utterance negative log-likelihoods [B]; backward computes d/d(logits) from alpha·beta posteriors."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor, T_b: Tensor, U_b: Tensor, blank: int, log_probs_input: bool):
        B, T, U1, V = logits.shape
        U = U1 - 1
        ct = torch.promote_types(logits.dtype, torch.float32)  # half/bfloat16 logits: recursions in float32
        x = logits.to(ct)
        lse = x.new_zeros((B, T, U1)) if log_probs_input else torch.logsumexp(x, dim=-1)
        lb = x[..., blank] - lse  # log P(blank | t, u)
        ly = x[:, :, :U].gather(-1, targets[:, None, :, None].expand(B, T, U, 1)).squeeze(-1) - lse[:, :, :U]
        ly = torch.cat([ly, ly.new_full((B, T, 1), NEG_INF)], dim=2)  # no label out of u = U
        LB, LY = _skew(lb), _skew(ly)
        A = _alphas(LB, LY)
        bidx = torch.arange(B, device=logits.device)
        ll = A[bidx, T_b - 1 + U_b, U_b] + lb[bidx, T_b - 1, U_b]
        ctx.save_for_backward(logits, targets, T_b, U_b, lse, LB, LY, A, ll)
        ctx.blank, ctx.log_probs_input = blank, log_probs_input
        return -ll

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        logits, targets, T_b, U_b, lse, LB, LY, A, ll = ctx.saved_tensors
        B, T, U1, V = logits.shape
        U = U1 - 1
        N = LB.shape[1]
        bidx = torch.arange(B, device=logits.device)
        end = torch.zeros((B, N, U1), dtype=torch.bool, device=logits.device)
        end[bidx, T_b - 1 + U_b, U_b] = True
        alpha, beta = _unskew(A, T), _unskew(_betas(LB, LY, end), T)
        lb, ly = _unskew(LB, T), _unskew(LY, T)[:, :, :U]
        # beta after a blank from (t, u) is beta(t+1, u); after each utterance's final blank it is log 1 = 0.
        beta_next = torch.cat([beta[:, 1:], beta.new_full((B, 1, U1), NEG_INF)], dim=1)
        beta_next[bidx, T_b - 1, U_b] = 0.0
        norm = ll[:, None, None]
        post_blank = torch.exp(alpha + lb + beta_next - norm)  # P(alignment takes the blank out of (t, u))
        post_label = torch.exp(alpha[:, :, :U] + ly + beta[:, :, 1:] - norm)  # P(... takes label u+1 at (t, u))
        g = grad_out.to(alpha.dtype)[:, None, None]
        if ctx.log_probs_input:
            grad = torch.zeros((B, T, U1, V), dtype=alpha.dtype, device=logits.device)
        else:  # d(-log P)/d logit = softmax · occupancy(t, u) - posterior of the emitted symbol
            grad = torch.sub(logits.to(alpha.dtype), lse[..., None]).exp_()
            occ = post_blank.clone()
            occ[:, :, :U] += post_label
            grad.mul_((occ * g)[..., None])
        grad[..., ctx.blank] -= post_blank * g
        grad[:, :, :U].scatter_add_(-1, targets[:, None, :, None].expand(B, T, U, 1), -(post_label * g)[..., None])
        return grad.to(logits.dtype), None, None, None, None, None


def rnnt_loss(
    logits: Tensor,
    targets: Tensor,
    logit_lengths: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    reduction: Literal["mean", "sum", "none"] = "mean",
    log_probs_input: bool = False,
) -> Tensor:
    """RNN-T negative log-likelihood of `targets` [B, U] (padded) given joiner outputs `logits` [B, T, U+1, V].

    `logits` are unnormalized (log-softmax over V is applied inside) unless `log_probs_input`, in which case they
    must already be log-probabilities. Utterance b uses frames < logit_lengths[b] and labels < target_lengths[b];
    cells beyond those get zero gradient. reduction: "none" → [B]; "sum"; "mean" = sum / B.
    """
    if logits.dim() != 4 or targets.dim() != 2:
        raise ValueError(f"rnnt_loss: want logits [B,T,U+1,V] and targets [B,U], got {tuple(logits.shape)}, {tuple(targets.shape)}")
    B, T, U1, _ = logits.shape
    if targets.shape != (B, U1 - 1):
        raise ValueError(f"rnnt_loss: targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    T_b, U_b = logit_lengths.to(logits.device).long(), target_lengths.to(logits.device).long()
    if B and (T_b.min() < 1 or T_b.max() > T or U_b.min() < 0 or U_b.max() > U1 - 1):
        raise ValueError("rnnt_loss: lengths out of range (need 1 <= logit_length <= T and 0 <= target_length <= U)")
    losses = _RNNTLoss.apply(logits, targets.to(logits.device).long(), T_b, U_b, blank, log_probs_input)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.sum() / max(B, 1)
    raise ValueError(f"rnnt_loss: reduction must be mean, sum or none, got {reduction!r}")
