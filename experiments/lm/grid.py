"""The domain grid of issue #13: en-small's CTC prefix beam search with each word 3-gram of train_lms.sh fused at
fixed weights, on the synthesized test set of each domain: WER/CER, the LM's perplexity on that domain's test
sentences and the leak check (share of the test sentences' word n-grams found in the LM's training text).

CTC log-probs are computed once per set (benchmarks/bench_lm_decode.py's `ctc_outputs`) and cached; each (LM,
domain) row is written to OUT/grid.jsonl as soon as it is done, and a rerun skips rows already there.
Run: python experiments/lm/grid.py --out /work/exp-lmgrid --lm-weight 0.5 --word-bonus 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_lm_decode import ctc_outputs, overlap, run_malsori  # noqa: E402

from malsori.audio import SAMPLE_RATE  # noqa: E402
from malsori.data.manifest import read_manifest  # noqa: E402
from malsori.data.select import load_waves  # noqa: E402
from malsori.lm_scorers import lm_scorers, load_lm  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.provenance import git_commit  # noqa: E402
from malsori.text import normalize  # noqa: E402

DOMAINS = ("conversational", "encyclopedic", "nonfiction")
KINDS = ("general", "domain", "both", "domain_mix", "both_mix")  # LM text: literature, the test's own domain, both
MIXED = ("nonfiction",)  # domains whose text also has a "_mix" sample: lines of all its books, not the first ones


def lm_name(kind: str, domain: str, size: str) -> str:
    return {"general": f"general_{size}", "domain": f"{domain}_{size}", "both": f"{domain}_both_{size}",
            "domain_mix": f"{domain}_mix_{size}", "both_mix": f"{domain}_mix_both_{size}"}[kind]


def load_set(rec: Recognizer, out: Path, name: str) -> tuple[list[str], list[torch.Tensor], float, float]:
    """References, cached CTC log-probs, audio seconds and CTC seconds of one synthesized set."""
    cache = out / "ctc" / f"{name}.pt"
    if cache.exists():
        return torch.load(cache)
    manifest = out / "audio" / name / ("test.jsonl" if name.endswith("_test") else "dev.jsonl")
    utts, waves, errors = load_waves(read_manifest(manifest).utterances)
    assert not errors, errors
    log_probs, seconds = ctc_outputs(rec, waves)
    item = ([normalize(u.text) for u in utts], log_probs, sum(len(w) for w in waves) / SAMPLE_RATE, seconds)
    cache.parent.mkdir(exist_ok=True)
    torch.save(item, cache)
    return item


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="en-small")
    ap.add_argument("--lm-weight", type=float, required=True, help="λ, chosen on dev (tune-lm)")
    ap.add_argument("--word-bonus", type=float, required=True, help="β, chosen on dev (tune-lm)")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--sizes", default="S,L")
    ap.add_argument("--rows", default="grid.jsonl", help="file under OUT for the rows (another one for other weights)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = Recognizer.load(args.model, "cpu")
    rows_path = args.out / args.rows
    done = set()
    if rows_path.exists():
        done = {(r["lm"], r["domain"]) for r in map(json.loads, rows_path.read_text().splitlines())}
    sets = {d: load_set(rec, args.out, f"{d}_test") for d in DOMAINS}
    jobs: dict[str, list[str]] = {"none": list(DOMAINS)}  # LM → domains it is scored on
    for size in args.sizes.split(","):
        for kind in KINDS:
            for d in DOMAINS if "mix" not in kind else MIXED:
                jobs.setdefault(lm_name(kind, d, size), []).append(d)
    for lm, domains in jobs.items():
        todo = [d for d in domains if (lm, d) not in done]
        if not todo:
            continue
        t0 = time.perf_counter()
        model = None if lm == "none" else load_lm(args.out / "arpa" / f"{lm}.arpa.gz", rec.tokenizer)
        load_s = time.perf_counter() - t0
        for d in todo:
            refs, log_probs, audio_s, ctc_s = sets[d]
            scorers = () if model is None else lm_scorers(model, rec.tokenizer, args.lm_weight, args.word_bonus)
            hyps, search_s = run_malsori(rec, log_probs, args.beam, scorers)
            r = error_rates(refs, hyps)
            kind = "none" if lm == "none" else next(k for k in KINDS if lm == lm_name(k, d, lm[-1]))
            row = {"lm": lm, "domain": d, "kind": kind, "size": "" if lm == "none" else lm[-1], "utterances": len(refs), "words": r.words,
                   "wer": r.wer, "cer": r.cer, "sub": r.substitutions, "del": r.deletions, "ins": r.insertions,
                   "search_s": round(search_s, 1), "ctc_s": round(ctc_s, 1), "audio_s": round(audio_s, 1),
                   "lm_load_s": round(load_s, 1), "lm_weight": args.lm_weight, "word_bonus": args.word_bonus,
                   "beam": args.beam, "commit": git_commit(), "hyps": hyps}
            if model is not None:
                p = model.perplexity(refs)
                row.update(ppl=p.ppl, ppl_known=p.ppl_known, oov_rate=p.oov_rate,
                           leak=overlap(refs, [args.out / "text" / f"{lm}.txt"]))
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{lm:28s} {d:15s} WER {100 * r.wer:6.2f}  CER {100 * r.cer:6.2f}  ppl {row.get('ppl', 0):8.1f}  "
                  f"search {search_s:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
