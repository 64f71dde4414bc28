"""Prompt tuning (Lester et al., 2021): N trainable vectors in the embedding space, put before every input of a frozen
LM; initialized from the embeddings of randomly chosen vocabulary tokens, as the paper found best among simple inits."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SoftPrompt(nn.Module):
    """N vectors [N, D] given to the LM before each input."""

    def __init__(self, length: int, embedding: nn.Embedding, first_token: int = 3) -> None:
        super().__init__()
        ids = torch.randint(first_token, embedding.num_embeddings, (length,))  # real tokens, not the reserved ids
        self.vectors = nn.Parameter(embedding.weight.detach()[ids].clone())

    def __len__(self) -> int:
        return self.vectors.size(0)

    def forward(self, batch: int) -> Tensor:
        """The prompt for a batch: [B, N, D]."""
        return self.vectors[None].expand(batch, -1, -1)
