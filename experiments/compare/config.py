"""What one comparison run is: which families (recipes in recipes/compare/), what budget, how to evaluate, where to write."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from malsori.config import bounded
from malsori.recipes import resolve_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes" / "compare"
FAMILIES = ("ctc_conformer", "fixed_lstm", "las_blstm", "transformer_aed", "conformer_aed", "rnnt_lstm", "conformer_transducer")
DEFAULT_REAL = ROOT.parent / "shared" / "data" / "speechocean762_test_sample" / "manifest.jsonl"


@dataclass
class CompareConfig:
    """One comparison run: which families, what budget, how to evaluate, where to write."""

    corpus: str = "corpus"  # folder with train.jsonl, dev.jsonl, test.jsonl (e.g. made by `malsori data synth`)
    out: str = "exp/compare"  # report folder: compare.md, results.json, *.png, runs/<family>/, long_test/
    families: list[str] = field(default_factory=lambda: list(FAMILIES))  # recipe paths or names in recipes/compare/
    minutes: float = bounded(20.0, ge=0)  # wall-clock training budget per family (train's max_minutes)
    threads: int = bounded(2, ge=1)  # torch CPU threads for training and decoding, the same for every family
    device: str = "auto"  # training and decoding device: auto | cpu | cuda | cuda:N
    seed: int = bounded(0, ge=0)  # training seed of every family and the long-set selection
    overrides: list[str] = field(default_factory=list)  # key=value applied to every recipe last (tiny sizes, max_steps …)
    retrain: bool = False  # retrain families whose model folder already exists
    beam_size: int = bounded(8, ge=1)  # beam width of every "beam" measurement
    batch_size: int = bounded(8, ge=1)  # utterances decoded together
    test_limit: int = bounded(0, ge=0)  # evaluate on at most this many test utterances, evenly spaced (0 = all)
    long_max_concat: int = bounded(6, ge=1)  # the long set joins 1, 2, … this many test utterances of one voice
    long_per_count: int = bounded(24, ge=1)  # long-set utterances made for each number of joined utterances
    long_gap: float = bounded(0.15, ge=0)  # seconds of silence inserted between joined utterances
    long_min_bucket: int = bounded(5, ge=1)  # duration buckets (long set and test split) are widened until each holds this many utterances
    long_beam: bool = False  # also beam-search the long set (slow for attention decoders on long inputs)
    real_manifest: str = str(DEFAULT_REAL)  # real-speech manifest; skipped when absent or ""
    real_limit: int = bounded(200, ge=0)  # evenly spaced real-speech utterances to evaluate (0 = skip)


def resolve_family(name: str) -> Path:
    """A recipe path, or a family name in recipes/compare/."""
    return resolve_recipe(name, RECIPES)
