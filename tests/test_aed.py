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

from helpers.attention import F_DIM, FRAMES, LABELS, VOCAB, assert_steps_equal_forward, toy_batch

SOS, EOS = SPECIAL_IDS.sos, SPECIAL_IDS.eos



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


@pytest.mark.parametrize("encoder", ["lstm", "transformer", "conformer"])
def test_build_model_from_config(encoder: str) -> None:
    """The registry builds, parameter for parameter, the model its config sections describe when put together by
    hand: the named encoder with the features' input size, the attention head with its decoder and CTC layer."""
    from malsori.nn.decoders import LASDecoder

    cfg = ModelConfig(encoder=encoder, head="attention")
    cfg.attention = dataclasses.replace(cfg.attention, decoder="las", num_layers=1, hidden_size=32, embed_dim=16)
    torch.manual_seed(3)
    model = build_model(cfg, F_DIM, VOCAB)
    classes = {"lstm": LSTMEncoder, "transformer": TransformerEncoder, "conformer": ConformerEncoder}
    torch.manual_seed(3)
    by_hand = AttentionModel(classes[encoder](dataclasses.replace(getattr(cfg, encoder), input_dim=F_DIM)), VOCAB, cfg.attention)
    assert type(model.encoder) is classes[encoder] and isinstance(model.decoder, LASDecoder)
    assert model.ctc is not None and model.ctc.out_features == VOCAB
    mine, theirs = model.state_dict(), by_hand.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)


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
