"""Tasks built offline: held-out items are disjoint from the pool (by input, and for translation by source and
target sentence), outputs are what the task says, and every builder is a function of its seed."""

from malsori.llm import builders
from malsori.text import normalize


def _disjoint(splits) -> bool:
    pool = {it.key for it in splits["train"]}
    return all(pool.isdisjoint(it.key for it in splits[s]) for s in ("valid", "test") if s in splits)


def test_synthetic_episodes_hold_out_one_phrase_each():
    words = [f"w{i}" for i in range(30)]
    spec, s = builders.substitution_task(words, episodes=25, seed=2)
    assert spec.metric == "exact" and len(s["test"]) == 25 and len(s["train"]) == 25 * 11 and _disjoint(s)
    for q in s["test"]:  # every word of the held-out phrase is translated somewhere in its episode's pool
        mapping = {a: b for it in s["train"] if it.group == q.group for a, b in zip(it.input.split(), it.output.split())}
        assert " ".join(mapping[w] for w in q.input.split()) == q.output
    assert builders.substitution_task(words, 25, seed=2) == (spec, s)
    spec, s = builders.linear_task(episodes=10, seed=1)
    assert _disjoint(s) and len(s["test"]) == 10
    for q in s["test"]:
        pts = [(int(it.input), int(it.output)) for it in s["train"] if it.group == q.group]
        (x0, y0), (x1, y1) = pts[:2]
        a = (y1 - y0) // (x1 - x0)
        assert int(q.output) == a * int(q.input) + (y0 - a * x0)


def test_translation_is_held_out_by_source_and_target():
    pairs = [(f"s{i % 50}.", f"t{i}.") for i in range(200)] + [("s7.", "t1."), ("a very long sentence " * 3, "x")]
    spec, s = builders.translation_task(pairs, n_test=8, n_valid=4, seed=0)
    held = s["test"] + s["valid"]
    assert spec.metric == "chrf" and len(s["test"]) == 8 and _disjoint(s)
    held_src = {it.input for it in held}
    held_tgt = {t for src, t in pairs if src in held_src}
    assert not held_src & {it.input for it in s["train"]} and not held_tgt & {it.output for it in s["train"]}
    assert all(len(it.input) <= 30 for it in s["train"] + held)


def test_normalization_and_punctuation_tasks():
    sentences = ["I woke up at 7:30.", "It costs $5.20 today.", "No digits here, sir!", "Hello there, my friend."] * 3
    spec, s = builders.normalization_task(sentences, n_templated=200, n_test=20, n_valid=5, seed=0)
    assert spec.metric == "cer" and _disjoint(s)
    assert all(it.output == normalize(it.input) != it.input and any(c.isdigit() for c in it.input) for v in s.values() for it in v)
    spec, s = builders.punctuation_task(sentences + [f"Sentence number {w}, said he." for w in "abcdefghij"], 3, 2, seed=0)
    assert _disjoint(s) and len(s["test"]) == 3
    assert all(it.input == normalize(it.output) and not any(c.isdigit() for c in it.output) for v in s.values() for it in v)
    assert builders.held_out_texts(s) >= {s["test"][0].input, s["test"][0].output}
