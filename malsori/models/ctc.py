"""CTC model: any encoder + a linear layer to token log-probabilities, trained with the CTC loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from malsori.decode.fusion import active
from malsori.decode.options import DecodeOptions
from malsori.decode.result import Hypothesis
from malsori.models.ctc_head import CTCHead
from malsori.models.registry import register_head
from malsori.tokenizer import SPECIAL_IDS, SpecialIds

DECODE_METHODS = ("greedy", "beam")


class CTCModel(nn.Module):
    """Encoder → CTCHead (Linear(output_dim, vocab_size) → log-softmax); `special_ids.blank` (the tokenizer's) is the
    CTC blank."""

    def __init__(self, encoder: nn.Module, vocab_size: int, special_ids: SpecialIds = SPECIAL_IDS) -> None:
        super().__init__()
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.special_ids = special_ids
        self.blank_id = special_ids.blank
        self.head = CTCHead(encoder.output_dim, vocab_size, special_ids.blank)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, T, F], lengths [B] → (log_probs [B, T', V] in float32, out_lengths [B])."""
        enc, enc_lengths = self.encoder(feats, lengths)
        return self.head.log_probs(enc), enc_lengths

    def compute_loss(
        self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """CTC loss summed over the batch and divided by the batch size; targets [B, U] are padded with 0.
        stats["utt"] holds each utterance's loss (the trainer reports it per data source).

        Utterances whose targets cannot fit their frames give zero loss (zero_infinity) instead of inf.
        """
        log_probs, out_lens = self(feats, feat_lens)
        losses = self.head.loss(log_probs, out_lens, targets, target_lens)
        loss = losses.sum() / feats.size(0)
        value = loss.item()
        return loss, {"loss": value, "ctc": value, "utt": losses.detach().cpu()}

    @torch.no_grad()
    def decode(self, feats: Tensor, feat_lens: Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """One hypothesis per utterance by `options.method` "greedy" or "beam" (prefix beam search, with the extra
        scorers and length bonus of `options`, its n-best re-ranked by `options.rescorers`; the best carries
        `options.nbest` alternatives when nbest > 1).

        Call `model.eval()` first: decoding does not change the module's mode.
        """
        self.check_options(options)
        enc, enc_lens = self.encoder(feats, feat_lens)
        log_probs = self.head.log_probs(enc)
        if options.method == "greedy":
            return self.head.greedy(log_probs, enc_lens)
        return self.head.beam_search(log_probs, enc_lens, options, enc)

    def check_options(self, options: DecodeOptions) -> None:
        """ConfigError for an unknown method or a setting this model's searches do not use."""
        unused = {"ctc_weight": "a CTC model has only CTC", "max_len": "CTC decides the length",
                  "max_len_ratio": "CTC decides the length",
                  "ilm_weight": "CTC has no internal LM to estimate (its outputs are conditionally independent)"}
        if options.method == "greedy":
            unused.update(scorers="greedy CTC takes no extra scorers (use beam)", rescorers="greedy CTC has no n-best (use beam)",
                          length_bonus="greedy CTC ranks nothing (use beam)")
        if not active(options.scorers):
            unused["prompt"] = "only the extra scorers would read it, and there are none"
        options.check("a CTC model", DECODE_METHODS, unused, self.vocab_size)


@register_head("ctc")
def build_ctc(cfg: None, encoder: nn.Module, vocab_size: int) -> CTCModel:
    """The CTC head has no settings of its own."""
    return CTCModel(encoder, vocab_size)
