"""Toy data and checks shared by the attention decoder tests (test_aed, test_mocha, test_mocha_transformer): the
step = forward contract every decoder keeps for beam search, toy batches, and the stream = offline check of the
MoChA decoders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn

from malsori.decode.mocha import MonotonicStream, monotonic_stream
from malsori.models.aed import AttentionModel
from malsori.nn.lstm import stack_frames
from malsori.tokenizer import SPECIAL_IDS

EOS = SPECIAL_IDS.eos
F_DIM, VOCAB = 20, 10  # feature bins and vocabulary of every toy batch
LABELS = [[3, 4, 5], [6, 7, 8, 9], [5, 3], [9, 8, 7, 6, 5]]  # toy_batch's label sequences
FRAMES = [48, 40, 56, 36]  # toy_batch's feature lengths


def toy_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 random feature sequences (padding filled with noise) and 4 short label sequences."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(4, max(FRAMES), F_DIM, generator=g)
    targets = torch.zeros(4, max(map(len, LABELS)), dtype=torch.long)
    for b, y in enumerate(LABELS):
        targets[b, : len(y)] = torch.tensor(y)
    return feats, torch.tensor(FRAMES), targets, torch.tensor([len(y) for y in LABELS])


REORDER = torch.tensor([2, 0, 0, 1])  # select_state half-way: hypotheses reordered and duplicated


def assert_steps_equal_forward(dec, memory: torch.Tensor, memory_lens: torch.Tensor, ys: torch.Tensor) -> dict:
    """init_state + step over each prefix of ys [3, L] gives forward's log-probs, also after select_state(REORDER)
    half-way; → the final state (rows = REORDER)."""
    half, length = ys.size(1) // 2, ys.size(1)
    with torch.no_grad():
        full = dec(memory, memory_lens, ys, torch.full((ys.size(0),), length)).log_softmax(-1)
        state = dec.init_state(memory, memory_lens)
        for i in range(half):
            lp, state = dec.step(ys[:, : i + 1], state, memory, memory_lens)
            torch.testing.assert_close(lp, full[:, i], atol=1e-5, rtol=1e-4)
        state = dec.select_state(state, REORDER)
        for i in range(half, length):
            lp, state = dec.step(ys[REORDER, : i + 1], state, memory[REORDER], memory_lens[REORDER])
            torch.testing.assert_close(lp, full[REORDER, i], atol=1e-5, rtol=1e-4)
    return state


def spoken_batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]]:
    """n utterances of 2–4 random tokens, each token a segment of 8–12 noisy frames of its own prototype vector,
    between short stretches of noise ("silence")."""
    g = torch.Generator().manual_seed(seed)
    proto = 2 * torch.randn(VOCAB, F_DIM, generator=g)
    seqs, labels = [], []
    for _ in range(n):
        y = torch.randint(3, VOCAB, (int(torch.randint(2, 5, (1,), generator=g)),), generator=g).tolist()
        parts = [0.5 * torch.randn(int(torch.randint(2, 8, (1,), generator=g)), F_DIM, generator=g)]
        for tok in y:
            k = int(torch.randint(8, 13, (1,), generator=g))
            parts.append(proto[tok] + 0.5 * torch.randn(k, F_DIM, generator=g))
        parts.append(0.5 * torch.randn(4, F_DIM, generator=g))
        seqs.append(torch.cat(parts))
        labels.append(y)
    lens = torch.tensor([len(x) for x in seqs])
    feats = torch.zeros(n, int(lens.max()), F_DIM)
    targets = torch.zeros(n, max(map(len, labels)), dtype=torch.long)
    for b, (x, y) in enumerate(zip(seqs, labels)):
        feats[b, : len(x)], targets[b, : len(y)] = x, torch.tensor(y)
    return feats, lens, targets, torch.tensor([len(y) for y in labels]), labels


class FrameLocalEncoder(nn.Module):
    """Stacks 4 frames and maps them through one layer: each encoder frame knows only its own 4 input frames, so
    the decoder must read the utterance where its tokens are (an LSTM's last frame would summarize all of it)."""

    def __init__(self, dim: int = 48) -> None:
        super().__init__()
        self.output_dim, self.linear = dim, nn.Linear(4 * F_DIM, dim)

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = stack_frames(feats, lens, 4)
        return torch.tanh(self.linear(x)), lens


def feed(stream: MonotonicStream, enc: torch.Tensor, sizes: list[int]) -> list[tuple[int, int]]:
    """Feed enc [1, T, D] in pieces of the given sizes (cycled), then finish; → (tokens emitted, frames fed) after each
    call, checking on the way that the buffer holds exactly the frames fed and no token halted beyond them."""
    fed, log, k = 0, [], 0
    while fed < enc.size(1):
        size = sizes[k % len(sizes)]
        k += 1
        new = stream.accept(enc[:, fed : fed + size])
        fed = min(fed + size, enc.size(1))
        assert stream.memory.size(1) == stream.arrived == fed
        assert all(t.arrived == fed and t.frame < fed for t in new)
        log.append((len(stream.emitted), fed))
    stream.finish()
    log.append((len(stream.emitted), fed))
    return log


@dataclass
class Trained:
    """The toy LAS + MoChA model after training, its data, and its soft training loss before/after."""

    model: AttentionModel
    feats: torch.Tensor
    feat_lens: torch.Tensor
    targets: torch.Tensor
    target_lens: torch.Tensor
    labels: list[list[int]]
    first: float
    last: float


def overfit(model: AttentionModel, batch: tuple, lr: float, check_every: int,
            good_enough: Callable[[AttentionModel, float, float], bool]) -> Trained:
    """Adam on one toy `batch` (spoken_batch's five parts) for at most 400 steps; every `check_every` steps, in eval mode
    (hard attention, what decoding uses), stop once greedy decoding gets every label sequence and
    `good_enough(model, last soft loss, first soft loss)`."""
    feats, feat_lens, targets, target_lens, labels = batch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.no_grad():
        first = model.train().compute_loss(feats, feat_lens, targets, target_lens)[0].item()
    for step in range(1, 401):
        model.train()
        loss, _ = model.compute_loss(feats, feat_lens, targets, target_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % check_every == 0:
            model.eval()
            if [h.tokens for h in model.decode(feats, feat_lens)] == labels and good_enough(model, loss.item(), first):
                break
    model.eval()
    return Trained(model, feats, feat_lens, targets, target_lens, labels, first, loss.item())


def assert_stream_equals_offline_greedy(model: AttentionModel, enc: torch.Tensor, lens: torch.Tensor, always_halts: bool,
                                        patterns: list[list[int]]) -> None:
    """The online stream (fed whole or in the given piece patterns) emits offline greedy's tokens, frames and score;
    some tokens come out before the input ends, and some steps wait for frames (unless the reader always halts)."""
    model.cfg.max_len_ratio = 1.5
    with torch.no_grad():
        offline = model.greedy(enc, lens)
    waited = early = 0
    for b in range(enc.size(0)):
        e = enc[b : b + 1, : int(lens[b])]
        results = []
        for sizes in [[int(lens[b])], *patterns]:
            stream = monotonic_stream(model.decoder, max_len_ratio=1.5)
            log = feed(stream, e, sizes)
            hyp = stream.hypothesis()
            results.append((hyp.tokens, hyp.token_frames, [t.token for t in stream.emitted]))
            assert hyp.score == pytest.approx(offline[b].score, abs=1e-4)
            if sizes == [1]:
                early += sum(t.arrived < e.size(1) for t in stream.emitted)
                waited += sum(1 for (x, _), (y, _) in zip(log, log[1:]) if x == y)
        assert stream.done and stream.emitted[-1].token == EOS
        assert all(r == results[0] for r in results), results
        assert results[0][:2] == (offline[b].tokens, offline[b].token_frames)
    assert early > 0  # tokens really came out before the end
    if always_halts:
        assert len(stream.emitted) == stream._max_len() + 1  # the length limit ended decoding (at eos)
    else:
        assert waited > 0  # and steps really waited for frames
