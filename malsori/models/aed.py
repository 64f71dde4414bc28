"""Attention encoder–decoder: any encoder + an attention decoder, optionally trained jointly with CTC.

Targets are framed by the tokenizer's sos / eos (one id): the decoder reads [sos] + y and predicts y + [eos].
Joint CTC/attention (Kim et al., 2017): loss = w · CTC + (1 − w) · attention cross-entropy; the CTC head makes
alignments monotonic and gives the search a second opinion (joint decoding, attention rescoring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.decode.beam import BeamSearch
from malsori.decode.ctc import ctc_prefix_beam_search
from malsori.decode.fusion import RowFusion, active
from malsori.decode.ilm import DecoderILMScorer, with_ilm
from malsori.decode.options import DecodeOptions
from malsori.decode.rescore import attention_rescore, rescore_with_options
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import CTCPrefixScorer, DecoderScorer, Scorer
from malsori.config import bounded
from malsori.errors import ConfigError
from malsori.models.ctc_head import CTCHead
from malsori.models.registry import register_head
from malsori.nn.attention import check_heads
from malsori.nn.decoders import Attention, FixedVectorDecoder, LASDecoder
from malsori.nn.mask import length_mask
from malsori.nn.transformer import MochaSettings, TransformerDecoder
from malsori.tokenizer import SPECIAL_IDS, SpecialIds

DECODE_METHODS = ("greedy", "beam", "ctc_greedy", "ctc_beam", "rescore")


@dataclass
class AttentionConfig:
    """The attention decoder, the joint CTC weight and decoding defaults of an attention encoder–decoder."""

    decoder: Literal["fixed", "las", "transformer"] = "transformer"  # fixed-vector LSTM, LAS, or Transformer decoder
    num_layers: int = bounded(2, ge=1)  # decoder layers: LSTM layers (fixed, las) or Transformer blocks
    embed_dim: int = bounded(128, ge=1)  # token embedding size of the LSTM decoders
    hidden_size: int = bounded(320, ge=1)  # LSTM cells of the fixed-vector and LAS decoders
    summary: Literal["auto", "bilstm", "last", "mean"] = "auto"  # fixed: input summary; auto = bilstm for BiLSTMs, else mean
    attention_dim: int = bounded(128, ge=1)  # LAS (and Transformer MoChA): size of the attention's hidden layer
    location_filters: int = bounded(16, ge=1)  # LAS: channels of the conv over the previous attention weights
    location_kernel: int = bounded(31, ge=1, odd=True)  # LAS: width of that conv in encoder frames (odd)
    las_attention: Attention = "location"  # LAS: location-aware (offline), MoChA (streamable); additive (Bahdanau), dot or general (Luong), for translation
    transformer_cross: Literal["full", "mocha"] = "full"  # Transformer: full multi-head cross-attention or one MoChA head per block
    mocha_chunk: int = bounded(4, ge=1)  # MoChA: chunk width w, the encoder frames softly attended up to the monotonic halt
    mocha_noise: float = bounded(1.0, ge=0)  # MoChA: std of the Gaussian noise on the monotonic energies in training (0 = none)
    mocha_init_bias: float = bounded(-4.0)  # MoChA: initial energy offset r; −4 suits long inputs, nearer 0 for very short ones
    d_model: int = bounded(256, ge=1)  # Transformer decoder width
    num_heads: int = bounded(4, ge=1)  # Transformer decoder heads (d_model / num_heads must be even)
    ff_expansion: int = bounded(4, ge=1)  # Transformer decoder feed-forward size = ff_expansion × d_model
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout in the decoder
    attention_dropout: float = bounded(0.1, ge=0, lt=1)  # Transformer decoder: dropout on attention weights
    label_smoothing: float = bounded(0.1, ge=0, lt=1)  # probability mass spread uniformly over the vocabulary in the attention loss
    ctc_weight: float = bounded(0.3, ge=0, le=1)  # joint training: weight of the CTC loss in [0, 1]; 0 = no CTC head at all
    decode_ctc_weight: float = bounded(0.3, ge=0, le=1)  # default CTC weight in joint decoding and attention rescoring
    length_bonus: float = bounded(0.0)  # default beam-search reward per emitted token (counters the bias to short outputs)
    max_len_ratio: float = bounded(1.0, gt=0)  # at most this many tokens per encoder frame (greedy and beam search)
    normalize_length: bool = False  # beam search ranks finished hypotheses by score per token (translation) instead of the raw sum

    def __post_init__(self) -> None:
        if self.decoder == "transformer":
            check_heads(self.d_model, self.num_heads)


def build_decoder(cfg: AttentionConfig, encoder: nn.Module, vocab_size: int) -> nn.Module:
    """The decoder `cfg.decoder` names, reading memory of `encoder.output_dim` channels."""
    d = encoder.output_dim
    if cfg.decoder == "fixed":
        summary = cfg.summary
        if summary == "auto":
            summary = "bilstm" if getattr(encoder, "bidirectional_output", False) else "mean"
        return FixedVectorDecoder(vocab_size, d, cfg.embed_dim, cfg.hidden_size, cfg.num_layers, cfg.dropout, summary)
    if cfg.decoder == "las":
        return LASDecoder(vocab_size, d, cfg.embed_dim, cfg.hidden_size, cfg.num_layers, cfg.attention_dim,
                          cfg.location_filters, cfg.location_kernel, cfg.dropout, cfg.las_attention, cfg.mocha_chunk,
                          cfg.mocha_noise, cfg.mocha_init_bias)
    if cfg.decoder == "transformer":
        mocha = MochaSettings(cfg.attention_dim, cfg.mocha_chunk, cfg.mocha_init_bias, cfg.mocha_noise)
        return TransformerDecoder(vocab_size, d, cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.ff_expansion,
                                  cfg.dropout, cfg.attention_dropout, cfg.transformer_cross, mocha)
    raise ConfigError(f"model.attention.decoder: unknown decoder '{cfg.decoder}' (known: fixed, las, transformer)")


def decoder_io(targets: Tensor, target_lens: Tensor, ids: SpecialIds = SPECIAL_IDS) -> tuple[Tensor, Tensor, Tensor]:
    """targets [B, U] (padded) → (ys_in [B, U+1] = sos + y, ys_out [B, U+1] = y + eos with -100 on padding, lengths)."""
    b, u = targets.shape
    real = length_mask(target_lens, u)
    y = targets.masked_fill(~real, ids.blank)
    ys_in = torch.cat((y.new_full((b, 1), ids.sos), y), dim=1)
    ys_out = torch.cat((y, y.new_full((b, 1), ids.blank)), dim=1).scatter(1, target_lens[:, None].long(), ids.eos)
    lens = target_lens + 1
    return ys_in, ys_out.masked_fill(~length_mask(lens, u + 1), -100), lens


class AttentionModel(nn.Module):
    """Encoder → attention decoder (+ a CTC linear head when `ctc_weight` > 0); `special_ids`: the tokenizer's."""

    def __init__(self, encoder: nn.Module, vocab_size: int, cfg: AttentionConfig, special_ids: SpecialIds = SPECIAL_IDS) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.special_ids = special_ids
        self.encoder = encoder
        self.decoder = build_decoder(cfg, encoder, vocab_size)
        self.ctc = CTCHead(encoder.output_dim, vocab_size, special_ids.blank) if cfg.ctc_weight > 0 else None

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        """enc [B, T, D] → CTC log-probs [B, T, V] (float32)."""
        if self.ctc is None:
            raise ConfigError("this model has no CTC head (trained with model.attention.ctc_weight = 0)")
        return self.ctc.log_probs(enc)

    def compute_loss(self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Joint loss, summed over the batch / batch size; stats: loss, att (smoothed CE), ctc, acc (next-token accuracy)."""
        enc, enc_lens = self.encoder(feats, feat_lens)
        ys_in, ys_out, lens = decoder_io(targets, target_lens, self.special_ids)
        logits = self.decoder(enc, enc_lens, ys_in, lens).float()
        att = F.cross_entropy(logits.flatten(0, 1), ys_out.flatten(), ignore_index=-100,
                              label_smoothing=self.cfg.label_smoothing, reduction="sum") / feats.size(0)
        real = ys_out != -100
        acc = (logits.argmax(-1) == ys_out)[real].float().mean()
        loss, ctc = att, att.new_zeros(())
        if self.ctc is not None:
            ctc = self.ctc.loss(self.ctc.log_probs(enc), enc_lens, targets, target_lens).sum() / feats.size(0)
            loss = self.cfg.ctc_weight * ctc + (1.0 - self.cfg.ctc_weight) * att
        return loss, {"loss": loss.item(), "att": att.item(), "ctc": ctc.item(), "acc": acc.item()}

    @torch.no_grad()
    def decode(self, feats: Tensor, feat_lens: Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """One Hypothesis per utterance (best first in `.nbest` for the beam methods).

        greedy: attention argmax until eos; beam: batched beam search with the decoder scorer and, with a CTC head,
        the CTC prefix scorer weighted `ctc_weight` (joint decoding); ctc_greedy / ctc_beam: the CTC head alone;
        rescore: CTC prefix beam search n-best re-ranked by the decoder. Extra scorers join greedy, beam and ctc_beam;
        `options.rescorers` re-rank the n-best of beam, ctc_beam and rescore (after the decoder).
        Call `model.eval()` first.
        """
        self.check_options(options)
        options = with_ilm(options, self.internal_lm)
        ids, method = self.special_ids, options.method
        w = self.cfg.decode_ctc_weight if options.ctc_weight is None else options.ctc_weight
        w = 0.0 if self.ctc is None and method in ("greedy", "beam") else w
        enc, lens = self.encoder(feats, feat_lens)
        if method == "greedy":
            return self.greedy(enc, lens, options)
        if method == "beam":
            scorers: dict[str, Scorer] = {"att": DecoderScorer(self.decoder, ids.sos)}
            weights = {"att": 1.0 - w}
            if w > 0:
                scorers["ctc"], weights["ctc"] = CTCPrefixScorer(self.ctc_log_probs(enc), lens, ids.blank, ids.eos), w
            for extra in options.scorers:
                scorers[extra.name], weights[extra.name] = extra.scorer, extra.weight
            bonus = self.cfg.length_bonus if options.length_bonus is None else options.length_bonus
            ratio = self.cfg.max_len_ratio if options.max_len_ratio is None else options.max_len_ratio
            search = BeamSearch(scorers, weights, beam_size=options.beam_size, ids=ids, max_len=options.max_len,
                                max_len_ratio=ratio, length_bonus=bonus, nbest=options.search_nbest, prompt=options.prompt,
                                normalize_length=self.cfg.normalize_length)
            return rescore_with_options(search(enc, lens), options)
        log_probs = self.ctc_log_probs(enc)
        if method == "ctc_greedy":
            return self.ctc.greedy(log_probs, lens)
        if method == "ctc_beam":
            return self.ctc.beam_search(log_probs, lens, options, enc)
        first = ctc_prefix_beam_search(log_probs, lens, options.beam_size, nbest=options.beam_size, blank_id=ids.blank)
        rescored = attention_rescore(self.decoder, enc, lens, [h.nbest or [h] for h in first], w, ids)
        for hyp in rescored:
            hyp.nbest = hyp.nbest[: options.search_nbest]
        return rescore_with_options(rescored, options)

    def internal_lm(self) -> DecoderILMScorer:
        """The internal LM estimate for ILME: the decoder over an all-zero memory."""
        return DecoderILMScorer(self.decoder, self.encoder.output_dim, self.special_ids.sos)

    def check_options(self, options: DecodeOptions) -> None:
        """ConfigError for a method this model lacks or a setting its method does not use."""
        method, mocha = options.method, "mocha" in (getattr(self.decoder, "kind", None), getattr(self.decoder, "cross", None))
        unused: dict[str, str] = {}
        if method in ("ctc_greedy", "ctc_beam", "rescore"):
            if self.ctc is None:
                raise ConfigError(f"decode method {method}: this model has no CTC head (trained with model.attention.ctc_weight = 0)")
            unused.update(max_len="CTC decides the length", max_len_ratio="CTC decides the length")
        if method in ("ctc_greedy", "rescore"):
            unused.update(scorers="extra scorers join greedy, beam and ctc_beam", prompt="no label-side model reads it",
                          length_bonus="no search here ranks hypotheses of different lengths by it")
        if method in ("greedy", "ctc_greedy"):
            unused["rescorers"] = "a greedy search has no n-best"
        if method in ("ctc_greedy", "ctc_beam", "rescore"):
            unused["ilm_weight"] = "the internal LM estimate is the decoder's, which scores only in greedy and beam"
        if method in ("greedy", "beam") and self.ctc is None:
            unused["ctc_weight"] = "this model has no CTC head"
        if method in ("greedy", "ctc_greedy", "ctc_beam"):
            unused["ctc_weight"] = "only beam and rescore combine CTC with the decoder"
        if method == "ctc_beam" and not active(options.scorers):
            unused["prompt"] = "only the extra scorers would read it, and there are none"
        if mocha or isinstance(self.decoder, FixedVectorDecoder):
            unused["prompt"] = "this decoder would attend to the audio while reading it" if mocha else "the fixed-vector decoder takes no prompt"
        options.check("an attention model", DECODE_METHODS, unused, self.vocab_size)

    def greedy(self, enc: Tensor, lens: Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """Attention greedy search over a batch: the argmax token each step, until eos or the length limit
        (options.max_len, else max_len_ratio × frames). With extra scorers or a length bonus the argmax is over
        decoder log-prob + Σ w · scorer + bonus (not for eos), and `scores` hold "att" and each scorer's part.

        Token frames are the decoder's "frame" (LAS: argmax of the weights; MoChA, LAS or Transformer: the (last
        block's) halt) or the argmax of its attention weights (Transformer), else the last frame.
        """
        ids, n = self.special_ids, enc.size(0)
        ratio = self.cfg.max_len_ratio if options.max_len_ratio is None else options.max_len_ratio
        if options.max_len is not None:
            max_lens = torch.full_like(lens, options.max_len).long()
        else:
            max_lens = (lens.float() * ratio).long().clamp(min=1)
        bonus = options.length_bonus or 0.0
        fusion = RowFusion(options.scorers, n, options.prompt, enc, lens) if active(options.scorers) else None
        state = self.decoder.init_state(enc, lens)
        ys = torch.full((n, 1), ids.sos, dtype=torch.long, device=enc.device)
        for token in options.prompt:  # read, not scored, not output
            _, state = self.decoder.step(ys, state, enc, lens)
            ys = torch.cat((ys, ys.new_full((n, 1), token)), 1)
        start = ys.size(1)
        scores = enc.new_zeros(n, dtype=torch.float32)
        att = enc.new_zeros(n, dtype=torch.float32)  # the decoder's own part (with extra scorers or a bonus)
        parts = enc.new_zeros(n, len(fusion.scorers) if fusion is not None else 0)
        frames, done = [], torch.zeros(n, dtype=torch.bool, device=enc.device)
        vocab = torch.arange(self.vocab_size, device=enc.device)
        for i in range(int(max_lens.max()) + 1):
            log_probs, state = self.decoder.step(ys, state, enc, lens)
            banned = (vocab == ids.blank) | ((i >= max_lens)[:, None] & (vocab != ids.eos))  # at the length limit: eos only
            gains = log_probs
            if fusion is not None:
                weighted, extra = fusion.next()
                gains = gains + weighted
            if bonus:
                gains = gains + bonus * (vocab != ids.eos)
            best, token = gains.masked_fill(banned, float("-inf")).max(-1)
            scores += best.masked_fill(done, 0.0)
            att += log_probs.gather(1, token[:, None])[:, 0].masked_fill(done, 0.0)
            if fusion is not None:
                parts += extra.gather(2, token[:, None, None].expand(-1, extra.size(1), 1))[..., 0].masked_fill(done[:, None], 0.0)
                fusion.extend(token)
            token = token.masked_fill(done, ids.eos)
            ys = torch.cat((ys, token[:, None]), 1)
            frame = state.get("frame") if isinstance(state, dict) else None
            attn = state.get("attn") if isinstance(state, dict) else None
            if frame is None:
                frame = attn.argmax(-1) if attn is not None else (lens - 1).clamp(min=0)
            frames.append(frame)
            done |= token == ids.eos
            if bool(done.all()):
                break
        hyps = []
        frames_t = torch.stack(frames, 1).tolist()
        for b, row in enumerate(ys[:, start:].tolist()):
            k = row.index(ids.eos) if ids.eos in row else len(row)
            hyp = Hypothesis(tokens=row[:k], score=float(scores[b]), token_frames=frames_t[b][:k])
            if fusion is not None or bonus:
                hyp.scores = {"att": float(att[b]), **(dict(zip(fusion.names, parts[b].tolist())) if fusion else {})}
            hyps.append(hyp)
        return hyps


@register_head("attention", AttentionConfig)
def build_attention(cfg: AttentionConfig, encoder: nn.Module, vocab_size: int) -> AttentionModel:
    return AttentionModel(encoder, vocab_size, cfg)
