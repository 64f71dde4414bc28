"""Plots and a Markdown table from experiments/llm/compare.py's results.json.

    python -m experiments.llm.plots /work/exp-llm/compare/results.json --out docs/llm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def icl_plot(icl: dict, out: Path, nll: dict | None = None) -> None:
    """Top: the task's metric against k; bottom (when measured): nats per reference-output token against k."""
    nrows = 2 if nll else 1
    fig, axes = plt.subplots(nrows, len(icl), figsize=(3.2 * len(icl), 2.8 * nrows), squeeze=False)
    for col, (name, rows) in enumerate(icl.items()):
        ax = axes[0][col]
        ax.plot([r["k"] for r in rows], [r["value"] for r in rows], "o-")
        ax.set_title(name)
        ax.set_ylabel(rows[0]["metric"])
        ax.set_xticks([r["k"] for r in rows])
        if nll and name in nll:
            ax = axes[1][col]
            ax.plot([r["k"] for r in nll[name]], [r["nats_per_token"] for r in nll[name]], "s-", color="C1")
            ax.set_ylabel("reference loss, nats/token")
            ax.set_xticks([r["k"] for r in nll[name]])
        ax.set_xlabel("examples in the prompt (k)")
    fig.tight_layout()
    fig.savefig(out / "icl_vs_k.png", dpi=110)
    plt.close(fig)


def position_plot(rows: list[dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for r in rows:
        curve = r["curve"]
        smooth = [sum(curve[max(0, i - 10) : i + 11]) / len(curve[max(0, i - 10) : i + 11]) for i in range(len(curve))]
        ax.plot(smooth, label=f"step {r['step']} (ICL score {r['icl_score']:+.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("token position in the context (characters)")
    ax.set_ylabel("loss, nats (21-position mean)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss_by_position.png", dpi=110)
    plt.close(fig)


def table(results: dict) -> str:
    lines = []
    tune = results.get("tune", {})
    if tune:
        lines += ["| method | test score (k=0) | trainable parameters | weights on disk | wall s | CPU s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for method, r in tune.items():
            t = r["test"]
            lines.append(f"| {method} | {t['metric']} {t['value']:.4g} | {r['trainable']:,} | {r['bytes_on_disk'] / 1024:.1f} KiB | "
                         f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} |")
    for name, rows in results.get("icl", {}).items():
        lines.append(f"\nICL {name} ({rows[0]['metric']}, {rows[0]['items']} items): " +
                     ", ".join(f"k={r['k']}: {r['value']:.4g}" for r in rows))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/llm"))
    args = ap.parse_args()
    results = json.loads(args.results.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    if results.get("icl"):
        icl_plot(results["icl"], args.out, results.get("icl_nll"))
    if results.get("position"):
        position_plot(results["position"], args.out)
    print(table(results))


if __name__ == "__main__":
    main()
