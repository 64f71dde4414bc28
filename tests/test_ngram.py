"""Word n-gram LM: Kneser–Ney against hand computation, normalization before and after pruning, ARPA in and out,
the text reader and the `malsori lm` commands."""

import gzip
import math
import random
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from malsori.cli import main
from malsori.lm import NgramLM, TextReadStats, iter_text_lines
from malsori.lm.arpa import ArpaError
from malsori.lm.kneser_ney import discounts_from_counts
from malsori.lm.ngram import NgramError, ngram_ids
from malsori.lm.prune import suffix_rows
from malsori.lm.text_files import TextFileError

WORDS = "the a cat dog sat on mat ran fast big red and".split()


def random_corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # a skewed word distribution so counts of 1, 2, 3 and 4+ all occur and the discount formula is used
    weights = [1.0 / (i + 1) for i in range(len(WORDS))]
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(1, 10))) for _ in range(n)]


def p(lm: NgramLM, word: str, *history: str) -> float:
    return 10.0 ** lm.log10prob(word, history)


def assert_normalized(lm: NgramLM, seed: int = 0, n: int = 60) -> None:
    """Σ_w P(w | h) over the vocabulary (</s> and <unk> included, <s> never predicted) is 1 within 1e-9 for
    histories of every length (0 .. order, so one longer than the model uses), seen or not, with OOVs and <s>."""
    rng = random.Random(seed)
    predicted = [w for w in lm.vocab if w != "<s>"]
    pool = [w for w in lm.vocab if w not in ("<s>", "</s>")] + ["never-seen"]
    mask = np.ones(len(lm.vocab), dtype=bool)
    mask[lm.bos] = False
    for length in range(lm.order + 1):
        for i in range(n):
            history = [rng.choice(pool) for _ in range(length)]
            if length and i % 3 == 0:
                history[0] = "<s>"
            total = math.fsum(10.0 ** lm.log10probs(history)[mask])
            assert abs(total - 1.0) < 1e-9, (history, total)
            if i % 10 == 0:  # the one-word query agrees with the whole-vocabulary one
                assert math.isclose(math.fsum(p(lm, w, *history) for w in predicted), 1.0, abs_tol=1e-9)


def assert_closed(lm: NgramLM) -> None:
    """Every listed n-gram's prefix and suffix are listed (the invariant queries and pruning rely on)."""
    assert all(np.all(suffix >= 0) for suffix in suffix_rows(lm.tables)[1:])
    assert all(np.all(lm.tables[k].prefix_rows < len(lm.tables[k - 1])) for k in range(1, lm.order))


# --- Kneser–Ney against hand computation ----------------------------------------------------------------------

def test_trigram_matches_hand_computation():
    # <s> a b </s> (twice), <s> b b </s>. Count-of-counts have zeros at every order, so the fallback discounts
    # D1 = 1/2, D2 = 1, D3+ = 3/2 apply everywhere.
    lm = NgramLM.train(["a b", "A b!", "b b"], order=3)
    assert lm.discounts == [(0.5, 1.0, 1.5)] * 3
    # unigrams use continuation counts N1+(. w): a {<s>} = 1, b {a, <s>, b} = 3, </s> {b} = 1; total 5.
    # discounted mass (1/2 + 3/2 + 1/2) / 5 = 1/2 is spread uniformly over {<unk>, </s>, a, b}: 1/8 each.
    p1 = {"a": F(1, 2) / 5 + F(1, 8), "b": F(3, 2) / 5 + F(1, 8), "</s>": F(1, 2) / 5 + F(1, 8), "<unk>": F(1, 8)}
    assert p1 == {"a": F(9, 40), "b": F(17, 40), "</s>": F(9, 40), "<unk>": F(5, 40)}
    for w, f in p1.items():
        assert math.isclose(p(lm, w), f, rel_tol=1e-12)
    assert math.isclose(p(lm, "zebra"), F(5, 40), rel_tol=1e-12)  # an OOV is <unk>
    assert lm.log10prob("<s>") == -99.0
    # bigrams after <s> keep raw counts (nothing can precede <s>): <s> a = 2 (D2 = 1), <s> b = 1 (D1 = 1/2);
    # gamma(<s>) = (1 + 1/2) / 3 = 1/2
    p2_s = {"a": F(2 - 1, 3) + F(1, 2) * F(9, 40), "b": F(1 - F(1, 2), 3) + F(1, 2) * F(17, 40)}
    assert p2_s == {"a": F(107, 240), "b": F(91, 240)}
    # other bigrams use continuation counts: a b = |{<s>}| = 1, b </s> = |{a, b}| = 2, b b = |{<s>}| = 1
    p2_a_b = F(1 - F(1, 2), 1) + F(1, 2) * F(17, 40)  # gamma(a) = (1/2) / 1
    p2_b = {"</s>": F(2 - 1, 3) + F(1, 2) * F(9, 40), "b": F(1 - F(1, 2), 3) + F(1, 2) * F(17, 40),
            "a": F(1, 2) * F(9, 40), "<unk>": F(1, 2) * F(5, 40)}  # gamma(b) = (1 + 1/2) / 3
    assert p2_a_b == F(57, 80) and sum(p2_b.values()) == 1
    for w, f in p2_s.items():
        assert math.isclose(p(lm, w, "<s>"), f, rel_tol=1e-12)
    assert math.isclose(p(lm, "b", "a"), p2_a_b, rel_tol=1e-12)
    for w, f in p2_b.items():
        assert math.isclose(p(lm, w, "b"), f, rel_tol=1e-12)
    # trigrams (top order: raw counts): <s> a b = 2, a b </s> = 2, <s> b b = 1, b b </s> = 1
    p3 = {
        ("b", "<s>", "a"): F(2 - 1, 2) + F(1, 2) * F(57, 80),  # gamma(<s> a) = 1 / 2
        ("</s>", "<s>", "a"): F(1, 2) * (F(1, 2) * F(9, 40)),  # P(</s> | a) = gamma(a) * P(</s>)
        ("</s>", "a", "b"): F(2 - 1, 2) + F(1, 2) * p2_b["</s>"],
        ("b", "a", "b"): F(1, 2) * p2_b["b"],
        ("b", "<s>", "b"): F(1 - F(1, 2), 1) + F(1, 2) * p2_b["b"],
        ("</s>", "b", "b"): F(1 - F(1, 2), 1) + F(1, 2) * p2_b["</s>"],
        ("b", "b", "a"): p2_a_b,  # history "b a" never seen: P(b | a)
    }
    assert p3[("b", "<s>", "a")] == F(137, 160) and p3[("</s>", "a", "b")] == F(347, 480)
    for (w, *h), f in p3.items():
        assert math.isclose(p(lm, w, *h), f, rel_tol=1e-12), (w, h)
    # a sentence is the product of its words and </s>
    expected = math.log(F(107, 240) * F(137, 160) * F(347, 480))
    assert math.isclose(lm.score_sentence("a b"), expected, rel_tol=1e-12)
    ppl = lm.perplexity(["a b"])
    assert (ppl.sentences, ppl.words, ppl.oovs) == (1, 2, 0)
    assert math.isclose(ppl.ppl, math.exp(-expected / 3), rel_tol=1e-12)


def test_discounts_from_count_of_counts():
    # n1 = 3, n2 = 2, n3 = 1, n4 = 1: Y = 3 / (3 + 2*2) = 3/7
    d, fallback = discounts_from_counts(np.array([1, 1, 1, 2, 2, 3, 4, 9]), (0.5, 1.0, 1.5))
    y = F(3, 7)
    expected = (1 - 2 * y * F(2, 3), 2 - 3 * y * F(1, 2), 3 - 4 * y * F(1, 1))
    assert expected == (F(3, 7), F(19, 14), F(9, 7)) and not fallback
    assert np.allclose(d, [float(x) for x in expected], rtol=1e-12)
    assert discounts_from_counts(np.array([1, 1, 2, 2, 4]), (0.5, 1.0, 1.5)) == ((0.5, 1.0, 1.5), True)  # n3 = 0
    # a bigram model whose bigram counts are 4, 4, 3, 3, 2, 2, 1, 1 (n1..n4 = 2): Y = 1/3, D1 = 1/3, D2 = 1,
    # D3+ = 3 - 4/3 = 5/3. Unigram continuation counts a, b, c, d = 1, </s> = 4 fall back (n2 = 0).
    lm = NgramLM.train(["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"], order=2)
    assert lm.discounts[0] == (0.5, 1.0, 1.5)
    assert np.allclose(lm.discounts[1], [1 / 3, 1.0, 5 / 3], rtol=1e-12)
    gamma0 = F(4 * F(1, 2) + F(3, 2), 8)  # = 7/16, spread over {<unk>, </s>, a, b, c, d}
    p1 = {"a": F(1, 2) / 8 + gamma0 / 6, "</s>": (4 - F(3, 2)) / 8 + gamma0 / 6, "<unk>": gamma0 / 6}
    assert p1 == {"a": F(13, 96), "</s>": F(37, 96), "<unk>": F(7, 96)}
    gamma_s = F(2 * F(5, 3) + 1 + F(1, 3), 10)  # <s> a 4, b 3, c 2, d 1: = 7/15
    gamma_a = F(5, 3) / 4  # a </s> 4
    cases = {("a", "<s>"): (4 - F(5, 3)) / 10 + gamma_s * p1["a"], ("d", "<s>"): (1 - F(1, 3)) / 10 + gamma_s * p1["a"],
             ("</s>", "<s>"): gamma_s * p1["</s>"], ("</s>", "a"): (4 - F(5, 3)) / 4 + gamma_a * p1["</s>"],
             ("b", "a"): gamma_a * p1["a"]}
    assert cases[("a", "<s>")] == F(427, 1440) and cases[("</s>", "a")] == F(857, 1152)
    for (w, h), f in cases.items():
        assert math.isclose(p(lm, w, h), f, rel_tol=1e-12)
    for w, f in p1.items():
        assert math.isclose(p(lm, w), f, rel_tol=1e-12)


def test_pruning_by_count_matches_hand_computation():
    lm = NgramLM.train(["a b", "a b", "b b"], order=3).prune(min_count=2)
    # raw counts < 2: bigrams <s> b, b b and trigrams <s> b b, b b </s> go; listed probabilities stay, and
    # bow(h) = (1 - sum of kept P(w | h)) / (1 - sum of the same words' P(w | h')).
    assert lm.num_ngrams == [5, 3, 2]  # <unk> <s> </s> a b; <s> a, a b, b </s>; <s> a b, a b </s>
    bow_s = (1 - F(107, 240)) / (1 - F(9, 40))  # <s> keeps only a
    bow_b = (1 - F(107, 240)) / (1 - F(9, 40))  # b keeps only </s>
    assert bow_s == F(133, 186)
    assert math.isclose(p(lm, "a", "<s>"), F(107, 240), rel_tol=1e-12)  # listed: unchanged
    assert math.isclose(p(lm, "b", "<s>"), bow_s * F(17, 40), rel_tol=1e-12)
    assert math.isclose(p(lm, "b", "b"), bow_b * F(17, 40), rel_tol=1e-12)
    assert math.isclose(p(lm, "b", "<s>", "b"), bow_b * F(17, 40), rel_tol=1e-12)  # history <s> b is gone
    # the kept trigrams' histories keep bow 1/2: (1 - 137/160) / (1 - 57/80) = (1 - 347/480) / (1 - 107/240)
    assert (1 - F(137, 160)) / (1 - F(57, 80)) == F(1, 2) == (1 - F(347, 480)) / (1 - F(107, 240))
    assert math.isclose(p(lm, "</s>", "<s>", "a"), F(1, 2) * F(1, 2) * F(9, 40), rel_tol=1e-12)
    assert_normalized(lm)


# --- normalization ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_normalized_before_and_after_pruning(order, tmp_path):
    lm = NgramLM.train(random_corpus(), order=order)
    if order > 1:
        assert any(not fb for fb in [d == (0.5, 1.0, 1.5) for d in lm.discounts])  # the formula was used
    assert_normalized(lm)
    assert_closed(lm)
    total = sum(lm.num_ngrams)
    for pruned in (lm.prune(min_count=2), lm.prune(min_count=4), lm.prune(max_ngrams=max(total // 3, len(lm.vocab))),
                   lm.prune(max_ngrams=len(lm.vocab)), lm.prune(min_count=2, max_ngrams=max(total // 5, len(lm.vocab)))):
        assert_normalized(pruned, seed=1)
        assert_closed(pruned)
        assert sum(pruned.num_ngrams) <= total
    assert sum(lm.prune(max_ngrams=max(total // 3, len(lm.vocab))).num_ngrams) <= max(total // 3, len(lm.vocab))
    pruned = lm.prune(max_ngrams=max(total // 4, len(lm.vocab)))
    pruned.write_arpa(tmp_path / "p.arpa")
    back = NgramLM.read_arpa(tmp_path / "p.arpa")
    assert_normalized(back, seed=2)
    assert_normalized(back.prune(max_ngrams=max(sum(back.num_ngrams) // 2, len(lm.vocab))), seed=3)  # size pruning needs no counts


def test_backoff_weights_equal_their_recomputation():
    """Training's gamma(h) equals (1 - sum of listed P(w|h)) / (1 - sum of P(w|h')), the pruning formula."""
    from malsori.lm.prune import recompute_backoffs

    lm = NgramLM.train(random_corpus(), order=4)
    tables = [type(t)(t.keys, t.log10_prob, t.log10_bow.copy(), t.count) for t in lm.tables]
    recompute_backoffs(tables)
    for a, b in zip(tables, lm.tables):
        assert np.allclose(a.log10_bow, b.log10_bow, rtol=0, atol=1e-10)


def test_size_pruning_drops_the_least_useful_first():
    lm = NgramLM.train(random_corpus(2000), order=3)
    small = lm.prune(max_ngrams=sum(lm.num_ngrams) // 3)
    kept = {tuple(r) for r in ngram_ids(small.tables, 2, np.arange(len(small.tables[2]))).tolist()}
    counts = {tuple(r): c for r, c in zip(ngram_ids(lm.tables, 2, np.arange(len(lm.tables[2]))).tolist(),
                                          lm.tables[2].count.tolist())}
    # frequent trigrams carry more of the model's entropy than singletons
    frequent = [g for g, c in counts.items() if c >= 10]
    singletons = [g for g, c in counts.items() if c == 1]
    assert np.mean([g in kept for g in frequent]) > np.mean([g in kept for g in singletons])
    held_out = random_corpus(200, seed=9)
    assert lm.perplexity(held_out).ppl <= small.perplexity(held_out).ppl * 1.5


def test_pruning_errors():
    lm = NgramLM.train(random_corpus(), order=3)
    with pytest.raises(NgramError, match="below the"):
        lm.prune(max_ngrams=3)
    with pytest.raises(NgramError, match="at least 1"):
        lm.prune(min_count=0)


# --- scoring -----------------------------------------------------------------------------------------------------

def test_score_states_and_sentences():
    lm = NgramLM.train(random_corpus(), order=3)
    sentence = "the big cat ran and the zebra sat"  # zebra is OOV
    state, total = lm.initial_state(), 0.0
    states = []
    for w in sentence.split() + ["</s>"]:
        lp, state = lm.score(state, w)
        total += lp
        states.append(state)
    assert math.isclose(total, lm.score_sentence(sentence), rel_tol=1e-12)
    assert all(len(s) <= 2 for s in states)
    assert states[6] == ()  # after the OOV, nothing before it matters
    assert states[-1] == ()  # nothing follows </s>
    for s in states:  # a state is a history of the model (or empty), so equal states mean equal futures
        assert s == () or lm.is_history(lm.ids(s))
    # dropping what comes before the state changes no later probability
    for i, s in enumerate(states[:-1]):
        full = ["<s>"] + sentence.split()[: i + 1]
        for w in ["cat", "the", "</s>", "zebra"]:
            assert lm.logprob(w, full) == lm.logprob(w, s)
    ppl = lm.perplexity([sentence, "", "the cat"])
    assert (ppl.sentences, ppl.words, ppl.oovs) == (2, 10, 1)
    assert ppl.oov_rate == 0.1 and ppl.ppl_known != ppl.ppl


def test_training_errors():
    with pytest.raises(NgramError, match="no words"):
        NgramLM.train(["", "  ", "!!!"], order=3)
    with pytest.raises(NgramError, match="at least 1"):
        NgramLM.train(["a b"], order=0)
    assert NgramLM.train(["a"], order=5).order == 3  # <s> a </s>: nothing longer than a trigram fits
    with pytest.raises(NgramError, match="reserved word"):
        NgramLM.train([["a", "</s>", "b"]], order=2)  # word lists skip the normalizer, so they are checked


# --- ARPA --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["m.arpa", "m.arpa.gz"])
def test_arpa_round_trip_is_exact(tmp_path, name):
    lm = NgramLM.train(random_corpus(), order=4)
    lm.write_arpa(tmp_path / name)
    back = NgramLM.read_arpa(tmp_path / name)
    assert back.vocab == lm.vocab and back.num_ngrams == lm.num_ngrams
    for a, b in zip(lm.tables, back.tables):
        assert np.array_equal(a.keys, b.keys)
        assert np.array_equal(a.log10_prob, b.log10_prob) and np.array_equal(a.log10_bow, b.log10_bow)
        assert b.count is None  # a read model needs no counts to answer queries
    rng = random.Random(3)
    for _ in range(200):
        h = [rng.choice(WORDS + ["<s>", "oov"]) for _ in range(rng.randint(0, 3))]
        w = rng.choice(WORDS + ["</s>", "oov"])
        assert back.log10prob(w, h) == lm.log10prob(w, h)
    lm.write_arpa(tmp_path / "short.arpa", digits=6)
    short = NgramLM.read_arpa(tmp_path / "short.arpa")
    assert abs(short.log10prob("cat", ["the"]) - lm.log10prob("cat", ["the"])) < 1e-5


def reference_arpa_prob(entries: dict[tuple[str, ...], tuple[float, float]], order: int, word: str,
                        history: tuple[str, ...]) -> float:
    """The textbook ARPA back-off rule on a dict {n-gram: (log10 p, log10 bow)}, written independently."""
    history = history[-(order - 1):] if order > 1 else ()
    if history + (word,) in entries:
        return entries[history + (word,)][0]
    return entries.get(history, (0.0, 0.0))[1] + reference_arpa_prob(entries, order, word, history[1:])


def read_entries(text: str) -> dict[tuple[str, ...], tuple[float, float]]:
    """{n-gram: (log10 p, log10 bow)} of an ARPA text, parsed the simplest way."""
    entries, k = {}, 0
    for line in text.splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            k = int(line[1])
        elif k and line.strip() and not line.startswith("\\"):
            parts = line.split()
            entries[tuple(parts[1:k + 1])] = (float(parts[0]), float(parts[k + 1]) if len(parts) > k + 1 else 0.0)
    return entries


@pytest.mark.parametrize("max_ngrams", [None, 500])
def test_queries_follow_the_textbook_backoff_rule(tmp_path, max_ngrams):
    """Every history length (0 .. order, seen or not): malsori's query equals the back-off rule on the dict."""
    lm = NgramLM.train(random_corpus(), order=4)
    if max_ngrams:
        lm = lm.prune(max_ngrams=max_ngrams)
    lm.write_arpa(tmp_path / "m.arpa")
    entries = read_entries((tmp_path / "m.arpa").read_text())
    rng = random.Random(4)
    for length in range(lm.order + 1):
        for _ in range(150):
            h = tuple(rng.choice(WORDS + ["<s>"]) for _ in range(length))
            w = rng.choice(WORDS + ["</s>"])
            assert lm.log10prob(w, h) == pytest.approx(reference_arpa_prob(entries, lm.order, w, h), abs=1e-12)
            assert lm.log10probs(h)[lm.word_id[w]] == pytest.approx(lm.log10prob(w, h), abs=1e-12)


def test_arpa_from_another_toolkit_with_missing_prefixes_and_suffixes(tmp_path):
    # SRILM-style: no <unk>, backoff weights omitted where 0, the trigram "x y z" listed without the bigram
    # "x y" (its prefix) and "y z" (its suffix), tabs and spaces mixed, text before \data\.
    text = """produced by hand

\\data\\
ngram 1=5
ngram 2=3
ngram 3=2

\\1-grams:
-99\t<s>\t-0.5
-0.6\t</s>
-0.5\tx\t-0.2
-0.7\ty\t-0.1
-0.8  z

\\2-grams:
-0.3\t<s> x\t-0.05
-0.4\tx z
-0.2\tz </s>

\\3-grams:
-0.1\t<s> x z
-0.15\tx y z

\\end\\
"""
    (tmp_path / "o.arpa").write_text(text)
    lm = NgramLM.read_arpa(tmp_path / "o.arpa")
    entries = {("<unk>",): (-99.0, 0.0), **read_entries(text)}  # a missing <unk> is added with log10 p -99
    assert entries[("x", "y", "z")] == (-0.15, 0.0) and entries[("<s>",)] == (-99.0, -0.5)
    vocab = ["<s>", "</s>", "x", "y", "z", "oov"]
    unk = {"oov": "<unk>"}
    for h1 in vocab:
        for h2 in vocab:
            for w in vocab[1:]:
                expected = reference_arpa_prob(entries, 3, unk.get(w, w), (unk.get(h1, h1), unk.get(h2, h2)))
                assert lm.log10prob(w, (h1, h2)) == pytest.approx(expected, abs=1e-12), (h1, h2, w)
    assert_closed(lm)
    assert lm.num_ngrams == [6, 5, 2]  # <unk> added; "x y" and "y z" listed with their back-off values


def arpa_text(lines_by_order: list[list[str]], header: list[int] | None = None, end: str = "\\end\\") -> str:
    sizes = header if header is not None else [len(x) for x in lines_by_order]
    out = ["\\data\\"] + [f"ngram {k}={n}" for k, n in enumerate(sizes, 1)]
    for k, lines in enumerate(lines_by_order, 1):
        out += ["", f"\\{k}-grams:"] + lines
    return "\n".join(out + ["", end, ""])


UNI = ["-1.0\t<unk>", "-99\t<s>\t-0.3", "-0.5\t</s>", "-0.6\ta\t-0.2"]
BI = ["-0.2\t<s> a", "-0.3\ta </s>"]


@pytest.mark.parametrize("text, message", [
    ("just some text\n", "o.arpa:1: no \\\\data\\\\ line"),
    (arpa_text([UNI, BI], header=[4, 3]), "o.arpa:11: \\\\data\\\\ says 3 2-grams, the section has 2"),
    (arpa_text([UNI, ["-0.2\t<s> b", "-0.3\ta </s>"]]), "o.arpa:12: word 'b' is not among the 1-grams"),
    (arpa_text([UNI, ["-0.2\t<s> a", "minus\ta </s>"]]), "o.arpa:13: log10 probability 'minus' is not a number"),
    (arpa_text([UNI, ["0.2\t<s> a", "-0.3\ta </s>"]]), "o.arpa:12: log10 probability 0.2 is not a log10 prob"),
    (arpa_text([UNI, ["-0.2\t<s> a\t-0.1\t3", "-0.3\ta </s>"]]), "o.arpa:12: a 2-gram line needs"),
    (arpa_text([UNI, ["-0.2\t<s> a", "-0.3\t<s> a"]]), "o.arpa:13: the 2-gram '<s> a' is listed twice"),
    (arpa_text([UNI + ["-0.7\ta"], BI]), "o.arpa:10: the 1-gram 'a' is listed twice"),
    (arpa_text([["-1.0\t<unk>", "-99\t<s>", "-0.6\ta"], ["-0.2\t<s> a"]]), "no </s> among the 1-grams"),
    (arpa_text([UNI, BI], end=""), "expected \\\\end\\\\ after the 2-grams, got end of file"),
    ("\\data\\\nngram 2=4\n", "o.arpa:2: expected 'ngram 1=COUNT'"),
    (arpa_text([UNI, BI]).replace("\\2-grams:", "\\3-grams:"), "o.arpa:11: expected \\\\2-grams:"),
])
def test_bad_arpa_files_name_the_line(tmp_path, text, message):
    (tmp_path / "o.arpa").write_text(text)
    with pytest.raises(ArpaError, match=message):
        NgramLM.read_arpa(tmp_path / "o.arpa")


def test_arpa_not_utf8_and_missing(tmp_path):
    (tmp_path / "o.arpa").write_bytes(arpa_text([UNI, BI]).replace("<s> a", "<s> \xe9").encode("latin-1"))
    with pytest.raises(ArpaError, match="o.arpa:12: not UTF-8"):
        NgramLM.read_arpa(tmp_path / "o.arpa")
    with pytest.raises(ArpaError, match="not found"):
        NgramLM.read_arpa(tmp_path / "none.arpa")


@pytest.mark.parametrize("order, max_ngrams", [(3, None), (4, None), (4, 600)])
def test_kenlm_reads_the_same_probabilities(tmp_path, order, max_ngrams):
    """KenLM (a peer, when installed) gives every word the probability malsori gives it, from malsori's ARPA."""
    kenlm = pytest.importorskip("kenlm")
    lm = NgramLM.train(random_corpus(), order=order)
    if max_ngrams:
        lm = lm.prune(max_ngrams=max_ngrams)
    lm.write_arpa(tmp_path / "m.arpa")
    model = kenlm.Model(str(tmp_path / "m.arpa"))
    for sentence in random_corpus(50, seed=5) + ["the zebra sat"]:
        words = sentence.split() + ["</s>"]
        history = ["<s>"]
        for w, (theirs, _, _) in zip(words, model.full_scores(sentence, bos=True, eos=True)):
            assert theirs == pytest.approx(lm.log10prob(w, history), abs=1e-5)  # KenLM keeps float32
            history.append(w)


# --- text files ----------------------------------------------------------------------------------------------------

def test_text_files(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffFirst line.\r\n\r\n  second  \n".encode())
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("third\n")
    assert list(iter_text_lines([tmp_path / "a.txt", tmp_path / "b.txt.gz"])) == ["First line.", "second", "third"]
    (tmp_path / "bad.txt").write_bytes(b"ok\nbad \xff here\nfine\n")
    with pytest.raises(TextFileError, match=r"bad.txt:2: not UTF-8 \(byte 4"):
        list(iter_text_lines([tmp_path / "bad.txt"]))
    stats = TextReadStats()
    assert list(iter_text_lines([tmp_path / "bad.txt"], strict=False, stats=stats)) == ["ok", "fine"]
    assert stats.lines == 2 and len(stats.skipped) == 1 and "bad.txt:2" in stats.skipped[0]
    with pytest.raises(TextFileError, match="missing.txt: text file not found"):
        list(iter_text_lines([tmp_path / "a.txt", tmp_path / "missing.txt"]))
    (tmp_path / "c.txt.gz").write_bytes(b"not gzip")
    with pytest.raises(TextFileError, match="c.txt.gz: cannot read"):
        list(iter_text_lines([tmp_path / "c.txt.gz"]))


# --- the commands ----------------------------------------------------------------------------------------------------

def run(*args: str):
    return CliRunner().invoke(main, ["lm", *map(str, args)])


def test_cli_train_and_eval(tmp_path):
    (tmp_path / "train.txt").write_text("\n".join(random_corpus()) + "\nThe test sentence, 3 times.\n")
    (tmp_path / "test.txt").write_text("the test sentence three times\nthe cat sat on the zebra\n")
    r = run("train-ngram", tmp_path / "train.txt", "--order", "3", "--out", tmp_path / "m.arpa",
            "--exclude", tmp_path / "test.txt")
    assert r.exit_code == 0, r.output
    assert "3-gram LM" in r.output and "1 training lines left out" in r.output
    assert "discounts D1 D2 D3+ per order: 0.500 1.000 1.500 (fallback);" in r.output  # unigram counts of counts
    lm = NgramLM.read_arpa(tmp_path / "m.arpa")
    assert "three" not in lm.word_id  # the excluded sentence never reached training
    r = run("eval-ngram", tmp_path / "m.arpa", tmp_path / "test.txt")
    assert r.exit_code == 0, r.output
    ppl = lm.perplexity(["the test sentence three times", "the cat sat on the zebra"])
    assert f"perplexity {ppl.ppl:.2f}" in r.output and "OOV" in r.output
    r = run("train-ngram", tmp_path / "train.txt", "--order", "4", "--out", tmp_path / "p.arpa.gz",
            "--prune-count", "2", "--max-ngrams", "400")
    assert r.exit_code == 0, r.output
    assert sum(NgramLM.read_arpa(tmp_path / "p.arpa.gz").num_ngrams) <= 400
    r = run("eval-ngram", tmp_path / "p.arpa.gz", tmp_path / "test.txt", tmp_path / "train.txt", "--json")
    assert r.exit_code == 0 and r.output.count("\n") == 3 and '"text": "total"' in r.output


def test_cli_errors_are_one_line_with_exit_2(tmp_path):
    (tmp_path / "t.txt").write_text("a b c\n")
    (tmp_path / "empty.txt").write_text("\n  \n...\n")
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xfe\xff\n")
    (tmp_path / "bad.arpa").write_text(arpa_text([UNI, ["-0.2\t<s> b"]]))
    cases = [
        (["train-ngram", tmp_path / "missing.txt", "--out", tmp_path / "o.arpa"], "missing.txt: text file not found"),
        (["train-ngram", tmp_path / "empty.txt", "--out", tmp_path / "o.arpa"], "no words in the training text"),
        (["train-ngram", tmp_path / "t.txt", "--order", "0", "--out", tmp_path / "o.arpa"], "--order must be at least 1"),
        (["train-ngram", tmp_path / "bad.txt", "--out", tmp_path / "o.arpa"], "bad.txt:2: not UTF-8"),
        (["train-ngram", tmp_path / "t.txt", "--max-ngrams", "2", "--out", tmp_path / "o.arpa"], "below the 6 unigrams"),
        (["eval-ngram", tmp_path / "bad.arpa", tmp_path / "t.txt"], "bad.arpa:12: word 'b' is not among the 1-grams"),
        (["eval-ngram", tmp_path / "none.arpa", tmp_path / "t.txt"], "none.arpa: ARPA file not found"),
        (["eval-ngram", tmp_path / "bad.arpa", tmp_path / "nope.txt"], "nope.txt: text file not found"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output
    r = run("train-ngram", tmp_path / "bad.txt", "--skip-bad-lines", "--out", tmp_path / "o.arpa")
    assert r.exit_code == 0 and "skipped 1 lines" in r.output
    r = run("eval-ngram", tmp_path / "o.arpa", tmp_path / "empty.txt")
    assert r.exit_code == 2 and "no words to score" in r.output
