"""The position-wise feed-forward branch shared by the Transformer, Conformer and GPT blocks."""

from __future__ import annotations

from typing import Literal

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU}


class FeedForward(nn.Sequential):
    """LayerNorm → Linear(D, e·D) → activation → Dropout → Linear(e·D, D): a pre-LN branch; the block adds it
    to the residual stream (and applies its own dropout to it).

    `hidden_dropout` 0 puts an Identity on the wide hidden layer: on CPU a random mask there alone costs ~15% of a
    Conformer training step. Tensor names are `0` (norm), `1` and `4` (the two Linears) in every block.
    """

    def __init__(self, d_model: int, expansion: int, hidden_dropout: float = 0.0,
                 activation: Literal["relu", "swish"] = "relu") -> None:
        super().__init__(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, expansion * d_model),
            ACTIVATIONS[activation](),
            nn.Dropout(hidden_dropout) if hidden_dropout > 0 else nn.Identity(),
            nn.Linear(expansion * d_model, d_model),
        )
