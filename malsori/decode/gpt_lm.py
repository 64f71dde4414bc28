"""A GPT (`malsori.lm.gpt`) as a token scorer: log p(next token | sentence start, prefix) in the recognizer's own
units, for shallow fusion in every search and for n-best rescoring (`DecodeOptions.scorers` / `rescorers`).

The GPT must speak the recognizer's tokens (train it with `data.tokenizer_dir` = the ASR model's folder; the
loader in `malsori.decode.lm_scorers` checks). A sentence starts after the end-of-sentence id, as in the GPT's
training stream; log p(eos | prefix) ends it (scored by the label-synchronous searches, `final_score` in the others).

The key/value cache is a store of one entry per token read, shared by all prefixes of a search: a prefix is the
list of its tokens' entries ("path", [N, W] ids into the store), so extending a prefix adds one entry, prefixes
that share a history share its entries, and the state's shape does not depend on the prefix length (the
frame-synchronous searches batch prefixes of different lengths). Keys are stored as the token's attention made
them at position 0; a step rotates each row's past keys to their offsets from the new token (rotary embeddings
depend only on offsets), so every row of a batch may have a different length. A step costs one token through the
GPT plus attention over at most W past entries: flat in the prefix length up to W = the GPT's context − 1; past
that the oldest entry is dropped (a sliding window: the kept entries were computed with the dropped ones in view).

An adapted GPT (`malsori.llm.adapters`) scores the same way: LoRA lives inside the GPT's layers, and a soft prompt
is a `prefix` of embeddings read once per search before the sentence start, its entries pinned at the start of the
window (never dropped), as `AdaptedLM.forward` puts them before the tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from malsori.decode.scorers import Scorer, State
from malsori.lm.gpt import GPT
from malsori.nn.attention import apply_rotary
from malsori.tokenizer import SPECIAL_IDS


class KVStore:
    """Keys and values of every token a search's GPT has read: entry i = [layers, 2, H, dh]; entry 0 is padding."""

    def __init__(self, model: GPT, device: torch.device, dtype: torch.dtype) -> None:
        a = model.layers[0].attention
        self.kv = torch.zeros(64, len(model.layers), 2, a.num_heads, a.head_dim, device=device, dtype=dtype)
        self.size = 1

    def add(self, entries: Tensor) -> Tensor:
        """Append entries [M, layers, 2, H, dh] → their ids [M]."""
        m = entries.size(0)
        if self.size + m > self.kv.size(0):  # grow by doubling: appends cost O(1) on average
            grown = self.kv.new_zeros(max(2 * self.kv.size(0), self.size + m), *self.kv.shape[1:])
            grown[: self.size] = self.kv[: self.size]
            self.kv = grown
        self.kv[self.size : self.size + m] = entries
        ids = torch.arange(self.size, self.size + m, device=entries.device)
        self.size += m
        return ids


class GPTScorer(Scorer):
    """A GPT as a full scorer (see the module docstring).

    State: "store" (the search's `KVStore`, shared), "path" [N, W] store ids of the prefix's tokens read so far
    (0 = none), "length" [N] how many, "pending" [N] the newest token, not read yet; a scored state has
    "log_probs" [N, V] and the pending token read into "path".
    """

    def __init__(self, model: GPT, eos: int = SPECIAL_IDS.eos, prefix: Tensor | None = None) -> None:
        self.model, self.eos = model.eval(), eos
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.window = max(1, model.context - 1)  # past tokens a step attends to (the new one makes the context)
        # embeddings [P, D] read before the sentence start (a soft prompt), kept in the window
        self.prefix = None if prefix is None else prefix.detach().to(self.device, self.dtype)
        self.pinned = 0 if prefix is None else prefix.size(0)
        if self.pinned >= self.window:
            raise ValueError(f"a prefix of {self.pinned} vectors leaves no room in the window of {self.window}")

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        state = {"store": KVStore(self.model, self.device, self.dtype),
                 "path": torch.zeros(n, self.window, dtype=torch.long, device=self.device),
                 "length": torch.zeros(n, dtype=torch.long, device=self.device),
                 "pending": torch.full((n,), self.eos, dtype=torch.long, device=self.device)}
        rows = torch.arange(n, device=self.device)
        if self.prefix is not None:  # read once for one row, its entries shared by all n (the eos stays pending)
            one = {**state, "path": state["path"].new_zeros(1, self.window), "length": state["length"].new_zeros(1),
                   "pending": state["pending"].new_full((1,), self.eos)}
            for vector in self.prefix:
                one = {k: v for k, v in self._read(one, vector[None, None]).items() if k != "log_probs"}
            state = {**state, "path": one["path"].expand(n, -1).clone(), "length": one["length"].expand(n).clone()}
        for token in prompt:  # read like output tokens, not scored
            state = self.extend(self.score(state)[1], rows, torch.full((n,), int(token), device=self.device))
        return state

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        if "log_probs" not in state:
            state = self._read(state)
        log_probs = state["log_probs"]
        if memory is not None:
            log_probs = log_probs.to(memory.device)
        return (log_probs if candidates is None else log_probs.gather(1, candidates.to(log_probs.device))), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        if "log_probs" not in state:
            state = self._read(state)
        index = index.to(self.device)
        return {"store": state["store"], "path": state["path"].index_select(0, index),
                "length": state["length"].index_select(0, index), "pending": tokens.to(self.device).long()}

    def final_score(self, state: State) -> Tensor:
        """log p(eos | prefix): the sentence ends here."""
        return self.score(state)[0][:, self.eos].double().cpu()

    @torch.no_grad()
    def sequence_logprobs(self, sequences: list[list[int]], eos: int) -> Tensor | None:
        """[M] log p(y, eos | eos) of whole sequences (n-best rescoring) by one teacher-forced forward, float64 sums;
        None when one is longer than the context (the step-by-step path, with its window, then scores them)."""
        longest = max((len(y) for y in sequences), default=0)
        if self.pinned + longest + 1 > self.model.context:
            return None
        lens = torch.tensor([len(y) for y in sequences])
        x = torch.full((len(sequences), longest + 1), eos, dtype=torch.long)
        target = x.clone()
        for i, y in enumerate(sequences):
            x[i, 1 : len(y) + 1] = target[i, : len(y)] = torch.as_tensor(y, dtype=torch.long)
        x = self.model.embed(x.to(self.device))
        if self.prefix is not None:
            x = torch.cat((self.prefix[None].expand(x.size(0), -1, -1), x), 1)
        log_probs = self.model.forward_embeddings(x)[:, self.pinned :].float().log_softmax(-1).double().cpu()
        picked = log_probs.gather(2, target[..., None]).squeeze(-1)
        return picked.masked_fill(torch.arange(longest + 1)[None, :] > lens[:, None], 0.0).sum(1)

    @torch.no_grad()
    def _read(self, state: State, x: Tensor | None = None) -> State:
        """Read each row's pending token (or the embeddings `x` [N, 1, D] instead): its log-probs of the next token,
        its keys/values stored and on its path."""
        store, path, length = state["store"], state["path"], state["length"]
        n, past = path.size(0), int(length.max()) if path.size(0) else 0
        slots = torch.arange(past, device=self.device)
        valid = slots[None, :] < length[:, None]  # [N, past]
        entries = store.kv[path[:, :past]]  # [N, past, layers, 2, H, dh]
        # each past key to its offset from the new token (position 0): slot s of a row of length l is s − l away
        cos, sin = self.model.layers[0].attention.rotary((slots[None, :] - length[:, None]).flatten())
        half = self.model.layers[0].attention.head_dim // 2
        cos, sin = cos.view(n, 1, past, half), sin.view(n, 1, past, half)  # [N, 1, past, dh/2]: the same for every head
        allowed = torch.cat((valid, valid.new_ones(n, 1)), 1)[:, None, None, :]  # [N, 1, 1, past + 1]
        if x is None:
            x = self.model.embed(state["pending"])[:, None]  # dropout: the model is in eval mode
        zero = torch.zeros(1, dtype=torch.long, device=self.device)
        new = []
        for j, layer in enumerate(self.model.layers):
            keys, values = entries[:, :, j, 0].transpose(1, 2), entries[:, :, j, 1].transpose(1, 2)  # [N, H, past, dh]
            keys = apply_rotary(keys, cos, sin)
            x, (k, v, _) = layer(x, attn_mask=allowed, positions=zero, cache=(keys, values, None))
            new.append(torch.stack((k[:, :, -1], v[:, :, -1]), 1))  # [N, 2, H, dh]
        log_probs = self.model.logits(x)[:, 0].float().log_softmax(-1)
        ids = store.add(torch.stack(new, 1))
        full = length >= self.window  # a full window drops its oldest entry (after the pinned prefix)
        p = self.pinned
        path = torch.where(full[:, None], torch.cat((path[:, :p], path[:, p:].roll(-1, 1)), 1), path)
        path = path.scatter(1, length.clamp(max=self.window - 1)[:, None], ids[:, None])
        return {"store": store, "path": path, "length": (length + 1).clamp(max=self.window), "pending": state["pending"],
                "log_probs": log_probs}
