"""LM decoding of transducer and attention models that share one frozen encoder, every variant on the same encoder
outputs, in one run: each model's beam search with no LM, word n-gram fusion, n-gram fusion with ILME (μ per
`--ilm`), GPT fusion (and with ILME), GPT n-best rescoring. The transducer / attention counterpart of
benchmarks/bench_lm_decode.py (CTC only); the same leak check, RTF = (encoder + search) / audio.

    python experiments/lm/bench_families.py --models /work/exp-lmfam/transducer/model /work/exp-lmfam/attention/model \
      --manifest ../shared/data/speechocean762_test_sample/manifest.jsonl --limit 150 --arpa LM.arpa.gz --gpt GPT_DIR \
      --ngram 0.5,2 --gpt-fusion 0.5,0 --gpt-rescore 0.5,1 --ilm 0.2 --out result.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_lm_decode import overlap, pair  # noqa: E402
from experiments.lm.frozen_encoder import decode_encoded, encode_waves  # noqa: E402
from malsori.audio import SAMPLE_RATE  # noqa: E402
from malsori.data.manifest import read_manifest  # noqa: E402
from malsori.data.select import evenly_spaced, load_waves  # noqa: E402
from malsori.decode.options import DecodeOptions  # noqa: E402
from malsori.lm_scorers import lm_scorers, load_lm  # noqa: E402
from malsori.metrics import error_rates  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.provenance import git_commit, machine  # noqa: E402
from malsori.text import normalize  # noqa: E402


def same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """True when the two encoders hold equal tensors (the heads were trained on one frozen encoder)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def run(rec: Recognizer, encs: list[torch.Tensor], options: DecodeOptions) -> tuple[list[str], float]:
    """The model's own search per utterance on the cached encoder outputs → (hypotheses, search time)."""
    start = time.perf_counter()
    hyps = decode_encoded(rec.model, encs, options)
    return [normalize(rec.tokenizer.decode(h.tokens)) for h in hyps], time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True, help="model folders with one shared encoder")
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=150, help="evenly spaced utterances (0 = all)")
    ap.add_argument("--arpa", type=Path, required=True)
    ap.add_argument("--gpt", type=Path, default=None, help="GPT model folder in the models' units")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--ngram", type=pair, default=(0.5, 2.0), help="λ,β of n-gram fusion")
    ap.add_argument("--gpt-fusion", type=pair, default=(0.5, 0.0), help="λ,β of GPT fusion")
    ap.add_argument("--gpt-rescore", type=pair, default=(0.5, 1.0), help="λ,β of GPT rescoring")
    ap.add_argument("--ilm", type=float, nargs="*", default=[0.2], help="μ values of the ILME rows")
    ap.add_argument("--skip", nargs="*", default=[], help="variants to leave out (names up to ' λ' / ' μ')")
    ap.add_argument("--lm-text", type=Path, nargs="*", default=[], help="LM training text for the leak check")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    recs = [Recognizer.load(m, "cpu") for m in args.models]
    for r, m in zip(recs[1:], args.models[1:]):
        if not same_encoder(recs[0].model.encoder, r.model.encoder):
            sys.exit(f"error: {m}: its encoder differs from {args.models[0]}'s (the outputs are computed once)")
    utts = evenly_spaced(read_manifest(args.manifest).utterances, args.limit)
    utts, waves, errors = load_waves(utts)
    refs = [normalize(u.text) for u in utts]
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    encs, acoustic = encode_waves(recs[0], waves)
    print(f"{len(utts)} utterances ({len(errors)} unreadable), {audio:.0f} s of audio; encoder in {acoustic:.1f} s", flush=True)
    tok = recs[0].tokenizer
    ngram = load_lm(args.arpa, tok)
    gpt = load_lm(args.gpt, tok) if args.gpt else None
    (lw, lb), (gw, gb), (rw, rb) = args.ngram, args.gpt_fusion, args.gpt_rescore
    rows = []
    for rec, path in zip(recs, args.models):
        head = type(rec.model).__name__
        method = "modified_beam" if head == "TransducerModel" else "beam"

        def opts(scorers=(), rescorers=(), ilm=0.0) -> DecodeOptions:
            return DecodeOptions(method=method, beam_size=args.beam, nbest=1,
                                 scorers=scorers, rescorers=rescorers, ilm_weight=ilm)

        variants = {"no LM": opts(), f"n-gram fusion λ {lw:g} β {lb:g}": opts(lm_scorers(ngram, tok, lw, lb))}
        variants.update({f"n-gram fusion + ILME μ {mu:g}": opts(lm_scorers(ngram, tok, lw, lb), ilm=mu) for mu in args.ilm})
        if gpt is not None:
            variants[f"GPT fusion λ {gw:g} β {gb:g}"] = opts(lm_scorers(gpt, tok, gw, gb))
            variants.update({f"GPT fusion + ILME μ {mu:g}": opts(lm_scorers(gpt, tok, gw, gb), ilm=mu) for mu in args.ilm})
            variants[f"GPT rescoring λ {rw:g} β {rb:g}"] = opts(rescorers=lm_scorers(gpt, tok, rw, rb))
        for name, options in variants.items():
            if name.split(" λ")[0].split(" μ")[0] in args.skip:
                continue
            hyps, seconds = run(rec, encs, options)
            r = error_rates(refs, hyps)
            rows.append({"model": str(path), "head": head, "method": method, "variant": name, "wer": r.wer, "cer": r.cer,
                         "sub": r.substitutions, "del": r.deletions, "ins": r.insertions, "search_s": round(seconds, 2),
                         "rtf": (acoustic + seconds) / audio})
            print(f"{head:16s} {name:34s} WER {100 * r.wer:6.2f}%  CER {100 * r.cer:6.2f}%  search {seconds:7.1f} s  "
                  f"RTF {(acoustic + seconds) / audio:.4f}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows, "partial": True}, indent=1) + "\n", encoding="utf-8")
    result = {"models": [str(m) for m in args.models], "manifest": str(args.manifest), "utterances": len(utts),
              "audio_s": round(audio, 1), "encoder_s": round(acoustic, 1), "beam": args.beam, "arpa": str(args.arpa),
              "gpt": str(args.gpt), "rows": rows, "commit": git_commit(), "machine": machine(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.lm_text:
        result["leak_check"] = overlap([u.text for u in utts], args.lm_text)
        print("leak check:", result["leak_check"])
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
