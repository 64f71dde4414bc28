"""Score one trained translator on a test split (eng→fra by default; fra→eng with --reverse, eng→kor with --data and
--split): BLEU/chrF (greedy and beam), decoding speed, BLEU by source length (the test sentences and longer inputs
made by joining consecutive test pairs), BLEU by rare source words, and attention maps.

    python -m experiments.mt.measure MODEL_DIR --name transformer --out ../exp-mt/results
    python -m experiments.mt.measure MODEL_DIR --name fra_eng --reverse --out ../exp-mt/results30
    python -m experiments.mt.measure MODEL_DIR --name kor --data eng-kor.txt --split split_eng_kor.tsv --char-bleu --out ...
    python -m experiments.mt.plots ../exp-mt/results --out docs/mt      # the tables and figures of docs/mt
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import torch

from malsori.checkpoint import average_checkpoints
from malsori.decode.options import DecodeOptions
from malsori.files import strict_json
from malsori.mt.data import Multi, group_references, read_parallel
from malsori.mt.score import score
from malsori.mt.split import read_split
from malsori.mt.translate import TextTranslator, pad_batch

SPLITS = Path(__file__).resolve().parents[2] / "data" / "mt"
BUCKETS = [(1, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, 40), (41, 10**6)]  # source words; 21+ split further by joined inputs


def test_set(data: Path, split_file: Path, reverse: bool = False) -> tuple[list[Multi], Counter]:
    """The test sources of a parallel file's split with all their references (`reverse`: the second column is the
    source), and how often each (lower-cased) word occurs in training sources."""
    pairs, split = read_parallel(data, reverse=reverse), read_split(split_file, data)
    counts = Counter(w for m in group_references(split.select(pairs, "train")) for w in words(m.source))
    return group_references(split.select(pairs, "test")), counts


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[\w']+", text.lower())]


def by_rare_words(items: list[Multi], hyps: list[str], counts: Counter, rare: int, char_level: bool = False) -> dict[str, dict]:
    """BLEU by the number of rare source words (seen fewer than `rare` times in training), Cho et al.'s second factor."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(items):
        n = sum(1 for w in words(m.source) if counts[w] < rare)
        groups.setdefault(str(min(n, 2)) + ("+" if n >= 2 else ""), []).append(i)
    return {k: {"bleu": (s := score([hyps[i] for i in idx], [items[i].references for i in idx], char_level)).bleu, "chrf": s.chrf,
                "sentences": len(idx)} for k, idx in sorted(groups.items())}


def joined(test: list[Multi], k: int) -> list[Multi]:
    """Consecutive runs of k test sources as one input; reference j joins each part's j-th reference (its last one
    where it has fewer)."""
    out = []
    for s in range(0, len(test) - k + 1, k):
        parts = test[s : s + k]
        most = max(len(m.references) for m in parts)
        refs = [" ".join(m.references[min(j, len(m.references) - 1)] for m in parts) for j in range(most)]
        out.append(Multi(" ".join(m.source for m in parts), refs, [line for m in parts for line in m.lines]))
    return out


def bucket_of(words: int) -> str:
    lo, hi = next(b for b in BUCKETS if b[0] <= words <= b[1])
    return f"{lo}+" if hi >= 10**6 else f"{lo}-{hi}"


def by_length(items: list[Multi], hyps: list[str], char_level: bool = False) -> dict[str, dict]:
    """BLEU and chrF per source-length bucket, with the number of sentences in each."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(items):
        groups.setdefault(bucket_of(len(m.source.split())), []).append(i)
    out = {}
    for name, idx in groups.items():
        s = score([hyps[i] for i in idx], [items[i].references for i in idx], char_level)
        out[name] = {"bleu": s.bleu, "chrf": s.chrf, "sentences": len(idx)}
    return out


def timed(tr: TextTranslator, texts: list[str], options: DecodeOptions) -> tuple[list[str], float, float]:
    """Translations, wall seconds and CPU seconds of this process (on a shared machine the wall time says little)."""
    t0, c0 = time.perf_counter(), time.process_time()
    hyps = [t.text for t in tr.translate(texts, options, batch_size=32)]
    return hyps, time.perf_counter() - t0, time.process_time() - c0


def heatmaps(tr: TextTranslator, sources: list[str], out: Path, name: str) -> list[str]:
    """Cross-attention of the model's own greedy translation over the source, one PNG per sentence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from malsori.models.aed import decoder_io

    paths = []
    tok = tr.tokenizer
    for k, text in enumerate(sources):
        hyp = tr.translate(text, DecodeOptions())
        src, src_lens = pad_batch([tok.encode(text)])
        tgt, tgt_lens = pad_batch([hyp.tokens or [tok.special_ids.eos]])
        ys_in, _, ys_lens = decoder_io(tgt, tgt_lens)
        with torch.inference_mode():
            w = tr.model.attention_weights(src, src_lens, ys_in, ys_lens)[0].numpy()
        xs = [tok.id_to_piece(i) for i in tok.encode(text)]
        ys = [tok.id_to_piece(i) for i in hyp.tokens] + ["</s>"]
        fig, ax = plt.subplots(figsize=(0.45 * len(xs) + 2, 0.4 * len(ys) + 1.5))
        ax.imshow(w[: len(ys), : len(xs)], cmap="Greys", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(xs)), xs, rotation=90)
        ax.set_yticks(range(len(ys)), ys)
        ax.set_title(f"{name}: attention of the translation over the source", fontsize=9)
        fig.tight_layout()
        path = out / f"attention_{name}_{k}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--data", default="eng-fra.txt.gz", help="parallel file under SHARED/text/parallel")
    ap.add_argument("--split", default="split_eng_fra.tsv", help="its split file under data/mt")
    ap.add_argument("--reverse", action="store_true", help="translate the second column into the first (fra→eng)")
    ap.add_argument("--char-bleu", action="store_true", help="BLEU over characters (Korean targets)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--max-join", type=int, default=5, help="join up to this many consecutive test pairs")
    ap.add_argument("--rare", type=int, default=10, help="a word seen fewer times in training sources is rare")
    ap.add_argument("--heatmaps", type=int, default=0, help="attention maps of this many test sentences")
    ap.add_argument("--checkpoints", type=Path, nargs="*", default=[],
                    help="score these checkpoints of MODEL's run, averaged, instead of its saved weights")
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    tr = TextTranslator.load(args.model, "cpu")
    if args.checkpoints:  # the same model at an earlier step (equal-step comparisons)
        tr.model.load_state_dict(average_checkpoints(args.checkpoints))
    test, counts = test_set(args.shared / "text/parallel" / args.data, SPLITS / args.split, args.reverse)
    cl = args.char_bleu
    sources, refs = [m.source for m in test], [m.references for m in test]
    result: dict = {"name": args.name, "model": str(args.model), "sentences": len(test),
                    "checkpoints": [str(c) for c in args.checkpoints], "data": args.data, "reverse": args.reverse, "char_bleu": cl,
                    "parameters": sum(p.numel() for p in tr.model.parameters()), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    greedy, *t_greedy = timed(tr, sources, DecodeOptions())
    beam, *t_beam = timed(tr, sources, DecodeOptions(method="beam", beam_size=args.beam))
    for label, hyps, (wall, cpu) in (("greedy", greedy, t_greedy), (f"beam{args.beam}", beam, t_beam)):
        s = score(hyps, refs, cl)
        result[label] = {"bleu": s.bleu, "chrf": s.chrf, "bleu_signature": s.bleu_signature, "chrf_signature": s.chrf_signature,
                         "seconds": wall, "sentences_per_sec": len(test) / wall, "cpu_seconds": cpu,
                         "sentences_per_cpu_sec": len(test) / cpu}
    long = [m for k in range(2, args.max_join + 1) for m in joined(test, k)]
    long_hyps, *_ = timed(tr, [m.source for m in long], DecodeOptions())
    result["by_length_test"] = by_length(test, greedy, cl)
    result["by_length_joined"] = by_length(long, long_hyps, cl)
    result["by_length_all"] = by_length(test + long, greedy + long_hyps, cl)
    result["by_rare_words"] = by_rare_words(test, greedy, counts, args.rare, cl)
    if args.heatmaps:
        picks = sorted(test, key=lambda m: -len(m.source.split()))[: args.heatmaps]
        result["heatmaps"] = heatmaps(tr, [m.source for m in picks], args.out, args.name)
    (args.out / f"{args.name}.json").write_text(strict_json(result, args.name, indent=1), encoding="utf-8")
    rows = ["source\tgreedy\tbeam\treferences"] + [f"{m.source}\t{g}\t{b}\t{' ||| '.join(m.references)}"
                                                    for m, g, b in zip(test, greedy, beam)]
    (args.out / f"{args.name}_test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("by_length")}, indent=1))


if __name__ == "__main__":
    main()
