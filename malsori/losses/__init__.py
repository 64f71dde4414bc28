"""Training losses written in plain PyTorch (no compiled extensions)."""

from malsori.losses.rnnt import rnnt_loss

__all__ = ["rnnt_loss"]
