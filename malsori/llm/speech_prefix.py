"""Decoder-only speech recognition: a speech encoder's frames, stacked `stride` at a time and projected into the GPT's
embedding space, are a prefix the GPT reads before writing the transcript (an optional text prompt after or before
the audio).

Sequence per utterance: [audio vectors] [prompt tokens] eos [transcript tokens] eos (`prompt_position: after`), or
[prompt tokens] [audio vectors] eos ... (`before`), where the transcript and its final eos are predicted. A batch
left-pads what comes before the eos (hidden from attention by the padding mask; rotary positions are relative, so
the shift changes nothing) and right-pads the text. Trainable: the projector, the
GPT's adapter (LoRA, or everything), and the encoder unless frozen. Decoding (greedy = beam 1, or beam) runs
through the shared label-synchronous search (`malsori.decode.beam`) with the GPT's key/value cache, whose first
positions are the prefix; a frozen encoder's outputs can be given directly (`compute_loss_encoded`), so training
can read them from a cache instead of running the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.config import bounded
from malsori.decode.beam import BeamSearch
from malsori.decode.options import DecodeOptions
from malsori.decode.rescore import rescore_with_options
from malsori.decode.result import Hypothesis
from malsori.decode.scorers import Scorer, State
from malsori.lm.gpt import GPT
from malsori.nn.mask import length_mask

IGNORE = -100  # target id of positions without loss


@dataclass
class SpeechPrefixConfig:
    """How the encoder's frames become the GPT's prefix."""

    stride: int = bounded(2, ge=1)  # encoder frames stacked into one prefix vector (40 ms frames × 2 = 80 ms each)
    hidden: int = bounded(256, ge=1)  # width of the projector's hidden layer
    freeze_encoder: bool = True  # keep the speech encoder's parameters as trained
    max_len_ratio: float = bounded(1.0, gt=0)  # decoding: at most this many tokens per encoder frame (1.0 = 25 per second at 40 ms)
    prompt_position: Literal["after", "before"] = "after"  # the text prompt after the audio (the audio starts every sequence) or before it


class Projector(nn.Module):
    """Encoder frames [B, T, E] → prefix vectors [B, ceil(T / stride), D]: stack `stride` frames, MLP to the GPT width."""

    def __init__(self, encoder_dim: int, d_model: int, stride: int, hidden: int) -> None:
        super().__init__()
        self.stride = stride
        self.net = nn.Sequential(nn.Linear(stride * encoder_dim, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, enc: Tensor, lens: Tensor) -> tuple[Tensor, Tensor]:
        b, t, e = enc.shape
        pad = (-t) % self.stride
        enc = F.pad(enc * length_mask(lens, t)[..., None], (0, 0, 0, pad))
        stacked = enc.reshape(b, (t + pad) // self.stride, self.stride * e)
        return self.net(stacked), (lens + self.stride - 1) // self.stride


DECODE_METHODS = ("greedy", "beam")


class DecoderOnlyASR(nn.Module):
    """encoder → projector → GPT (any module with the GPT's `embed`, `forward_embeddings` and cache methods; an
    `AdaptedLM`'s `.gpt` with LoRA inside works too)."""

    def __init__(self, encoder: nn.Module, gpt: GPT, cfg: SpeechPrefixConfig, eos: int, prompt: list[int] | None = None) -> None:
        super().__init__()
        self.encoder, self.gpt, self.cfg, self.eos = encoder, gpt, cfg, eos
        self.vocab_size = gpt.vocab_size
        self.projector = Projector(encoder.output_dim, gpt.cfg.d_model, cfg.stride, cfg.hidden)
        self.register_buffer("prompt", torch.tensor(list(prompt or []) + [eos], dtype=torch.long), persistent=False)
        if cfg.freeze_encoder:
            encoder.requires_grad_(False)

    def encode(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Features → encoder frames [B, T, E] and their lengths (without gradients when the encoder is frozen)."""
        if self.cfg.freeze_encoder:
            self.encoder.eval()
            with torch.no_grad():
                return self.encoder(feats, feat_lens)
        return self.encoder(feats, feat_lens)

    def prefix(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Audio → prefix vectors [B, P, D] (right-padded) and their lengths [B]."""
        return self.projector(*self.encode(feats, feat_lens))

    def _head(self, audio: Tensor) -> Tensor:
        """One utterance's audio vectors [P, D] with the prompt's embeddings after or before them (not its eos)."""
        prompt = self.gpt.embed(self.prompt[:-1])
        return torch.cat((prompt, audio) if self.cfg.prompt_position == "before" else (audio, prompt))

    def _sequences(self, audio: Tensor, audio_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix vectors → input vectors [B, T, D], key mask [B, T], targets [B, T]: audio and prompt (`_head`)
        left-padded, then eos, transcript."""
        b, p_max, _ = audio.shape
        h_max = p_max + len(self.prompt) - 1
        text = [torch.cat((self.prompt[-1:], tokens[i, : token_lens[i]])) for i in range(b)]
        t_max = max(len(t) for t in text)
        x = audio.new_zeros(b, h_max + t_max, audio.size(2))
        mask = torch.zeros(b, h_max + t_max, dtype=torch.bool, device=audio.device)
        y = torch.full((b, h_max + t_max), IGNORE, dtype=torch.long, device=audio.device)
        for i in range(b):
            head, ids = self._head(audio[i, : audio_lens[i]]), text[i]
            x[i, h_max - len(head) : h_max] = head
            x[i, h_max : h_max + len(ids)] = self.gpt.embed(ids)
            mask[i, h_max - len(head) : h_max + len(ids)] = True
            # the eos after audio and prompt predicts the first transcript token; the last token predicts eos
            y[i, h_max : h_max + len(ids) - 1] = ids[1:]
            y[i, h_max + len(ids) - 1] = self.eos
        return x, mask, y

    def compute_loss(self, feats: Tensor, feat_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, dict]:
        """Cross-entropy of the transcript tokens and the final eos given the audio prefix (and prompt)."""
        return self.compute_loss_encoded(*self.encode(feats, feat_lens), tokens, token_lens)

    def compute_loss_encoded(self, enc: Tensor, enc_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, dict]:
        """`compute_loss` from encoder frames [B, T, E] already computed (a frozen encoder's, read from a cache)."""
        x, mask, y = self._sequences(*self.projector(enc, enc_lens), tokens, token_lens)
        logits = self.gpt.forward_embeddings(x, mask)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        return loss, {"loss": float(loss.detach()), "tokens": int((y != IGNORE).sum())}

    @torch.no_grad()
    def decode(self, feats: Tensor, feat_lens: Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """One Hypothesis per utterance (the `Recognizer` contract): greedy (beam 1) or beam search over the GPT after
        the utterance's prefix, extra scorers (`options.scorers`, e.g. an LM) added, `options.rescorers` re-ranking
        the n-best. Token frames are the utterance's last encoder frame (the GPT does not align)."""
        self.check_options(options)
        return self.decode_encoded(*self.encode(feats, feat_lens), options)

    @torch.no_grad()
    def decode_encoded(self, enc: Tensor, enc_lens: Tensor, options: DecodeOptions = DecodeOptions()) -> list[Hypothesis]:
        """`decode` from encoder frames; one search per utterance (the prefix lengths differ, the cache has no mask)."""
        audio, audio_lens = self.projector(enc, enc_lens)
        beam = 1 if options.method == "greedy" else options.beam_size
        ratio = self.cfg.max_len_ratio if options.max_len_ratio is None else options.max_len_ratio
        hyps = []
        for i in range(enc.size(0)):
            first = torch.cat((self._head(audio[i, : audio_lens[i]]), self.gpt.embed(self.prompt[-1:])))[None]
            scorers: dict[str, Scorer] = {"att": PrefixedGPTScorer(self.gpt, first)}
            weights = {"att": 1.0}
            for extra in options.scorers:
                scorers[extra.name], weights[extra.name] = extra.scorer, extra.weight
            search = BeamSearch(scorers, weights, beam_size=beam, max_len=options.max_len, max_len_ratio=ratio,
                                length_bonus=options.length_bonus or 0.0, nbest=options.search_nbest if beam > 1 else 1)
            hyps += search(enc[i : i + 1, : enc_lens[i]], enc_lens[i : i + 1])
        return rescore_with_options(hyps, options) if beam > 1 else hyps

    @torch.no_grad()
    def greedy(self, feats: Tensor, feat_lens: Tensor) -> list[list[int]]:
        """Transcripts (token ids) of a batch by greedy search."""
        return [h.tokens for h in self.decode(feats, feat_lens)]

    def check_options(self, options: DecodeOptions) -> None:
        """ConfigError for a method this model lacks or a setting it does not use."""
        unused = {"ctc_weight": "this model has no CTC head", "ilm_weight": "no internal LM estimate is defined for it",
                  "prompt": "its text prompt is the one it was trained with (the recipe's `prompt`)"}
        if options.method == "greedy":
            unused["rescorers"] = "a greedy search has no n-best"
        options.check("a decoder-only speech model", DECODE_METHODS, unused, self.vocab_size)


class PrefixedGPTScorer(Scorer):
    """The GPT after one utterance's prefix `first` [1, P, D] (audio vectors and prompt, eos) as a full scorer. State: the
    key/value cache [N, layers, 2, H, L, dh] of each hypothesis and the token it has not read yet ("pending")."""

    def __init__(self, gpt: GPT, first: Tensor) -> None:
        self.gpt = gpt
        logits, self.cache = gpt.forward_cached_embeddings(first, gpt.init_cache(1, first.device, first.dtype))
        self.log_probs = logits[:, -1].float().log_softmax(-1)

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        return {"cache": self.cache.expand(n, *self.cache.shape[1:]), "log_probs": self.log_probs.expand(n, -1)}

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        if "log_probs" not in state:
            logits, cache = self.gpt.forward_cached(state["pending"][:, None], state["cache"])
            state = {"cache": cache, "log_probs": logits[:, -1].float().log_softmax(-1)}
        log_probs = state["log_probs"]
        return (log_probs if candidates is None else log_probs.gather(1, candidates)), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        return {"cache": state["cache"].index_select(0, index), "pending": tokens.long()}
