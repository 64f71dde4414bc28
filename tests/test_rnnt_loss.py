"""RNN-T loss: brute force over every alignment, gradcheck, and a plain double-loop reference (autograd)."""

from __future__ import annotations

import itertools

import pytest
import torch

from malsori.losses import rnnt_loss


def reference_rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, T_b: torch.Tensor, U_b: torch.Tensor, blank: int = 0) -> torch.Tensor:
    """Textbook alpha recursion, a Python loop over t and u (vectorized only over the batch), autograd for the
    gradient; per-utterance losses. Blank and label log-probs are gathered first, as any sane version would."""
    B, T, U1, _ = logits.shape
    lp = logits.log_softmax(-1)
    lb = lp[..., blank]  # [B, T, U+1]
    ly = lp[:, :, : U1 - 1].gather(-1, targets[:, None, :, None].expand(B, T, U1 - 1, 1)).squeeze(-1)  # [B, T, U]
    alpha = [[None] * U1 for _ in range(T)]
    for t in range(T):
        for u in range(U1):
            terms = []
            if t == 0 and u == 0:
                terms.append(lp.new_zeros(B))
            if t > 0:
                terms.append(alpha[t - 1][u] + lb[:, t - 1, u])
            if u > 0:
                terms.append(alpha[t][u - 1] + ly[:, t, u - 1])
            alpha[t][u] = torch.logsumexp(torch.stack(terms), 0)
    return torch.stack([-(alpha[T_b[b] - 1][U_b[b]][b] + lb[b, T_b[b] - 1, U_b[b]]) for b in range(B)])


def brute_force_loss(logits: torch.Tensor, target: list[int], T: int, blank: int = 0) -> torch.Tensor:
    """-log of the sum over ALL alignments of one utterance: every order of T blanks and U labels ending in a blank."""
    lp = logits.log_softmax(-1)
    U = len(target)
    scores = []
    for label_slots in itertools.combinations(range(T + U - 1), U):  # positions of the labels among the first T+U-1
        t = u = 0
        s = lp.new_zeros(())
        for i in range(T + U):
            if i in label_slots:
                s = s + lp[t, u, target[u]]
                u += 1
            else:
                s = s + lp[t, u, blank]
                t += 1
        assert (t, u) == (T, U)
        scores.append(s)
    return -torch.logsumexp(torch.stack(scores), 0)


def _case(B: int, T: int, U: int, V: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=dtype) * 2
    targets = torch.randint(1, V, (B, U), generator=g)
    return logits, targets


@pytest.mark.parametrize("T,U,V", [(1, 0, 2), (1, 2, 3), (4, 3, 4), (3, 1, 2), (2, 3, 4)])
def test_matches_brute_force(T: int, U: int, V: int) -> None:
    logits, targets = _case(2, T, U, V, seed=T * 10 + U)
    T_b, U_b = torch.full((2,), T), torch.full((2,), U)
    got = rnnt_loss(logits, targets, T_b, U_b, reduction="none")
    for b in range(2):
        want = brute_force_loss(logits[b], targets[b].tolist(), T)
        assert abs(got[b].item() - want.item()) <= 1e-5


def test_matches_brute_force_with_different_lengths() -> None:
    logits, targets = _case(3, 4, 3, 4, seed=7)
    T_b, U_b = torch.tensor([4, 2, 3]), torch.tensor([3, 1, 0])
    targets[1, 1:] = 0  # padding is blank, as collate() writes it
    targets[2, :] = 0
    got = rnnt_loss(logits, targets, T_b, U_b, reduction="none")
    for b in range(3):
        want = brute_force_loss(logits[b, : T_b[b], : U_b[b] + 1], targets[b, : U_b[b]].tolist(), int(T_b[b]))
        assert abs(got[b].item() - want.item()) <= 1e-5
    # reductions agree with the per-utterance values
    assert torch.allclose(rnnt_loss(logits, targets, T_b, U_b, reduction="sum"), got.sum())
    assert torch.allclose(rnnt_loss(logits, targets, T_b, U_b, reduction="mean"), got.sum() / 3)


def test_gradcheck() -> None:
    logits, targets = _case(3, 4, 3, 3, seed=1)
    logits.requires_grad_(True)
    T_b, U_b = torch.tensor([4, 3, 2]), torch.tensor([3, 2, 0])
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, targets, T_b, U_b, reduction="none"), (logits,))
    lp = logits.detach().log_softmax(-1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, targets, T_b, U_b, reduction="none", log_probs_input=True), (lp,))


def test_padding_gets_zero_gradient() -> None:
    logits, targets = _case(2, 5, 3, 4, seed=2)
    logits.requires_grad_(True)
    T_b, U_b = torch.tensor([5, 3]), torch.tensor([3, 1])
    rnnt_loss(logits, targets, T_b, U_b).backward()
    assert logits.grad[1, 3:].abs().max() == 0 and logits.grad[1, :, 2:].abs().max() == 0
    assert logits.grad[1, :3, :2].abs().max() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference_medium(dtype: torch.dtype) -> None:
    logits, targets = _case(3, 17, 6, 11, seed=3, dtype=dtype)
    T_b, U_b = torch.tensor([17, 12, 9]), torch.tensor([6, 4, 0])
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = rnnt_loss(a, targets, T_b, U_b, reduction="none")
    want = reference_rnnt_loss(b, targets, T_b, U_b)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    w = torch.randn(3, dtype=dtype)  # a non-uniform upstream gradient
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=tol, rtol=tol)


def test_zero_length_targets() -> None:
    logits, _ = _case(2, 5, 0, 3, seed=4)
    targets = torch.zeros(2, 0, dtype=torch.long)
    T_b, U_b = torch.tensor([5, 2]), torch.tensor([0, 0])
    got = rnnt_loss(logits, targets, T_b, U_b, reduction="none")
    lp = logits.log_softmax(-1)[..., 0, 0]  # only alignment: a blank at every frame
    torch.testing.assert_close(got, torch.stack([-lp[0].sum(), -lp[1, :2].sum()]))
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, targets, T_b, U_b), (logits,))


def test_non_default_blank_and_bad_input() -> None:
    logits, targets = _case(1, 3, 2, 4, seed=5)
    targets = torch.tensor([[0, 1]])  # with blank=3, label 0 is an ordinary symbol
    got = rnnt_loss(logits, targets, torch.tensor([3]), torch.tensor([2]), blank=3)
    want = brute_force_loss(logits[0], [0, 1], 3, blank=3)
    assert abs(got.item() - want.item()) <= 1e-5
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets, torch.tensor([4]), torch.tensor([2]))
    with pytest.raises(ValueError):
        rnnt_loss(logits, targets[:, :1], torch.tensor([3]), torch.tensor([1]))
