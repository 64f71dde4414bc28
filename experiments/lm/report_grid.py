"""Table (markdown, stdout) and plot (WER against the LM's perplexity on the test domain) of grid.py's rows.
Run: python experiments/lm/report_grid.py --out /work/exp-lmgrid --plot docs/lm/domain_grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from grid import lm_name  # this folder is on sys.path when the script runs

from malsori.data.manifest import read_manifest
from malsori.metrics import utterance_errors
from malsori.text import normalize

DOMAINS = ("conversational", "encyclopedic", "nonfiction")
PAIRS = [(("domain", "L"), ("general", "S")), (("domain", "L"), ("general", "L")), (("both", "L"), ("general", "L")),
         (("both", "L"), ("domain", "L")), (("domain", "S"), ("general", "S")), (("domain_mix", "L"), ("general", "L")),
         (("both_mix", "L"), ("general", "L"))]  # (a, b): WER of a minus WER of b, with a bootstrap interval
LMS = [("none", "")] + [(k, s) for s in ("S", "L") for k in ("general", "domain", "both", "domain_mix", "both_mix")]
WORDS = {("general", "S"): "0.2 M", ("general", "L"): "1 M", ("domain", "S"): "0.05 M", ("domain", "L"): "0.2 M",
         ("both", "S"): "0.25 M", ("both", "L"): "1.2 M", ("domain_mix", "S"): "0.05 M", ("domain_mix", "L"): "0.2 M",
         ("both_mix", "S"): "0.25 M", ("both_mix", "L"): "1.2 M"}


def nominal(kind: str, size: str) -> float:
    """The words of WORDS' label as a number ("0.25 M" → 250,000)."""
    return float(WORDS[kind, size].split()[0]) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--rows", default="grid.jsonl", help="grid.py's rows file under OUT")
    args = ap.parse_args()
    rows = {(r["kind"], r["size"], r["domain"]): r for r in map(json.loads, (args.out / args.rows).read_text().splitlines())}
    print("| LM (3-gram, words of text) | " + " | ".join(f"{d}: WER % / CER % / ppl (OOV %)" for d in DOMAINS) + " |")
    print("|---|" + "---|" * len(DOMAINS))
    for kind, size in LMS:
        cells = []
        for d in DOMAINS:
            r = rows.get((kind, size, d))
            if r is None:
                cells.append("—")
            elif kind == "none":
                cells.append(f"{100 * r['wer']:.1f} / {100 * r['cer']:.1f} / —")
            else:
                cells.append(f"{100 * r['wer']:.1f} / {100 * r['cer']:.1f} / {r['ppl']:.0f} ({100 * r['oov_rate']:.1f})")
        label = "none" if kind == "none" else f"{kind} {WORDS[kind, size]}"
        print(f"| {label} | " + " | ".join(cells) + " |")
    words = json.loads((args.out / "sets.json").read_text())["lm_texts"]  # make_sets.py's word counts
    for d in DOMAINS:  # a domain whose text falls short of a nominal size (WikiText-2 without its test split)
        short = {f"{kind} {size}": words[lm_name(kind, d, size)] for kind, size in LMS[1:] if kind != "general"
                 and lm_name(kind, d, size) in words and words[lm_name(kind, d, size)] < 0.9 * nominal(kind, size)}
        if short:
            print(f"\n{d}: LM texts shorter than the row's size: " + ", ".join(f"{k} {v:,} words" for k, v in short.items()))
    print("\nLeak check (share of the test sentences' word 3-/4-/5-grams in the LM's training text; whole sentences):\n")
    print("| LM | " + " | ".join(DOMAINS) + " |")
    print("|---|" + "---|" * len(DOMAINS))
    for kind, size in LMS[1:]:
        cells = []
        for d in DOMAINS:
            r = rows.get((kind, size, d))
            leak = r and r["leak"]
            cells.append("—" if not leak else
                         f"{100 * leak['3-grams']:.1f} / {100 * leak['4-grams']:.1f} / {100 * leak['5-grams']:.1f}; {leak['sentences']}")
        print(f"| {kind} {WORDS[kind, size]} | " + " | ".join(cells) + " |")
    print("\nWER differences (points; a − b; 95 % paired bootstrap interval over utterances, 2000 resamples):\n")
    print("| a − b | " + " | ".join(DOMAINS) + " |")
    print("|---|" + "---|" * len(DOMAINS))
    rng = np.random.default_rng(0)
    for a, b in PAIRS:
        cells = []
        for d in DOMAINS:
            ra, rb = rows.get((*a, d)), rows.get((*b, d))
            if not (ra and rb):
                cells.append("—")
                continue
            refs = [normalize(u.text) for u in read_manifest(args.out / "audio" / f"{d}_test" / "test.jsonl").utterances]
            ea = np.array([utterance_errors(r, h)[:2] for r, h in zip(refs, ra["hyps"])])
            eb = np.array([utterance_errors(r, h)[:2] for r, h in zip(refs, rb["hyps"])])
            diff = (ea[:, 0] - eb[:, 0]).astype(float)
            idx = rng.integers(0, len(refs), (2000, len(refs)))
            boot = 100 * diff[idx].sum(1) / ea[idx, 1].sum(1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            cells.append(f"{100 * diff.sum() / ea[:, 1].sum():+.1f} [{lo:+.1f}, {hi:+.1f}]")
        print(f"| {a[0]} {WORDS[a]} − {b[0]} {WORDS[b]} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
        markers = {"general": "o", "domain": "s", "both": "^", "domain_mix": "D", "both_mix": "v"}
        for ax, key, xlabel in ((axes[0], "ppl", "LM perplexity per word on the test sentences (OOVs as <unk>; log)"),
                                (axes[1], "oov_rate", "LM's out-of-vocabulary rate on the test sentences (%)")):
            for color, d in zip(("tab:blue", "tab:orange", "tab:green"), DOMAINS):
                none = rows.get(("none", "", d))
                if none:
                    ax.axhline(100 * none["wer"], color=color, ls=":", lw=1)
                for kind, size in LMS[1:]:
                    r = rows.get((kind, size, d))
                    if r:
                        x = r[key] * (100 if key == "oov_rate" else 1)
                        ax.scatter(x, 100 * r["wer"], color=color, marker=markers[kind], s=30 if size == "S" else 70,
                                   label=d if (kind, size) == ("general", "S") else None)
            ax.set_xlabel(xlabel)
        for kind, m in markers.items():
            axes[0].scatter([], [], color="gray", marker=m, label=f"{kind} LM")
        axes[0].set_xscale("log")
        axes[0].set_ylabel("WER % (en-small, CTC beam 8 + word 3-gram fusion)")
        fig.suptitle("Domain grid: small marker = smaller LM text; dotted line = no LM, per domain")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
