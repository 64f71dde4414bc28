"""Chunked encoders: chunk-by-chunk streaming equals the full-utterance forward under the same chunk mask."""

from __future__ import annotations

import pytest
import torch

from malsori.errors import ConfigError
from malsori.nn.chunked import ChunkConfig, chunk_mask
from malsori.nn.conformer import ConformerConfig, ConformerEncoder
from malsori.nn.transformer import TransformerEncoder, TransformerEncoderConfig


def _conformer(causal: bool = True, factor: int = 4) -> ConformerEncoder:
    torch.manual_seed(0)
    cfg = ConformerConfig(input_dim=20, d_model=32, num_layers=2, num_heads=2, conv_kernel=5, dropout=0.0,
                          subsampling_factor=factor, subsampling_channels=8, chunk=ChunkConfig(causal=causal))
    return ConformerEncoder(cfg).eval()


def _transformer() -> TransformerEncoder:
    torch.manual_seed(0)
    cfg = TransformerEncoderConfig(input_dim=20, d_model=32, num_layers=2, num_heads=2, dropout=0.0,
                                   attention_dropout=0.0, subsampling_channels=8)
    return TransformerEncoder(cfg).eval()


def _stream(encoder, feats: torch.Tensor, pieces: list[int], chunk: int, left: int, right: int = 0) -> torch.Tensor:
    """Feed feats [1, T, F] in pieces of the given sizes (cycled), then flush."""
    state, outs, start, i = None, [], 0, 0
    while start < feats.size(1):
        n = pieces[i % len(pieces)]
        out, state = encoder.forward_chunk(feats[:, start : start + n], state, chunk, left, right_context=right)
        outs.append(out)
        start, i = start + n, i + 1
    out, state = encoder.forward_chunk(feats[:, :0], state, chunk, left, final=True, right_context=right)
    outs.append(out)
    return torch.cat(outs, dim=1)


def test_chunk_mask_shape_and_limits():
    m = chunk_mask(6, 2, left_chunks=1)
    # frame 4 (chunk 2) sees chunks 1 and 2 = frames 2..5; frame 1 (chunk 0) sees frames 0..1
    assert m[4].tolist() == [False, False, True, True, True, True]
    assert m[1].tolist() == [True, True, False, False, False, False]
    assert chunk_mask(4, 0).all()
    assert chunk_mask(5, 2, -1)[4].all()


@pytest.mark.parametrize("make", [_conformer, _transformer], ids=["conformer", "transformer"])
@pytest.mark.parametrize("chunk,left", [(1, -1), (4, -1), (3, 2), (4, 0)])
def test_streaming_equals_masked_full_forward(make, chunk, left):
    encoder = make()
    torch.manual_seed(1)
    feats = torch.randn(1, 157, 20)
    full, lengths = encoder(feats, torch.tensor([157]), chunk_size=chunk, left_chunks=left)
    for pieces in ([157], [1], [7, 13, 2], [40]):
        streamed = _stream(encoder, feats, pieces, chunk, left)
        assert streamed.shape == full.shape
        torch.testing.assert_close(streamed, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("make", [_conformer, _transformer], ids=["conformer", "transformer"])
@pytest.mark.parametrize("chunk,left,right", [(4, -1, 2), (3, 2, 1), (1, 0, 3), (2, 1, 5)])
def test_streaming_with_look_ahead_equals_full_forward(make, chunk, left, right):
    """Emformer-style look-ahead: chunk + `right` future frames per layer; streamed = the full forward's copies."""
    encoder = make()
    torch.manual_seed(1)
    feats = torch.randn(1, 157, 20)
    full, _ = encoder(feats, torch.tensor([157]), chunk_size=chunk, left_chunks=left, right_context=right)
    without, _ = encoder(feats, torch.tensor([157]), chunk_size=chunk, left_chunks=left)
    assert not torch.allclose(full, without, atol=1e-3), "the look-ahead must change the encodings"
    for pieces in ([157], [1], [7, 13, 2]):
        torch.testing.assert_close(_stream(encoder, feats, pieces, chunk, left, right), full, atol=1e-4, rtol=1e-4)


def test_look_ahead_sees_exactly_right_context_frames():
    """With look-ahead R, chunk c's outputs change when frames up to (c+1)·S + R - 1 change, and not after."""
    encoder = _conformer()
    feats = torch.randn(1, 120, 20)
    chunk, right = 4, 2
    a, _ = encoder(feats, torch.tensor([120]), chunk_size=chunk, right_context=right)
    # encoder frame t reads input frames up to 4t + 6; chunk 0..3 (frames 0..15) + look-ahead 16, 17 → input ≤ 74
    later, inside = feats.clone(), feats.clone()
    later[:, 75:] += 5.0
    inside[:, 72:] += 5.0  # changes encoder frame 17 (the look-ahead of chunk 3)
    b, _ = encoder(later, torch.tensor([120]), chunk_size=chunk, right_context=right)
    c, _ = encoder(inside, torch.tensor([120]), chunk_size=chunk, right_context=right)
    torch.testing.assert_close(a[:, :16], b[:, :16])
    assert not torch.allclose(a[:, 12:16], c[:, 12:16])


def test_look_ahead_forward_is_padding_invariant():
    encoder = _conformer()
    feats = torch.randn(2, 130, 20)
    batch, lengths = encoder(feats, torch.tensor([130, 90]), chunk_size=3, left_chunks=2, right_context=2)
    alone, _ = encoder(feats[1:, :90], torch.tensor([90]), chunk_size=3, left_chunks=2, right_context=2)
    torch.testing.assert_close(batch[1:, : alone.size(1)], alone, atol=1e-5, rtol=1e-5)
    assert int(lengths[1]) == alone.size(1)


def test_streaming_exact_with_subsampling_6():
    encoder = _conformer(factor=6)
    feats = torch.randn(1, 121, 20)
    full, _ = encoder(feats, torch.tensor([121]), chunk_size=2, left_chunks=3)
    torch.testing.assert_close(_stream(encoder, feats, [5, 9], 2, 3), full, atol=1e-4, rtol=1e-4)


def test_chunked_frames_do_not_see_the_future():
    """Changing input after a chunk leaves every earlier chunk's output unchanged (causal conv + chunk mask)."""
    encoder = _conformer()
    feats = torch.randn(1, 120, 20)
    chunk = 4  # encoder frames = 16 input frames
    a, _ = encoder(feats, torch.tensor([120]), chunk_size=chunk)
    changed = feats.clone()
    changed[:, 64 + 3 :] += 5.0  # input frames from 67 on; output frames 0..15 read at most input frame 4*15+6 = 66
    b, _ = encoder(changed, torch.tensor([120]), chunk_size=chunk)
    torch.testing.assert_close(a[:, :16], b[:, :16])
    assert not torch.allclose(a[:, 16:], b[:, 16:])


def test_non_causal_conformer_refuses_to_stream():
    with pytest.raises(ConfigError, match="causal"):
        _conformer(causal=False).forward_chunk(torch.randn(1, 40, 20), None, 4)


def test_state_size_is_bounded_with_limited_left_context():
    encoder = _conformer()
    state = None
    for _ in range(30):
        _, state = encoder.forward_chunk(torch.randn(1, 16, 20), state, chunk_size=4, left_chunks=2)
    assert state.keys.shape[3] == 8  # left_chunks × chunk_size frames, however long the stream
    assert state.conv.shape[-1] == 4  # kernel - 1
    assert int(state.offset) > 100


def test_dynamic_chunk_training_samples_chunks_and_eval_is_full_context():
    encoder = _conformer()
    encoder.chunk.dynamic_chunk = True
    encoder.train()
    seen = {encoder.training_chunking()[0] for _ in range(200)}
    assert 0 in seen and len(seen) > 5 and max(seen) <= encoder.chunk.max_dynamic_chunk
    encoder.eval()
    assert encoder.training_chunking() == (0, -1, 0)
    encoder.chunk.right_context = 3
    encoder.train()
    rights = {encoder.training_chunking()[2] for _ in range(200)}
    assert rights == {0, 1, 2, 3}


@pytest.mark.parametrize("right", [0, 2])
def test_chunk_longer_than_the_utterance_is_full_context(right):
    """Dynamic-chunk training draws chunks longer than short utterances (1 s keyword clips at x8 subsampling are 12
    frames, chunks reach 16): one chunk then holds everything, no look-ahead copy exists, and the output equals full
    context."""
    assert bool(chunk_mask(3, 5).all())
    enc = _conformer()
    feats = torch.randn(2, 40, 20)
    lengths = torch.tensor([40, 30])
    with torch.no_grad():
        full, full_lens = enc(feats, lengths, chunk_size=0)
        long, long_lens = enc(feats, lengths, chunk_size=50, left_chunks=1, right_context=right)
    assert torch.equal(full_lens, long_lens)
    torch.testing.assert_close(long, full)
