"""Write the LLM lessons' task folders and the base GPT's pretraining text from ../shared/data, offline.

    python -m experiments.llm.make_tasks --shared ../shared/data/text --out /work/exp-llm

Tasks (each a folder of task.json + train/valid/test JSON Lines, `malsori.llm.taskfile`): substitution and linear
(synthetic episodes), eng_fra (held out by English source sentence here, independently of the MT split),
normalize (written → spoken by malsori.text.normalize), punctuate (book sentences). The pretraining text mixes
English (Tatoeba, Gutenberg literature) and French (the French side of eng-fra), shuffled, and leaves out every
line that is a held-out input or output of any task, and every eng-fra pair of a held-out source sentence.
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
from collections import Counter
from pathlib import Path

from malsori.data.manifest import atomic_write_text
from malsori.llm import builders
from malsori.llm.taskfile import write_task


def read_lines(path: Path, limit: int = 0) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(line.strip())
            if limit and len(out) >= limit:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data/text"))
    ap.add_argument("--out", type=Path, default=Path("/work/exp-llm"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--literature-lines", type=int, default=40000, help="Gutenberg literature lines in the pretraining mix")
    args = ap.parse_args()

    english = read_lines(args.shared / "english/tatoeba_eng_sentences.txt")
    pairs = [tuple(line.split("\t")[:2]) for line in read_lines(args.shared / "parallel/eng-fra.txt.gz")]
    books = read_lines(args.shared / "english/gutenberg_literature.txt.gz", args.literature_lines + 20000)
    counts = Counter(w for s in english for w in re.findall(r"[a-z]+", s) if 3 <= len(w) <= 6)
    words = [w for w, _ in counts.most_common(400)]

    tasks = {
        "substitution": builders.substitution_task(words, episodes=300, seed=args.seed),
        "linear": builders.linear_task(episodes=300, seed=args.seed),
        "eng_fra": builders.translation_task(pairs, n_test=300, n_valid=100, seed=args.seed),
        "normalize": builders.normalization_task(english + books, n_templated=4000, n_test=300, n_valid=100, seed=args.seed),
        "punctuate": builders.punctuation_task(books[args.literature_lines:], n_test=300, n_valid=100, seed=args.seed),
    }
    held = set()
    for name, (spec, splits) in tasks.items():
        write_task(args.out / "tasks" / name, spec, splits)
        held |= builders.held_out_texts(splits)
        print(f"{name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    held_sources = {it.input for s in ("test", "valid") for it in tasks["eng_fra"][1].get(s, [])}
    french = sorted({fr for en, fr in pairs if en not in held_sources})
    lines = english + french + books[: args.literature_lines]
    kept = [ln for ln in lines if ln not in held and ln not in held_sources]
    random.Random(args.seed).shuffle(kept)
    out = args.out / "pretrain" / "text.txt"
    atomic_write_text(out, "".join(ln + "\n" for ln in kept))
    print(f"{out}: {len(kept):,} lines ({len(lines) - len(kept):,} held-out lines left out), "
          f"{sum(map(len, kept)) / 1e6:.1f} M characters")


if __name__ == "__main__":
    main()
