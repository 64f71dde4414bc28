"""Sampling text from a neural LM with its key/value cache: temperature, top-k and top-p (nucleus), seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from malsori.config import bounded, check_ranges


@dataclass(frozen=True)
class SamplingOptions:
    """How the next token is drawn."""

    temperature: float = bounded(1.0, ge=0)  # logits are divided by it; 0 = always the most likely token (greedy)
    top_k: int = bounded(0, ge=0)  # draw only among the k most likely tokens (0 = all)
    top_p: float = bounded(1.0, gt=0, le=1)  # draw only among the most likely tokens whose probabilities sum to p (1 = all)
    max_tokens: int = bounded(200, ge=1)  # stop after this many new tokens, or at the end of the sentence
    seed: int = bounded(0, ge=0)  # seeds the draws: the same options give the same text

    def __post_init__(self) -> None:
        check_ranges(self)


def next_token(logits: Tensor, opts: SamplingOptions, generator: torch.Generator) -> Tensor:
    """Draw one token per row of logits [B, V] → [B]."""
    if opts.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / opts.temperature
    if opts.top_k:
        kth = logits.topk(min(opts.top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= opts.top_p  # tokens after the nucleus is already full
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate(model: nn.Module, prompt: list[int], eos: int, opts: SamplingOptions) -> list[int]:
    """Continue `prompt` (token ids, starting with eos as a sentence start) until eos or max_tokens; returns the
    new ids. The context is cut to the model's `context` by re-reading the last half when it fills up."""
    model.eval()
    generator = torch.Generator().manual_seed(opts.seed)
    device = next(model.parameters()).device
    history = list(prompt)
    logits, cache = model.forward_cached(torch.tensor([history[-model.context:]], device=device), model.init_cache(1, device))
    out: list[int] = []
    for _ in range(opts.max_tokens):
        tok = int(next_token(logits[:, -1], opts, generator)[0])
        if tok == eos:
            break
        out.append(tok)
        history.append(tok)
        if cache.size(4) >= model.context:  # full: start again from the last half of the text
            logits, cache = model.forward_cached(torch.tensor([history[-(model.context // 2):]], device=device), model.init_cache(1, device))
        else:
            logits, cache = model.forward_cached(torch.tensor([[tok]], device=device), cache)
    return out
