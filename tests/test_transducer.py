"""Transducer model and searches: predictor step API, scores recomputed from the joiner, beams, overfitting, padding,
state-dict round trip."""

from __future__ import annotations

import itertools

import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.decode.transducer import modified_beam_search, transducer_beam_search, transducer_greedy
from malsori.errors import MalsoriError
from malsori.losses import rnnt_loss
from malsori.models.transducer import PredictorConfig, TransducerConfig, TransducerModel
from malsori.nn.lstm import LSTMConfig, LSTMEncoder

from conftest import FrameLinearEncoder  # the shared stand-in encoder of the search tests

KINDS = ["lstm", "stateless"]


def small_model(kind: str, vocab: int = 5, seed: int = 0, blank_bias: float = 0.0, scale: float = 1.0, **cfg) -> TransducerModel:
    torch.manual_seed(seed)
    pred = PredictorConfig(kind=kind, embed_dim=12, hidden_size=12, context=2, dropout=0.0)
    model = TransducerModel(FrameLinearEncoder(6, 10), vocab, TransducerConfig(predictor=pred, joiner_dim=16, **cfg)).eval()
    with torch.no_grad():
        model.joiner.out.weight.mul_(scale)
        model.joiner.out.bias[0] += blank_bias  # < 0: more labels per frame, so the per-frame cap matters
    return model


def grid_log_probs(model: TransducerModel, enc: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """log P(k | t, u) [T, U+1, V] for one utterance, computed by the training path (predictor over the whole
    sequence at once), independently of the searches' step API."""
    y = torch.tensor([tokens], dtype=torch.long).view(1, -1)
    with torch.no_grad():
        return model.joint_logits(enc[None], y)[0].log_softmax(-1).double()


@pytest.mark.parametrize("kind", KINDS)
def test_predictor_steps_match_forward(kind: str) -> None:
    model = small_model(kind, vocab=7)
    ys = torch.tensor([[0, 3, 5, 6, 3], [0, 4, 4, 0, 0]])
    full = model.predictor(ys)
    state = model.predictor.init_state(2)
    for u in range(ys.size(1)):
        out, state = model.predictor.step(ys[:, u], state)
        torch.testing.assert_close(out, full[:, u])


@pytest.mark.parametrize("kind", KINDS)
def test_modified_beam_1_equals_greedy_1(kind: str) -> None:
    model = small_model(kind, blank_bias=-1.0)
    enc = torch.randn(3, 9, 10)
    lens = torch.tensor([9, 6, 1])
    greedy = transducer_greedy(model, enc, lens, max_symbols_per_frame=1)
    beam1 = modified_beam_search(model, enc, lens, beam_size=1)
    assert sum(len(h.tokens) for h in greedy) > 3  # the comparison is about something
    for g, m in zip(greedy, beam1):
        assert g.tokens == m.tokens and g.token_frames == m.token_frames
        assert abs(g.score - m.score) < 1e-5  # float32 joiner, batched vs one row


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_score_is_log_prob_of_its_alignment(kind: str) -> None:
    model = small_model(kind, blank_bias=-1.5, seed=1)
    enc = torch.randn(2, 8, 10)
    lens = torch.tensor([8, 5])
    cap = 2
    hit_cap = False
    for b, hyp in enumerate(transducer_greedy(model, enc, lens, max_symbols_per_frame=cap)):
        lp = grid_log_probs(model, enc[b, : lens[b]], hyp.tokens)
        want, u = 0.0, 0
        for t in range(int(lens[b])):
            for _ in range(hyp.token_frames.count(t)):
                want += lp[t, u, hyp.tokens[u]].item()
                u += 1
            if hyp.token_frames.count(t) < cap:
                want += lp[t, u, 0].item()  # the blank that ends the frame
            else:
                hit_cap = True
        assert u == len(hyp.tokens)
        assert abs(hyp.score - want) < 1e-5
    assert hit_cap


@pytest.mark.parametrize("kind", KINDS)
def test_modified_beam_unpruned_scores_sum_all_paths(kind: str) -> None:
    """With a beam holding every path, each label sequence's score is the log-sum over all T-step paths
    (one blank or label per frame) that produce it, enumerated here by brute force."""
    V, T = 3, 3
    model = small_model(kind, vocab=V, seed=2, blank_bias=-0.5, scale=2.0)
    enc = torch.randn(1, T, 10)
    hyp = modified_beam_search(model, enc, torch.tensor([T]), beam_size=V**T)[0]
    sums: dict[tuple[int, ...], list[float]] = {}
    for path in itertools.product(range(V), repeat=T):
        y = tuple(c for c in path if c != 0)
        lp = grid_log_probs(model, enc[0], list(y))
        u, s = 0, 0.0
        for t, c in enumerate(path):
            s += float(lp[t, u, c])
            u += c != 0
        sums.setdefault(y, []).append(s)
    got = {tuple(h.tokens): h.score for h in hyp.nbest}
    assert set(got) == set(sums)
    for y, scores in sums.items():
        assert abs(got[y] - float(torch.tensor(scores).logsumexp(0))) < 1e-6
    assert hyp.score == max(got.values())


@pytest.mark.parametrize("kind", KINDS)
def test_beam_search_unpruned_score_is_minus_rnnt_loss(kind: str) -> None:
    """Graves-style search with nothing pruned sums all alignments: for label sequences no longer than the per-frame
    cap (so no alignment is cut), score = log P(y | x) = -rnnt_loss."""
    V, T, cap = 3, 2, 2
    model = small_model(kind, vocab=V, seed=3, blank_bias=-0.5, scale=2.0)
    enc = torch.randn(1, T, 10)
    hyp = transducer_beam_search(model, enc, torch.tensor([T]), beam_size=1000, max_symbols_per_frame=cap)[0]
    assert len(hyp.nbest) == sum((V - 1) ** n for n in range(T * cap + 1))  # every sequence up to T·cap labels
    checked = 0
    for h in hyp.nbest:
        if len(h.tokens) <= cap:
            y = torch.tensor([h.tokens], dtype=torch.long).view(1, -1)
            loss = rnnt_loss(model.joint_logits(enc, y).double(), y, torch.tensor([T]), torch.tensor([len(h.tokens)]))
            assert abs(h.score + loss.item()) < 1e-6
            checked += 1
    assert checked == 1 + (V - 1) + (V - 1) ** 2


@pytest.mark.parametrize("search", ["beam", "modified_beam"])
def test_wider_beam_is_never_worse(search: str) -> None:
    for seed, kind in itertools.product(range(3), KINDS):
        model = small_model(kind, vocab=6, seed=seed, blank_bias=-0.5, scale=3.0)
        enc = torch.randn(2, 7, 10)
        lens = torch.tensor([7, 5])
        best = []
        for beam in (1, 2, 4, 8):
            hyps = transducer_beam_search(model, enc, lens, beam) if search == "beam" else modified_beam_search(model, enc, lens, beam)
            best.append([h.score for h in hyps])
        for narrow, wide in zip(best, best[1:]):
            for a, b in zip(narrow, wide):
                assert b >= a - 1e-5, (seed, kind, best)  # float32 joiner noise


def _overfit(kind: str, encoder: str) -> None:
    torch.manual_seed(0)
    n = 24 if encoder == "lstm" else 40  # conformer: 4× subsampling, and modified beam needs a frame per label
    feats = torch.randn(4, n, 8)
    feat_lens = torch.tensor([n, n - 4, n - 2, n - 7])
    targets = torch.tensor([[3, 5, 4, 6], [7, 3, 3, 0], [4, 6, 0, 0], [5, 7, 4, 3]])
    target_lens = torch.tensor([4, 3, 2, 4])
    if encoder == "lstm":
        enc = LSTMEncoder(LSTMConfig(input_dim=8, hidden_size=32, num_layers=1, reduction="stack", reduction_factor=2, dropout=0.0))
    else:
        from malsori.nn.conformer import ConformerConfig, ConformerEncoder

        enc = ConformerEncoder(ConformerConfig(input_dim=8, d_model=32, num_layers=1, num_heads=2, conv_kernel=3, dropout=0.0,
                                               attention_dropout=0.0, subsampling_factor=4, subsampling_channels=8))
    pred = PredictorConfig(kind=kind, embed_dim=32, hidden_size=32, dropout=0.0)
    model = TransducerModel(enc, 8, TransducerConfig(predictor=pred, joiner_dim=32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2 if encoder == "lstm" else 1e-2)
    for step in range(300):
        loss, stats = model.compute_loss(feats, feat_lens, targets, target_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if stats["loss"] < 0.05:
            break
    model.eval()
    want = [targets[b, : target_lens[b]].tolist() for b in range(4)]
    for method in ("greedy", "beam", "modified_beam"):
        assert [h.tokens for h in model.decode(feats, feat_lens, DecodeOptions(method=method, beam_size=4))] == want, method


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_four_utterances(kind: str) -> None:
    _overfit(kind, "lstm")


def test_conformer_transducer_overfits() -> None:
    _overfit("stateless", "conformer")


@pytest.mark.parametrize("kind", KINDS)
def test_loss_is_padding_invariant_and_ctc_weighted(kind: str) -> None:
    torch.manual_seed(4)
    enc = LSTMEncoder(LSTMConfig(input_dim=8, hidden_size=16, num_layers=1, reduction="none", dropout=0.0))
    pred = PredictorConfig(kind=kind, embed_dim=16, hidden_size=16, dropout=0.0)
    model = TransducerModel(enc, 9, TransducerConfig(predictor=pred, joiner_dim=16, ctc_weight=0.25)).eval()
    feats = torch.randn(3, 11, 8)
    feat_lens = torch.tensor([11, 7, 9])
    targets = torch.tensor([[3, 4, 5, 8], [6, 0, 0, 0], [7, 7, 3, 0]])
    target_lens = torch.tensor([4, 1, 3])
    loss, stats = model.compute_loss(feats, feat_lens, targets, target_lens)
    assert abs(stats["loss"] - (0.75 * stats["rnnt"] + 0.25 * stats["ctc"])) < 1e-4
    singles = [model.compute_loss(feats[b : b + 1, : feat_lens[b]], feat_lens[b : b + 1], targets[b : b + 1, : target_lens[b]], target_lens[b : b + 1])[0]
               for b in range(3)]
    torch.testing.assert_close(loss, torch.stack(singles).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind: str) -> None:
    model = small_model(kind, vocab=6, seed=5, ctc_weight=0.3)
    other = small_model(kind, vocab=6, seed=6, ctc_weight=0.3)
    other.load_state_dict(model.state_dict())
    feats, lens = torch.randn(2, 6, 6), torch.tensor([6, 4])
    targets, target_lens = torch.tensor([[3, 4], [5, 0]]), torch.tensor([2, 1])
    stats, other_stats = model.compute_loss(feats, lens, targets, target_lens)[1], other.compute_loss(feats, lens, targets, target_lens)[1]
    assert torch.equal(stats.pop("utt"), other_stats.pop("utt")) and stats == other_stats
    for method in ("greedy", "beam", "modified_beam"):
        a, b = model.decode(feats, lens, DecodeOptions(method, 3)), other.decode(feats, lens, DecodeOptions(method, 3))
        assert [(h.tokens, h.token_frames, h.score) for h in a] == [(h.tokens, h.token_frames, h.score) for h in b]


def test_bad_search_name() -> None:
    with pytest.raises(MalsoriError):
        small_model("lstm").decode(torch.randn(1, 3, 6), torch.tensor([3]), DecodeOptions(method="viterbi"))


def test_registry_builds_conformer_transducer() -> None:
    """The recipe's sections reach the model (encoder, predictor and joiner sizes, the CTC weight in the loss), and
    `decode` returns what the search it names returns when called on the encoder output directly."""
    from malsori.config import from_dict
    from malsori.models.registry import ModelConfig, build_model
    from malsori.nn.conformer import ConformerEncoder

    recipe = {"encoder": "conformer", "head": "transducer",
              "conformer": {"d_model": 32, "num_layers": 1, "num_heads": 2, "subsampling_channels": 8},
              "transducer": {"predictor": {"kind": "stateless", "embed_dim": 24}, "joiner_dim": 40, "ctc_weight": 0.1}}
    torch.manual_seed(0)
    model = build_model(from_dict(ModelConfig, recipe), 16, 11).eval()
    assert isinstance(model, TransducerModel) and isinstance(model.encoder, ConformerEncoder)
    assert model.encoder.cfg.input_dim == 16 and model.encoder.output_dim == 32 and len(model.encoder.layers) == 1
    assert model.predictor.output_dim == 24 and (model.joiner.out.in_features, model.joiner.out.out_features) == (40, 11)
    feats, lens = torch.randn(2, 40, 16), torch.tensor([40, 31])
    _, stats = model.compute_loss(feats, lens, torch.tensor([[3, 4], [5, 0]]), torch.tensor([2, 1]))
    assert stats["loss"] == pytest.approx(0.9 * stats["rnnt"] + 0.1 * stats["ctc"], rel=1e-5) and stats["ctc"] > 0
    with torch.no_grad():
        enc, enc_lens = model.encoder(feats, lens)
        direct = modified_beam_search(model, enc, enc_lens, 2)
    via = model.decode(feats, lens, DecodeOptions("modified_beam", 2))
    assert [(h.tokens, h.score) for h in via] == [(h.tokens, h.score) for h in direct]


def test_utterance_without_frames_adds_nothing() -> None:
    model = small_model("stateless", vocab=6, seed=7)
    feats, targets, target_lens = torch.randn(2, 5, 6), torch.tensor([[3, 4], [5, 0]]), torch.tensor([2, 1])
    both = model.compute_loss(feats, torch.tensor([5, 0]), targets, target_lens)[0]
    first = model.compute_loss(feats[:1], torch.tensor([5]), targets[:1], target_lens[:1])[0]
    torch.testing.assert_close(both, first / 2)
