"""CTC model: any encoder + a linear layer to token log-probabilities, trained with the CTC loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from malsori.decode.result import Hypothesis
from malsori.errors import ConfigError

DECODE_METHODS = ("greedy", "beam")


class CTCModel(nn.Module):
    """Encoder → Linear(output_dim, vocab_size) → log-softmax; token `blank_id` is the CTC blank."""

    def __init__(self, encoder: nn.Module, vocab_size: int, blank_id: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.blank_id = blank_id
        self.head = nn.Linear(encoder.output_dim, vocab_size)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, T, F], lengths [B] → (log_probs [B, T', V] in float32, out_lengths [B])."""
        enc, enc_lengths = self.encoder(feats, lengths)
        return self.head(enc).float().log_softmax(dim=-1), enc_lengths

    def compute_loss(
        self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """CTC loss summed over the batch and divided by the batch size; targets [B, U] are padded with 0.
        stats["utt"] holds each utterance's loss (the trainer reports it per data source).

        Utterances whose targets cannot fit their frames give zero loss (zero_infinity) instead of inf.
        """
        log_probs, out_lens = self(feats, feat_lens)
        losses = F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            out_lens,
            target_lens,
            blank=self.blank_id,
            reduction="none",
            zero_infinity=True,
        )
        loss = losses.sum() / feats.size(0)
        value = loss.item()
        return loss, {"loss": value, "ctc": value, "utt": losses.detach().cpu()}

    @torch.no_grad()
    def decode(
        self, feats: Tensor, feat_lens: Tensor, method: str = "greedy", beam_size: int = 8, nbest: int = 1
    ) -> list[Hypothesis]:
        """One hypothesis per utterance by `method` "greedy" or "beam" (prefix beam search of `beam_size`).

        Call `model.eval()` first: decoding does not change the module's mode.
        """
        if method not in DECODE_METHODS:
            raise ConfigError(f"decode method: unknown '{method}' (known: {', '.join(DECODE_METHODS)})")
        log_probs, lengths = self(feats, feat_lens)
        if method == "greedy":
            return ctc_greedy(log_probs, lengths, blank_id=self.blank_id)
        return ctc_prefix_beam_search(log_probs, lengths, beam_size, nbest=nbest, blank_id=self.blank_id)
