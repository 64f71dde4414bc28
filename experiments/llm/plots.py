"""Plots and Markdown tables from experiments/llm/compare.py's results.json, for one base or side by side for
several base sizes (`--sizes`: each results file labelled with its size).

    python -m experiments.llm.plots /work/exp-llm/compare/results.json --out docs/llm
    python -m experiments.llm.plots tiny=a/results.json small=b/results.json+b2/results.json --sizes --out docs/llm
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
    _save(fig, out / "icl_vs_k.png")


def _smooth(curve: list[float]) -> list[float]:
    """The loss at each position as the mean of the 21 positions around it (one position is too noisy to read)."""
    return [sum(curve[max(0, i - 10) : i + 11]) / len(curve[max(0, i - 10) : i + 11]) for i in range(len(curve))]


def _position_axes(ax, xlabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss, nats (21-position mean)")
    ax.legend(fontsize=7)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def position_plot(rows: list[dict], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for r in rows:
        ax.plot(_smooth(r["curve"]), label=f"step {r['step']} (ICL score {r['icl_score']:+.3f})")
    _position_axes(ax, "token position in the context (characters)")
    _save(fig, out / "loss_by_position.png")


METHOD_ORDER = ["prompt", "lora_qv", "lora", "full"]  # fewest trained parameters first


def sizes_icl_plot(by_size: dict[str, dict], out: Path) -> None:
    """One column per task: the metric (top) and the reference output's loss (bottom) against k, a line per size."""
    tasks = list(next(iter(by_size.values())).get("icl", {}))
    fig, axes = plt.subplots(2, len(tasks), figsize=(2.9 * len(tasks), 5.2), squeeze=False)
    for col, name in enumerate(tasks):
        for size, res in by_size.items():
            rows = res.get("icl", {}).get(name)
            if rows:
                axes[0][col].plot([r["k"] for r in rows], [r["value"] for r in rows], "o-", label=size)
                axes[0][col].set_ylabel(rows[0]["metric"])
            nll = res.get("icl_nll", {}).get(name)
            if nll:
                axes[1][col].plot([r["k"] for r in nll], [r["nats_per_token"] for r in nll], "s-", label=size)
        axes[0][col].set_title(name)
        axes[1][col].set_ylabel("reference loss, nats/token")
        axes[1][col].set_xlabel("examples in the prompt (k)")
    axes[0][0].legend(fontsize=7)
    _save(fig, out / "icl_by_size.png")


def sizes_position_plot(by_size: dict[str, dict], out: Path) -> None:
    """Left: the ICL score (loss late − early in the context) against training step, a colour per size, on held-out
    running text (solid, part position_doc) and on held-out lines from unrelated places (dashed, part position);
    right: each size's last loss-by-position curve on the running text."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (size, res) in enumerate(by_size.items()):
        for part, style, what in (("position_doc", "o-", "running text"), ("position", "s--", "unrelated lines")):
            rows = res.get(part, [])
            if rows:
                ax1.plot([r["step"] for r in rows], [r["icl_score"] for r in rows], style, color=f"C{i}", label=f"{size}, {what}")
        rows = res.get("position_doc") or res.get("position", [])
        if rows:
            ax2.plot(_smooth(rows[-1]["curve"]), color=f"C{i}", label=f"{size}, step {rows[-1]['step']}")
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.set_xlabel("training step (8 × 512 characters each)")
    ax1.set_ylabel("ICL score: loss at 490–509 − at 40–59")
    ax1.legend(fontsize=6)
    _position_axes(ax2, "position in the context (characters), held-out running text")
    _save(fig, out / "icl_score_by_size.png")


def sizes_tune_plot(by_size: dict[str, dict], out: Path) -> None:
    """Per adapted task: the test score (top) and the validation output loss (bottom) of each method, a bar per size."""
    tasks = list(_tune_rows(next(iter(by_size.values())).get("tune", {})))
    if not tasks:
        return
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks), 5.4), squeeze=False)
    width = 0.8 / len(by_size)
    for col, task in enumerate(tasks):
        every = [_tune_rows(res.get("tune", {})).get(task, {}) for res in by_size.values()]
        methods = [m for m in METHOD_ORDER if any(m in runs for runs in every)]
        for i, (size, runs) in enumerate(zip(by_size, every)):
            shown = [m for m in methods if m in runs]
            xs = [methods.index(m) + (i - (len(by_size) - 1) / 2) * width for m in shown]
            axes[0][col].bar(xs, [runs[m]["test"]["value"] for m in shown], width, label=size)
            axes[1][col].bar(xs, [runs[m].get("valid_output_loss", float("nan")) for m in shown], width, label=size)
            if shown:
                axes[0][col].set_ylabel(f"test {runs[shown[0]]['test']['metric']} (k = 0)")
        for row in (0, 1):
            axes[row][col].set_xticks(range(len(methods)), methods)
        axes[0][col].set_title(task)
        axes[1][col].set_ylabel("valid output loss, nats/token")
    axes[0][0].legend(fontsize=7)
    _save(fig, out / "tune_by_size.png")


def _merge(into: dict, more: dict) -> None:
    """Join results of runs that measured different parts (nested dicts merged, other values replaced)."""
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _tune_rows(tune: dict) -> dict[str, dict]:
    """{task: {method: run}} (older results held one task: {method: run})."""
    return {"task": tune} if tune and "test" in next(iter(tune.values())) else tune


def table(results: dict, size: str = "") -> str:
    lines = []
    for task, runs in _tune_rows(results.get("tune", {})).items():
        lines += [f"\n{size} {task}", "| method | test score (k=0) | valid output loss | trainable parameters | weights on disk | wall s | CPU s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for method, r in runs.items():
            t = r["test"]
            loss = f"{r['valid_output_loss']:.3f}" if "valid_output_loss" in r else "–"
            lines.append(f"| {method} | {t['metric']} {t['value']:.4g} | {loss} | {r['trainable']:,} | {r['bytes_on_disk'] / 1024:.1f} KiB | "
                         f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} |")
    for name, rows in results.get("icl", {}).items():
        lines.append(f"\n{size} ICL {name} ({rows[0]['metric']}, {rows[0]['items']} items): " +
                     ", ".join(f"k={r['k']}: {r['value']:.4g}" for r in rows))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="results.json, or SIZE=results.json[+more.json] with --sizes")
    ap.add_argument("--sizes", action="store_true", help="compare base sizes: icl_by_size.png, icl_score_by_size.png")
    ap.add_argument("--out", type=Path, default=Path("docs/llm"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sizes:
        by_size = {}
        for spec in args.results:  # SIZE=a.json or SIZE=a.json+b.json (parts measured by separate runs)
            size, _, paths = spec.partition("=")
            by_size[size] = {}
            for path in paths.split("+"):
                _merge(by_size[size], json.loads(Path(path).read_text()))
        sizes_icl_plot(by_size, args.out)
        sizes_position_plot(by_size, args.out)
        sizes_tune_plot(by_size, args.out)
        for size, res in by_size.items():
            print(table(res, size))
        return
    results = json.loads(Path(args.results[0]).read_text())
    if results.get("icl"):
        icl_plot(results["icl"], args.out, results.get("icl_nll"))
    if results.get("position"):
        position_plot(results["position"], args.out)
    print(table(results))


if __name__ == "__main__":
    main()
