"""A model folder holding only a translator's encoder tensors, for `init_from` (which loads every tensor whose name and
shape match, so pointing it at a whole eng→fra model would start the decoder from the French one too). With shared
embeddings the encoder's embedding matrix is also the decoder's input and (tied) output matrix, so it comes along.

    python -m experiments.mt.encoder_init ../exp-mt/transformer_30min/model ../exp-mt/transformer_30min_encoder
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file, save_file

from malsori.errors import MalsoriError


def keep_encoder(model_dir: Path, out: Path, prefix: str = "encoder.") -> list[str]:
    """Write `out`/model.safetensors with the tensors of `model_dir` whose names start with `prefix`; their names."""
    path = model_dir / "model.safetensors"
    if not path.is_file():
        raise MalsoriError(f"{model_dir}: not a malsori model folder (no model.safetensors)")
    kept = {k: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
    if not kept:
        raise MalsoriError(f"{path}: no tensor named {prefix}*")
    out.mkdir(parents=True, exist_ok=True)
    save_file(kept, str(out / "model.safetensors"))
    return sorted(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    names = keep_encoder(args.model, args.out)
    print(f"{args.out}/model.safetensors: {len(names)} encoder tensors ({', '.join(n for n in names if 'embed' in n)} among them)")


if __name__ == "__main__":
    main()
