"""The length claim as a figure in the shape of Bahdanau et al. (2015), Fig. 2 — BLEU against source length for the
fixed-vector, attention and Transformer translators, with the number of sentences per bucket — and the results table,
from the JSON files of experiments.mt.measure.

    python -m experiments.mt.plots ../exp-mt/results --out docs/mt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.mt.measure import BUCKETS

ORDER = ["fixed", "attention", "transformer"]
LABELS = {"fixed": "fixed-vector LSTM (2014)", "attention": "attention LSTM (Bahdanau 2015)", "transformer": "Transformer"}


def bucket_names() -> list[str]:
    return [f"{lo}+" if hi >= 10**6 else f"{lo}-{hi}" for lo, hi in BUCKETS]


def plot(results: list[dict], key: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = bucket_names()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    counts = {}
    for r in results:
        rows = r[key]
        xs = [i for i, b in enumerate(names) if b in rows]
        ax.plot(xs, [rows[names[i]]["bleu"] for i in xs], marker="o", label=LABELS.get(r["name"], r["name"]))
        counts.update({names[i]: rows[names[i]]["sentences"] for i in xs})
    ax.set_xticks(range(len(names)), [f"{b}\n(n={counts.get(b, 0)})" for b in names], fontsize=8)
    ax.set_xlabel("source sentence length (words)")
    ax.set_ylabel("BLEU (greedy, multi-reference)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: list[dict]) -> str:
    rows = ["| model | parameters | greedy BLEU | greedy chrF | beam BLEU | beam chrF | greedy sent/s | beam sent/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        beam = next(v for k, v in r.items() if k.startswith("beam"))
        rows.append(f"| {r['name']} | {r['parameters'] / 1e6:.2f} M | {r['greedy']['bleu']:.2f} | {r['greedy']['chrf']:.2f} | "
                    f"{beam['bleu']:.2f} | {beam['chrf']:.2f} | {r['greedy']['sentences_per_sec']:.1f} | {beam['sentences_per_sec']:.1f} |")
    return "\n".join(rows)


def length_table(results: list[dict], key: str) -> str:
    names = bucket_names()
    head = "| model | " + " | ".join(names) + " |"
    rows = [head, "| --- |" + " ---: |" * len(names)]
    for r in results:
        cells = [f"{r[key][b]['bleu']:.1f} ({r[key][b]['sentences']})" if b in r[key] else "–" for b in names]
        rows.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results = [json.loads((args.results / f"{n}.json").read_text()) for n in ORDER if (args.results / f"{n}.json").is_file()]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, "by_length_all", args.out / "bleu_by_length.png",
         "eng→fra BLEU by source length (test sentences + joined consecutive test pairs)")
    print(table(results))
    print("\ntest sentences only:\n" + length_table(results, "by_length_test"))
    print("\njoined consecutive test pairs only:\n" + length_table(results, "by_length_joined"))
    print("\nall:\n" + length_table(results, "by_length_all"))
    print("\nby rare source words:")
    for r in results:
        print(f"| {r['name']} | " + " | ".join(f"{k}: {v['bleu']:.1f} ({v['sentences']})" for k, v in r.get("by_rare_words", {}).items()) + " |")


if __name__ == "__main__":
    main()
