"""LM decoding of one CTC model on one test set, every variant on the same CTC outputs, in one run: malsori's CTC prefix
beam search with no LM, word n-gram fusion, GPT fusion, GPT n-best rescoring, n-gram fusion + GPT rescoring, and the
peer pyctcdecode + kenlm with the same ARPA file (its weights set to malsori's n-gram λ, β and to its defaults).

The CTC log-probabilities of each utterance are computed once (the "acoustic" time); each variant's time is its
search alone over all utterances, one pass; RTF = (acoustic + search) / audio seconds. References and hypotheses go
through `malsori.text.normalize`. Also prints the leak check: the share of the test transcripts' word n-grams
(n = 3, 4, 5) and whole sentences found in the LM training text.
Run: python benchmarks/bench_lm_decode.py --model en-small --manifest ../shared/data/speechocean762_test_sample/manifest.jsonl
     --limit 300 --arpa LM.arpa[.gz] --gpt GPT_DIR --ngram 0.5,2 --gpt-fusion 0.5,1 --gpt-rescore 0.5,0 --out result.json
     [--lm-text TEXT ...] (pyctcdecode needs `pip install pyctcdecode kenlm`: the peers extra)
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from malsori.audio import SAMPLE_RATE  # noqa: E402
from malsori.data.manifest import read_manifest  # noqa: E402
from malsori.data.select import evenly_spaced, load_waves  # noqa: E402
from malsori.decode.ctc import ctc_prefix_beam_search  # noqa: E402
from malsori.decode.rescore import lm_rescore  # noqa: E402
from malsori.lm.text_files import iter_text_lines  # noqa: E402
from malsori.lm_scorers import lm_scorers, load_lm  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.provenance import git_commit, machine  # noqa: E402
from malsori.text import normalize  # noqa: E402


def pair(text: str) -> tuple[float, float]:
    a, b = text.split(",")
    return float(a), float(b)


@torch.inference_mode()
def ctc_outputs(rec: Recognizer, waves: list[np.ndarray]) -> tuple[list[torch.Tensor], float]:
    """Each utterance's CTC log-probs [1, T, V] (one at a time, as a live recognizer would), and the total time."""
    start = time.perf_counter()
    out = [rec.model.head(rec.encode(w)).float().log_softmax(-1).cpu() for w in waves]
    return out, time.perf_counter() - start


def run_malsori(rec, log_probs, beam: int, scorers=(), rescorers=()) -> tuple[list[str], float]:
    """CTC prefix beam search per utterance, with fused `scorers`, its beam re-ranked by `rescorers`."""
    hyps, start = [], time.perf_counter()
    with torch.inference_mode():
        for lp in log_probs:
            best = ctc_prefix_beam_search(lp, torch.tensor([lp.size(1)]), beam, nbest=beam if rescorers else 1,
                                          scorers=scorers)[0]
            if rescorers:
                best = lm_rescore([best.nbest], rescorers)[0]
            hyps.append(normalize(rec.tokenizer.decode(best.tokens)))
    return hyps, time.perf_counter() - start


def run_pyctcdecode(rec, log_probs, arpa: Path, beam: int, alpha: float, beta: float) -> tuple[list[str], float, float]:
    """pyctcdecode's beam search with kenlm on the same log-probs → (hypotheses, search time, LM load time)."""
    from pyctcdecode import build_ctcdecoder

    labels = []
    for i in range(rec.tokenizer.vocab_size):
        piece = rec.tokenizer.id_to_piece(i)
        labels.append({"<blank>": "", "▁": " ", "<unk>": "⁇", "<sos/eos>": "§"}.get(piece, piece))
    start = time.perf_counter()
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(arpa), alpha=alpha, beta=beta)
    loaded = time.perf_counter() - start
    hyps, start = [], time.perf_counter()
    for lp in log_probs:
        hyps.append(normalize(decoder.decode(lp[0].numpy(), beam_width=beam)))
    return hyps, time.perf_counter() - start, loaded


def overlap(test: list[str], lm_texts: list[Path]) -> dict:
    """Share of the test transcripts' word n-grams (n = 3..5) and sentences that occur in the LM text."""
    sents = [normalize(t).split() for t in test]
    wanted = {n: {tuple(s[i : i + n]) for s in sents for i in range(len(s) - n + 1)} for n in (3, 4, 5)}
    found = {n: set() for n in wanted}
    whole, seen = {" ".join(s) for s in sents}, set()
    for line in iter_text_lines(lm_texts):
        words = normalize(line).split()
        if " ".join(words) in whole:
            seen.add(" ".join(words))
        for n in wanted:
            for i in range(len(words) - n + 1):
                g = tuple(words[i : i + n])
                if g in wanted[n]:
                    found[n].add(g)
    out = {f"{n}-grams": round(len(found[n]) / max(1, len(wanted[n])), 4) for n in wanted}
    out["sentences"] = f"{len(seen)} of {len(whole)}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="en-small")
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=300, help="evenly spaced utterances (0 = all)")
    ap.add_argument("--arpa", type=Path, required=True)
    ap.add_argument("--gpt", type=Path, default=None, help="GPT model folder in the model's units")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--ngram", type=pair, default=(0.5, 2.0), help="λ,β of n-gram fusion")
    ap.add_argument("--gpt-fusion", type=pair, default=(0.5, 0.0), help="λ,β of GPT fusion")
    ap.add_argument("--gpt-rescore", type=pair, default=(0.5, 0.0), help="λ,β of GPT rescoring")
    ap.add_argument("--lm-text", type=Path, nargs="*", default=[], help="LM training text for the leak check")
    ap.add_argument("--skip", nargs="*", default=[], help="variants to leave out (names as in the table)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    rec = Recognizer.load(args.model, "cpu")
    utts = evenly_spaced(read_manifest(args.manifest).utterances, args.limit)
    utts, waves, errors = load_waves(utts)
    refs = [normalize(u.text) for u in utts]
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    log_probs, acoustic = ctc_outputs(rec, waves)
    print(f"{len(utts)} utterances ({len(errors)} unreadable), {audio:.0f} s of audio; CTC outputs in {acoustic:.1f} s", flush=True)
    ngram = load_lm(args.arpa, rec.tokenizer)
    gpt = load_lm(args.gpt, rec.tokenizer) if args.gpt else None
    rows = []

    def add(name: str, hyps: list[str], seconds: float, **extra) -> None:
        r = error_rates(refs, hyps)
        rows.append({"variant": name, "wer": r.wer, "cer": r.cer, "sub": r.substitutions, "del": r.deletions,
                     "ins": r.insertions, "search_s": round(seconds, 2), "rtf": (acoustic + seconds) / audio, **extra})
        print(f"{name:40s} WER {100 * r.wer:6.2f}%  CER {100 * r.cer:6.2f}%  search {seconds:7.1f} s  "
              f"RTF {(acoustic + seconds) / audio:.4f}", flush=True)

    (lw, lb), (gw, gb), (rw, rb) = args.ngram, args.gpt_fusion, args.gpt_rescore
    variants = {
        "no LM": lambda: run_malsori(rec, log_probs, args.beam),
        f"n-gram fusion λ {lw:g} β {lb:g}": lambda: run_malsori(rec, log_probs, args.beam, lm_scorers(ngram, rec.tokenizer, lw, lb)),
    }
    if gpt is not None:
        variants[f"GPT fusion λ {gw:g} β {gb:g}"] = lambda: run_malsori(rec, log_probs, args.beam, lm_scorers(gpt, rec.tokenizer, gw, gb))
        variants[f"GPT rescoring λ {rw:g} β {rb:g}"] = lambda: run_malsori(
            rec, log_probs, args.beam, rescorers=lm_scorers(gpt, rec.tokenizer, rw, rb))
        variants["n-gram fusion + GPT rescoring"] = lambda: run_malsori(
            rec, log_probs, args.beam, lm_scorers(ngram, rec.tokenizer, lw, lb), lm_scorers(gpt, rec.tokenizer, rw, rb))
    for name, fn in variants.items():
        if name.split(" λ")[0] not in args.skip:
            add(name, *fn())
    arpa = args.arpa
    with tempfile.TemporaryDirectory() as tmp:
        if arpa.name.endswith(".gz"):  # kenlm reads plain ARPA
            arpa = Path(tmp) / arpa.name[:-3]
            with gzip.open(args.arpa, "rb") as src, open(arpa, "wb") as dst:
                shutil.copyfileobj(src, dst)
        for alpha, beta, how in ((lw, lb, "malsori's n-gram λ, β"), (0.5, 1.0, "its defaults")) * ("pyctcdecode" not in args.skip):
            try:
                hyps, seconds, loaded = run_pyctcdecode(rec, log_probs, arpa, args.beam, alpha, beta)
            except ImportError as e:
                print(f"pyctcdecode + kenlm: not installed ({e}); pip install pyctcdecode kenlm", flush=True)
                break
            add(f"pyctcdecode + kenlm α {alpha:g} β {beta:g} ({how})", hyps, seconds, lm_load_s=round(loaded, 1))
    result = {"model": str(args.model), "manifest": str(args.manifest), "utterances": len(utts), "audio_s": round(audio, 1),
              "acoustic_s": round(acoustic, 1), "beam": args.beam, "arpa": str(args.arpa), "gpt": str(args.gpt),
              "rows": rows, "commit": git_commit(), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.lm_text:
        result["leak_check"] = overlap([u.text for u in utts], args.lm_text)
        print("leak check:", result["leak_check"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
