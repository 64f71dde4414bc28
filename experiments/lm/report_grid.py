"""Table (markdown, stdout) and plot (WER against the LM's perplexity on the test domain) of grid.py's rows.
Run: python experiments/lm/report_grid.py --out /work/exp-lmgrid --plot docs/lm/domain_grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DOMAINS = ("conversational", "encyclopedic", "nonfiction")
LMS = [("none", "")] + [(k, s) for s in ("S", "L") for k in ("general", "domain", "both")]
WORDS = {("general", "S"): "0.2 M", ("general", "L"): "1 M", ("domain", "S"): "0.05 M", ("domain", "L"): "0.2 M",
         ("both", "S"): "0.25 M", ("both", "L"): "1.2 M"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    rows = {(r["kind"], r["size"], r["domain"]): r for r in map(json.loads, (args.out / "grid.jsonl").read_text().splitlines())}
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
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        markers = {"general": "o", "domain": "s", "both": "^"}
        for color, d in zip(("tab:blue", "tab:orange", "tab:green"), DOMAINS):
            none = rows.get(("none", "", d))
            if none:
                ax.axhline(100 * none["wer"], color=color, ls=":", lw=1)
            for kind, size in LMS[1:]:
                r = rows.get((kind, size, d))
                if r:
                    ax.scatter(r["ppl"], 100 * r["wer"], color=color, marker=markers[kind], s=30 if size == "S" else 70,
                               label=d if (kind, size) == ("general", "S") else None)
        for kind, m in markers.items():
            ax.scatter([], [], color="gray", marker=m, label=f"{kind} LM")
        ax.set_xscale("log")
        ax.set_xlabel("LM perplexity per word on the test domain's sentences (log scale)")
        ax.set_ylabel("WER % (en-small, CTC beam 8 + 3-gram fusion)")
        ax.set_title("Domain grid: small marker = smaller LM; dotted = no LM")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
