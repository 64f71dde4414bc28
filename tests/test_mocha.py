"""MoChA: the soft expected alignment against a loop of its recurrence, hard attention as the limit of the soft one,
an online decoder that reads only arrived frames and gives the same result for any feeding, and a LAS + MoChA
model that overfits a toy set."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from malsori.config import load_config
from malsori.decode.mocha import MonotonicGreedyStream, MonotonicStream
from malsori.decode.options import DecodeOptions
from malsori.models.aed import AttentionConfig, AttentionModel
from malsori.models.registry import build_model
from malsori.recipes import resolve_recipe
from malsori.nn.lstm import LSTMConfig, LSTMEncoder
from malsori.nn.mocha import (MonotonicChunkwiseAttention, chunk_attention, expected_alignment, hard_monotonic_step,
                              initial_alignment)
from malsori.tokenizer import SPECIAL_IDS

from helpers.attention import (F_DIM, REORDER, VOCAB, FrameLocalEncoder, Trained, assert_steps_equal_forward,
                               assert_stream_equals_offline_greedy, feed, overfit, spoken_batch, toy_batch)

SOS, EOS = SPECIAL_IDS.sos, SPECIAL_IDS.eos


def loop_alignment(p: list[float], alpha_prev: list[float]) -> list[float]:
    """The recurrence of Raffel et al. written out: α_j = p_j Σ_{k≤j} α_prev,k Π_{k≤l<j} (1 − p_l)."""
    out = []
    for j in range(len(p)):
        total = 0.0
        for k in range(j + 1):
            prod = 1.0
            for l in range(k, j):
                prod *= 1.0 - p[l]
            total += alpha_prev[k] * prod
        out.append(p[j] * total)
    return out


def loop_chunk(alpha: list[float], u: list[float], w: int) -> list[float]:
    """β_j = Σ_{k=j}^{j+w−1} α_k exp(u_j) / Σ_{l=k−w+1}^{k} exp(u_l), over the frames given."""
    t = len(alpha)
    beta = []
    for j in range(t):
        total = 0.0
        for k in range(j, min(j + w, t)):
            den = sum(math.exp(u[l]) for l in range(max(0, k - w + 1), k + 1))
            total += alpha[k] * math.exp(u[j]) / den
        beta.append(total)
    return beta


def test_expected_alignment_matches_loop_and_ignores_padding() -> None:
    torch.manual_seed(0)
    lens = torch.tensor([7, 4, 1])
    n, t, w = 3, 7, 3
    mask = torch.arange(t)[None] < lens[:, None]
    log_alpha = initial_alignment(n, t)
    alpha_loop = [[1.0] + [0.0] * (int(m) - 1) for m in lens]
    for step in range(4):
        e = torch.randn(n, t, dtype=torch.float64) * 2 - 0.5
        u = torch.randn(n, t, dtype=torch.float64)
        e[:, 5:] = 1e3  # padding with energies that would grab all the mass if it were read
        log_alpha = expected_alignment(e, mask, log_alpha)
        beta = chunk_attention(log_alpha, u, mask, w)
        alpha = log_alpha.exp()
        for b, m in enumerate(lens.tolist()):
            alpha_loop[b] = loop_alignment(torch.sigmoid(e[b, :m]).tolist(), alpha_loop[b])
            torch.testing.assert_close(alpha[b, :m], torch.tensor(alpha_loop[b], dtype=torch.float64), atol=1e-12, rtol=1e-9)
            torch.testing.assert_close(beta[b, :m], torch.tensor(loop_chunk(alpha_loop[b], u[b, :m].tolist(), w),
                                                                 dtype=torch.float64), atol=1e-12, rtol=1e-9)
        assert (alpha[~mask] == 0).all() and (beta[~mask] == 0).all()
        assert (alpha.sum(-1) <= 1 + 1e-12).all() and (alpha.sum(-1) > 0).all()
        torch.testing.assert_close(beta.sum(-1), alpha.sum(-1))  # β only spreads each α_k over its chunk


def test_soft_attention_gradients_stay_finite_when_saturated() -> None:
    """Log space: energies of ±80 (p = 0 or 1 in float64) over many frames and steps give finite gradients."""
    torch.manual_seed(1)
    att = MonotonicChunkwiseAttention(8, 6, 16, chunk=2, noise_std=0.0).double()
    with torch.no_grad():
        att.gain.fill_(300.0)
    memory = torch.randn(2, 300, 6, dtype=torch.float64, requires_grad=True)
    lens = torch.tensor([300, 123])
    mask = torch.arange(300)[None] < lens[:, None]
    keys = att.key(memory)
    log_alpha, total = initial_alignment(2, 300), 0.0
    for _ in range(5):
        context, beta, log_alpha = att.soft(torch.randn(2, 8, dtype=torch.float64), keys, memory, mask, log_alpha)
        total = total + context.sum()
    total.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in att.parameters())
    assert memory.grad.isfinite().all() and (memory.grad[1, 123:] == 0).all()


def test_hard_attention_is_the_limit_of_the_soft_one() -> None:
    torch.manual_seed(2)
    n, t, w = 4, 12, 3
    lens = torch.tensor([12, 9, 12, 5])
    mask = torch.arange(t)[None] < lens[:, None]
    log_alpha, prev = initial_alignment(n, t), torch.zeros(n, dtype=torch.long)
    off_the_end = 0
    for step in range(6):
        e = torch.where(torch.rand(n, t) < 0.4, 60.0, -60.0).double()
        e[2] = -60.0 if step == 3 else e[2]  # row 2 runs past the end at step 3 and must stay there
        u = torch.randn(n, t, dtype=torch.float64)
        log_alpha = expected_alignment(e, mask, log_alpha)
        beta = chunk_attention(log_alpha, u, mask, w)
        weights, prev, found = hard_monotonic_step(e, u, prev, lens, w)
        torch.testing.assert_close(beta, weights, atol=1e-9, rtol=0)
        onehot = torch.zeros(n, t + 1, dtype=torch.float64).scatter(1, prev[:, None], 1.0)[:, :t] * found[:, None]
        torch.testing.assert_close(log_alpha.exp(), onehot, atol=1e-9, rtol=0)
        assert (prev[~found] == lens[~found]).all()
        off_the_end += int((~found).sum())
    assert off_the_end >= 1 and not bool(found[2])


def test_hard_step_halts_at_first_selected_frame() -> None:
    e = torch.tensor([[1.0, -1.0, -2.0, 0.5, 3.0, 2.0], [1.0, -1.0, -2.0, -0.5, -3.0, 2.0]])
    u = torch.zeros(2, 6)
    weights, index, found = hard_monotonic_step(e, u, torch.tensor([1, 1]), torch.tensor([6, 5]), chunk=2)
    assert index.tolist() == [3, 5] and found.tolist() == [True, False]
    torch.testing.assert_close(weights[0], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]))
    assert (weights[1] == 0).all()


# ---------------------------------------------------------------------------------------------- LAS + MoChA


def mocha_model(seed: int = 0, chunk: int = 2, noise: float = 1.0) -> AttentionModel:
    torch.manual_seed(seed)
    encoder = LSTMEncoder(LSTMConfig(input_dim=F_DIM, hidden_size=48, num_layers=2, bidirectional=False, dropout=0.0,
                                     reduction="stack", reduction_factor=4))
    cfg = AttentionConfig(decoder="las", las_attention="mocha", mocha_chunk=chunk, mocha_noise=noise, num_layers=1,
                          embed_dim=32, hidden_size=64, attention_dim=32, dropout=0.0, label_smoothing=0.0,
                          ctc_weight=0.0, max_len_ratio=1.0)
    return AttentionModel(encoder, VOCAB, cfg)


def firing(model: AttentionModel, gain: float = 4.0, bias: float = 0.0) -> AttentionModel:
    """An untrained model whose monotonic reader halts on about half the frames (r = 0, larger gain); with a large
    bias it halts at once every step, so the length limit decides when decoding ends."""
    with torch.no_grad():
        model.decoder.attention.bias.fill_(bias)
        model.decoder.attention.gain.fill_(gain)
    return model.eval()


@pytest.mark.parametrize("attention", ["mocha", "location"])
def test_step_by_step_equals_eval_forward_and_select_state(attention: str) -> None:
    """Beam search relies on it: in eval mode, init_state + step (hard MoChA) = forward, also after reordering;
    the location-aware LAS, sharing the refactored step, keeps the contract too."""
    model = firing(mocha_model(seed=3))
    if attention == "location":
        model = AttentionModel(model.encoder, VOCAB, dataclasses.replace(model.cfg, las_attention="location")).eval()
    dec = model.decoder
    torch.manual_seed(4)
    memory = torch.randn(3, 9, model.encoder.output_dim)
    memory_lens = torch.tensor([9, 5, 7])
    memory[1, 5:] = 100.0
    ys = torch.randint(3, VOCAB, (3, 6))
    ys[:, 0] = SOS
    state = assert_steps_equal_forward(dec, memory, memory_lens, ys)
    assert (state["frame"] < memory_lens[REORDER]).all()
    if attention == "mocha":
        assert (state["index"] <= memory_lens[REORDER]).all()
    else:
        assert (state["frame"] == state["attn"].argmax(-1)).all()


@pytest.fixture(scope="module")
def trained() -> Trained:
    """Train a tiny LAS + MoChA (soft attention) on 16 toy utterances until hard greedy decoding gets them all.

    Toy settings: r = −1 as the utterances are ~12 encoder frames long, and noise std 4: with unit noise this toy
    is memorized through the fractional soft attention before p ever reaches 0.5, and the hard reader never halts.
    """
    torch.manual_seed(0)
    cfg = AttentionConfig(decoder="las", las_attention="mocha", mocha_chunk=2, mocha_noise=4.0, mocha_init_bias=-1.0,
                          num_layers=1, embed_dim=32, hidden_size=64, attention_dim=32, dropout=0.0,
                          label_smoothing=0.0, ctc_weight=0.0, max_len_ratio=1.0)
    model = AttentionModel(FrameLocalEncoder(), VOCAB, cfg)
    return overfit(model, spoken_batch(), lr=1e-2, check_every=25, good_enough=lambda m, last, first: last < first / 10)


def test_las_mocha_overfits_toy_set_and_streams_it(trained: Trained) -> None:
    """Trained on the soft attention, decoded with the hard one (greedy, beam, and online from 2-frame pieces)."""
    model, feats, feat_lens, labels = trained.model, trained.feats, trained.feat_lens, trained.labels
    with torch.no_grad():
        hard_loss, hard_stats = model.compute_loss(feats, feat_lens, trained.targets, trained.target_lens)
        hyps = model.decode(feats, feat_lens)
        enc, lens = model.encoder(feats, feat_lens)
    assert trained.last < trained.first / 10 and hard_loss < trained.first / 10, (trained, hard_loss)
    assert hard_stats["acc"] == 1.0 and [h.tokens for h in hyps] == labels
    assert [h.tokens for h in model.decode(feats, feat_lens, DecodeOptions("beam", beam_size=3))] == labels
    early = 0
    for b in range(len(labels)):
        stream = MonotonicGreedyStream(model.decoder, max_len_ratio=model.cfg.max_len_ratio)
        feed(stream, enc[b : b + 1, : int(lens[b])], [2])
        assert stream.tokens == labels[b]
        assert [t.frame for t in stream.emitted[:-1]] == hyps[b].token_frames
        frames = [t.frame for t in stream.emitted]
        assert frames == sorted(frames)  # monotonic
        early += sum(t.arrived < int(lens[b]) for t in stream.emitted[:-1])
    assert early > len(labels)  # tokens come out before the utterance has ended


def untrained_or_trained(which: str, trained: Trained) -> tuple[AttentionModel, torch.Tensor, torch.Tensor]:
    """(model, encoder output, lengths): untrained models with a firing reader on LSTM encodings, or the toy model."""
    if which == "trained":
        model, feats, feat_lens = copy.deepcopy(trained.model), trained.feats[:6], trained.feat_lens[:6]
    else:
        seed, bias = {"untrained": (0, 0.0), "untrained-2": (1, 0.0), "always-halts": (2, 30.0)}[which]
        model = firing(mocha_model(seed=seed), bias=bias)
        feats, feat_lens, _, _ = toy_batch(seed=seed + 20)
    with torch.no_grad():
        enc, lens = model.encoder(feats, feat_lens)
    return model, enc, lens


@pytest.mark.parametrize("which", ["untrained", "untrained-2", "always-halts", "trained"])
def test_stream_equals_offline_greedy_for_any_piece_sizes(which: str, trained: Trained) -> None:
    model, enc, lens = untrained_or_trained(which, trained)
    assert_stream_equals_offline_greedy(model, enc, lens, which == "always-halts", patterns=[[1], [2], [3, 1, 5], [7]])


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_causality_tokens_do_not_depend_on_frames_after_their_halt(which: str, trained: Trained) -> None:
    """With k frames arrived, the stream emits exactly the tokens (and halts, all < k) that offline decoding of the
    full input gives first — for the true continuation and for a completely different one: no emitted token can
    depend on a frame that had not arrived, and none is emitted that a later frame could still change."""
    model, enc, lens = untrained_or_trained(which, trained)
    model.cfg.max_len_ratio = 3.0  # so that steps wait for their halt, not for the length limit
    torch.manual_seed(7)
    n_checked = waits = 0
    for b in range(enc.size(0)):
        t = int(lens[b])
        e = enc[b : b + 1, :t]
        for k in range(1, t):
            other = torch.cat((e[:, :k], torch.randn(1, t - k, e.size(2)) * 3), 1)
            for full in (e, other):
                stream = MonotonicGreedyStream(model.decoder, max_len_ratio=3.0)
                stream.accept(full[:, :k])
                with torch.no_grad():
                    (off,) = model.greedy(full, torch.tensor([t]))
                early = [(x.token, x.frame) for x in stream.emitted]
                assert all(x.frame < k and x.arrived == k for x in stream.emitted)
                assert early == list(zip(off.tokens + [EOS], off.token_frames + [t - 1]))[: len(early)]
                n_checked += len(early)
                waits += len(early) < len(off.tokens) and len(early) < 3 * k  # waiting for a halt, not the limit
    assert n_checked > 0 and waits > 0  # tokens came out early, and some steps had to wait for their frames


def test_stream_rejects_location_attention_and_input_after_finish() -> None:
    model = firing(mocha_model())
    stream = MonotonicGreedyStream(model.decoder)
    stream.accept(torch.randn(1, 3, model.encoder.output_dim))
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.accept(torch.randn(1, 3, model.encoder.output_dim))
    las = AttentionModel(model.encoder, VOCAB, AttentionConfig(decoder="las", num_layers=1, hidden_size=16))
    with pytest.raises(ValueError):
        MonotonicGreedyStream(las.decoder)
    with pytest.raises(TypeError):  # the shared base has no decoder step of its own
        MonotonicStream()


def test_recipe_parses_and_builds() -> None:
    from malsori.train import TrainConfig

    cfg = load_config(TrainConfig, resolve_recipe("streaming/mocha_las"))
    assert cfg.model.head == "attention" and cfg.model.attention.las_attention == "mocha"
    model = build_model(cfg.model, 80, 40)
    assert model.decoder.kind == "mocha"
    params = sum(p.numel() for p in model.parameters())
    assert 3e6 < params < 7e6, params
