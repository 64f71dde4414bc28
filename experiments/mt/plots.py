"""The length claim as a figure in the shape of Bahdanau et al. (2015), Fig. 2 — BLEU against source length for the
fixed-vector, attention and Transformer translators, with the number of sentences per bucket — and the results table,
from the JSON files of experiments.mt.measure.

    python -m experiments.mt.plots ../exp-mt/results --out docs/mt
    python -m experiments.mt.plots ../exp-mt/results30 --names fixed_30min,attention_30min,transformer_30min --out docs/mt

Training throughput is read from each model's run folder (the model folder's parent): target tokens seen (log.csv's
tokens per second × each logging window) over the CPU seconds of experiments.mt.budget's budget.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

from experiments.mt.measure import BUCKETS

ORDER = "fixed,attention,transformer"  # result names, in the order of the tables
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
        ax.plot(xs, [rows[names[i]]["bleu"] for i in xs], marker="o", label=label(r["name"]))
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


def label(name: str) -> str:
    """The family's label for a result named `family` or `family_suffix`."""
    return LABELS.get(name.split("_")[0], name)


def throughput(run: Path) -> dict:
    """Steps, target tokens seen, CPU seconds (budget.json; absent for a wall-clock run) and the median of log.csv's
    target tokens per wall second, of one training run folder."""
    budget = json.loads((run / "budget.json").read_text()) if (run / "budget.json").is_file() else {}
    rows = list(csv.DictReader((run / "log.csv").open()))
    last = int(budget.get("steps", rows[-1]["step"]))
    seen, prev = 0.0, 0.0
    for row in rows:
        if int(row["step"]) <= last:
            seen += float(row["target_tokens_per_sec"]) * (float(row["elapsed"]) - prev)
        prev = float(row["elapsed"])
    return {"steps": last, "tokens": seen, "cpu_seconds": budget.get("cpu_seconds_used"),
            "median_tokens_per_sec": statistics.median(float(r["target_tokens_per_sec"]) for r in rows)}


def table(results: list[dict]) -> str:
    rows = ["| model | parameters | greedy BLEU | greedy chrF | beam BLEU | beam chrF | greedy / beam sentences per CPU s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        beam = next(v for k, v in r.items() if k.startswith("beam"))
        rows.append(f"| {r['name']} | {r['parameters'] / 1e6:.2f} M | {r['greedy']['bleu']:.2f} | {r['greedy']['chrf']:.2f} | "
                    f"{beam['bleu']:.2f} | {beam['chrf']:.2f} | {r['greedy']['sentences_per_cpu_sec']:.0f} / {beam['sentences_per_cpu_sec']:.0f} |")
    return "\n".join(rows)


def throughput_table(results: list[dict]) -> str:
    rows = ["| model | steps | target tokens seen | CPU seconds | target tokens per CPU s | median tokens/s (wall, log.csv) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        run = Path(r["model"]).parent
        if not (run / "log.csv").is_file():
            continue
        t = throughput(run)
        cpu = f"{t['cpu_seconds']:.0f}" if t["cpu_seconds"] else "–"
        per_cpu = f"{t['tokens'] / t['cpu_seconds']:,.0f}" if t["cpu_seconds"] else "–"
        rows.append(f"| {r['name']} | {t['steps']} | {t['tokens'] / 1e6:.2f} M | {cpu} | {per_cpu} | {t['median_tokens_per_sec']:,.0f} |")
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
    ap.add_argument("--names", default=ORDER, help="result files (NAME.json), comma-separated, in table order")
    args = ap.parse_args()
    names = args.names.split(",")
    results = [json.loads((args.results / f"{n}.json").read_text()) for n in names if (args.results / f"{n}.json").is_file()]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, "by_length_all", args.out / "bleu_by_length.png",
         "eng→fra BLEU by source length (test sentences + joined consecutive test pairs)")
    print(table(results))
    print("\ntraining throughput:\n" + throughput_table(results))
    print("\ntest sentences only:\n" + length_table(results, "by_length_test"))
    print("\njoined consecutive test pairs only:\n" + length_table(results, "by_length_joined"))
    print("\nall:\n" + length_table(results, "by_length_all"))
    print("\nby rare source words:")
    for r in results:
        print(f"| {r['name']} | " + " | ".join(f"{k}: {v['bleu']:.1f} ({v['sentences']})" for k, v in r.get("by_rare_words", {}).items()) + " |")


if __name__ == "__main__":
    main()
