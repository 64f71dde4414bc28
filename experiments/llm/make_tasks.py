"""Write the LLM lessons' task folders and the base GPT's pretraining text from ../shared/data, offline.

    python -m experiments.llm.make_tasks --shared ../shared/data/text --out /work/exp-llm

Tasks (each a folder of task.json + train/valid/test JSON Lines, `malsori.llm.taskfile`): substitution and linear
(synthetic episodes), eng_fra, fra_eng and eng_kor (held out by source sentence here, independently of the MT
split), normalize (written → spoken by malsori.text.normalize), punctuate (book sentences). The pretraining text
mixes English (Tatoeba, Gutenberg literature), French (the French side of eng-fra) and Korean (the Korean sentence
files and the Korean side of eng-kor): sentences are shuffled one by one, the literature in runs of
`--book-run` consecutive lines (so names and phrases recur within a context, as in real documents). It leaves out
every line that is a held-out input or output of any task, and every translation of a held-out source sentence.
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
    ap.add_argument("--book-run", type=int, default=20, help="the literature enters the mix in runs of this many consecutive lines")
    ap.add_argument("--held-out-literature", type=int, default=3000,
                    help="consecutive literature lines after every used one, written as held-out running text (loss by position)")
    args = ap.parse_args()

    english = read_lines(args.shared / "english/tatoeba_eng_sentences.txt")
    pairs = [tuple(line.split("\t")[:2]) for line in read_lines(args.shared / "parallel/eng-fra.txt.gz")]
    kor_pairs = [tuple(line.split("\t")[:2]) for line in read_lines(args.shared / "parallel/eng-kor.txt")]
    korean = [ln for f in ("tatoeba_kor", "korsts_human", "korsts_machine", "kornli_xnli")
              for ln in read_lines(args.shared / f"korean/{f}_sentences.txt")]
    books = read_lines(args.shared / "english/gutenberg_literature.txt.gz", args.literature_lines + 20000 + args.held_out_literature)
    counts = Counter(w for s in english for w in re.findall(r"[a-z]+", s) if 3 <= len(w) <= 6)
    words = [w for w, _ in counts.most_common(400)]

    tasks = {
        "substitution": builders.substitution_task(words, episodes=300, seed=args.seed),
        "linear": builders.linear_task(episodes=300, seed=args.seed),
        "eng_fra": builders.translation_task(pairs, n_test=300, n_valid=100, seed=args.seed),
        "fra_eng": builders.translation_task([(f, e) for e, f in pairs], n_test=300, n_valid=100, seed=args.seed + 1,
                                             name="fra_eng", instruction="translate french to english"),
        "eng_kor": builders.translation_task(kor_pairs, n_test=300, n_valid=100, seed=args.seed, max_chars=40,
                                             name="eng_kor", instruction="translate english to korean"),
        "normalize": builders.normalization_task(english + books[: args.literature_lines + 20000], n_templated=4000, n_test=300, n_valid=100, seed=args.seed),
        "punctuate": builders.punctuation_task(books[args.literature_lines : args.literature_lines + 20000], n_test=300, n_valid=100,
                                               seed=args.seed),
    }
    held = set()
    for name, (spec, splits) in tasks.items():
        write_task(args.out / "tasks" / name, spec, splits)
        held |= builders.held_out_texts(splits)
        print(f"{name}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    for name, corpus in (("eng_fra", pairs), ("fra_eng", [(f, e) for e, f in pairs]), ("eng_kor", kor_pairs)):
        sources = {it.input for s in ("test", "valid") for it in tasks[name][1].get(s, [])}
        held |= sources | {tgt for src, tgt in corpus if src in sources}  # every translation of a held-out source
    french = sorted({fr for _, fr in pairs})
    units = [[ln] for ln in english + french + sorted(set(korean) | {ko for _, ko in kor_pairs})]
    lit = books[: args.literature_lines]
    units += [lit[i : i + args.book_run] for i in range(0, len(lit), args.book_run)]
    random.Random(args.seed).shuffle(units)
    lines = [ln for unit in units for ln in unit]
    kept = [ln for ln in lines if ln not in held]
    out = args.out / "pretrain" / "text.txt"
    atomic_write_text(out, "".join(ln + "\n" for ln in kept))
    print(f"{out}: {len(kept):,} lines ({len(lines) - len(kept):,} held-out lines left out), "
          f"{sum(map(len, kept)) / 1e6:.1f} M characters")
    running = books[args.literature_lines + 20000 :]  # in no task and not in the mix, in the books' order
    atomic_write_text(args.out / "pretrain" / "held_out_literature.txt", "".join(ln + "\n" for ln in running))
    print(f"held-out running literature: {len(running):,} lines")


if __name__ == "__main__":
    main()
