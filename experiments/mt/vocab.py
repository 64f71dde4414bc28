"""The joint English–French–Korean SentencePiece vocabulary, trained once by malsori's tokenizer on the training
splits only (both sides of eng–fra and eng–kor; Korean repeated so its syllables get pieces of their own):

    python -m experiments.mt.vocab --shared ../shared/data --out ../exp-mt/vocab_joint8k
"""

from __future__ import annotations

import argparse
from pathlib import Path

from malsori.mt.data import read_parallel
from malsori.mt.split import read_split
from malsori.tokenizer import train_tokenizer

SPLITS = Path(__file__).resolve().parents[2] / "data" / "mt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--kind", default="unigram")
    ap.add_argument("--korean-repeat", type=int, default=4, help="copies of the eng–kor training pairs")
    args = ap.parse_args()
    texts: list[str] = []
    for name, rel, repeat in (("eng_fra", "text/parallel/eng-fra.txt.gz", 1), ("eng_kor", "text/parallel/eng-kor.txt", args.korean_repeat)):
        data = args.shared / rel
        train = read_split(SPLITS / f"split_{name}.tsv", data).select(read_parallel(data), "train")
        texts += [t for p in train for t in (p.source, p.target)] * repeat
    tok = train_tokenizer(args.kind, texts, args.vocab_size, args.out)
    print(f"{args.out}: {args.kind} {tok.vocab_size} pieces from {len(texts):,} lines")


if __name__ == "__main__":
    main()
