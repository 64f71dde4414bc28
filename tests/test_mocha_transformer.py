"""Transformer decoder with MoChA cross-attention: soft per-block alignments in training, the hard readers in eval
(step = forward, padding invariance), an online decoder that reads only arrived frames and equals offline greedy
for any feeding, and a tiny model that overfits a toy set."""

from __future__ import annotations

import copy

import pytest
import torch

from malsori.config import load_config
from malsori.decode.mocha import TransformerMonotonicStream
from malsori.decode.options import DecodeOptions
from malsori.models.aed import AttentionConfig, AttentionModel
from malsori.models.registry import build_model
from malsori.recipes import resolve_recipe
from malsori.tokenizer import SPECIAL_IDS

from helpers.attention import (VOCAB, FrameLocalEncoder, Trained, assert_stream_equals_offline_greedy, feed, overfit,
                               spoken_batch)

SOS, EOS = SPECIAL_IDS.sos, SPECIAL_IDS.eos
ENC_DIM = 24


def model_for(seed: int = 0, chunk: int = 2, noise: float = 1.0, bias: float = -4.0, layers: int = 2) -> AttentionModel:
    torch.manual_seed(seed)
    cfg = AttentionConfig(decoder="transformer", transformer_cross="mocha", mocha_chunk=chunk, mocha_noise=noise,
                          mocha_init_bias=bias, num_layers=layers, d_model=32, num_heads=2, ff_expansion=2,
                          attention_dim=32, dropout=0.0, attention_dropout=0.0, label_smoothing=0.0, ctc_weight=0.0,
                          max_len_ratio=1.5)
    return AttentionModel(FrameLocalEncoder(ENC_DIM), VOCAB, cfg)


def heads(model: AttentionModel) -> list:
    return [layer.cross_attention.mocha for layer in model.decoder.layers]


def firing(model: AttentionModel, gain: float = 4.0, bias: float = 0.0) -> AttentionModel:
    """An untrained model whose readers halt on about half the frames (r = 0, larger gain); with a large bias they
    halt at once every step, so the length limit decides when decoding ends."""
    with torch.no_grad():
        for head in heads(model):
            head.bias.fill_(bias)
            head.gain.fill_(gain)
    return model.eval()


def memory_batch(seed: int = 0, lens: tuple[int, ...] = (14, 9, 11, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random encoder outputs [B, T, ENC_DIM]; padding filled with large values that would matter if read."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lens)
    memory = torch.randn(len(lens), max(lens), ENC_DIM, generator=g)
    for b, n in enumerate(lens):
        memory[b, n:] = 50.0
    return memory, lengths


def prefixes(n: int, length: int, seed: int = 0) -> torch.Tensor:
    ys = torch.randint(3, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))
    ys[:, 0] = SOS
    return ys


# ------------------------------------------------------------------------------------- the decoder itself


def test_training_alignments_are_soft_sub_stochastic_and_zero_on_padding() -> None:
    model = model_for(seed=1, bias=-1.0).train()
    memory, lens = memory_batch()
    ys = prefixes(4, 6)
    logits, weights = model.decoder.alignments(memory, lens, ys, torch.tensor([6, 4, 5, 2]))
    assert logits.shape == (4, 6, VOCAB) and weights.shape == (4, 2, 6, memory.size(1))
    sums = weights.sum(-1)  # [B, layers, L]: Σ_j β_ij = Σ_j α_ij ≤ 1 (the rest ran past the end)
    assert (sums <= 1 + 1e-6).all() and (sums[:, :, 0] > 0.05).all()
    pad = torch.arange(memory.size(1))[None] >= lens[:, None]
    assert (weights.permute(0, 3, 1, 2)[pad] == 0).all()
    assert ((weights > 0) & (weights < 0.99)).float().mean() > 0.2  # expected attention, spread over frames
    # mass only leaks past the end: along the positions the total never grows
    assert (sums[:, :, 1:] <= sums[:, :, :-1] + 1e-6).all()
    # every block has its own head: the alignments differ between layers
    assert not torch.allclose(weights[:, 0], weights[:, 1], atol=1e-3)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_forced_logits_do_not_depend_on_padding(mode: str) -> None:
    """Utterance alone vs padded in a batch (memory padding of large values, target padding of other tokens)."""
    model = firing(model_for(seed=2, noise=0.0), gain=2.0)  # noise 0: training mode is deterministic
    model.train(mode == "train")
    memory, lens = memory_batch(seed=3)
    ys, ys_lens = prefixes(4, 7, seed=4), torch.tensor([7, 3, 5, 2])
    with torch.no_grad():
        batch = model.decoder(memory, lens, ys, ys_lens)
        for b in range(4):
            m, l = int(lens[b]), int(ys_lens[b])
            alone = model.decoder(memory[b : b + 1, :m], lens[b : b + 1], ys[b : b + 1, :l], ys_lens[b : b + 1])
            torch.testing.assert_close(batch[b, :l], alone[0], atol=1e-5, rtol=1e-4)


def test_eval_step_by_step_equals_forward_and_select_state() -> None:
    """Beam search relies on it: in eval mode init_state + step (hard readers) = forward, also after reordering."""
    model = firing(model_for(seed=3))
    dec = model.decoder
    memory, lens = memory_batch(seed=5, lens=(14, 9, 11))
    ys = prefixes(3, 7, seed=6)
    with torch.no_grad():
        full = dec(memory, lens, ys, torch.full((3,), 7)).log_softmax(-1)
        state = dec.init_state(memory, lens)
        for i in range(3):
            lp, state = dec.step(ys[:, : i + 1], state, memory, lens)
            torch.testing.assert_close(lp, full[:, i], atol=1e-5, rtol=1e-4)
        index = torch.tensor([2, 0, 0, 1])
        state = dec.select_state(state, index)
        halts = []
        for i in range(3, 7):
            lp, state = dec.step(ys[index, : i + 1], state, memory[index], lens[index])
            torch.testing.assert_close(lp, full[index, i], atol=1e-5, rtol=1e-4)
            halts.append(state["index"])
        with pytest.raises(ValueError):
            dec.step(ys[index, :3], state, memory[index], lens[index])  # a state for another prefix length
    assert state["index"].shape == (4, 2) and (state["index"] <= lens[index, None]).all()
    assert (state["frame"] == torch.minimum(state["index"][:, -1], lens[index] - 1)).all()
    halts = torch.stack(halts)
    assert (halts[1:] >= halts[:-1]).all() and halts.unique().numel() > 2  # the readers move, monotonically


def test_full_cross_attention_is_unchanged_by_the_option() -> None:
    """cross = "full" (the default) keeps its parameters, its step = forward, and "attn" = the last block's weights of
    the newest position."""
    model = AttentionModel(FrameLocalEncoder(ENC_DIM), VOCAB, AttentionConfig(decoder="transformer", d_model=16, num_heads=2,
                                                                       num_layers=2, dropout=0.0)).eval()
    dec = model.decoder
    assert dec.cross == "full" and "layers.1.cross_attention.kv.weight" in dec.state_dict()
    memory, lens = memory_batch(seed=8, lens=(9, 5))
    ys = prefixes(2, 4, seed=9)
    with torch.no_grad():
        logits, weights = dec.alignments(memory, lens, ys, torch.full((2,), 4))
        state = dec.init_state(memory, lens)
        for i in range(4):
            lp, state = dec.step(ys[:, : i + 1], state, memory, lens)
            torch.testing.assert_close(lp, logits[:, i].log_softmax(-1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state["attn"], weights[:, -1, -1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 4))
    assert (weights[1, :, :, 5:] == 0).all()


# ------------------------------------------------------------------------------------------ online decoding


@pytest.fixture(scope="module")
def trained() -> Trained:
    """Train a tiny Transformer + MoChA decoder (soft attention) on 12 toy utterances until hard greedy decoding
    gets them all. Toy settings as for the LAS toy (tests/test_mocha.py): r = −1 for ~12-frame memories, noise 4."""
    model = model_for(seed=0, chunk=2, noise=4.0, bias=-1.0)
    model.cfg.max_len_ratio = 1.0

    def hard_loss_low(m: AttentionModel, last: float, first: float) -> bool:  # the hard readers' loss, not the soft one
        feats, feat_lens, targets, target_lens, _ = batch
        with torch.no_grad():
            return m.compute_loss(feats, feat_lens, targets, target_lens)[0].item() < first / 50

    batch = spoken_batch(12)
    return overfit(model, batch, lr=3e-3, check_every=20, good_enough=hard_loss_low)


def test_transformer_mocha_overfits_toy_set_and_streams_it(trained: Trained) -> None:
    model, feats, feat_lens, labels = trained.model, trained.feats, trained.feat_lens, trained.labels
    with torch.no_grad():
        hyps = model.decode(feats, feat_lens)
        enc, lens = model.encoder(feats, feat_lens)
        hard_loss = model.compute_loss(feats, feat_lens, trained.targets, trained.target_lens)[0].item()
    assert trained.last < trained.first / 2 and hard_loss < trained.first / 2, (trained, hard_loss)
    assert [h.tokens for h in hyps] == labels
    assert [h.tokens for h in model.decode(feats, feat_lens, DecodeOptions("beam", beam_size=3))] == labels
    early = 0
    for b in range(len(labels)):
        stream = TransformerMonotonicStream(model.decoder, max_len_ratio=model.cfg.max_len_ratio)
        feed(stream, enc[b : b + 1, : int(lens[b])], [2])
        assert stream.tokens == labels[b] and [t.frame for t in stream.emitted[:-1]] == hyps[b].token_frames
        early += sum(t.arrived < int(lens[b]) for t in stream.emitted[:-1])
    assert early > len(labels)  # tokens come out before the utterance has ended


def model_and_memory(which: str, trained: Trained) -> tuple[AttentionModel, torch.Tensor, torch.Tensor]:
    """(model, encoder output, lengths): untrained models with firing readers on random memory, or the toy model."""
    if which == "trained":
        model = copy.deepcopy(trained.model)
        with torch.no_grad():
            enc, lens = model.encoder(trained.feats[:5], trained.feat_lens[:5])
        return model, enc, lens
    seed, bias = {"untrained": (0, 0.0), "untrained-2": (1, 0.0), "always-halts": (2, 30.0)}[which]
    memory, lens = memory_batch(seed=seed + 10)
    return firing(model_for(seed=seed), bias=bias), memory, lens


@pytest.mark.parametrize("which", ["untrained", "untrained-2", "always-halts", "trained"])
def test_stream_equals_offline_greedy_for_any_piece_sizes(which: str, trained: Trained) -> None:
    model, enc, lens = model_and_memory(which, trained)
    assert_stream_equals_offline_greedy(model, enc, lens, which == "always-halts", patterns=[[1], [2], [3, 1, 5]])


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_no_block_reads_a_frame_that_has_not_arrived(which: str, trained: Trained, monkeypatch) -> None:
    """Instrumented: every hard read of every block, at every step of the online decoder fed frame by frame,
    sees only arrived frames and neither halts at nor weights one ≥ arrived; every emitted token had all blocks
    halt inside the arrived frames."""
    model, enc, lens = model_and_memory(which, trained)
    model.cfg.max_len_ratio = 3.0  # so that steps wait for their halts, not for the length limit
    reads: list[tuple[int, int, int, bool]] = []  # (block, frames visible, last frame read, found)
    for j, head in enumerate(heads(model)):
        def hard(query, keys, memory, lens_, prev, _orig=head.hard, _j=j):
            context, weights, index, found = _orig(query, keys, memory, lens_, prev)
            nonzero = weights[0].nonzero()
            last = int(nonzero.max()) if len(nonzero) else -1
            reads.append((_j, memory.size(1), max(last, int(index[0]) if bool(found[0]) else -1), bool(found[0])))
            return context, weights, index, found
        monkeypatch.setattr(head, "hard", hard)
    n_reads = n_tokens = waits = 0
    for b in range(enc.size(0)):
        stream = TransformerMonotonicStream(model.decoder, max_len_ratio=3.0)
        for t in range(int(lens[b])):
            reads.clear()
            new = stream.accept(enc[b : b + 1, t : t + 1])
            assert all(seen == t + 1 and last < t + 1 for _, seen, last, _ in reads)
            assert [j for j, *_ in reads] == [0, 1] * (len(reads) // 2)  # each step: every block, in order
            steps = [reads[k : k + 2] for k in range(0, len(reads), 2)]
            assert len(new) == sum(all(found for *_, found in s) for s in steps)  # emitted iff all blocks halted
            n_reads, n_tokens = n_reads + len(reads), n_tokens + len(new)
            waits += len(steps) > len(new)
    assert n_reads > 0 and n_tokens > 0 and waits > 0


@pytest.mark.parametrize("which", ["untrained", "trained"])
def test_emitted_tokens_do_not_depend_on_frames_after_them(which: str, trained: Trained) -> None:
    """With k frames arrived, the stream emits exactly the tokens (and halts, all < k) that offline decoding of the
    full input gives first, for the true continuation and for a different one."""
    model, enc, lens = model_and_memory(which, trained)
    model.cfg.max_len_ratio = 3.0
    torch.manual_seed(7)
    n_checked = waits = 0
    for b in range(min(3, enc.size(0))):
        t = int(lens[b])
        e = enc[b : b + 1, :t]
        for k in range(1, t, 2):
            other = torch.cat((e[:, :k], torch.randn(1, t - k, e.size(2)) * 3), 1)
            for full in (e, other):
                stream = TransformerMonotonicStream(model.decoder, max_len_ratio=3.0)
                stream.accept(full[:, :k])
                with torch.no_grad():
                    (off,) = model.greedy(full, torch.tensor([t]))
                early = [x.token for x in stream.emitted]
                assert all(x.frame < k and x.arrived == k for x in stream.emitted)
                assert early == (off.tokens + [EOS])[: len(early)]
                frames = [x.frame for x in stream.emitted if x.token != EOS]  # offline gives no frame for eos
                assert frames == off.token_frames[: len(frames)]
                n_checked += len(early)
                waits += len(early) <= len(off.tokens) and len(early) < 3 * k  # waiting for a halt, not the limit
    assert n_checked > 0 and waits > 0  # tokens came out early, and some steps had to wait for their frames


def test_stream_rejects_full_attention_training_mode_and_input_after_finish() -> None:
    model = firing(model_for())
    stream = TransformerMonotonicStream(model.decoder)
    stream.accept(torch.randn(1, 3, ENC_DIM))
    stream.finish()
    with pytest.raises(RuntimeError):
        stream.accept(torch.randn(1, 3, ENC_DIM))
    with pytest.raises(ValueError):
        TransformerMonotonicStream(model_for().train().decoder)
    full = AttentionModel(FrameLocalEncoder(ENC_DIM), VOCAB, AttentionConfig(decoder="transformer", d_model=16, num_heads=2))
    with pytest.raises(ValueError):
        TransformerMonotonicStream(full.eval().decoder)


def test_recipe_parses_and_builds() -> None:
    from malsori.train import TrainConfig

    cfg = load_config(TrainConfig, resolve_recipe("streaming/mocha_transformer"))
    att = cfg.model.attention
    assert cfg.model.head == "attention" and att.decoder == "transformer" and att.transformer_cross == "mocha"
    model = build_model(cfg.model, 80, 40)
    assert model.decoder.cross == "mocha" and model.encoder.chunk.causal
    params = sum(p.numel() for p in model.parameters())
    assert 5e6 < params < 8e6, params
