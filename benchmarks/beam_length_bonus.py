"""Attention-only beam search against a per-token length bonus: WER/CER and how many outputs come out empty.

Without a reward per token, a beam search that sums log-probabilities can prefer ending at once (an empty output
costs one eos log-prob) over a long, correct transcript that pays for every token; a bonus counters that and, too
large, makes the decoder run on. This prints one line per model and bonus, for choosing `model.attention.length_bonus`.

    python benchmarks/beam_length_bonus.py --model exp/run/model --test corpus/test.jsonl --bonuses 0,0.5,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from malsori.data.manifest import read_manifest
from malsori.data.select import load_waves
from malsori.decode.options import DecodeOptions
from malsori.evaluate import score_waves
from malsori.pretrained import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="attention model folder (repeatable)")
    ap.add_argument("--test", required=True, help="manifest to decode")
    ap.add_argument("--bonuses", default="0,0.5,1,2", help="length bonuses to try, comma-separated")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    utts, waves, _ = load_waves(read_manifest(Path(args.test)).utterances)
    print(f"{len(utts)} utterances of {args.test}, beam {args.beam}, attention scores only")
    for folder in args.model:
        rec = Recognizer.load(folder, "cpu")
        if not hasattr(rec.model.cfg, "length_bonus"):
            raise SystemExit(f"{folder}: not an attention model (no length_bonus)")
        for bonus in (float(b) for b in args.bonuses.split(",")):
            rec.model.cfg = dataclasses.replace(rec.model.cfg, length_bonus=bonus)
            s = score_waves(rec, utts, waves, DecodeOptions(method="beam", beam_size=args.beam), 8)
            empty = sum(not h for h in s.hyps)
            print(f"{folder}  bonus {bonus:g}: WER {100 * s.rates.wer:.1f}%  CER {100 * s.rates.cer:.1f}%  empty outputs {empty}", flush=True)


if __name__ == "__main__":
    main()
