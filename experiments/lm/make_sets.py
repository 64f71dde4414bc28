"""Text for the domain grid and the hotword test of issue #13: held-out test/dev sentences of three domains, LM
training texts (general = literature, in-domain, both) at two sizes, and name / no-name sentences for hotwords.

Held-out rules: test and dev sentences come from a region of each domain file that no LM text is drawn from
(WikiText-2: the lines of its test split, LM text only from its valid split, see `wikitext_origin`; Gutenberg
non-fiction: its last 15 % of lines, whole books; Tatoeba, sorted by length: a random 10 % of lines), every LM
text also drops lines that normalize to any test/dev sentence, and no chosen sentence (or hotword name) occurs in
en-small's training transcripts. Writes OUT/sets/*.txt, OUT/text/*.txt and OUT/sets.json (counts, sizes, the
checks). Run: python experiments/lm/make_sets.py --out /work/exp-lmgrid2
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import numpy as np

from malsori.data.manifest import read_manifest
from malsori.text import normalize

TEXT = Path("../shared/data/text/english")
DOMAINS = {  # name → (file, held-out region: "tail" = last 15 % of lines, "random" = a random 10 %,
    # "origin" = WikiText-2's test split)
    "conversational": (TEXT / "tatoeba_eng_sentences.txt", "random"),
    "encyclopedic": (TEXT / "wikitext2_sentences.txt", "origin"),  # held out: WikiText-2 test lines; LM: valid lines
    "nonfiction": (TEXT / "gutenberg_nonfiction.txt.gz", "tail"),
}
GENERAL = TEXT / "gutenberg_literature.txt.gz"  # the general LM's text (not a test domain: there general = in-domain)
SIZES = {"S": (200_000, 50_000), "L": (1_000_000, 200_000)}  # size → (general words, in-domain words)
TRAIN_MANIFESTS = sorted(Path("/work/main/exp/realspeech/data").glob("*.jsonl"))  # en-small's sources (and its eval sets)
TEST_NAMES = ("Bartholomew Ingrid Rosalind Ezekiel Priyanka Ludmila Oswaldo Thaddeus Magdalena Cornelius Anastasia "
              "Kowalski Nakamura Yolanda Gwendolyn Desmond Winifred Ignatius Florentina Bogdan Svetlana Rasmussen "
              "Valentina Mortimer Lucinda Jacinta Fernanda Takahashi Evangeline Esperanza Gregorio Hildegard Isadora "
              "Leopoldo Marguerite Montgomery Fitzgerald Benedikt Ramirez").split()
DEV_NAMES = "Octavia Reginald Wilhelmina Alessandro Cassandra Dimitri Natasha Sebastian Penelope Maximilian Rosalie Tobias".split()
CLEAN = re.compile(r"^[A-Za-z][A-Za-z ,.'?!;:\"-]*$")


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def squash(s: str) -> str:
    """WikiText text with its `@-@`, `@,@`, `@.@` tokens mapped as ../shared/data/text/README.md says, no whitespace."""
    return re.sub(r"\s+", "", s.replace("@-@", "-").replace("@,@", ",").replace("@.@", "."))


def wikitext_origin(lines: list[str]) -> list[str]:
    """Split of origin of each wikitext2_sentences line (the file joins the raw test and tokenized valid splits):
    "test", "valid", or "ambiguous" (found in both or in neither; never used as LM text)."""
    test = squash(gzip.open(TEXT / "wikitext2_test.raw.txt.gz", "rt", encoding="utf-8").read())
    valid = squash(gzip.open(TEXT / "wikitext2_valid.tokens.txt.gz", "rt", encoding="utf-8").read())
    out = []
    for line in lines:
        s = squash(line)
        in_test, in_valid = s in test, s in valid
        out.append("test" if in_test and not in_valid else "valid" if in_valid and not in_test else "ambiguous")
    return out


def speakable(s: str, lo: int = 6, hi: int = 16) -> bool:
    """A sentence for the test sets: letters and light punctuation only, lo..hi words, no WikiText markup."""
    return bool(CLEAN.match(s)) and " @" not in s and lo <= len(normalize(s).split()) <= hi


def take_words(lines: list[str], n_words: int, drop: set[str]) -> tuple[list[str], int]:
    """Lines from the start until n_words words, skipping lines in `drop` (normalized)."""
    out, total = [], 0
    for line in lines:
        words = normalize(line).split()
        if not words or " ".join(words) in drop:
            continue
        out.append(line)
        total += len(words)
        if total >= n_words:
            break
    return out, total


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--test", type=int, default=100, help="test sentences per domain")
    ap.add_argument("--dev", type=int, default=20, help="dev sentences per domain (weights are tuned on these)")
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    trained = {normalize(u.text) for m in TRAIN_MANIFESTS for u in read_manifest(m).utterances}
    trained_words = {w for t in trained for w in t.split()}
    info: dict = {"asr_training_transcripts": len(trained), "domains": {}}
    held: dict[str, list[str]] = {}
    pools: dict[str, list[str]] = {}
    legacy_tail: dict[str, list[str]] = {}  # the first version's held-out region (see below)
    for name, (path, region) in DOMAINS.items():
        lines = read_lines(path)
        if region == "origin":  # WikiText-2: never train on its test split (ambiguous lines count as test)
            origin = wikitext_origin(lines)
            info["wikitext_origin"] = {k: origin.count(k) for k in ("test", "valid", "ambiguous")}
            pools[name] = [s for s, o in zip(lines, origin) if o == "valid"]
            held[name] = [s for s, o in zip(lines, origin) if o != "valid"]
            legacy_tail[name] = lines[int(len(lines) * 0.85):]
        elif region == "tail":
            cut = int(len(lines) * 0.85)
            pools[name], held[name] = lines[:cut], lines[cut:]
        else:
            mask = rng.random(len(lines)) < 0.10
            pools[name] = [s for s, m in zip(lines, mask) if not m]
            held[name] = [s for s, m in zip(lines, mask) if m]
            rng.shuffle(pools[name])  # the file is sorted by length: LM text is a random sample of the rest
    chosen: dict[str, list[str]] = {}

    def candidates(region: list[str]) -> list[str]:
        return list(dict.fromkeys(s for s in region if speakable(s) and normalize(s) not in trained
                                  and not re.search(r"\b(Tom|Mary)\b", s)))

    for name in DOMAINS:
        cands = candidates(held[name])
        if name in legacy_tail:  # the first version (2026-11-30, corrected the same day) drew WikiText-2's sentences
            # from its last 15 % of lines with the shared generator: consume the same draws, so that the other
            # domains' sets and the hotword sets (and their synthesized speech) stay as they were
            rng.permutation(len(candidates(legacy_tail[name])))
            np.random.default_rng([args.seed, 2]).shuffle(cands)
        else:
            rng.shuffle(cands)
        chosen[f"{name}_test"] = cands[: args.test]
        chosen[f"{name}_dev"] = cands[args.test: args.test + args.dev]
        info["domains"][name] = {"file": str(DOMAINS[name][0]), "held_out_lines": len(held[name]),
                                 "candidates": len(cands), "lm_pool_lines": len(pools[name])}
    # hotwords: held-out Tatoeba sentences naming Tom and/or Mary, the names replaced by ones en-small never heard
    names_ok = [n for n in TEST_NAMES + DEV_NAMES if n.lower() not in trained_words]
    info["names_in_asr_training_text"] = [n for n in TEST_NAMES + DEV_NAMES if n.lower() in trained_words]
    test_names = [n for n in TEST_NAMES if n in names_ok][:30]
    dev_names = [n for n in DEV_NAMES if n in names_ok][:10]
    used = {normalize(s) for v in chosen.values() for s in v}
    conv = [s for s in held["conversational"] if speakable(s, 5, 14) and normalize(s) not in used | trained]
    named = [s for s in conv if re.search(r"\b(Tom|Mary)\b", s)]
    plain = [s for s in conv if not re.search(r"\b(?!I\b)[A-Z]", s[1:]) and not re.match(r"(Tom|Mary)\b", s)]
    rng.shuffle(named), rng.shuffle(plain)

    def name_sentences(sents: list[str], names: list[str], n: int) -> list[str]:
        out = []
        for k, s in enumerate(sents[:n]):
            a, b = names[(2 * k) % len(names)], names[(2 * k + 1) % len(names)]
            out.append(re.sub(r"\bMary\b", b, re.sub(r"\bTom\b", a, s)))
        return out

    chosen["names_test"] = name_sentences(named, test_names, 60)
    chosen["names_dev"] = name_sentences(named[60:], dev_names, 20)
    plain = [s for s in plain if normalize(s) not in {normalize(x) for x in named[:80]}]
    chosen["plain_test"], chosen["plain_dev"] = plain[:60], plain[60:80]
    write(args.out / "sets" / "hotwords_test.txt", test_names)
    write(args.out / "sets" / "hotwords_dev.txt", dev_names)
    info["hotword_names"] = {"test": test_names, "dev": dev_names}
    for key, sents in chosen.items():
        write(args.out / "sets" / f"{key}.txt", sents)
    info["sets"] = {k: len(v) for k, v in chosen.items()}
    # LM texts: every evaluation sentence dropped; general = the start of the literature file
    drop = {normalize(s) for v in chosen.values() for s in v}
    literature = read_lines(GENERAL)
    info["lm_texts"] = {}
    for size, (n_gen, n_dom) in SIZES.items():
        gen, words = take_words(literature, n_gen, drop)
        write(args.out / "text" / f"general_{size}.txt", gen)
        info["lm_texts"][f"general_{size}"] = words
        for name in DOMAINS:
            pool = pools[name]
            dom, dwords = take_words(pool, n_dom, drop)
            write(args.out / "text" / f"{name}_{size}.txt", dom)
            write(args.out / "text" / f"{name}_both_{size}.txt", gen + dom)
            info["lm_texts"][f"{name}_{size}"] = dwords
            info["lm_texts"][f"{name}_both_{size}"] = words + dwords
    # non-fiction is 29 books: its first lines (above) are two of them; "nonfiction_mix" samples lines of all 29
    mixed = list(pools["nonfiction"])
    np.random.default_rng([args.seed, 1]).shuffle(mixed)
    for size, (n_gen, n_dom) in SIZES.items():
        gen, words = take_words(literature, n_gen, drop)
        dom, dwords = take_words(mixed, n_dom, drop)
        write(args.out / "text" / f"nonfiction_mix_{size}.txt", dom)
        write(args.out / "text" / f"nonfiction_mix_both_{size}.txt", gen + dom)
        info["lm_texts"][f"nonfiction_mix_{size}"] = dwords
        info["lm_texts"][f"nonfiction_mix_both_{size}"] = words + dwords
    (args.out / "sets.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({k: v for k, v in info.items() if k != "domains"}, indent=1))


if __name__ == "__main__":
    main()
