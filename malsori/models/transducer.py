"""Transducer head (RNN-T; Conformer-Transducer with a Conformer encoder): prediction network + joiner on any encoder.

The prediction network reads the labels emitted so far (starting from blank) and the joiner combines one encoder frame
with one prediction-network output into next-symbol logits: P(k | t, y_1..y_u) for every (t, u) of the lattice.
Training sums over all alignments with `rnnt_loss`; decoding walks the lattice (malsori.decode.transducer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.decode.ilm import TransducerILMScorer, with_ilm
from malsori.decode.options import DecodeOptions
from malsori.decode.rescore import rescore_with_options
from malsori.decode.result import Hypothesis
from malsori.decode.transducer import modified_beam_search, transducer_beam_search, transducer_greedy
from malsori.config import bounded
from malsori.errors import ConfigError
from malsori.losses import rnnt_loss
from malsori.models.ctc_head import CTCHead
from malsori.models.registry import register_head
from malsori.tokenizer import SPECIAL_IDS, SpecialIds

DECODE_METHODS = ("greedy", "beam", "modified_beam")

PredictorState = tuple[Tensor, ...]  # every tensor's first dimension is the hypothesis / batch row


@dataclass
class PredictorConfig:
    """The prediction network (the transducer's label-side "language model")."""

    kind: Literal["lstm", "stateless"] = "lstm"  # LSTM over all past labels, or a conv over the last `context` labels
    embed_dim: int = bounded(256, ge=1)  # label embedding size (also the output size of the stateless network)
    hidden_size: int = bounded(320, ge=1)  # LSTM cells (lstm only)
    context: int = bounded(2, ge=1)  # labels of left context seen by the stateless network (1 = bigram-like, 2 = trigram-like)
    dropout: float = bounded(0.1, ge=0, lt=1)  # dropout on embeddings and on the output


@dataclass
class TransducerConfig:
    """Transducer head: prediction network, joiner, optional auxiliary CTC loss, search limits."""

    predictor: PredictorConfig = field(default_factory=PredictorConfig)  # label-side network
    joiner_dim: int = bounded(320, ge=1)  # width of the joiner's tanh layer
    ctc_weight: float = bounded(0.0, ge=0, le=1)  # loss = (1 - w)·RNN-T + w·CTC on the encoder output (0 = no CTC layer at all)
    max_symbols_per_frame: int = bounded(3, ge=1)  # search: labels one encoder frame may emit before moving on


class LSTMPredictor(nn.Module):
    """Embedding + 1-layer LSTM over all past labels; state = (h, c), each [B, hidden]."""

    def __init__(self, vocab_size: int, cfg: PredictorConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_dim = cfg.hidden_size

    def forward(self, ys: Tensor) -> Tensor:
        """ys [B, U+1] (blank first) → [B, U+1, D]; position u has seen ys[:, :u+1]."""
        with torch.autocast(ys.device.type, enabled=False):  # CPU LSTM kernels reject bfloat16 autocast; it is small
            out, _ = self.lstm(self.dropout(self.embed(ys)).float())
        return self.dropout(out)

    def init_state(self, batch: int) -> PredictorState:
        w = self.embed.weight
        return (w.new_zeros(batch, self.output_dim), w.new_zeros(batch, self.output_dim))

    def step(self, tokens: Tensor, state: PredictorState) -> tuple[Tensor, PredictorState]:
        """One label per row: tokens [B] → (output [B, D], new state)."""
        h, c = state
        with torch.autocast(tokens.device.type, enabled=False):
            x = self.dropout(self.embed(tokens))[:, None].float()
            out, (h, c) = self.lstm(x, (h[None].float().contiguous(), c[None].float().contiguous()))
        return self.dropout(out[:, 0]), (h[0], c[0])


class StatelessPredictor(nn.Module):
    """Embedding of the last `context` labels + causal depthwise conv + ReLU (Ghodsi et al., 2020): no recurrence, so
    its state is just the last labels ([B, context], `blank` before the start)."""

    def __init__(self, vocab_size: int, cfg: PredictorConfig, blank: int = SPECIAL_IDS.blank) -> None:
        super().__init__()
        if cfg.context < 1:
            raise ValueError(f"stateless predictor needs context >= 1, got {cfg.context}")
        self.context, self.blank = cfg.context, blank
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.conv = nn.Conv1d(cfg.embed_dim, cfg.embed_dim, cfg.context, groups=cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output_dim = cfg.embed_dim

    def forward(self, ys: Tensor) -> Tensor:
        """ys [B, U+1] (blank first) → [B, U+1, D]; position u has seen ys[:, u-context+1 : u+1]."""
        ys = F.pad(ys, (self.context - 1, 0), value=self.blank)
        x = self.dropout(self.embed(ys)).transpose(1, 2)
        return self.dropout(F.relu(self.conv(x).transpose(1, 2)))

    def init_state(self, batch: int) -> PredictorState:
        return (torch.full((batch, self.context), self.blank, dtype=torch.long, device=self.embed.weight.device),)

    def step(self, tokens: Tensor, state: PredictorState) -> tuple[Tensor, PredictorState]:
        """tokens [B] → (output [B, D], new state = the last `context` labels)."""
        history = torch.cat([state[0][:, 1:], tokens[:, None]], dim=1)
        x = self.dropout(self.embed(history)).transpose(1, 2)
        return self.dropout(F.relu(self.conv(x)[:, :, -1])), (history,)


class Joiner(nn.Module):
    """logits = W_out · tanh(W_enc · enc + W_pred · pred). Inputs are projected once (`enc_proj`, `pred_proj`) and
    combined per (t, u) by `forward`, which broadcasts."""

    def __init__(self, enc_dim: int, pred_dim: int, joiner_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(enc_dim, joiner_dim)
        self.pred_proj = nn.Linear(pred_dim, joiner_dim)
        self.out = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc_p: Tensor, pred_p: Tensor) -> Tensor:
        return self.out(torch.tanh(enc_p + pred_p))


class TransducerModel(nn.Module):
    """encoder → (joiner ⊗ prediction network) → RNN-T loss; `decode` runs greedy / beam / modified-beam search.
    `special_ids.blank` (the tokenizer's) is the blank and the prediction network's start symbol."""

    def __init__(self, encoder: nn.Module, vocab_size: int, cfg: TransducerConfig | None = None,
                 special_ids: SpecialIds = SPECIAL_IDS) -> None:
        super().__init__()
        self.cfg = cfg = cfg or TransducerConfig()
        self.encoder = encoder
        self.vocab_size = vocab_size
        self.special_ids = special_ids
        if cfg.predictor.kind == "lstm":
            self.predictor: nn.Module = LSTMPredictor(vocab_size, cfg.predictor)
        elif cfg.predictor.kind == "stateless":
            self.predictor = StatelessPredictor(vocab_size, cfg.predictor, special_ids.blank)
        else:
            raise ConfigError(f"model.transducer.predictor.kind: unknown '{cfg.predictor.kind}' (known: lstm, stateless)")
        self.joiner = Joiner(encoder.output_dim, self.predictor.output_dim, cfg.joiner_dim, vocab_size)
        self.ctc = CTCHead(encoder.output_dim, vocab_size, special_ids.blank) if cfg.ctc_weight > 0 else None

    def joint_logits(self, enc: Tensor, targets: Tensor) -> Tensor:
        """enc [B, T, D], targets [B, U] → logits [B, T, U+1, V] for every lattice node."""
        ys = F.pad(targets, (1, 0), value=self.special_ids.blank)  # blank is the start symbol
        pred = self.predictor(ys)
        return self.joiner(self.joiner.enc_proj(enc)[:, :, None], self.joiner.pred_proj(pred)[:, None])

    def compute_loss(self, feats: Tensor, feat_lens: Tensor, targets: Tensor, target_lens: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Summed RNN-T loss (plus weighted CTC) over the batch / batch size, and per-part stats."""
        enc, enc_lens = self.encoder(feats, feat_lens)
        B = feats.size(0)
        enc = enc[:, : int(enc_lens.max())]
        targets = targets[:, : int(target_lens.max())]
        logits = self.joint_logits(enc, targets)
        # an utterance with no encoder frame (too short for the subsampling) has no alignment: it contributes 0
        losses = rnnt_loss(logits, targets, enc_lens.clamp(min=1), target_lens, blank=self.special_ids.blank, reduction="none")
        rnnt = torch.where(enc_lens > 0, losses, 0.0).sum() / B
        stats = {"rnnt": rnnt.item(), "utt": torch.where(enc_lens > 0, losses, 0.0).detach().cpu()}
        loss = rnnt
        if self.ctc is not None:
            ctc = self.ctc.loss(self.ctc.log_probs(enc), enc_lens, targets, target_lens).sum() / B
            w = self.cfg.ctc_weight
            loss = (1 - w) * rnnt + w * ctc
            stats["ctc"] = ctc.item()
        stats["loss"] = loss.item()
        return loss, stats

    @torch.no_grad()
    def decode(self, feats: Tensor, feat_lens: Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """Best hypothesis per utterance; method: greedy, beam (Graves-style), modified_beam (≤ 1 label per frame).
        The beam methods add the extra scorers and length bonus of `options` per label and keep `options.nbest`
        hypotheses in `.nbest`, re-ranked by `options.rescorers`; every method feeds `options.prompt` to the prediction network first."""
        self.check_options(options)
        options = with_ilm(options, self.internal_lm)
        enc, enc_lens = self.encoder(feats, feat_lens)
        m, method, prompt = self.cfg.max_symbols_per_frame, options.method, options.prompt
        if method == "greedy":
            return transducer_greedy(self, enc, enc_lens, max_symbols_per_frame=m, prompt=prompt)
        fusion = dict(scorers=options.scorers, length_bonus=options.length_bonus or 0.0, prompt=prompt)
        if method == "beam":
            hyps = transducer_beam_search(self, enc, enc_lens, options.beam_size, max_symbols_per_frame=m, **fusion)
        else:
            hyps = modified_beam_search(self, enc, enc_lens, options.beam_size, **fusion)
        for hyp in hyps:
            hyp.nbest = hyp.nbest[: options.search_nbest]
        return rescore_with_options(hyps, options)

    def internal_lm(self) -> TransducerILMScorer:
        """The internal LM estimate for ILME: the prediction network and joiner with the encoder's part zeroed."""
        return TransducerILMScorer(self.predictor, self.joiner, self.special_ids.blank)

    def check_options(self, options: DecodeOptions) -> None:
        """ConfigError for an unknown method or a setting this model's searches do not use."""
        unused = {"ctc_weight": "transducer searches do not use the CTC head", "max_len": "the frames bound the length",
                  "max_len_ratio": "the frames bound the length"}
        if options.method == "greedy":
            unused.update(ilm_weight="greedy transducer search takes no LM (use beam or modified_beam)",
                          scorers="greedy transducer search takes no extra scorers (use beam or modified_beam)",
                          rescorers="greedy transducer search has no n-best (use beam or modified_beam)",
                          length_bonus="greedy transducer search ranks nothing (use beam or modified_beam)")
        options.check("a transducer model", DECODE_METHODS, unused, self.vocab_size)


@register_head("transducer", TransducerConfig)
def build_transducer(cfg: TransducerConfig, encoder: nn.Module, vocab_size: int) -> TransducerModel:
    return TransducerModel(encoder, vocab_size, cfg)
