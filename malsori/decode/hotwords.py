"""Hotwords (contextual biasing): an Aho–Corasick automaton over the model's tokens that rewards phrases from a list.

Each token of a phrase in progress earns its phrase's boost (per token, as in sherpa-onnx and icefall); when the
phrase is complete the reward stays; when the match fails — the next token leaves the phrase, or the output ends
— the reward of the unfinished part is taken back (down to what a shorter phrase that is still being matched
holds: the automaton falls back along its failure links). So a hypothesis' total is exactly Σ over the complete
occurrences of phrases in it (overlapping ones too) of the phrase's boost × its length in tokens (where phrases
share a prefix, each of its tokens earns the largest of their boosts); a partial match
only moves hypotheses up while it lasts, which keeps a phrase from being pruned before its last token.

The automaton is compiled to two tables over (state, token): the next state and the score change, so scoring is
one lookup per hypothesis. Phrases come from a file in sherpa-onnx's format: one phrase a line, optionally ending
in ` :BOOST` (the default boost otherwise), text normalized like transcripts and encoded with the model's
tokenizer.
"""

from __future__ import annotations

import os
import re
from collections import deque
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from malsori.decode.scorers import Scorer, State
from malsori.errors import MalsoriError
from malsori.text import normalize
from malsori.tokenizer import SPECIAL_IDS, SpecialIds, Tokenizer

_BOOST = re.compile(r"^(.*?)\s+:\s*([-+0-9.eE]+)\s*$")


class HotwordsError(MalsoriError):
    """A hotwords file or phrase list cannot be used (the message names the file and line)."""


class HotwordScorer(Scorer):
    """Phrases (token ids, boost per token) as a scorer (see the module docstring). State: {"node": [N] states}.

    Scores are not log-probabilities: a step earns up to `max_score`; give it weight 1 to use the boosts as they
    are (the weight scales them all). Blank is not a label (score 0, no move); eos ends the output like
    `final_score`: the phrase in progress is taken back.
    """

    def __init__(self, phrases: Sequence[tuple[Sequence[int], float]], vocab_size: int,
                 ids: SpecialIds = SPECIAL_IDS) -> None:
        children: list[dict[int, int]] = [{}]
        credit, boost_of_edge = [0.0], [0.0]  # Σ boosts from the root; the boost of the edge into each node
        ends: list[float] = [0.0]  # 1 where a phrase ends at the node
        for tokens, boost in phrases:
            if not tokens:
                raise HotwordsError("hotwords: a phrase has no tokens")
            node = 0
            for tok in tokens:
                if not 0 <= int(tok) < vocab_size or int(tok) in (ids.blank, ids.eos):
                    raise HotwordsError(f"hotwords: token id {tok} cannot be part of a phrase")
                nxt = children[node].get(int(tok))
                if nxt is None:
                    nxt = children[node][int(tok)] = len(children)
                    children.append({})
                    credit.append(0.0)
                    boost_of_edge.append(boost)
                    ends.append(0.0)
                boost_of_edge[nxt] = max(boost_of_edge[nxt], boost)  # shared prefixes: the largest boost
                node = nxt
            ends[node] = 1.0
        n = len(children)
        order, parent_of = [0], [0] * n  # breadth-first, so parents (and failure targets) come first
        queue = deque([0])
        while queue:
            node = queue.popleft()
            for nxt in children[node].values():
                parent_of[nxt] = node
                credit[nxt] = credit[node] + boost_of_edge[nxt]
                order.append(nxt)
                queue.append(nxt)
        # in progress: the credit past the last complete phrase on the path; out: credits of the phrases that end
        # here (this one and those its failure chain reaches)
        done, out = [0.0] * n, [0.0] * n
        fail, goto = [0] * n, torch.zeros(n, vocab_size, dtype=torch.long)
        for node in order:  # failure links: the longest proper suffix that is a node (shallower: done before)
            if node:
                done[node] = credit[node] if ends[node] else done[parent_of[node]]
                out[node] = (credit[node] if ends[node] else 0.0) + out[fail[node]]
                goto[node] = goto[fail[node]]
            for tok, nxt in children[node].items():
                fail[nxt] = int(goto[fail[node], tok]) if node else 0
                goto[node, tok] = nxt
        progress = torch.tensor(credit, dtype=torch.float64) - torch.tensor(done, dtype=torch.float64)
        gain = torch.tensor(out, dtype=torch.float64)[goto] + progress[goto] - progress[:, None]  # [n, V]
        stay = torch.arange(n)
        goto[:, ids.blank], gain[:, ids.blank] = stay, 0.0
        goto[:, ids.eos], gain[:, ids.eos] = 0, -progress
        self.next_state, self.gain, self.progress = goto, gain.float(), progress
        self.max_score = float(gain.max().clamp(min=0.0))

    @classmethod
    def from_file(cls, path: str | os.PathLike, tokenizer: Tokenizer, boost: float = 1.5) -> "HotwordScorer":
        """Phrases from a sherpa-onnx hotwords file (`PHRASE` or `PHRASE :BOOST` per line), encoded by `tokenizer`."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise HotwordsError(f"{path}: cannot read hotwords ({e})") from None
        phrases = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            match = _BOOST.match(line)
            text, value = (match.group(1), match.group(2)) if match else (line, None)
            try:
                score = boost if value is None else float(value)
            except ValueError:
                raise HotwordsError(f"{path}:{number}: bad boost {value!r} (want PHRASE :NUMBER)") from None
            tokens = tokenizer.encode(normalize(text))
            if not tokens:
                raise HotwordsError(f"{path}:{number}: {text!r} has no words after normalization")
            phrases.append((tokens, score))
        if not phrases:
            raise HotwordsError(f"{path}: no hotwords")
        return cls(phrases, tokenizer.vocab_size, tokenizer.special_ids)

    def init_state(self, n: int, memory: Tensor | None = None, memory_lens: Tensor | None = None,
                   prompt: Sequence[int] = ()) -> State:
        node = torch.zeros(n, dtype=torch.long)
        for token in prompt:
            node = self.next_state[node, int(token)]
        return {"node": node}

    def score(self, state: State, memory: Tensor | None = None, memory_lens: Tensor | None = None,
              candidates: Tensor | None = None) -> tuple[Tensor, State]:
        node = state["node"]
        scores = self.gain.to(node.device)[node]
        return (scores if candidates is None else scores.gather(1, candidates)), state

    def extend(self, state: State, index: Tensor, tokens: Tensor) -> State:
        node = state["node"].index_select(0, index)
        return {"node": self.next_state.to(node.device)[node, tokens.to(node.device)]}

    def final_score(self, state: State) -> Tensor:
        return -self.progress[state["node"].cpu()]
