"""Random spoken-digit strings for the fixed-vector vs attention length study (docs/compare/digits/).

    python benchmarks/make_digit_strings.py exp/digits/digits.txt
    malsori data synth --out exp/digits/corpus --text exp/digits/digits.txt --num-train 3000 --num-dev 100 --num-test 240
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

WORDS = "zero one two three four five six seven eight nine".split()


def digit_strings(count: int, max_len: int, seed: int) -> list[str]:
    """`count` distinct strings of 1..max_len digit words (length uniform, short lengths capped by how many exist)."""
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < count:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_len)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=9000)
    p.add_argument("--max-len", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(digit_strings(args.count, args.max_len, args.seed)) + "\n")


if __name__ == "__main__":
    main()
