"""Training curves of a multi-source run: loss per data source against step, and dev WER/CER per epoch.

    python experiments/realspeech/plot.py exp/realspeech/en_small --out docs/realspeech/training.png
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def last_rows(path: Path, key: str) -> list[dict]:
    """Rows of a CSV log, the last one written for each value of `key` (a resumed run rewrites a few steps)."""
    rows: dict[str, dict] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            rows[row[key]] = row
    return sorted(rows.values(), key=lambda r: float(r[key]))


def smooth(values: list[float], n: int = 10) -> list[float]:
    """Running mean over the last n values (per-batch losses are noisy)."""
    return [sum(values[max(0, i - n + 1): i + 1]) / len(values[max(0, i - n + 1): i + 1]) for i in range(len(values))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    log = last_rows(args.run / "log.csv", "step")
    valid = last_rows(args.run / "valid.csv", "step") if (args.run / "valid.csv").is_file() else []
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for col in [c for c in log[0] if c.startswith("loss_")]:
        pts = [(int(r["step"]), float(r[col])) for r in log if r[col]]
        if pts:
            a.plot([p[0] for p in pts], smooth([p[1] for p in pts]), label=col[5:])
    a.set(xlabel="optimizer step", ylabel="CTC loss per utterance (running mean of 10 log rows)", yscale="log",
          title="training loss by data source")
    a.legend(fontsize=7)
    if valid:
        steps = [int(r["step"]) for r in valid]
        b.plot(steps, [100 * float(r["wer"]) for r in valid], "o-", label="WER")
        b.plot(steps, [100 * float(r["cer"]) for r in valid], "s-", label="CER")
        b.legend()
    b.set(xlabel="optimizer step", ylabel="%", title="real-speech dev set (greedy), after each epoch")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
