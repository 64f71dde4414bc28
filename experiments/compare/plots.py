"""The comparison's PNG plots: error rate against utterance length, WER per family, training loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.compare.report import LENGTH_SETS


def write_plots(results: dict, out: Path) -> dict[str, str]:
    """error_vs_duration.png, wer_by_family.png, loss_curves.png; returns {name: file name}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fams = results["families"]
    median, longest = results["corpus"]["train_median_s"], results["corpus"]["train_max_s"]
    files = {}

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    for ax, (key, title) in zip(fig.subplots(1, 2), LENGTH_SETS.items()):
        for name, f in fams.items():
            b = f[key]["greedy"]["buckets"]
            ax.plot([x["mean_duration"] for x in b], [100 * x["wer"] for x in b], marker="o", label=name,
                    linestyle="--" if f["decoder"] == "fixed" else "-", linewidth=2.5 if f["decoder"] == "fixed" else 1.5)
        ax.axvline(median, color="grey", linestyle=":", label=f"train median {median:.1f} s")
        ax.axvline(longest, color="black", linestyle=":", label=f"train max {longest:.1f} s")
        ax.set_xlabel("utterance duration (s, bucket mean)")
        ax.set_ylabel("WER % (greedy)")
        ax.set_title(f"WER vs length {title}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "error_vs_duration.png", dpi=110)
    files["error_vs_duration"] = "error_vs_duration.png"

    has_real = any("real" in f for f in fams.values())
    panels = [("test", "synthetic test split")] + ([("real", "real speech (speechocean762)")] if has_real else [])
    fig = Figure(figsize=(5.5 * len(panels), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    names = list(fams)
    x = np.arange(len(names))
    for ax, (key, title) in zip(axes, panels):
        for k, (method, off) in enumerate((("greedy", -0.2), ("beam", 0.2))):
            vals = [100 * fams[n][key][method]["wer"] if key in fams[n] else 0.0 for n in names]
            bars = ax.bar(x + off, vals, width=0.4, label=method)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("WER %")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "wer_by_family.png", dpi=110)
    files["wer_by_family"] = "wer_by_family.png"

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    for name, f in fams.items():
        curve = f["train"]["curve"]
        if curve:
            marker = "o" if len(curve) < 20 else None
            ax1.plot([c[0] for c in curve], [c[2] for c in curve], label=name, marker=marker)
            ax2.plot([c[1] / 60 for c in curve], [c[2] for c in curve], label=name, marker=marker)
    for ax, xl in ((ax1, "optimizer step"), (ax2, "wall-clock minutes")):
        ax.set_xlabel(xl)
        ax.set_ylabel("training loss (log scale)")
        ax.set_title(f"training loss by {xl.split()[-1]} (objectives differ by head)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=110)
    files["loss_curves"] = "loss_curves.png"
    return files
