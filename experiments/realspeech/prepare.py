"""Training manifests for the released English model from `../shared/data`, with every hold-out rule in one place.

    python experiments/realspeech/prepare.py --shared ../shared/data --espeak exp/realspeech/espeak --out exp/realspeech/data

Writes one manifest per source (audio paths absolute, so the files stay in place), a real-speech dev set, and
`holdout.json` saying what was held out and why. The rules are fixed here, before any training:
- evaluation sets (`speechocean762_test_sample`, `fsdd`) are never read for audio; any training utterance whose
  normalized text equals an evaluation sentence is dropped (the 20 speechocean762 overlaps, single digit words);
- dev = every utterance of the speechocean762_train speakers at sorted positions 0, 20, 40, ... (real speech, unseen
  speakers, validated after each epoch);
- demo = the commonvoice_en_small clips of 2-7 s by speakers with a single clip there, the 8 with the smallest
  sha1(id); those speakers are heard nowhere in training (the demo's recordings are voices the model never heard);
- kokoro_en keeps only its `train` split; eSpeak only its `train.jsonl`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from malsori.data.manifest import Utterance, read_manifest, write_manifest  # noqa: E402
from malsori.text import normalize  # noqa: E402

REAL = ["speechocean762_train", "rhasspy_kathleen", "cmu_arctic", "speech_commands_v002_testset",
        "speech_commands_v001_sample", "commonvoice_en_small"]
EVAL = ["speechocean762_test_sample", "fsdd"]
DEMO_CLIPS = 8
DEV_EVERY = 20  # every 20th speechocean762_train speaker (sorted) is a dev speaker


def absolute(u: Utterance) -> Utterance:
    """The same utterance with its audio path made absolute (manifests written elsewhere still find the file)."""
    return Utterance(u.id, str(u.audio_path), u.text, u.speaker, u.duration, dict(u.extra))


def demo_clips(utts: list[Utterance]) -> list[Utterance]:
    """The demo's held-out recordings: 2-7 s clips of single-clip speakers, the DEMO_CLIPS smallest by sha1(id)."""
    clips = Counter(u.speaker for u in utts)
    fit = [u for u in utts if 2.0 <= u.duration <= 7.0 and clips[u.speaker] == 1]
    return sorted(fit, key=lambda u: hashlib.sha1(u.id.encode()).hexdigest())[:DEMO_CLIPS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--espeak", type=Path, default=None, help="a `malsori data synth` folder (its train.jsonl)")
    ap.add_argument("--out", type=Path, default=Path("exp/realspeech/data"))
    args = ap.parse_args()

    eval_texts = {normalize(u.text) for name in EVAL for u in read_manifest(args.shared / name / "manifest.jsonl")}
    report: dict = {"dropped_eval_text": {}, "sources": {}}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    def keep(name: str, utts: list[Utterance]) -> list[Utterance]:
        good = [u for u in utts if normalize(u.text) not in eval_texts and normalize(u.text)]
        report["dropped_eval_text"][name] = len(utts) - len(good)
        return good

    sources: dict[str, list[Utterance]] = {}
    for name in REAL:
        sources[name] = [absolute(u) for u in read_manifest(args.shared / name / "manifest.jsonl")]

    so = sources["speechocean762_train"]
    so_speakers = sorted({u.speaker for u in so})
    dev_speakers = set(so_speakers[::DEV_EVERY])
    dev = [u for u in so if u.speaker in dev_speakers]
    sources["speechocean762_train"] = [u for u in so if u.speaker not in dev_speakers]

    cv = sources["commonvoice_en_small"]
    demo = demo_clips(cv)
    demo_speakers = {u.speaker for u in demo}
    sources["commonvoice_en_small"] = [u for u in cv if u.speaker not in demo_speakers]

    kokoro = read_manifest(args.shared / "kokoro_en" / "manifest.jsonl")
    sources["kokoro_en"] = [absolute(u) for u in kokoro if u.extra.get("split") == "train"]
    if args.espeak is not None:
        sources["espeak"] = [absolute(u) for u in read_manifest(args.espeak / "train.jsonl")]

    for name, utts in sources.items():
        utts = keep(name, utts)
        write_manifest(out / f"{name}.jsonl", utts)
        report["sources"][name] = {"utterances": len(utts), "hours": round(sum(u.duration for u in utts) / 3600, 3),
                                   "speakers": len({u.speaker for u in utts})}
    write_manifest(out / "dev_real.jsonl", keep("dev_real", dev))
    write_manifest(out / "kokoro_test.jsonl", [absolute(u) for u in kokoro if u.extra.get("split") == "test"])
    write_manifest(out / "demo_holdout.jsonl", demo)
    report["dev_real"] = {"utterances": len(dev), "speakers": sorted(dev_speakers)}
    report["demo_holdout"] = {"ids": [u.id for u in demo], "speakers_held_out": sorted(demo_speakers)}
    (out / "holdout.json").write_text(json.dumps(report, indent=1))
    for name, s in report["sources"].items():
        print(f"{name:32s} {s['utterances']:6d} utts {s['hours']:6.2f} h {s['speakers']:5d} speakers "
              f"(dropped for eval text: {report['dropped_eval_text'][name]})")
    print(f"dev_real: {len(dev)} utts of {len(dev_speakers)} speakers; demo hold-out: {len(demo)} clips")


if __name__ == "__main__":
    main()
