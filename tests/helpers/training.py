"""Training pieces shared by the trainer tests (test_e2e, test_batching_checkpoint, test_rundir): the shipped demo
recipe shrunk to a tiny model, and a toy model with its optimizer for checkpoint round trips."""

from __future__ import annotations

import torch

from malsori.recipes import resolve_recipe

RECIPE = resolve_recipe("conformer_ctc_demo")
TINY = ["model.conformer.d_model=64", "model.conformer.num_layers=2", "model.conformer.num_heads=2",
        "batch.max_frames=6000", "progress=false", "data.max_valid_utts=40"]


def toy_model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """Two linear layers with dropout between them (so the RNG state matters), AdamW; seeded."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    o = torch.optim.AdamW(m.parameters(), lr=1e-2)
    return m, o


def toy_step(m: torch.nn.Module, o: torch.optim.Optimizer) -> float:
    """One optimizer step on a random batch; returns the loss."""
    loss = m(torch.randn(16, 4)).pow(2).mean()
    loss.backward()
    o.step()
    o.zero_grad()
    return float(loss.detach())


def overfit(loss_fn, params, steps: int = 150, lr: float = 1e-2) -> list[float]:
    """Adam on `params` for `steps` steps of `loss_fn()` (a scalar loss of a fixed batch); the losses, for the overfit tests."""
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
