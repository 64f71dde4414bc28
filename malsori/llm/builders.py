"""Prompted tasks built offline from what we have, with held-out items disjoint from the pool:

- `substitution_task`: a random word → word substitution that exists only inside one prompt (an episode): the
  examples are two-word phrases translated word by word, the query a phrase never shown, so the answer can only be
  read off the examples (learning in context, not memory);
- `linear_task`: y = a·x + b in digits, (a, b) drawn per episode;
- `translation_task`: sentence pairs (English → French), held out by source sentence (and by target);
- `normalization_task`: written → spoken text by malsori's own normalizer (numbers, times, money, ordinals);
- `punctuation_task`: casing and punctuation restoration of ASR-like output (normalized text → the book sentence).
Every builder is a function of its inputs and a seed.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

from malsori.llm.taskfile import Item, TaskSpec
from malsori.text import normalize


def _split(items: Sequence[Item], n_test: int, n_valid: int, seed: int) -> dict[str, list[Item]]:
    """Shuffle unique-input items and cut test, valid and train (disjoint by input)."""
    unique = list({it.input: it for it in items}.values())
    random.Random(seed).shuffle(unique)
    return {"test": unique[:n_test], "valid": unique[n_test : n_test + n_valid], "train": unique[n_test + n_valid :]}


def substitution_task(words: Sequence[str], episodes: int, seed: int = 0, vocab: int = 4) -> tuple[TaskSpec, dict[str, list[Item]]]:
    """Episodes of a random substitution of `vocab` words by other words; each episode's test item is one two-word
    phrase, its pool the other phrases (all ordered pairs of distinct words)."""
    rng = random.Random(seed)
    words = sorted(set(words))
    if len(words) < 2 * vocab:
        raise ValueError(f"need at least {2 * vocab} distinct words")
    train, test = [], []
    for g in range(episodes):
        chosen = rng.sample(words, 2 * vocab)
        mapping = dict(zip(chosen[:vocab], chosen[vocab:]))
        phrases = [Item(f"{a} {b}", f"{mapping[a]} {mapping[b]}", group=f"e{g}") for a in mapping for b in mapping if a != b]
        rng.shuffle(phrases)
        test.append(phrases[0])
        train += phrases[1:]
    spec = TaskSpec("substitution", "exact", "replace each word as the examples do")
    return spec, {"train": train, "test": test}


def linear_task(episodes: int, seed: int = 0, points: int = 10) -> tuple[TaskSpec, dict[str, list[Item]]]:
    """Episodes of y = a·x + b (a in 2..9, b in 0..9, x in 0..20, written in digits); one test x per episode."""
    rng = random.Random(seed)
    train, test = [], []
    for g in range(episodes):
        a, b = rng.randint(2, 9), rng.randint(0, 9)
        xs = rng.sample(range(21), points)
        items = [Item(str(x), str(a * x + b), group=f"e{g}") for x in xs]
        test.append(items[0])
        train += items[1:]
    return TaskSpec("linear", "exact", "compute the number as the examples do"), {"train": train, "test": test}


def translation_task(pairs: Iterable[tuple[str, str]], n_test: int, n_valid: int, seed: int = 0, max_chars: int = 30,
                     name: str = "eng_fra", instruction: str = "translate english to french") -> tuple[TaskSpec, dict[str, list[Item]]]:
    """Sentence pairs (source, target) of at most `max_chars` characters each. Held out by source sentence: a source
    goes to test or valid with all its translations' pairs out of the pool, and pool pairs whose target is a held-out
    target are dropped too. Each held-out source keeps its first translation as the reference."""
    first: dict[str, str] = {}
    targets: dict[str, set[str]] = {}
    for src, tgt in pairs:
        src, tgt = src.strip(), tgt.strip()
        if not src or not tgt or len(src) > max_chars or len(tgt) > max_chars:
            continue
        first.setdefault(src, tgt)
        targets.setdefault(src, set()).add(tgt)
    cut = _split([Item(s, t) for s, t in first.items()], n_test, n_valid, seed)
    held_src = {it.input for s in ("test", "valid") for it in cut[s]}
    held_tgt = {t for s in held_src for t in targets[s]}
    train = [Item(s, t) for s in first if s not in held_src for t in sorted(targets[s]) if t not in held_tgt]
    spec = TaskSpec(name, "chrf", instruction)
    return spec, {"train": train, "valid": cut["valid"], "test": cut["test"]}


# Templates of sentences with numbers, for the normalization task (beside real sentences that contain digits).
NUMBER_TEMPLATES = (
    "Set an alarm for {h}:{mm}.", "The train leaves at {h}:{mm} {ampm}.", "It costs ${d}.{cc}.", "I paid ${d} for it.",
    "She was born in {year}.", "We live on the {ord} floor.", "Turn to page {n}.", "He is {age} years old.",
    "About {pct}% of them agreed.", "The meeting is at {h12} {ampm}.", "Call me at {h}:{mm}.", "It happened in {year}.",
    "There are {n} people here.", "Take the {ord} street on the left.", "It weighs {n} kilos.",
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(h=rng.randint(1, 12), mm=f"{rng.randint(0, 59):02d}", ampm=rng.choice(["am", "pm"]),
                           d=rng.randint(1, 999), cc=f"{rng.randint(1, 99):02d}", year=rng.randint(1800, 2030),
                           ord=f"{rng.randint(1, 40)}" + "th", n=rng.randint(2, 5000), age=rng.randint(2, 99),
                           pct=rng.randint(1, 99), h12=rng.randint(1, 12))


def normalization_task(sentences: Iterable[str], n_templated: int, n_test: int, n_valid: int, seed: int = 0,
                       max_chars: int = 60) -> tuple[TaskSpec, dict[str, list[Item]]]:
    """Written → spoken: sentences with digits (real ones and `n_templated` from templates) → `normalize(sentence)`."""
    rng = random.Random(seed)
    real = [s.strip() for s in sentences if any(c.isdigit() for c in s) and len(s.strip()) <= max_chars]
    made = [_fill(rng.choice(NUMBER_TEMPLATES), rng) for _ in range(n_templated)]
    items = [Item(s, normalize(s)) for s in real + made if normalize(s)]
    cut = _split([it for it in items if it.output != it.input], n_test, n_valid, seed)
    return TaskSpec("normalize", "cer", "write the sentence as it is spoken"), cut


def punctuation_task(sentences: Iterable[str], n_test: int, n_valid: int, seed: int = 0, min_chars: int = 15,
                     max_chars: int = 60) -> tuple[TaskSpec, dict[str, list[Item]]]:
    """Casing and punctuation restoration: ASR-like text (normalized: lower case, no punctuation) → the sentence as
    written; sentences without digits (the normalizer would spell them out)."""
    items = [Item(normalize(s), s.strip()) for s in sentences
             if min_chars <= len(s.strip()) <= max_chars and not any(c.isdigit() for c in s)]
    cut = _split([it for it in items if it.input], n_test, n_valid, seed)
    return TaskSpec("punctuate", "cer", "restore the punctuation and capital letters"), cut


def held_out_texts(splits: dict[str, list[Item]]) -> set[str]:
    """Every input and output of the held-out splits: text a pretraining corpus must leave out."""
    return {s for name in ("test", "valid") for it in splits.get(name, []) for s in (it.input, it.output)}
