"""Neural network building blocks: subsampling front-ends, attention, encoder blocks, masks."""

from malsori.nn.attention import MultiHeadSelfAttention, RotaryEmbedding, apply_rotary
from malsori.nn.conformer import ConformerBlock, ConformerConfig, ConformerEncoder
from malsori.nn.mask import length_mask
from malsori.nn.subsampling import Conv2dSubsampling

__all__ = [
    "Conv2dSubsampling",
    "ConformerBlock",
    "ConformerConfig",
    "ConformerEncoder",
    "MultiHeadSelfAttention",
    "RotaryEmbedding",
    "apply_rotary",
    "length_mask",
]
