"""Conformer encoder + CTC model: shapes, padding invariance, learning, save/load, registry, size."""

from __future__ import annotations

import pytest
import torch

from malsori.config import from_dict
from malsori.decode.options import DecodeOptions
from malsori.errors import ConfigError
from malsori.models import CTCModel, ModelConfig, build_model, register_encoder
from malsori.models.registry import ENCODERS
from malsori.nn import ConformerConfig, ConformerEncoder, Conv2dSubsampling, MultiHeadSelfAttention, length_mask
from malsori.nn.attention import RotaryEmbedding, apply_rotary

TINY = ConformerConfig(
    d_model=64, num_layers=2, num_heads=4, ff_expansion=2, conv_kernel=7, dropout=0.0, subsampling_channels=16
)


def tiny_model(vocab: int = 12, seed: int = 0, **overrides) -> CTCModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(conformer=ConformerConfig(**{**TINY.__dict__, **overrides}))
    return build_model(cfg, input_dim=80, vocab_size=vocab)


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_subsampling_lengths_match_conv_arithmetic(factor: int) -> None:
    sub = Conv2dSubsampling(80, 32, factor=factor, channels=8)
    assert sub.subsampling_factor == factor
    for n in [sub.min_frames, sub.min_frames + 1, 50, 51, 52, 53, 99, 100, 101]:
        y, lens = sub(torch.randn(1, n, 80), torch.tensor([n]))
        assert y.shape == (1, int(lens), 32)
        assert n // factor - 2 <= int(lens) <= n // factor
    _, lens = sub(torch.randn(2, 3, 80), torch.tensor([3, 0]))  # shorter than the receptive field
    assert lens.tolist() == [0, 0]


def test_encoder_output_lengths_formula() -> None:
    enc = ConformerEncoder(TINY).eval()
    lengths = torch.tensor([100, 57, 8])
    out, out_lens = enc(torch.randn(3, 100, 80), lengths)
    expected = ((lengths - 3) // 2 + 1 - 3) // 2 + 1
    assert out_lens.tolist() == expected.tolist()
    assert out.shape == (3, int(expected.max()), TINY.d_model) and enc.output_dim == TINY.d_model


def test_padding_does_not_change_outputs() -> None:
    model = tiny_model(seed=1).eval()
    lengths = torch.tensor([120, 77, 31])
    feats = torch.randn(3, 120, 80) * 3.0  # padding frames hold garbage, not zeros
    with torch.no_grad():
        batched, out_lens = model(feats, lengths)
        enc, _ = model.encoder(feats, lengths)
        for b, n in enumerate(lengths.tolist()):
            single, single_len = model(feats[b : b + 1, :n], lengths[b : b + 1])
            m = int(single_len)
            assert m == int(out_lens[b])
            torch.testing.assert_close(batched[b, :m], single[0], atol=1e-5, rtol=1e-5)
            assert enc[b, m:].abs().max().item() == 0 if m < enc.size(1) else True


def test_attention_mask_with_padding_stays_finite() -> None:
    # Chunked attention (for streaming) plus padding can leave a padded query with no visible key.
    att = MultiHeadSelfAttention(32, 4).eval()
    t, chunk = 12, 4
    idx = torch.arange(t)
    chunk_mask = (idx[None, :] // chunk) == (idx[:, None] // chunk)  # each chunk sees only itself
    mask = length_mask(torch.tensor([12, 5]), t)
    x = torch.randn(2, t, 32)
    y = att(x, mask, chunk_mask)
    assert torch.isfinite(y).all()
    single = att(x[1:, :5], None, chunk_mask[:5, :5])
    torch.testing.assert_close(y[1, :5], single[0], atol=1e-5, rtol=1e-5)
    enc = ConformerEncoder(TINY).eval()
    out, lens = enc(torch.randn(2, 40, 80), torch.tensor([40, 0]))  # an empty utterance in the batch
    assert torch.isfinite(out).all() and lens.tolist()[1] == 0


def test_rotary_scores_depend_only_on_offset() -> None:
    rope = RotaryEmbedding(16)
    q, k = torch.randn(16), torch.randn(16)

    def score(i: int, j: int) -> torch.Tensor:
        cos, sin = rope(torch.tensor([i, j]))
        qr = apply_rotary(q[None], cos[:1], sin[:1])
        kr = apply_rotary(k[None], cos[1:], sin[1:])
        return (qr * kr).sum()

    torch.testing.assert_close(score(3, 7), score(103, 107), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(3, 7), score(3, 9), atol=1e-3)


def test_loss_is_batch_mean_and_padding_invariant() -> None:
    model = tiny_model(seed=2).eval()
    feats, lengths = torch.randn(2, 90, 80), torch.tensor([90, 60])
    targets, target_lens = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    loss, stats = model.compute_loss(feats, lengths, targets, target_lens)
    assert loss.dim() == 0 and set(stats) >= {"loss", "ctc"} and stats["loss"] == pytest.approx(loss.item())
    singles = []
    for b in range(2):
        n, u = int(lengths[b]), int(target_lens[b])
        single, _ = model.compute_loss(feats[b : b + 1, :n], lengths[b : b + 1], targets[b : b + 1, :u], target_lens[b : b + 1])
        singles.append(single.item())
    assert loss.item() == pytest.approx(sum(singles) / 2, rel=1e-5)


def test_overfits_four_utterances_and_greedy_recovers_labels() -> None:
    torch.manual_seed(0)
    model = tiny_model(vocab=10, seed=3)
    feats = torch.randn(4, 48, 80)
    lengths = torch.tensor([48, 40, 32, 48])
    labels = [[1, 2, 3], [4, 5, 6, 7], [8, 9], [3, 1, 4, 1]]
    targets = torch.zeros(4, 4, dtype=torch.long)
    for b, lab in enumerate(labels):
        targets[b, : len(lab)] = torch.tensor(lab)
    target_lens = torch.tensor([len(lab) for lab in labels])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    first = None
    for _ in range(100):
        loss, _ = model.compute_loss(feats, lengths, targets, target_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.1 * first
    model.eval()
    hyps = model.decode(feats, lengths)
    assert [h.tokens for h in hyps] == labels
    assert [h.tokens for h in model.decode(feats, lengths, DecodeOptions(method="beam", beam_size=4))] == labels


def test_state_dict_round_trip_gives_identical_outputs(tmp_path) -> None:
    model = tiny_model(seed=4).eval()
    feats, lengths = torch.randn(2, 50, 80), torch.tensor([50, 41])
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = tiny_model(seed=5).eval()
    with torch.no_grad():
        assert not torch.allclose(model(feats, lengths)[0], fresh(feats, lengths)[0])
        fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
        torch.testing.assert_close(model(feats, lengths)[0], fresh(feats, lengths)[0], atol=0, rtol=0)


def test_default_config_is_about_five_million_parameters() -> None:
    for vocab in (50, 500):
        model = build_model(ModelConfig(), input_dim=80, vocab_size=vocab)
        n = sum(p.numel() for p in model.parameters())
        assert 4.8e6 <= n <= 5.6e6, n


def test_registry_names_unknown_fields_and_accepts_new_encoders() -> None:
    with pytest.raises(ConfigError, match="model.encoder"):
        build_model(ModelConfig(encoder="nope"), 80, 10)
    with pytest.raises(ConfigError, match="model.head"):
        build_model(ModelConfig(head="nope"), 80, 10)
    cfg = from_dict(ModelConfig, {"conformer": {"d_model": 32, "num_layers": 1, "num_heads": 2}})
    assert isinstance(cfg.conformer, ConformerConfig) and cfg.conformer.d_model == 32

    class MeanPool(torch.nn.Module):
        output_dim = 80

        def forward(self, feats, lengths):
            return feats, lengths

    try:
        register_encoder("identity-test")(lambda cfg, input_dim: MeanPool())
        model = build_model(ModelConfig(encoder="identity-test"), 80, 7)
        log_probs, lens = model(torch.randn(1, 5, 80), torch.tensor([5]))
        assert log_probs.shape == (1, 5, 7) and lens.tolist() == [5]
    finally:
        ENCODERS.pop("identity-test", None)
    with pytest.raises(ConfigError, match="method"):
        tiny_model().decode(torch.randn(1, 20, 80), torch.tensor([20]), DecodeOptions(method="nope"))
