"""Issue #14, "beyond the anchors": the fusion GPT adapted to a recognizer's domain on a few hundred in-domain
sentences (soft prompt, LoRA, full fine-tuning: `task: lm` with `base`) against a word 3-gram trained on the same
sentences, measured as WER through LM fusion in en-small's CTC prefix beam search on the domain grid's synthesized
test sets (docs/lm/domain_grid.md). Weights are fixed, or chosen per LM on the domain's dev set (--sweep); never on test.

Steps, each skipping what is already there: in-domain sentences (sampled from the grid's LM text, so never a test
or dev sentence) → adapters and the n-gram → test decoding (rows.jsonl; with --sweep, each LM's weights chosen on
the domain's dev set first; without, one fixed λ, β per LM family) → the results JSON (--results), where each
domain's entry is added or replaced as it finishes.
Run (docs/llm/domain_prompt.md):
  python experiments/llm/domain_prompt.py --grid /work/exp-lmgrid2 --gpt /work/exp-lmfuse/gpt_char_en_small/model \
      --out /work/exp-anchors --results docs/llm/results_domain_prompt.json
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "experiments" / "lm")]

from bench_lm_decode import ctc_outputs, overlap, pair, run_malsori  # noqa: E402
from make_sets import read_lines, speakable  # noqa: E402

from experiments.llm.compare import _size, _train  # noqa: E402
from malsori.data.manifest import read_manifest  # noqa: E402
from malsori.data.select import load_waves  # noqa: E402
from malsori.llm.adapters import load_lm as load_lm_folder  # noqa: E402
from malsori.lm.ngram import NgramLM  # noqa: E402
from malsori.lm_scorers import lm_scorers, load_lm  # noqa: E402
from malsori.metrics import error_rates, utterance_errors  # noqa: E402
from malsori.pretrained import Recognizer  # noqa: E402
from malsori.provenance import git_commit  # noqa: E402
from malsori.tasks.lm import encode_lines, perplexity  # noqa: E402
from malsori.text import normalize  # noqa: E402

POOL = {"conversational": "conversational_L.txt", "encyclopedic": "encyclopedic_L.txt", "nonfiction": "nonfiction_mix_L.txt"}
ADAPTERS = {  # kind → recipe and overrides
    "prompt": ("lm/gpt_domain_prompt", []),
    "lora": ("lm/gpt_domain_lora", []),
    "full": ("lm/gpt_domain_lora", ["adapter.kind=full", "optim.lr=1e-3"]),
    "prompt_lr0.3": ("lm/gpt_domain_prompt", ["optim.lr=0.3"]),  # Lester et al.'s learning rate
}
WEIGHTS = {"gpt": ((0.25, 0.0), (0.5, 0.0), (1.0, 0.0)), "ngram": ((0.5, 1.0), (0.75, 1.0), (1.0, 1.0))}  # (λ, β) on dev
GRID_ROWS = ("general_S", "general_L", "{d}_S", "{d}_L", "{d}_both_L")  # the grid's n-gram rows shown for reference


def in_domain(grid: Path, out: Path, domain: str, n: int, seed: int) -> tuple[Path, dict]:
    """`n` sentences drawn from the grid's LM text of `domain` (speakable like its test sentences), none of them a
    test or dev sentence; with the n-gram overlap of the test sentences against them."""
    path = out / "data" / f"{domain}_{n}.txt"
    held = {normalize(s) for split in ("test", "dev") for s in read_lines(grid / "sets" / f"{domain}_{split}.txt")}
    if not path.exists():
        pool = sorted({s for s in read_lines(grid / "text" / POOL[domain]) if speakable(s) and normalize(s) not in held})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(random.Random(seed).sample(pool, n)) + "\n", encoding="utf-8")
    lines = read_lines(path)
    info = {"file": str(path), "lines": len(lines), "words": sum(len(normalize(s).split()) for s in lines),
            "chars": sum(len(normalize(s)) for s in lines), "held_out_sentences_in_it": sum(normalize(s) in held for s in lines),
            "test_overlap": overlap(read_lines(grid / "sets" / f"{domain}_test.txt"), [path])}
    return path, info


def train_lms(gpt: Path, grid: Path, out: Path, domain: str, text: Path, n: int, kinds: list[str]) -> dict[str, dict]:
    """The word 3-gram and the adapters `kinds` (of ADAPTERS) on `text`: each with its folder/file, cost and size."""
    trained = {}
    dev = grid / "sets" / f"{domain}_dev.txt"
    for kind in kinds:
        recipe, extra = ADAPTERS[kind]
        run = out / "models" / f"{domain}_{n}_{kind}"
        info_path = run / "train.json"
        if not info_path.exists():
            info = _train(recipe, run, [f"base={gpt}", f"data.train=[{text}]", f"data.valid=[{dev}]", *extra])
            info_path.write_text(json.dumps(info, indent=1))
        info = json.loads(info_path.read_text())
        model = load_lm_folder(run / "model").model
        info.update(path=str(run / "model"), bytes=_size(run / "model"),
                    trainable=sum(p.numel() for p in model.parameters()) if kind == "full"
                    else sum(p.numel() for p in model.trainable().values()),
                    valid=(run / "valid.csv").read_text().splitlines())
        trained[kind] = info
    arpa = out / "arpa" / f"{domain}_{n}.arpa.gz"
    info_path = arpa.with_suffix(".json")
    if not info_path.exists():
        arpa.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "malsori.cli", "lm", "train-ngram", str(text), "--order", "3", "--out", str(arpa)]
        cpu0, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
        subprocess.run(cmd, check=True)
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        info_path.write_text(json.dumps({"wall_s": round(time.time() - start, 1), "command": " ".join(cmd[1:]),
                                         "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1)}))
    trained["ngram"] = {**json.loads(info_path.read_text()), "path": str(arpa), "bytes": arpa.stat().st_size}
    return trained


def load_set(rec: Recognizer, grid: Path, out: Path, name: str) -> tuple[list[str], list[torch.Tensor]]:
    """References and CTC log-probs of a synthesized set: the grid's cache for test sets, ours for dev sets."""
    cache = grid / "ctc" / f"{name}.pt" if name.endswith("_test") else out / "ctc" / f"{name}.pt"
    if not cache.exists():
        utts, waves, errors = load_waves(read_manifest(grid / "audio" / name / "dev.jsonl").utterances)
        assert not errors, errors
        log_probs, seconds = ctc_outputs(rec, waves)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(([normalize(u.text) for u in utts], log_probs, sum(len(w) for w in waves) / 16000, seconds), cache)
    refs, log_probs, *_ = torch.load(cache)
    return refs, log_probs


def lm_perplexity(lm, path: str, refs: list[str]) -> dict:
    """Per-word perplexity of the domain's test sentences (end of sentence counted as a word), per character too
    for the GPTs; the n-gram's OOV rate (OOVs scored as <unk>)."""
    if isinstance(lm, NgramLM):
        p = lm.perplexity(refs)
        return {"ppl_word": p.ppl, "oov_rate": p.oov_rate}
    m = load_lm_folder(path)
    v = perplexity(m.model, encode_lines(refs, m.tokenizer, normalized=True))
    return {"ppl_word": v.metrics["ppl_word"], "ppl_token": v.metrics["ppl_token"]}


def decode(rec, log_probs, refs, lm, weight: float, bonus: float, beam: int) -> dict:
    cpu = time.process_time()
    scorers = () if lm is None else lm_scorers(lm, rec.tokenizer, weight, bonus)
    hyps, search_s = run_malsori(rec, log_probs, beam, scorers)
    r = error_rates(refs, hyps)
    return {"lm_weight": weight, "word_bonus": bonus, "wer": r.wer, "cer": r.cer, "sub": r.substitutions,
            "del": r.deletions, "ins": r.insertions, "words": r.words, "search_s": round(search_s, 1),
            "search_cpu_s": round(time.process_time() - cpu, 1), "hyps": hyps}


def bootstrap(refs: list[str], a: list[str], b: list[str]) -> list[float]:
    """WER(a) − WER(b) in points and its 95 % paired bootstrap interval over utterances (2000 resamples, seed 0)."""
    rng = np.random.default_rng(0)
    ea = np.array([utterance_errors(r, h)[:2] for r, h in zip(refs, a)])
    eb = np.array([utterance_errors(r, h)[0] for r, h in zip(refs, b)])
    diff = (ea[:, 0] - eb).astype(float)
    idx = rng.integers(0, len(refs), (2000, len(refs)))
    lo, hi = np.percentile(100 * diff[idx].sum(1) / ea[idx, 1].sum(1), [2.5, 97.5])
    return [round(100 * diff.sum() / ea[:, 1].sum(), 2), round(lo, 2), round(hi, 2)]


def plot(results: dict, path: Path) -> None:
    """Each adapted GPT's test WER minus the general GPT's (95 % interval) against its test perplexity per character,
    one colour per domain: does a lower perplexity buy a lower WER?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"gpt": "o", "prompt": "s", "lora": "^", "full": "D", "prompt_lr0.3": "P"}
    for colour, (domain, r) in zip(("tab:blue", "tab:orange", "tab:green"), results["domains"].items()):
        for name, marker in markers.items():
            if name not in r["test"]:
                continue
            d = [0.0, 0.0, 0.0] if name == "gpt" else r["differences"][f"{name} - gpt"]
            ax.errorbar(r["perplexity"][name]["ppl_token"], d[0], yerr=[[d[0] - d[1]], [d[2] - d[0]]], fmt=marker,
                        color=colour, capsize=3, label=f"{domain}: {'general GPT' if name == 'gpt' else name}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("perplexity per character on the domain's test sentences")
    ax.set_ylabel("test WER − general GPT's (points, 95 % interval)")
    ax.set_title("The fusion GPT adapted on 300 in-domain sentences (en-small, CTC beam 8)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=Path, required=True, help="the domain grid's folder (make_sets.py, synth, train_lms)")
    ap.add_argument("--gpt", type=Path, required=True, help="the fusion GPT's folder (in en-small's units)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--domains", default="encyclopedic,nonfiction")
    ap.add_argument("--sentences", type=int, default=300, help="in-domain training sentences")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--beam", type=int, default=8, help="the grid's CTC prefix beam")
    ap.add_argument("--model", default="en-small")
    ap.add_argument("--kinds", default="prompt,lora,full", help="adapters trained and fused (of ADAPTERS)")
    ap.add_argument("--sweep", action="store_true", help="choose each LM's weights on the dev set (WEIGHTS)")
    ap.add_argument("--gpt-weight", default="0.5,0", help="λ,β of every GPT without --sweep (gpt_fusion.md's dev choice)")
    ap.add_argument("--ngram-weight", default="0.75,1", help="λ,β of every n-gram without --sweep (the grid's dev choice)")
    ap.add_argument("--results", type=Path, help="write the results JSON here (hypotheses left out)")
    ap.add_argument("--plot", type=Path, help="then draw the results JSON's adapters here (a PNG; `plot`)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rec = Recognizer.load(args.model, "cpu")
    rows_path = args.out / "rows.jsonl"
    rows = {}
    if rows_path.exists():
        for r in map(json.loads, rows_path.read_text().splitlines()):
            rows[r["domain"], r["lm"], r["split"], r["lm_weight"], r["word_bonus"]] = r
    grid_rows = {(r["lm"], r["domain"]): r for r in map(json.loads, (args.grid / "grid.jsonl").read_text().splitlines())}
    results = {"gpt": str(args.gpt), "model": args.model, "beam": args.beam, "sentences": args.sentences,
               "weights_tried_on_dev": WEIGHTS, "domains": {}}
    if args.results and args.results.exists():  # other domains' results stay
        results["domains"] = json.loads(args.results.read_text())["domains"]
    fixed = {"gpt": (pair(args.gpt_weight),), "ngram": (pair(args.ngram_weight),)}
    for domain in args.domains.split(","):
        text, data = in_domain(args.grid, args.out, domain, args.sentences, args.seed)
        trained = train_lms(args.gpt, args.grid, args.out, domain, text, args.sentences, args.kinds.split(","))
        paths = {"none": None, "ngram": trained["ngram"]["path"], "gpt": str(args.gpt),
                 **{k: v["path"] for k, v in trained.items() if k != "ngram"}}
        sets = {s: load_set(rec, args.grid, args.out, f"{domain}_{s}") for s in (("dev", "test") if args.sweep else ("test",))}
        chosen, ppl = {}, {}
        for name, path in paths.items():
            lm = None if path is None else load_lm(path, rec.tokenizer)
            family = "ngram" if isinstance(lm, NgramLM) else "gpt"
            weights = ((0.0, 0.0),) if lm is None else (WEIGHTS if args.sweep else fixed)[family]
            for split in ("dev", "test") if args.sweep else ("test",):
                if split == "test" and args.sweep:  # the dev set's best: lowest WER, then CER
                    best = min((rows[domain, name, "dev", w, b] for w, b in weights), key=lambda r: (r["wer"], r["cer"]))
                    weights = ((best["lm_weight"], best["word_bonus"]),)
                for w, b in weights:
                    key = (domain, name, split, w, b)
                    if key in rows:
                        continue
                    refs, log_probs = sets[split]
                    row = {"domain": domain, "lm": name, "split": split, **decode(rec, log_probs, refs, lm, w, b, args.beam),
                           "commit": git_commit()}
                    rows[key] = row
                    with rows_path.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"{domain:14s} {name:6s} {split:4s} λ {w:4.2f} β {b:3.1f}  WER {100 * row['wer']:6.2f}  "
                          f"CER {100 * row['cer']:6.2f}  search {row['search_cpu_s']:6.1f} CPU s", flush=True)
            chosen[name] = weights[0]
            if lm is not None:
                ppl[name] = lm_perplexity(lm, path, sets["test"][0])
        refs = sets["test"][0]
        test = {name: rows[domain, name, "test", *chosen[name]] for name in paths}
        dev = {name: {f"{w},{b}": r["wer"] for (d, n, split, w, b), r in rows.items() if (d, n, split) == (domain, name, "dev")}
               for name in paths}
        kinds = [k for k in ADAPTERS if k in test]
        pairs = [(a, b) for a, b in ([(k, "gpt") for k in kinds] + [("gpt", "none"), ("ngram", "none")]
                                     + [(k, "ngram") for k in kinds] + [("lora", "prompt")]) if a in test and b in test]
        grid_ref = {}
        for pattern in GRID_ROWS:
            g = grid_rows.get((pattern.format(d=domain), domain))
            if g:
                grid_ref[g["lm"]] = {k: g.get(k) for k in ("wer", "cer", "ppl", "oov_rate", "lm_weight", "word_bonus", "leak")}
        results["domains"][domain] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(), "out": str(args.out),
            "data": data, "trained": trained, "weights": "chosen per LM on the dev set" if args.sweep else
            f"fixed: GPTs λ, β = {args.gpt_weight}, n-grams {args.ngram_weight}", "dev_wer": dev, "perplexity": ppl,
            "test": {n: {k: v for k, v in r.items() if k not in ("hyps", "domain", "split")} for n, r in test.items()},
            "differences": {f"{a} - {b}": bootstrap(refs, test[a]["hyps"], test[b]["hyps"]) for a, b in pairs},
            "grid_ngram_rows": grid_ref}
        if args.results:
            args.results.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
