"""LSTM and Transformer encoders: output lengths, padding invariance, save/load, BiLSTM final states."""

from __future__ import annotations

import pytest
import torch

from malsori.nn.decoders import summarize
from malsori.nn.lstm import LSTMConfig, LSTMEncoder
from malsori.nn.transformer import TransformerEncoder, TransformerEncoderConfig

F_DIM = 20


def tiny_lstm(**kw) -> LSTMEncoder:
    base = dict(input_dim=F_DIM, hidden_size=12, num_layers=3, dropout=0.0)
    return LSTMEncoder(LSTMConfig(**{**base, **kw}))


def tiny_transformer(**kw) -> TransformerEncoder:
    base = dict(input_dim=F_DIM, d_model=16, num_layers=2, num_heads=2, subsampling_channels=4, dropout=0.0, attention_dropout=0.0)
    return TransformerEncoder(TransformerEncoderConfig(**{**base, **kw}))


ENCODERS = {
    "lstm-stack4": lambda: tiny_lstm(reduction="stack", reduction_factor=4),
    "lstm-pyramid4": lambda: tiny_lstm(reduction="pyramid", reduction_factor=4),
    "lstm-uni-proj-stack2": lambda: tiny_lstm(bidirectional=False, projection=10, reduction_factor=2),
    "lstm-none": lambda: tiny_lstm(reduction="none"),
    "transformer": tiny_transformer,
}


def expected_lengths(name: str, t: torch.Tensor) -> torch.Tensor:
    if name.startswith("transformer"):  # two unpadded (kernel 3, stride 2) convs
        return ((t - 3) // 2 + 1 - 3) // 2 + 1
    k = {"lstm-stack4": 4, "lstm-pyramid4": 4, "lstm-uni-proj-stack2": 2, "lstm-none": 1}[name]
    return -(-t // k)  # ceil(t / k)


@pytest.mark.parametrize("name", ENCODERS)
def test_output_lengths_and_shapes(name: str) -> None:
    torch.manual_seed(0)
    enc = ENCODERS[name]().eval()
    lens = torch.tensor([7, 8, 9, 10, 23, 33])
    feats = torch.randn(len(lens), int(lens.max()), F_DIM)
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
    assert out_lens.tolist() == expected_lengths(name, lens).tolist()
    assert out.shape == (len(lens), int(out_lens.max()), enc.output_dim)
    assert enc.subsampling_factor == {"lstm-none": 1, "lstm-uni-proj-stack2": 2}.get(name, 4)


@pytest.mark.parametrize("name", ENCODERS)
def test_padding_invariance(name: str) -> None:
    """Real frames of a padded batch equal one-at-a-time runs; garbage in the padding changes nothing."""
    torch.manual_seed(1)
    enc = ENCODERS[name]().eval()
    lens = torch.tensor([31, 18, 25])
    feats = torch.randn(3, 31, F_DIM)
    for b, n in enumerate(lens.tolist()):
        feats[b, n:] = 1e3 * torch.randn(31 - n, F_DIM)  # loud garbage in the padding
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
        for b, n in enumerate(lens.tolist()):
            one, one_len = enc(feats[b : b + 1, :n], lens[b : b + 1])
            assert one_len.item() == out_lens[b].item()
            torch.testing.assert_close(out[b, : one_len.item()], one[0], atol=1e-5, rtol=1e-4)
            assert torch.all(out[b, one_len.item() :] == 0)


@pytest.mark.parametrize("name", ENCODERS)
def test_state_dict_round_trip(name: str) -> None:
    torch.manual_seed(2)
    enc = ENCODERS[name]().eval()
    torch.manual_seed(3)
    other = ENCODERS[name]().eval()
    feats, lens = torch.randn(2, 20, F_DIM), torch.tensor([20, 15])
    with torch.no_grad():
        assert not torch.allclose(enc(feats, lens)[0], other(feats, lens)[0])
        other.load_state_dict(enc.state_dict())
        torch.testing.assert_close(enc(feats, lens)[0], other(feats, lens)[0], atol=0, rtol=0)


def test_bilstm_summary_is_final_states() -> None:
    """summarize(..., "bilstm") picks the BiLSTM's final forward and backward states (h_n of nn.LSTM)."""
    torch.manual_seed(4)
    enc = tiny_lstm(num_layers=1, reduction="none").eval()
    assert enc.bidirectional_output
    lens = torch.tensor([13, 9])
    feats = torch.randn(2, 13, F_DIM)
    with torch.no_grad():
        out, out_lens = enc(feats, lens)
        v = summarize(out, out_lens, "bilstm")
        for b, n in enumerate(lens.tolist()):
            _, (h_n, _) = enc.layers[0](feats[b : b + 1, :n])
            torch.testing.assert_close(v[b], torch.cat((h_n[0, 0], h_n[1, 0])), atol=1e-6, rtol=1e-5)


def test_bad_reduction_rejected() -> None:
    with pytest.raises(ValueError):
        tiny_lstm(reduction="pyramid", reduction_factor=3)
    with pytest.raises(ValueError):
        tiny_lstm(num_layers=2, reduction="pyramid", reduction_factor=4)  # needs 3 layers for two halvings


@pytest.mark.parametrize("how", ["bilstm", "last", "mean"])
def test_summary_ignores_padding(how: str) -> None:
    torch.manual_seed(5)
    memory, lens = torch.randn(2, 7, 6), torch.tensor([7, 4])
    memory[1, 4:] = 50.0
    v = summarize(memory, lens, how)
    torch.testing.assert_close(v[1:], summarize(memory[1:, :4], lens[1:], how))
    expected = {"last": memory[1, 3], "mean": memory[1, :4].mean(0), "bilstm": torch.cat((memory[1, 3, :3], memory[1, 0, 3:]))}
    torch.testing.assert_close(v[1], expected[how])
