"""Measure malsori's word n-gram LMs on ../shared/data/text/english: perplexity on held-out text of each domain,
training time, memory and ARPA size, the leak check against speechocean762_test_sample, and KenLM agreement.

    PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/ngram_bench.py --out /tmp/ngram_bench

Held-out text: LJ Speech's own val+test rows; for the other files every 20th block of 100 lines (5%), so
held-out sentences come from stretches of text the LM never saw. WikiText-2 sentences (derived from its test
and validation splits) are never trained on, only evaluated. Training lines that normalize to a
speechocean762_test_sample transcript are dropped (`--exclude`-style), and the n-gram overlap is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import time
from pathlib import Path

from malsori.lm import NgramLM, iter_text_lines
from malsori.text import normalize

TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text" / "english"
SO762 = TEXT.parents[1] / "speechocean762_test_sample" / "manifest.jsonl"
BLOCK, EVERY, HELD = 100, 20, 7  # lines per block; one block in EVERY is held out (block index % EVERY == HELD)
EVAL_LINES = 4000  # held-out lines scored per domain at most (an even stride through the held-out set)
DOMAINS = {  # name: (file, kind)
    "literature": ("gutenberg_literature.txt.gz", "blocks"),
    "nonfiction": ("gutenberg_nonfiction.txt.gz", "blocks"),
    "conversational": ("tatoeba_eng_sentences.txt", "blocks"),
    "ljspeech": ("ljspeech_transcripts.tsv", "tsv"),
}


def split_domain(name: str) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines) of one domain, normalized."""
    file, kind = DOMAINS[name]
    train, held = [], []
    if kind == "tsv":
        for i, line in enumerate(iter_text_lines([TEXT / file])):
            if i == 0:
                continue  # header
            _, split, text = line.split("\t", 2)
            (train if split == "train" else held).append(normalize(text))
    else:
        for i, line in enumerate(iter_text_lines([TEXT / file])):
            (held if (i // BLOCK) % EVERY == HELD else train).append(normalize(line))
    return [s for s in train if s], [s for s in held if s]


def speechocean_sentences() -> list[str]:
    return [normalize(json.loads(line)["text"]) for line in SO762.read_text().splitlines() if line.strip()]


def overlap(lm: NgramLM, sentences: list[str], train_text: str) -> dict:
    """How much of the test sentences the training text holds: n-gram tokens listed in the unpruned LM (which
    lists every training n-gram up to its order), and sentences found inside a longer training line."""
    out = {}
    for n in range(1, lm.order + 1):
        total = seen = 0
        for s in sentences:
            ids = lm.ids(s.split())
            for i in range(len(ids) - n + 1):
                total += 1
                seen += lm.row(ids[i:i + n]) >= 0 and lm.unk not in ids[i:i + n]
        out[f"{n}-gram tokens seen in training"] = seen / total
    unique = sorted(set(sentences))
    out["test sentences (unique)"] = len(unique)
    out["inside a longer training line"] = sum(f" {s} " in train_text for s in unique)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for split text files, ARPA files, results")
    ap.add_argument("--kenlm-path", default=None, help="folder to put on sys.path for the kenlm module (optional)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": f"{platform.processor() or platform.machine()}, "
                     f"{len(__import__('os').sched_getaffinity(0))} cores", "models": {}, "data": {}}
    try:
        results["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                           cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        pass

    # --- data: splits, leak filter ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    test_sents = speechocean_sentences()
    banned = set(test_sents)
    train, held = {}, {}
    for name in DOMAINS:
        tr, he = split_domain(name)
        kept = [s for s in tr if s not in banned]
        results["data"][name] = {"train lines": len(kept), "train words": sum(len(s.split()) for s in kept),
                                 "held-out lines": len(he), "held-out words": sum(len(s.split()) for s in he),
                                 "dropped: equal to a speechocean762 sentence": len(tr) - len(kept)}
        train[name], held[name] = kept, he
        (args.out / f"{name}.train.txt").write_text("\n".join(kept) + "\n")
        (args.out / f"{name}.heldout.txt").write_text("\n".join(he) + "\n")
    held["encyclopedic (wikitext2, never trained)"] = [s for s in map(normalize, iter_text_lines([TEXT / "wikitext2_sentences.txt"])) if s]
    held["speechocean762 sample (excluded)"] = test_sents
    for name, sents in held.items():  # an even stride through each held-out set keeps evaluation to seconds
        held[name] = sents[:: max(1, len(sents) // EVAL_LINES)]
        results["data"].setdefault(name, {})["evaluated lines"] = len(held[name])
    results["data"]["split and normalize seconds"] = time.perf_counter() - t0
    print(json.dumps(results["data"], indent=1))
    everything = [s for name in DOMAINS for s in train[name]]

    def measure(tag: str, sentences: list[str], order: int, write: bool, prune: dict | None = None,
                base: NgramLM | None = None) -> NgramLM:
        row: dict = {"order": order}
        t = time.perf_counter()
        lm = base if base is not None else NgramLM.train((s.split() for s in sentences), order)
        row["train seconds"] = time.perf_counter() - t
        if prune:
            t = time.perf_counter()
            lm = lm.prune(**prune)
            row["prune seconds"] = time.perf_counter() - t
            row["pruning"] = prune
        row["n-grams"] = lm.num_ngrams
        row["table MB"] = lm.nbytes() / 1e6
        row["peak RSS GB so far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        if write:
            path = args.out / f"{tag}.arpa"
            t = time.perf_counter()
            lm.write_arpa(path)
            row["write seconds"] = time.perf_counter() - t
            row["ARPA MB"] = path.stat().st_size / 1e6
        t = time.perf_counter()
        row["perplexity"] = {}
        for name, sents in held.items():
            r = lm.perplexity(s.split() for s in sents)
            row["perplexity"][name] = {"ppl": r.ppl, "ppl without OOVs": r.ppl_known, "OOV rate": r.oov_rate,
                                       "words": r.words}
        row["eval seconds"] = time.perf_counter() - t
        results["models"][tag] = row
        print(tag, json.dumps(row, indent=1), flush=True)
        return lm

    lm3 = measure("all-3gram", everything, 3, write=True)
    t = time.perf_counter()
    back = NgramLM.read_arpa(args.out / "all-3gram.arpa")
    results["models"]["all-3gram"]["read seconds"] = time.perf_counter() - t
    assert all((a.log10_prob == b.log10_prob).all() for a, b in zip(lm3.tables, back.tables))
    del back
    t = time.perf_counter()
    lm3.write_arpa(args.out / "all-3gram.7digits.arpa", digits=7)  # KenLM-like precision: smaller, not exact
    results["models"]["all-3gram"]["write seconds, 7 digits"] = time.perf_counter() - t
    results["models"]["all-3gram"]["ARPA MB, 7 digits"] = (args.out / "all-3gram.7digits.arpa").stat().st_size / 1e6
    lm4 = measure("all-4gram", everything, 4, write=True)
    results["leak check (speechocean762 sample vs training text)"] = overlap(
        lm4, test_sents, "\n".join(" " + s + " " for s in everything))
    print(json.dumps(results["leak check (speechocean762 sample vs training text)"], indent=1))
    measure("all-4gram count>=2", [], 4, write=True, prune={"min_count": 2}, base=lm4)
    measure("all-4gram 2M", [], 4, write=True, prune={"max_ngrams": 2_000_000}, base=lm4)
    measure("all-3gram 2M", [], 3, write=False, prune={"max_ngrams": 2_000_000}, base=lm3)
    del lm4
    for name in ("literature", "conversational"):
        measure(f"{name}-only-3gram", train[name], 3, write=False)

    if args.kenlm_path:  # KenLM reads malsori's ARPA: the same probability for every held-out word?
        import sys

        sys.path.insert(0, args.kenlm_path)
        import kenlm

        t = time.perf_counter()
        model = kenlm.Model(str(args.out / "all-3gram.arpa"))
        load = time.perf_counter() - t
        worst, words = 0.0, 0
        for name, sents in held.items():
            for s in sents[:2000]:
                history = ["<s>"]
                for w, (theirs, _, _) in zip(s.split() + ["</s>"], model.full_scores(s, bos=True, eos=True)):
                    worst = max(worst, abs(theirs - lm3.log10prob(w, history)))
                    history.append(w)
                    words += 1
        results["kenlm"] = {"load seconds (ARPA, all-3gram)": load, "words compared": words,
                            "max |log10 p difference|": worst}
        print(results["kenlm"])
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("wrote", args.out / "results.json")


if __name__ == "__main__":
    main()
