"""Tiny pieces for the LLM-lesson tests: a character GPT model folder and a task folder, made in seconds."""

from __future__ import annotations

from pathlib import Path

import torch

from malsori.config import to_dict
from malsori.llm.taskfile import Item, TaskSpec, write_task
from malsori.lm.gpt import GPT, GPTConfig
from malsori.models.registry import LMConfig
from malsori.pretrained import write_model_dir
from malsori.tokenizer import train_tokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def tiny_lm_dir(path: Path, context: int = 96, seed: int = 0) -> Path:
    """An untrained character GPT folder (task lm, not normalized) over lower-case letters, digits and ':'."""
    torch.manual_seed(seed)
    tok = train_tokenizer("char", [LETTERS + "0123456789:.?!ABC"])
    cfg = LMConfig(kind="gpt", gpt=GPTConfig(d_model=32, num_layers=2, num_heads=2, dropout=0.0, context=context))
    model = GPT(cfg.gpt, tok.vocab_size)
    return write_model_dir(path, "lm", model, {"model": to_dict(cfg), "normalize": False}, tok)


def reverse_task(path: Path, n_train: int = 40, n_valid: int = 6, n_test: int = 6) -> Path:
    """A task folder: three-letter words → reversed (exact match), disjoint splits."""
    import itertools

    words = ["".join(w) for w in itertools.islice(itertools.product("abcdefg", repeat=3), n_train + n_valid + n_test)]
    items = [Item(w, w[::-1]) for w in words]
    splits = {"train": items[:n_train], "valid": items[n_train : n_train + n_valid], "test": items[n_train + n_valid :]}
    return write_task(path, TaskSpec("reverse", "exact", "reverse the word"), splits)


def pretrain_on(gpt: GPT, tok, texts: list[str], steps: int = 60) -> None:
    """A stand-in for a pretrained GPT: a few steps of language modelling on `texts` (a random GPT's frozen
    N(0, 0.02) embeddings give logits too flat for any adapter to make confident)."""
    eos = tok.special_ids.eos
    stream = torch.tensor([eos] + [i for t in texts for i in tok.encode(t) + [eos]])[None]
    opt = torch.optim.Adam(gpt.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(gpt(stream[:, :-1])[0], stream[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
