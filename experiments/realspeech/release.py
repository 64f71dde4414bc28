"""Make a released model folder from a training run: average its newest checkpoints, store the weights in fp16.

    python experiments/realspeech/release.py exp/realspeech/en_small --out models/en-small [--average 3]

The folder is an ordinary malsori model folder (`malsori.load("en-small")` finds it under models/); the model card
(README.md) is written by hand from the measured report and kept when the weights are replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from malsori.checkpoint import average_checkpoints, list_checkpoints  # noqa: E402
from malsori.features import GlobalCMVN  # noqa: E402
from malsori.models.registry import build_model  # noqa: E402
from malsori.pretrained import save_model_dir  # noqa: E402
from malsori.tokenizer import load_tokenizer  # noqa: E402
from malsori.train import TrainConfig  # noqa: E402
from malsori.config import from_dict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="training run folder (train_config.json, checkpoints, tokenizer/)")
    ap.add_argument("--out", type=Path, required=True, help="model folder to write (replaced whole, README.md kept)")
    ap.add_argument("--average", type=int, default=3, help="newest checkpoints averaged")
    ap.add_argument("--fp32", action="store_true", help="keep float32 weights (default: fp16)")
    args = ap.parse_args()

    cfg = from_dict(TrainConfig, json.loads((args.run / "train_config.json").read_text()), "train_config.json")
    tokenizer = load_tokenizer(args.run / "tokenizer")
    cmvn = GlobalCMVN.from_dict(json.loads((args.run / "feature_stats.json").read_text()))
    model = build_model(cfg.model, cfg.features.num_mel_bins, tokenizer.vocab_size)
    ckpts = list_checkpoints(args.run)[-args.average:]
    if not ckpts:
        sys.exit(f"error: {args.run}: no checkpoints")
    model.load_state_dict(average_checkpoints(ckpts))
    card = args.out / "README.md"
    kept = card.read_text() if card.is_file() else None
    save_model_dir(args.out, model, cfg.model, cfg.features, tokenizer, cmvn, dtype=None if args.fp32 else torch.float16)
    if kept is not None:
        card.write_text(kept)
    (args.out / "release.json").write_text(json.dumps({"run": str(args.run), "checkpoints": [c.name for c in ckpts],
                                                       "dtype": "float32" if args.fp32 else "float16"}, indent=1))
    size = (args.out / "model.safetensors").stat().st_size / 2**20
    print(f"{args.out}: averaged {[c.name for c in ckpts]}, model.safetensors {size:.1f} MiB")


if __name__ == "__main__":
    main()
