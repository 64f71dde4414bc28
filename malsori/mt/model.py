"""Translators: a source-text encoder joined to the attention encoder–decoder of speech recognition
(`malsori.models.aed.AttentionModel`: its decoders, loss with label smoothing, greedy and beam searches).

Three families, each registered by name (`malsori.mt.registry`):
- "fixed": (Bi)LSTM encoder → ONE vector → LSTM decoder (Sutskever et al., 2014; Cho et al., 2014); the decoder sees
  only that summary (its initial state and an input at every step); `reverse_source` reads the source backwards.
- "attention": BiLSTM encoder → LSTM decoder with attention over every source position: Bahdanau et al.'s (2015)
  additive attention, or Luong et al.'s (2015) dot / general.
- "transformer": pre-LN Transformer encoder and decoder (Vaswani et al., 2017) with rotary positions; the source
  and target embeddings and the output projection are one matrix over the joint vocabulary.
The source is token ids [B, S] with lengths, so the encoders see what the speech encoders see: [B, T, D] + lengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.config import bounded
from malsori.errors import ConfigError
from malsori.models.aed import AttentionConfig, AttentionModel
from malsori.mt.registry import TRANSLATORS, register_translator
from malsori.nn.attention import check_heads
from malsori.nn.lstm import LSTMConfig, LSTMEncoder
from malsori.nn.mask import length_mask
from malsori.nn.transformer import TransformerBlock
from malsori.tagged import TaggedConfig
from malsori.tokenizer import SPECIAL_IDS


@dataclass
class RNNConfig:
    """Sizes of the LSTM families (fixed-vector and attention)."""

    embed_dim: int = bounded(256, ge=1)  # token embedding size (source and target)
    hidden_size: int = bounded(256, ge=1)  # encoder LSTM cells per direction
    num_layers: int = bounded(2, ge=1)  # encoder LSTM layers
    bidirectional: bool = True  # BiLSTM encoder (the fixed-vector summary is then [last forward; first backward])
    reverse_source: bool = False  # feed the source backwards (Sutskever et al., 2014: short paths for the first words)
    decoder_hidden: int = bounded(512, ge=1)  # decoder LSTM cells
    decoder_layers: int = bounded(1, ge=1)  # decoder LSTM layers
    attention: Literal["additive", "dot", "general"] = "additive"  # attention family: Bahdanau (additive) or Luong (dot, general)
    attention_dim: int = bounded(256, ge=1)  # hidden size of the additive attention
    dropout: float = bounded(0.2, ge=0, lt=1)  # dropout on embeddings, between layers and before the output


@dataclass
class TransformerMTConfig:
    """Sizes of the Transformer family."""

    d_model: int = bounded(256, ge=1)  # width of embeddings and blocks
    encoder_layers: int = bounded(3, ge=1)  # encoder self-attention blocks
    decoder_layers: int = bounded(3, ge=1)  # decoder blocks (self-attention, cross-attention, feed-forward)
    num_heads: int = bounded(4, ge=1)  # attention heads (d_model / num_heads must be even: rotary embeddings)
    ff_expansion: int = bounded(4, ge=1)  # feed-forward size = ff_expansion × d_model
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on embeddings and residual branches
    attention_dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on attention weights
    tie_output: bool = True  # the output projection is the (shared) embedding matrix

    def __post_init__(self) -> None:
        check_heads(self.d_model, self.num_heads)


@dataclass(init=False, eq=False)
class TranslatorConfig(TaggedConfig):
    """Which translator, its decoding defaults, and its sizes in the section its family reads (`rnn:` for fixed and
    attention, `transformer:`), as `cfg.rnn` / `cfg.transformer`."""

    TAGS: ClassVar = {"kind": TRANSLATORS}
    kind: str = "transformer"  # family, a name registered with register_translator: fixed | attention | transformer
    share_embeddings: bool = True  # source and target embeddings are one matrix (a joint vocabulary)
    label_smoothing: float = bounded(0.1, ge=0, lt=1)  # probability mass spread uniformly over the vocabulary in the loss
    max_len_ratio: float = bounded(2.0, gt=0)  # at most this many target tokens per source token when decoding
    normalize_length: bool = True  # beam search ranks finished translations by log-probability per token


class SharedEmbedding(nn.Module):
    """Another module's embedding used in a second place. It is looked up through its owner, not registered here, so a
    state dict (and model.safetensors) holds tied weights once."""

    def __init__(self, owner: nn.Embedding) -> None:
        super().__init__()
        self._owner = (owner,)  # a tuple: nn.Module does not register what it holds

    @property
    def weight(self) -> Tensor:
        return self._owner[0].weight

    def forward(self, ids: Tensor) -> Tensor:
        return self._owner[0](ids)


class TiedOutput(nn.Module):
    """Logits through an embedding matrix: x [.., D] → x Eᵀ + b [.., V]."""

    def __init__(self, owner: nn.Embedding) -> None:
        super().__init__()
        self._owner = (owner,)
        self.bias = nn.Parameter(torch.zeros(owner.num_embeddings))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self._owner[0].weight, self.bias)


def reverse_padded(tokens: Tensor, lens: Tensor) -> Tensor:
    """tokens [B, S] with each row's first lens[b] entries reversed (padding stays at the end)."""
    s = tokens.size(1)
    pos = torch.arange(s, device=tokens.device)[None, :]
    idx = torch.where(pos < lens[:, None], lens[:, None] - 1 - pos, pos)
    return tokens.gather(1, idx)


class RNNTextEncoder(nn.Module):
    """Source tokens [B, S] + lengths → (Bi)LSTM states [B, S, D] + lengths (`malsori.nn.lstm.LSTMEncoder` with no
    time reduction, reading embeddings instead of features)."""

    def __init__(self, cfg: RNNConfig, vocab_size: int) -> None:
        super().__init__()
        self.reverse = cfg.reverse_source
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = LSTMEncoder(LSTMConfig(input_dim=cfg.embed_dim, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                                           bidirectional=cfg.bidirectional, dropout=cfg.dropout, reduction="none",
                                           reduction_factor=1))
        self.output_dim, self.bidirectional_output = self.lstm.output_dim, self.lstm.bidirectional_output

    def forward(self, tokens: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        if self.reverse:
            tokens = reverse_padded(tokens, lens)
        return self.lstm(self.dropout(self.embed(tokens)), lens)


class TransformerTextEncoder(nn.Module):
    """Source tokens [B, S] + lengths → scaled embeddings → pre-LN self-attention blocks (rotary positions) →
    LayerNorm → [B, S, D] (padding positions zero) + lengths."""

    def __init__(self, cfg: TransformerMTConfig, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, 0.0, cfg.d_model**-0.5)  # unit-variance inputs after the √d scale
        self.scale = math.sqrt(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.d_model, cfg.num_heads, cfg.ff_expansion, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.encoder_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
        self.output_dim = cfg.d_model

    def forward(self, tokens: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        mask = length_mask(lens, tokens.size(1))
        x = self.dropout(self.embed(tokens) * self.scale)
        for layer in self.layers:
            x, _ = layer(x, mask)
        return self.norm(x).masked_fill(~mask[..., None], 0.0), lens


class Translator(AttentionModel):
    """Source encoder + attention decoder; `compute_loss(src, src_lens, tgt, tgt_lens)` and
    `decode(src, src_lens, DecodeOptions)` (greedy, beam with length normalization, n-best) come from
    AttentionModel. The target side reads `[sos] + y` and predicts `y + [eos]`."""

    def __init__(self, encoder: nn.Module, vocab_size: int, cfg: TranslatorConfig, attention: AttentionConfig) -> None:
        super().__init__(encoder, vocab_size, attention, SPECIAL_IDS)
        self.mt_cfg = cfg
        if cfg.share_embeddings:
            if self.decoder.embed.embedding_dim != encoder.embed.embedding_dim:
                raise ConfigError("model.share_embeddings: needs source and target embeddings of one size")
            self.decoder.embed = SharedEmbedding(encoder.embed)

    def attention_weights(self, src: Tensor, src_lens: Tensor, ys_in: Tensor, ys_lens: Tensor) -> Tensor:
        """Teacher-forced cross-attention [B, L, S] of each target position over the source (the last block's, averaged
        over heads, for the Transformer), in source order even when the source is read backwards."""
        enc, lens = self.encoder(src, src_lens)
        dec = self.decoder
        if hasattr(dec, "alignments"):
            weights = dec.alignments(enc, lens, ys_in, ys_lens)[1][:, -1]
        elif self.cfg.decoder == "las":
            state, rows = dec.init_state(enc, lens), []
            for i in range(ys_in.size(1)):
                _, state = dec.step(ys_in[:, : i + 1], state, enc, lens)
                rows.append(state["attn"])
            weights = torch.stack(rows, 1)
        else:
            raise ConfigError(f"a {self.mt_cfg.kind} translator has no attention to show")
        if getattr(self.encoder, "reverse", False):
            order = reverse_padded(torch.arange(src.size(1), device=src.device).expand_as(src), src_lens)
            weights = weights.gather(2, order[:, None].expand_as(weights))
        return weights


def _attention_config(cfg: TranslatorConfig, **decoder) -> AttentionConfig:
    return AttentionConfig(ctc_weight=0.0, decode_ctc_weight=0.0, label_smoothing=cfg.label_smoothing,
                           max_len_ratio=cfg.max_len_ratio, normalize_length=cfg.normalize_length, **decoder)


def _rnn_decoder(r: RNNConfig) -> dict:
    return dict(embed_dim=r.embed_dim, hidden_size=r.decoder_hidden, num_layers=r.decoder_layers, dropout=r.dropout)


@register_translator("fixed", RNNConfig, section="rnn")
def build_fixed(cfg: TranslatorConfig, vocab_size: int) -> Translator:
    """The fixed-vector encoder–decoder: the summary is the BiLSTM's [last forward; first backward] states, or the
    LSTM's last state."""
    r = cfg.rnn
    attention = _attention_config(cfg, decoder="fixed", summary="bilstm" if r.bidirectional else "last", **_rnn_decoder(r))
    return Translator(RNNTextEncoder(r, vocab_size), vocab_size, cfg, attention)


@register_translator("attention", RNNConfig, section="rnn")
def build_attention(cfg: TranslatorConfig, vocab_size: int) -> Translator:
    """The attention LSTM: LAS's decoder (input feeding) with additive or multiplicative attention."""
    r = cfg.rnn
    attention = _attention_config(cfg, decoder="las", las_attention=r.attention, attention_dim=r.attention_dim, **_rnn_decoder(r))
    return Translator(RNNTextEncoder(r, vocab_size), vocab_size, cfg, attention)


@register_translator("transformer", TransformerMTConfig)
def build_transformer(cfg: TranslatorConfig, vocab_size: int) -> Translator:
    """The Transformer: shared embeddings and, with `tie_output`, the output projection tied to them."""
    t = cfg.transformer
    attention = _attention_config(cfg, decoder="transformer", d_model=t.d_model, num_layers=t.decoder_layers,
                                  num_heads=t.num_heads, ff_expansion=t.ff_expansion, dropout=t.dropout,
                                  attention_dropout=t.attention_dropout)
    model = Translator(TransformerTextEncoder(t, vocab_size), vocab_size, cfg, attention)
    if t.tie_output:
        if not cfg.share_embeddings:
            raise ConfigError("model.transformer.tie_output: needs share_embeddings (one matrix for both sides and the output)")
        model.decoder.output = TiedOutput(model.encoder.embed)
    return model


def build_translator(cfg: TranslatorConfig, vocab_size: int) -> nn.Module:
    """The translator `cfg.kind` names, over a (joint) vocabulary of `vocab_size` tokens."""
    return cfg.family("kind").build(cfg, vocab_size)
