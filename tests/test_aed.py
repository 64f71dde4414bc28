"""Attention encoder–decoders: each family overfits a toy set, step-by-step decoding equals teacher forcing,
padding does not change the loss, and a saved state dict reloads to identical outputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.decode.scorers import select_state
from malsori.models.aed import AttentionConfig, AttentionModel, decoder_io
from malsori.models.registry import ModelConfig, build_model
from malsori.nn.conformer import ConformerConfig, ConformerEncoder
from malsori.nn.lstm import LSTMConfig, LSTMEncoder
from malsori.nn.transformer import TransformerEncoder, TransformerEncoderConfig
from malsori.tokenizer import SPECIAL_IDS

SOS, EOS = SPECIAL_IDS.sos, SPECIAL_IDS.eos

F_DIM, VOCAB = 20, 10
LABELS = [[3, 4, 5], [6, 7, 8, 9], [5, 3], [9, 8, 7, 6, 5]]
FRAMES = [48, 40, 56, 36]


def toy_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 random feature sequences (padding filled with noise) and 4 short label sequences."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(4, max(FRAMES), F_DIM, generator=g)
    targets = torch.zeros(4, max(map(len, LABELS)), dtype=torch.long)
    for b, y in enumerate(LABELS):
        targets[b, : len(y)] = torch.tensor(y)
    return feats, torch.tensor(FRAMES), targets, torch.tensor([len(y) for y in LABELS])


def lstm_encoder(**kw) -> LSTMEncoder:
    return LSTMEncoder(LSTMConfig(**{**dict(input_dim=F_DIM, hidden_size=32, num_layers=2, dropout=0.0), **kw}))


def transformer_encoder() -> TransformerEncoder:
    return TransformerEncoder(TransformerEncoderConfig(input_dim=F_DIM, d_model=32, num_layers=2, num_heads=2,
                                                       subsampling_channels=8, dropout=0.0, attention_dropout=0.0))


def conformer_encoder() -> ConformerEncoder:
    return ConformerEncoder(ConformerConfig(input_dim=F_DIM, d_model=32, num_layers=2, num_heads=2, conv_kernel=5,
                                            subsampling_channels=8, dropout=0.0, attention_dropout=0.0))


TINY = dict(num_layers=2, embed_dim=32, hidden_size=64, attention_dim=32, location_filters=4, location_kernel=5,
            d_model=32, num_heads=2, ff_expansion=2, dropout=0.0, attention_dropout=0.0, label_smoothing=0.0,
            ctc_weight=0.0, max_len_ratio=2.0)

FAMILIES = {
    "fixed-bilstm": lambda: AttentionModel(lstm_encoder(reduction="stack", reduction_factor=4), VOCAB,
                                           AttentionConfig(**{**TINY, "decoder": "fixed"})),
    "las-pyramid-bilstm": lambda: AttentionModel(lstm_encoder(num_layers=3, reduction="pyramid", reduction_factor=4),
                                                 VOCAB, AttentionConfig(**{**TINY, "decoder": "las"})),
    "transformer": lambda: AttentionModel(transformer_encoder(), VOCAB, AttentionConfig(**{**TINY, "decoder": "transformer"})),
    "joint-ctc-conformer": lambda: AttentionModel(conformer_encoder(), VOCAB,
                                                  AttentionConfig(**{**TINY, "decoder": "transformer", "ctc_weight": 0.3})),
}


def build(name: str, seed: int = 0) -> AttentionModel:
    torch.manual_seed(seed)
    return FAMILIES[name]()


@pytest.mark.parametrize("name", FAMILIES)
def test_overfits_toy_set_and_decodes_it(name: str) -> None:
    model = build(name)
    feats, feat_lens, targets, target_lens = toy_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    first, first_stats = model.compute_loss(feats, feat_lens, targets, target_lens)
    for step in range(1, 201):  # until the loss has fallen 100-fold (checked every 10 steps), at most 200 steps
        model.train()
        loss, stats = model.compute_loss(feats, feat_lens, targets, target_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            model.eval()
            with torch.no_grad():
                last, stats = model.compute_loss(feats, feat_lens, targets, target_lens)
            if last < first / 100 and stats["ctc"] <= first_stats["ctc"] / 100:
                break
    assert last < first / 100 and stats["ctc"] <= first_stats["ctc"] / 100, (first_stats, stats)
    assert stats["acc"] == 1.0
    hyps = model.decode(feats, feat_lens, DecodeOptions(method="greedy"))
    assert [h.tokens for h in hyps] == LABELS
    for h, n in zip(hyps, model.encoder(feats, feat_lens)[1].tolist()):
        assert len(h.token_frames) == len(h.tokens) and all(0 <= f < n for f in h.token_frames)
        assert h.score < 0
    assert [h.tokens for h in model.decode(feats, feat_lens, DecodeOptions(method="beam", beam_size=3))] == LABELS
    if model.ctc is not None:
        for method in ("ctc_greedy", "ctc_beam", "rescore"):
            assert [h.tokens for h in model.decode(feats, feat_lens, DecodeOptions(method=method, beam_size=3))] == LABELS, method
        assert [h.tokens for h in model.decode(feats, feat_lens, DecodeOptions("beam", beam_size=3, ctc_weight=1.0))] == LABELS


@pytest.mark.parametrize("name", ["fixed-bilstm", "las-pyramid-bilstm", "transformer"])
def test_step_by_step_equals_teacher_forcing(name: str) -> None:
    """The contract beam search relies on: init_state + step over a prefix = forward's log-probs, also after
    select_state reorders and duplicates hypotheses half-way."""
    model = build(name, seed=3).eval()
    dec = model.decoder
    torch.manual_seed(4)
    memory = torch.randn(3, 9, model.encoder.output_dim)
    memory_lens = torch.tensor([9, 5, 7])
    memory[1, 5:] = 100.0  # padding must not matter
    ys = torch.randint(3, VOCAB, (3, 6))
    ys[:, 0] = SOS
    assert_steps_equal_forward(dec, memory, memory_lens, ys)


REORDER = torch.tensor([2, 0, 0, 1])  # select_state half-way: hypotheses reordered and duplicated


def assert_steps_equal_forward(dec, memory: torch.Tensor, memory_lens: torch.Tensor, ys: torch.Tensor) -> dict:
    """init_state + step over each prefix of ys [3, L] gives forward's log-probs, also after select_state(REORDER)
    half-way; → the final state (rows = REORDER). Shared with the MoChA decoder tests."""
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


@pytest.mark.parametrize("name", FAMILIES)
def test_loss_is_padding_invariant(name: str) -> None:
    """Eval-mode loss of the padded batch = mean of the losses of each utterance alone (unpadded)."""
    model = build(name, seed=5).eval()
    feats, feat_lens, targets, target_lens = toy_batch(seed=6)
    with torch.no_grad():
        batched, stats = model.compute_loss(feats, feat_lens, targets, target_lens)
        alone = []
        for b in range(4):
            t, u = FRAMES[b], len(LABELS[b])
            alone.append(model.compute_loss(feats[b : b + 1, :t], feat_lens[b : b + 1], targets[b : b + 1, :u],
                                            target_lens[b : b + 1])[0])
    torch.testing.assert_close(batched, torch.stack(alone).mean(), atol=1e-4, rtol=1e-5)
    if model.ctc is not None:
        assert stats["loss"] == pytest.approx(0.3 * stats["ctc"] + 0.7 * stats["att"], rel=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_state_dict_round_trip(name: str) -> None:
    model, other = build(name, seed=7).eval(), build(name, seed=8).eval()
    feats, feat_lens, targets, target_lens = toy_batch(seed=9)
    with torch.no_grad():
        before = model.compute_loss(feats, feat_lens, targets, target_lens)[0]
        assert other.compute_loss(feats, feat_lens, targets, target_lens)[0] != before
        other.load_state_dict(model.state_dict())
        assert other.compute_loss(feats, feat_lens, targets, target_lens)[0] == before
        a, b = model.decode(feats, feat_lens), other.decode(feats, feat_lens)
    assert [(h.tokens, h.score) for h in a] == [(h.tokens, h.score) for h in b]


def test_decoder_io_frames_targets() -> None:
    targets = torch.tensor([[5, 6, 7], [8, 0, 0]])
    ys_in, ys_out, lens = decoder_io(targets, torch.tensor([3, 1]))
    assert ys_in.tolist() == [[SOS, 5, 6, 7], [SOS, 8, 0, 0]]
    assert ys_out.tolist() == [[5, 6, 7, EOS], [8, EOS, -100, -100]]
    assert lens.tolist() == [4, 2]


def test_select_state_keeps_absent_entries() -> None:
    state = {"h": torch.arange(6.0).view(3, 2), "attn": None}
    out = select_state(state, torch.tensor([2, 2, 0]))
    assert out["attn"] is None and out["h"][:, 0].tolist() == [4.0, 4.0, 0.0]


@pytest.mark.skipif(not hasattr(ModelConfig(), "attention"), reason="ModelConfig has no attention/lstm/transformer fields yet")
def test_build_model_from_config() -> None:
    for encoder in ("lstm", "transformer", "conformer"):
        cfg = ModelConfig(encoder=encoder, head="attention")
        cfg.attention = dataclasses.replace(cfg.attention, decoder="las", num_layers=1, hidden_size=32, embed_dim=16)
        model = build_model(cfg, F_DIM, VOCAB)
        assert isinstance(model, AttentionModel) and model.ctc is not None
        assert model.encoder.cfg.input_dim == F_DIM


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_batched_equals_one_at_a_time(name: str) -> None:
    model = build(name, seed=10).eval()
    feats, feat_lens, _, _ = toy_batch(seed=11)
    with torch.no_grad():
        batched = model.decode(feats, feat_lens)
        for b, n in enumerate(FRAMES):
            (one,) = model.decode(feats[b : b + 1, :n], feat_lens[b : b + 1])
            assert (one.tokens, one.token_frames) == (batched[b].tokens, batched[b].token_frames)
            assert one.score == pytest.approx(batched[b].score, abs=1e-4)
