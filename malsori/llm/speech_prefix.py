"""Decoder-only speech recognition: a speech encoder's frames, stacked `stride` at a time and projected into the GPT's
embedding space, are a prefix the GPT reads before writing the transcript (an optional text prompt between them).

Sequence per utterance: [audio vectors] [prompt tokens] eos [transcript tokens] eos, where the transcript and its
final eos are predicted. A batch left-pads the audio vectors (hidden from attention by the padding mask; rotary
positions are relative, so the shift changes nothing) and right-pads the text. Trainable: the projector, the
GPT's adapter (LoRA, or everything), and the encoder unless frozen. Greedy decoding runs with the GPT's key/value
cache, whose first positions are the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from malsori.config import bounded
from malsori.lm.gpt import GPT
from malsori.nn.mask import length_mask

IGNORE = -100  # target id of positions without loss


@dataclass
class SpeechPrefixConfig:
    """How the encoder's frames become the GPT's prefix."""

    stride: int = bounded(2, ge=1)  # encoder frames stacked into one prefix vector (40 ms frames × 2 = 80 ms each)
    hidden: int = bounded(256, ge=1)  # width of the projector's hidden layer
    freeze_encoder: bool = True  # keep the speech encoder's parameters as trained


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


class DecoderOnlyASR(nn.Module):
    """encoder → projector → GPT (any module with the GPT's `embed`, `forward_embeddings` and cache methods; an
    `AdaptedLM`'s `.gpt` with LoRA inside works too)."""

    def __init__(self, encoder: nn.Module, gpt: GPT, cfg: SpeechPrefixConfig, eos: int, prompt: list[int] | None = None) -> None:
        super().__init__()
        self.encoder, self.gpt, self.cfg, self.eos = encoder, gpt, cfg, eos
        self.projector = Projector(encoder.output_dim, gpt.cfg.d_model, cfg.stride, cfg.hidden)
        self.register_buffer("prompt", torch.tensor(list(prompt or []) + [eos], dtype=torch.long), persistent=False)
        if cfg.freeze_encoder:
            encoder.requires_grad_(False)

    def prefix(self, feats: Tensor, feat_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Audio → prefix vectors [B, P, D] (right-padded) and their lengths [B]."""
        if self.cfg.freeze_encoder:
            self.encoder.eval()
            with torch.no_grad():
                enc, lens = self.encoder(feats, feat_lens)
        else:
            enc, lens = self.encoder(feats, feat_lens)
        return self.projector(enc, lens)

    def _sequences(self, feats: Tensor, feat_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """→ input vectors [B, T, D], key mask [B, T], targets [B, T]: audio left-padded, then prompt + eos, transcript."""
        audio, audio_lens = self.prefix(feats, feat_lens)
        b, p_max, _ = audio.shape
        text = [torch.cat((self.prompt, tokens[i, : token_lens[i]])) for i in range(b)]
        t_max = max(len(t) for t in text)
        x = audio.new_zeros(b, p_max + t_max, audio.size(2))
        mask = torch.zeros(b, p_max + t_max, dtype=torch.bool, device=audio.device)
        y = torch.full((b, p_max + t_max), IGNORE, dtype=torch.long, device=audio.device)
        for i in range(b):
            p, ids = int(audio_lens[i]), text[i]
            x[i, p_max - p : p_max] = audio[i, :p]
            x[i, p_max : p_max + len(ids)] = self.gpt.embed(ids)
            mask[i, p_max - p : p_max + len(ids)] = True
            # position of the prompt's eos predicts the first transcript token; the last token predicts eos
            start = p_max + len(self.prompt) - 1
            y[i, start : p_max + len(ids) - 1] = ids[len(self.prompt) :]
            y[i, p_max + len(ids) - 1] = self.eos
        return x, mask, y

    def compute_loss(self, feats: Tensor, feat_lens: Tensor, tokens: Tensor, token_lens: Tensor) -> tuple[Tensor, dict]:
        """Cross-entropy of the transcript tokens and the final eos given the audio prefix (and prompt)."""
        x, mask, y = self._sequences(feats, feat_lens, tokens, token_lens)
        logits = self.gpt.forward_embeddings(x, mask)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        return loss, {"loss": float(loss.detach()), "tokens": int((y != IGNORE).sum())}

    @torch.no_grad()
    def greedy(self, feats: Tensor, feat_lens: Tensor, max_tokens: int = 200) -> list[list[int]]:
        """Transcripts (token ids) of a batch, one utterance at a time with the key/value cache."""
        audio, audio_lens = self.prefix(feats, feat_lens)
        out = []
        for i in range(audio.size(0)):
            first = torch.cat((audio[i : i + 1, : audio_lens[i]], self.gpt.embed(self.prompt)[None]), 1)
            logits, cache = self.gpt.forward_cached_embeddings(first, self.gpt.init_cache(1, audio.device, audio.dtype))
            ids: list[int] = []
            for _ in range(max_tokens):
                tok = int(logits[0, -1].argmax())
                if tok == self.eos:
                    break
                ids.append(tok)
                logits, cache = self.gpt.forward_cached(torch.tensor([[tok]], device=audio.device), cache)
            out.append(ids)
        return out
