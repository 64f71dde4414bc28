"""CTC search invariants: exactness against brute force and torch's CTC loss, beam monotonicity, batching."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from malsori.decode.ctc import ctc_greedy, ctc_prefix_beam_search


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


def exact_label_log_probs(lp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log P(labels) for every label sequence, summing all V^T alignments (brute force, float64)."""
    t, v = lp.shape
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(v), repeat=t):
        p = math.exp(sum(float(lp[i, s]) for i, s in enumerate(path)))
        key = collapse(path)
        probs[key] = probs.get(key, 0.0) + p
    return {k: math.log(p) for k, p in probs.items()}


def random_log_probs(b: int, t: int, v: int, peak: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, t, v, generator=g, dtype=torch.float64) * peak).log_softmax(-1)


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_matches_brute_force_argmax(seed: int) -> None:
    t, v = 5, 4
    lp = random_log_probs(1, t, v, peak=1.5, seed=seed)
    exact = exact_label_log_probs(lp[0])
    best_labels = max(exact, key=exact.get)
    # 1 + 3 + ... + 3^5 = 364 possible prefixes: a beam of 400 keeps them all, so the search is exact.
    hyp = ctc_prefix_beam_search(lp, torch.tensor([t]), beam_size=400)[0]
    assert tuple(hyp.tokens) == best_labels
    assert abs(hyp.score - exact[best_labels]) <= 1e-5
    # The n-best scores are the exact probabilities of those label sequences, best first.
    hyp = ctc_prefix_beam_search(lp, torch.tensor([t]), beam_size=400, nbest=5)[0]
    ranked = sorted(exact.values(), reverse=True)[:5]
    assert [h.score for h in hyp.nbest] == pytest.approx(ranked, abs=1e-5)
    for h in hyp.nbest:
        assert abs(h.score - exact[tuple(h.tokens)]) <= 1e-5


def ctc_like_log_probs(b: int, t: int, v: int, bonus: float = 6.0, seed: int = 0) -> torch.Tensor:
    """Posteriors shaped like a trained CTC model's: each frame favours one symbol (blank 60% of the time)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64)
    pick = torch.randint(1, v, (b, t), generator=g)
    pick = torch.where(torch.rand(b, t, generator=g) < 0.6, 0, pick)
    logits.scatter_add_(2, pick[..., None], torch.full((b, t, 1), bonus, dtype=torch.float64))
    return logits.log_softmax(-1)


def ctc_log_likelihood(lp: torch.Tensor, tokens: list[int]) -> float:
    """-F.ctc_loss of one label sequence (torch's forward algorithm, an independent oracle)."""
    t = lp.size(0)
    nll = F.ctc_loss(lp[:, None], torch.tensor([tokens]), torch.tensor([t]), torch.tensor([len(tokens)]), reduction="sum")
    return -nll.item()


@pytest.mark.parametrize(("t", "v", "beam"), [(8, 4, 10_000), (12, 3, 8_192)])
def test_beam_score_equals_ctc_loss_when_beam_holds_every_prefix(t: int, v: int, beam: int) -> None:
    # The beam is at least the number of possible prefixes (sum of (V-1)^i, i <= T), so nothing is pruned.
    lp = random_log_probs(2, t, v, peak=2.0, seed=t)
    for b, hyp in enumerate(ctc_prefix_beam_search(lp, torch.tensor([t, t]), beam_size=beam, nbest=4)):
        for h in hyp.nbest:
            assert abs(h.score - ctc_log_likelihood(lp[b], h.tokens)) <= 1e-6


def test_beam_score_never_exceeds_ctc_loss() -> None:
    # With pruning, a prefix's score sums only the alignments that survived: a lower bound, close when peaky.
    lp = ctc_like_log_probs(10, 40, 8, bonus=6.0, seed=2)
    for b, hyp in enumerate(ctc_prefix_beam_search(lp, torch.full((10,), 40), beam_size=16, nbest=4)):
        for h in hyp.nbest:
            assert h.score <= ctc_log_likelihood(lp[b], h.tokens) + 1e-9
        assert hyp.score >= ctc_log_likelihood(lp[b], hyp.tokens) - 0.1


def test_greedy_is_collapsed_argmax() -> None:
    lp = random_log_probs(3, 40, 5, peak=2.0, seed=3)
    lengths = torch.tensor([40, 33, 7])
    for b, hyp in enumerate(ctc_greedy(lp, lengths)):
        n = int(lengths[b])
        path = lp[b, :n].argmax(-1).tolist()
        assert tuple(hyp.tokens) == collapse(tuple(path))
        expected_frames = [i for i, s in enumerate(path) if s != 0 and (i == 0 or path[i - 1] != s)]
        assert hyp.token_frames == expected_frames
        assert [path[f] for f in hyp.token_frames] == hyp.tokens
        assert hyp.score == pytest.approx(lp[b, :n].max(-1).values.sum().item(), abs=1e-6)


def test_greedy_equals_beam_of_one_path_when_peaky() -> None:
    lp = random_log_probs(2, 30, 6, peak=8.0, seed=4)
    lengths = torch.tensor([30, 30])
    g = ctc_greedy(lp, lengths)
    bs = ctc_prefix_beam_search(lp, lengths, beam_size=8)
    assert [h.tokens for h in g] == [h.tokens for h in bs]
    assert [h.token_frames for h in g] == [h.token_frames for h in bs]


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batched_equals_single_with_padding(search: str) -> None:
    lengths = torch.tensor([20, 13, 5])
    lp = random_log_probs(3, 20, 6, peak=2.0, seed=5)
    # Fill padding with confident non-blank frames: they must be ignored.
    garbage = torch.full((6,), -20.0, dtype=torch.float64)
    garbage[3] = 0.0
    for b, n in enumerate(lengths.tolist()):
        lp[b, n:] = garbage

    def run(x: torch.Tensor, lens: torch.Tensor):
        if search == "greedy":
            return ctc_greedy(x, lens)
        return ctc_prefix_beam_search(x, lens, beam_size=6)

    batched = run(lp, lengths)
    for b, n in enumerate(lengths.tolist()):
        single = run(lp[b : b + 1, :n], lengths[b : b + 1])[0]
        assert batched[b].tokens == single.tokens
        assert batched[b].token_frames == single.token_frames
        assert batched[b].score == pytest.approx(single.score, abs=1e-9)
        assert all(f < n for f in batched[b].token_frames)


def test_empty_utterance() -> None:
    lp = random_log_probs(2, 4, 3, seed=6)
    lengths = torch.tensor([4, 0])
    for hyps in (ctc_greedy(lp, lengths), ctc_prefix_beam_search(lp, lengths, beam_size=4)):
        assert hyps[1].tokens == [] and hyps[1].score == 0.0


def test_forced_alignment_is_the_best_path_spelling_the_target():
    """Viterbi equals the best of all CTC paths (brute force) that collapse to the target; spans are ordered."""
    import itertools

    from malsori.decode.ctc import ctc_forced_align

    torch.manual_seed(3)
    log_probs = torch.randn(6, 4).log_softmax(-1)
    for target in ([1, 2], [2, 2], [3], [1, 2, 3]):
        best, best_path = float("-inf"), None
        for path in itertools.product(range(4), repeat=6):
            collapsed = [p for i, p in enumerate(path) if p != 0 and (i == 0 or path[i - 1] != p)]
            if collapsed == target:
                s = float(sum(log_probs[t, p] for t, p in enumerate(path)))
                if s > best:
                    best, best_path = s, path
        spans, score = ctc_forced_align(log_probs, target)
        assert score == pytest.approx(best, abs=1e-5)
        for (a, b), tok in zip(spans, target):
            assert 0 <= a <= b and all(best_path[t] == tok for t in range(a, b + 1))
        assert all(s1[1] < s2[0] for s1, s2 in zip(spans, spans[1:]))
    with pytest.raises(ValueError):
        ctc_forced_align(log_probs[:2], [1, 1])
