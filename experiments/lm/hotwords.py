"""Hotwords on en-small (issue #13): recall of names the recognizer never heard and WER, with and without
`--hotwords` (a sherpa-onnx list of the names, one boost for all), and the false alarms on utterances without them.

Sets (make_sets.py, synth_sets.sh): names_* = held-out Tatoeba sentences whose "Tom"/"Mary" became a name absent
from en-small's training transcripts, plain_* = held-out Tatoeba sentences without names. The boost is chosen on
the dev sets (lowest WER over names_dev + plain_dev with the dev name list), then the test sets are decoded without
hotwords, with the chosen boost, and with the other boosts (shown as the trade-off, not as results). Recall counts
each reference name found as a whole word in its utterance's hypothesis; a false alarm is a name of the list in a
hypothesis beyond its count in the reference. Rows go to OUT/hotwords.jsonl (a rerun skips rows already there).
Run: python experiments/lm/hotwords.py --out /work/exp-lmgrid [--lm ARPA --lm-weight 0.5 --word-bonus 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid import load_set, run_malsori  # noqa: E402

from malsori.decode.hotwords import HotwordScorer  # noqa: E402
from malsori.decode.scorers import WeightedScorer  # noqa: E402
from malsori.lm_scorers import lm_scorers, load_lm  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.provenance import git_commit  # noqa: E402
from malsori.text import normalize  # noqa: E402


def name_counts(refs: list[str], hyps: list[str], names: set[str]) -> dict:
    """Reference names found (recall) and list names in hypotheses beyond the reference's (false alarms)."""
    found = total = false = utts_false = 0
    for ref, hyp in zip(refs, hyps):
        r = Counter(w for w in ref.split() if w in names)
        h = Counter(w for w in hyp.split() if w in names)
        total += sum(r.values())
        found += sum(min(c, h[w]) for w, c in r.items())
        extra = sum(max(0, c - r[w]) for w, c in h.items())
        false += extra
        utts_false += extra > 0
    return {"names": total, "found": found, "false_alarms": false, "utts_with_false_alarm": utts_false}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="en-small")
    ap.add_argument("--boosts", default="0.5,1,1.5,2,3", help="boosts per token tried on dev")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--lm", type=Path, default=None, help="also fuse this ARPA LM (weights below)")
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--word-bonus", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = Recognizer.load(args.model, "cpu")
    rows_path = args.out / "hotwords.jsonl"
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()] if rows_path.exists() else []
    lm_tag = args.lm.name.split(".")[0] if args.lm else "none"
    base = []
    if args.lm:
        base = list(lm_scorers(load_lm(args.lm, rec.tokenizer), rec.tokenizer, args.lm_weight, args.word_bonus))

    def run(split: str, boost: float) -> dict:
        for r in rows:
            if (r["split"], r["boost"], r["lm"], r["beam"]) == (split, boost, lm_tag, args.beam):
                return r
        hw_file = args.out / "sets" / f"hotwords_{split}.txt"
        names = {normalize(n) for n in hw_file.read_text().split()}
        scorers = list(base)
        if boost > 0:
            scorers.append(WeightedScorer("hotwords", HotwordScorer.from_file(hw_file, rec.tokenizer, boost), 1.0))
        row = {"split": split, "boost": boost, "lm": lm_tag, "lm_weight": args.lm_weight if args.lm else None,
               "word_bonus": args.word_bonus if args.lm else None, "beam": args.beam, "commit": git_commit()}
        for part in ("names", "plain"):
            refs, log_probs, _, _ = load_set(rec, args.out, f"{part}_{split}")
            hyps, seconds = run_malsori(rec, log_probs, args.beam, tuple(scorers))
            e = error_rates(refs, hyps)
            errors = e.substitutions + e.deletions + e.insertions
            row[part] = {"wer": e.wer, "cer": e.cer, "words": e.words, "errors": errors, "search_s": round(seconds, 1),
                         **name_counts(refs, hyps, names), "hyps": hyps}
        row["wer"] = (row["names"]["errors"] + row["plain"]["errors"]) / (row["names"]["words"] + row["plain"]["words"])
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        n, p = row["names"], row["plain"]
        print(f"{split:4s} lm {lm_tag:18s} beam {args.beam:2d} boost {boost:4g}: recall {n['found']}/{n['names']}  "
              f"WER names {100 * n['wer']:.2f} plain {100 * p['wer']:.2f} all {100 * row['wer']:.2f}  "
              f"false alarms names {n['false_alarms']} plain {p['false_alarms']} ({p['utts_with_false_alarm']} utts)", flush=True)
        return row

    boosts = [float(b) for b in args.boosts.split(",")]
    dev = [run("dev", b) for b in [0.0] + boosts]
    best = min(dev[1:], key=lambda r: (r["wer"], -r["names"]["found"]))["boost"]
    print(f"boost chosen on dev: {best}", flush=True)
    for b in [0.0, best] + [b for b in boosts if b != best]:
        run("test", b)


if __name__ == "__main__":
    main()
