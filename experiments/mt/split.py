"""Write the MT splits once (data/mt/split_eng_fra.tsv, data/mt/split_eng_kor.tsv) with the hold-out rules in one place.

    python -m experiments.mt.split --shared ../shared/data --out data/mt

Forced into training (never dev/test): every sentence of a speech manifest under `shared` (ASR training text, e.g.
the Tatoeba sentences spoken in kokoro_en), and the lines of tatoeba_eng_sentences.txt that the shipped LM recipes
(malsori/recipes/lm/) train on — all but the lines every recipe holds out (holdout_every). Tatoeba's English side IS
that file, so eng–fra dev/test can only come from the ~600 held-out lines; eng–kor has just 22 such groups, so its
split honours the ASR rule only (its English sentences are in the LM recipes' training text; no translation model
here reads those LMs). The word 3-gram ARPA of docs/lm/fusion.md was built from the whole file, so it has seen the
dev/test English sentences: do not fuse it when scoring the speech cascade on them.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
from pathlib import Path

from malsori.config import load_yaml
from malsori.lm.text_files import iter_text_lines
from malsori.mt.data import clean, group_references, read_parallel
from malsori.mt.split import make_split, overlap, text_digest, write_split

RECIPES = Path(__file__).resolve().parents[2] / "malsori" / "recipes" / "lm"
TATOEBA = "text/english/tatoeba_eng_sentences.txt"


def asr_sentences(shared: Path) -> set[str]:
    """Transcripts of every speech manifest under `shared` (any split: conservative)."""
    out: set[str] = set()
    for path in sorted(glob.glob(str(shared / "*" / "*.jsonl")) + glob.glob(str(shared / "*" / "*" / "*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            try:
                text = json.loads(line).get("text")
            except (ValueError, AttributeError):
                continue
            if isinstance(text, str) and text.strip():
                out.add(clean(text))
    return out


def lm_sentences(shared: Path) -> set[str]:
    """The Tatoeba lines some shipped LM recipe trains on: a line is held out only when every recipe that reads
    the file holds it out (index k with k % holdout_every == holdout_every - 1)."""
    lines = [clean(t) for t in iter_text_lines([shared / TATOEBA])]
    periods = []
    for recipe in sorted(RECIPES.glob("*.yaml")):
        data = load_yaml(recipe).get("data", {})
        if any(Path(p).name == Path(TATOEBA).name for p in data.get("train", [])):
            periods.append(int(data.get("holdout_every", 0)))
    if not periods or 0 in periods:
        return set(lines)
    period = math.lcm(*periods)
    return {t for k, t in enumerate(lines) if k % period != period - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("data/mt"))
    args = ap.parse_args()
    asr, lm = asr_sentences(args.shared), lm_sentences(args.shared)
    jobs = [("eng_fra", "text/parallel/eng-fra.txt.gz", asr | lm, 116, 400, "ASR transcripts and LM-recipe training text"),
            ("eng_kor", "text/parallel/eng-kor.txt", asr, 300, 500, "ASR transcripts only (see experiments/mt/split.py)")]
    for name, rel, forced, dev, test, rule in jobs:
        data = args.shared / rel
        pairs = read_parallel(data)
        split = make_split(pairs, forced, dev, test, seed=0)
        check = overlap(pairs, split)
        counts = {s: len(group_references(split.select(pairs, s))) for s in ("train", "dev", "test")}
        comment = (f"forced into train: {rule}; {len(asr):,} ASR sentences (digest {text_digest(sorted(asr))}), "
                   f"{len(lm) if forced is not asr else 0:,} LM sentences\n"
                   f"sources: train {counts['train']:,}, dev {counts['dev']:,}, test {counts['test']:,}; overlap check: {check}\n"
                   "made by: python -m experiments.mt.split")
        path = write_split(args.out / f"split_{name}.tsv", split, data, comment)
        print(f"{path}: {counts} overlap {check}")


if __name__ == "__main__":
    main()
