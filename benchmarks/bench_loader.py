"""Does the data loader keep up with training? Audio seconds per second that the speech loader delivers (read,
resample, augment, tokenize, collate) with a recipe's augmentation off and on, beside what that recipe's training
run consumed (its log.csv `audio_sec_per_sec`).

    python benchmarks/bench_loader.py recipes/realspeech/en_small.yaml --run exp/realspeech/en_small --utts 300
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._record import record  # noqa: E402
from malsori.data.augment import Augmenter  # noqa: E402
from malsori.data.dataset import SpeechDataset, collate  # noqa: E402
from malsori.data.select import evenly_spaced  # noqa: E402
from malsori.recipes import resolve_recipe  # noqa: E402
from malsori.tasks import load_train_config  # noqa: E402
from malsori.tasks.asr import read_sources  # noqa: E402
from malsori.text import normalize  # noqa: E402


def throughput(dataset: SpeechDataset, draws: list[int], workers: int, batch: int = 16) -> float:
    """Audio seconds per wall second through a DataLoader with `workers` processes (0 = in the training process)."""
    batches = [draws[i : i + batch] for i in range(0, len(draws), batch)]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers)
    audio, t0 = 0.0, time.perf_counter()
    for b in loader:
        audio += float(b.wave_lens.sum()) / 16000
    return audio / (time.perf_counter() - t0)


def consumed(run: Path) -> float | None:
    """Median audio seconds per second the training run consumed (its log.csv), or None without a run."""
    log = run / "log.csv"
    if not log.is_file():
        return None
    with open(log) as f:
        speeds = [float(r["audio_sec_per_sec"]) for r in csv.DictReader(f) if r.get("audio_sec_per_sec")]
    return statistics.median(speeds) if speeds else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe", help="a speech recipe with data.sources or data.train, and augment")
    ap.add_argument("--run", type=Path, help="that recipe's training run folder (for the consumption column)")
    ap.add_argument("--utts", type=int, default=300, help="evenly spaced training utterances loaded per measurement")
    ap.add_argument("--workers", default="0,1", help="DataLoader worker counts to measure, comma-separated")
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = load_train_config(resolve_recipe(args.recipe), [])
    _, utts, _, _ = read_sources(cfg.data, verbose=False)
    draws = evenly_spaced(list(range(len(utts))), args.utts)
    encode = lambda text: [0] * len(text)  # noqa: E731  (token ids do not change the cost)
    rows = []
    for label, aug in (("off", None), ("on", cfg.augment)):
        augmenter = Augmenter.for_training(aug, utts, cfg.seed) if aug is not None else None
        dataset = SpeechDataset(utts, encode, normalize, augmenter, cfg.seed)
        for w in (int(x) for x in args.workers.split(",")):
            rate = throughput(dataset, draws, w)
            rows.append(f"| {label} | {w} | {len(draws)} | {rate:.1f} |")
            print(rows[-1], flush=True)
    used = consumed(args.run) if args.run else None
    body = "\n".join([
        f"Speech loader throughput for `{args.recipe}` ({len(utts)} training utterances; {len(draws)} evenly spaced "
        "ones per row, batches of 16; augmentation as the recipe sets it; one torch thread):",
        "",
        "| augmentation | loader workers | utterances | audio seconds per second |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"The training run `{args.run}` consumed a median {used:.1f} audio seconds per second (log.csv)." if used else
        "No training run given (--run), so no consumption figure.",
    ])
    print(body) if args.no_record else record("speech_loader", body)


if __name__ == "__main__":
    main()
