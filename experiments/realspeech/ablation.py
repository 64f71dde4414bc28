"""What bridges the gap from synthetic to human speech: the same model, the same steps, different training data.

Every row fine-tunes the same starting point (the eSpeak-trained encoder `init_from` of the en-small recipe; from
scratch every variant sat on the CTC plateau longer than a row's budget) for the same number of steps with the
en-small recipe's model, optimizer and batch size, changing only the data sources and the waveform augmentation
(SpecAugment stays on in every row). Each final model is scored greedily on real speech (speechocean762, FSDD) and on
the synthesized test sets. Rows run one after another and are resumable: a finished row is kept in results.json.

    python experiments/realspeech/ablation.py [--steps 600] [--rows espeak,kokoro,augment,all,real] [--out exp/realspeech/ablation]
    python experiments/realspeech/ablation.py --report-only     # table and plot from results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RECIPE = ROOT / "recipes" / "realspeech" / "en_small.yaml"
REAL = ("speechocean762_train", "rhasspy_kathleen", "cmu_arctic", "speech_commands", "commonvoice_en_small")
ROWS = {  # row name → (description, which sources it keeps, waveform augmentation on)
    "espeak": ("eSpeak only", ("espeak",), False),
    "kokoro": ("eSpeak + Kokoro", ("espeak", "kokoro_en"), False),
    "augment": ("eSpeak + Kokoro + augmentation", ("espeak", "kokoro_en"), True),
    "all": ("+ real speech (= all, the en-small mix)", ("espeak", "kokoro_en", *REAL), True),
    "real": ("real speech alone (+ augmentation)", REAL, True),
}
SETS = ("speechocean762", "fsdd", "kokoro", "espeak")


def row_config(name: str, steps: int, out: Path) -> dict:
    """The en-small recipe with only the data sources and the augmentation of row `name` changed."""
    base = yaml.safe_load(RECIPE.read_text())
    _, keep, augment = ROWS[name]
    cfg = copy.deepcopy(base)
    cfg["out"] = str(out / name)
    cfg["data"]["sources"] = [s for s in base["data"]["sources"] if Path(s["manifest"]).stem.startswith(keep)]
    if not augment:
        cfg["augment"] = {}
    cfg["max_steps"] = steps
    cfg["max_minutes"] = 0
    return cfg


def load_sets(limit_real: int) -> dict:
    from bench_asr import DATA_ROOT, REAL_SETS, load_set

    sets = {name: load_set(name, DATA_ROOT / folder / "manifest.jsonl", limit_real) for name, (folder, _) in REAL_SETS.items()}
    sets["kokoro"] = load_set("kokoro", ROOT / "exp/realspeech/data/kokoro_test.jsonl", 0)
    sets["espeak"] = load_set("espeak", ROOT / "exp/realspeech/espeak/test.jsonl", 0)
    return sets


def score(model_dir: Path, sets: dict) -> dict:
    """Greedy WER/CER of one model folder on every set."""
    from bench_asr import run_malsori

    from malsori.pretrained import Recognizer

    rec = Recognizer.load(model_dir, device="cpu")
    out = {}
    for name, s in sets.items():
        r = run_malsori(rec, s, "greedy", 1, 16, 1)
        out[name] = {"wer": 100 * r.rates.wer, "cer": 100 * r.rates.cer, "utts": len(s.utts)}
        print(f"  {name:15s} {r.rates.line()}", flush=True)
    return out


def train(cfg: dict, out: Path, name: str) -> float:
    """Run (or resume) one row's training in a child process; returns its wall time in minutes."""
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    start = time.time()
    with open(out / f"{name}.log", "a") as log:
        subprocess.run([sys.executable, "-c", "from malsori.cli import main; main()", "train", str(path)], check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return (time.time() - start) / 60


def report(results: dict, steps: int, out_md: Path) -> None:
    """Markdown table and a grouped bar plot of WER/CER per row and set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("init", *ROWS) if n in results]
    lines = ["| row | training data | minutes | " + " | ".join(f"{s} WER / CER %" for s in SETS) + " |",
             "|---|---|---:|" + "---:|" * len(SETS)]
    for n in names:
        r = results[n]
        cells = " | ".join(f"{r['scores'][s]['wer']:.1f} / {r['scores'][s]['cer']:.1f}" for s in SETS)
        lines.append(f"| {n} | {r['desc']} | {r.get('minutes', 0):.0f} | {cells} |")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    width = 0.8 / len(names)
    for ax, metric in zip(axes, ("wer", "cer")):
        for i, n in enumerate(names):
            vals = [results[n]["scores"][s][metric] for s in SETS]
            ax.bar([j + i * width for j in range(len(SETS))], vals, width, label=f"{n}: {results[n]['desc']}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(SETS))], SETS)
        ax.set_ylabel(f"greedy {metric.upper()} %")
        ax.set_title(f"{metric.upper()} after {steps} fine-tuning steps (lower is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out_md.with_suffix(".png"), dpi=110)
    out_md.with_suffix(".table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="fine-tuning steps per row (the same for every row)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, from {', '.join(ROWS)}")
    ap.add_argument("--out", type=Path, default=ROOT / "exp/realspeech/ablation", help="run folders and results.json")
    ap.add_argument("--limit-real", type=int, default=0, help="evenly spaced utterances per real set (0 = all)")
    ap.add_argument("--report", type=Path, default=ROOT / "docs/realspeech/ablation.md",
                    help="writes <report>.table.md and <report>.png beside the hand-written page")
    ap.add_argument("--report-only", action="store_true", help="only redraw the table and plot from results.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if not args.report_only:
        import torch

        torch.set_num_threads(1)
        sets = load_sets(args.limit_real)
        init = Path(yaml.safe_load(RECIPE.read_text())["init_from"])
        if "init" not in results:
            print(f"init ({init}): the starting point of every row", flush=True)
            results["init"] = {"desc": "starting point: eSpeak-trained encoder, no fine-tuning", "scores": score(ROOT / init, sets)}
            results_path.write_text(json.dumps(results, indent=1))
        for name in args.rows.split(","):
            if name in results:
                continue
            cfg = row_config(name, args.steps, args.out)
            print(f"{name}: {ROWS[name][0]}: {len(cfg['data']['sources'])} sources, training {args.steps} steps "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            minutes = train(cfg, args.out, name)
            results[name] = {"desc": ROWS[name][0], "minutes": minutes, "steps": args.steps,
                             "sources": [s["manifest"] for s in cfg["data"]["sources"]],
                             "augment": bool(cfg["augment"]), "scores": score(args.out / name / "model", sets)}
            results_path.write_text(json.dumps(results, indent=1))
    report(results, args.steps, args.report)


if __name__ == "__main__":
    main()
