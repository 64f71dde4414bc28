"""The CTC head: a Linear from encodings to token log-probabilities, the CTC loss and the CTC searches, written
once for the CTC model and the CTC branch of attention and transducer models."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search
from malsori.decode.options import DecodeOptions
from malsori.decode.rescore import rescore_with_options
from malsori.decode.result import Hypothesis


class CTCHead(nn.Linear):
    """Linear(input_dim, vocab_size) whose log-softmax (float32) is a CTC distribution with `blank` (the tokenizer's).

    It is the Linear itself, so its tensors are `<name>.weight` and `<name>.bias` in the model that holds it.
    """

    def __init__(self, input_dim: int, vocab_size: int, blank: int) -> None:
        super().__init__(input_dim, vocab_size)
        self.blank = blank

    def log_probs(self, enc: Tensor) -> Tensor:
        """enc [B, T, D] → log-probs [B, T, V] in float32."""
        return self(enc).float().log_softmax(-1)

    def loss(self, log_probs: Tensor, lens: Tensor, targets: Tensor, target_lens: Tensor) -> Tensor:
        """Each utterance's CTC loss [B] (targets [B, U] padded); one whose targets cannot fit its frames gives 0
        (zero_infinity) instead of inf."""
        return F.ctc_loss(log_probs.transpose(0, 1), targets, lens, target_lens, blank=self.blank, reduction="none",
                          zero_infinity=True)

    def greedy(self, log_probs: Tensor, lens: Tensor) -> list[Hypothesis]:
        """The best path per utterance, repeats merged and blanks dropped."""
        return ctc_greedy(log_probs, lens, blank_id=self.blank)

    def beam_search(self, log_probs: Tensor, lens: Tensor, options: DecodeOptions, memory: Tensor) -> list[Hypothesis]:
        """Prefix beam search with the beam size, extra scorers, length bonus and prompt of `options`, its n-best
        re-ranked by `options.rescorers`; `memory` [B, T, D] (the encodings) is offered to scorers that read it."""
        hyps = ctc_prefix_beam_search(log_probs, lens, options.beam_size, nbest=options.search_nbest, blank_id=self.blank,
                                      scorers=options.scorers, length_bonus=options.length_bonus or 0.0,
                                      prompt=options.prompt, memory=memory, memory_lens=lens)
        return rescore_with_options(hyps, options)
