"""How much of each task's test set the pretraining text holds: exact lines, and word n-grams seen.

    python -m experiments.llm.overlap --root /work/exp-llm2 [--n 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ngrams(line: str, n: int) -> list[tuple[str, ...]]:
    words = line.split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/work/exp-llm2"), help="make_tasks' output: pretrain/ and tasks/")
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args()
    text = (args.root / "pretrain" / "text.txt").read_text(encoding="utf-8").splitlines()
    lines, seen = set(text), {g for ln in text for g in ngrams(ln, args.n)}
    print(f"| task | field | test lines in the pretraining text | word {args.n}-grams seen there |\n| --- | --- | --- | --- |")
    for task in sorted(p for p in (args.root / "tasks").iterdir() if p.is_dir()):
        items = [json.loads(ln) for ln in (task / "test.jsonl").read_text(encoding="utf-8").splitlines()]
        for field in ("input", "output"):
            values = [it[field] for it in items]
            grams = [g for v in values for g in ngrams(v, args.n)]
            hit = sum(g in seen for g in grams)
            share = f"{hit:,} / {len(grams):,} ({100 * hit / len(grams):.1f} %)" if grams else "– (no words)"
            print(f"| {task.name} | {field} | {sum(v in lines for v in values)} / {len(values)} | {share} |")


if __name__ == "__main__":
    main()
