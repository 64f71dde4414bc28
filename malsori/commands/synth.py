"""`malsori data synth`: synthesize a train/dev/test speech corpus offline (eSpeak NG, Kokoro-82M or Piper)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from malsori.commands.options import field_type
from malsori.data.augment import AugmentConfig
from malsori.data.synth import SynthConfig

DOMAINS_HELP = "numbers,commands,weather,conversation,codes,navigation,shopping"


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output folder: audio/<split>/*.flac, <split>.jsonl manifests, synth_config.json. "
                   "Run again with the same options to resume.")
@click.option("--engine", type=click.Choice(["espeak", "kokoro", "piper"]),
              help="Synthesizer: espeak (built in), kokoro (pip install 'malsori[kokoro]' + npm voice packs) or "
                   "piper (pip install 'malsori[piper]'; one voice).  [default: espeak]")
@click.option("--voices", "voices_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Kokoro: folder of voice packs (voices/ of npm kokoro-js@1.2.1).  [default: $MALSORI_KOKORO_VOICES]")
@click.option("--kokoro-voices", help="Kokoro: voice packs to use, comma-separated (e.g. af_heart,bm_george).  "
                                      "[default: all 54]")
@click.option("--mix-prob", type=field_type(SynthConfig, "mix_prob"),
              help="Kokoro: share of train utterances spoken by a blend of two train voices.  [default: 0.4]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file with SynthConfig fields; the options below override it.")
@click.option("--num-train", type=field_type(SynthConfig, "num_train"), help="Train utterances.  [default: 2000]")
@click.option("--num-dev", type=field_type(SynthConfig, "num_dev"), help="Dev utterances (voices and sentences unseen in train).  [default: 200]")
@click.option("--num-test", type=field_type(SynthConfig, "num_test"),
              help="Test utterances (voices and sentences unseen in train and dev).  [default: 200]")
@click.option("--hours", type=field_type(SynthConfig, "train_hours"), help="Make about this many hours of train audio instead of --num-train.")
@click.option("--seed", type=field_type(SynthConfig, "seed"), help="Seed for sentences, voices, prosody and augmentation.  [default: 0]")
@click.option("--text", "text_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Sentence file, one a line (.txt or .txt.gz, UTF-8); repeatable. "
                   "Without it the built-in sentence generator is used.")
@click.option("--generator/--no-generator", default=None,
              help="Also use built-in sentences when --text is given (default: only without --text).")
@click.option("--domains", help=f"Built-in sentence domains, comma-separated: {DOMAINS_HELP}.  [default: all]")
@click.option("--accents", help="eSpeak English accents, comma-separated (e.g. en-us,en-gb-x-rp).  [default: all]")
@click.option("--variants",
              help="eSpeak voice variants, comma-separated (e.g. m1,f3,klatt2).  [default: all but effect voices]")
@click.option("--dev-voices", type=field_type(SynthConfig, "dev_voices"),
              help="Voices reserved for dev (eSpeak: accent+variant combinations).  [default: eSpeak 12, Kokoro 3]")
@click.option("--test-voices", type=field_type(SynthConfig, "test_voices"), help="Voices reserved for test.  [default: eSpeak 12, Kokoro 4]")
@click.option("--rate", type=(int, int), help="Speaking rate range LOW HIGH, words per minute.  [default: 130 240]")
@click.option("--pitch", type=(int, int), help="Base pitch range LOW HIGH, 0-100.  [default: 20 80]")
@click.option("--noise-snr", type=(float, float),
              help="Add noise at an SNR drawn from LOW HIGH dB (probability 0.5 unless --noise-prob).")
@click.option("--noise-prob", type=field_type(AugmentConfig, "noise_prob"), help="Probability of added noise.  [default: 0]")
@click.option("--noise-types", help="Noise kinds, comma-separated: white,pink,brown,babble.  [default: white,pink,brown]")
@click.option("--reverb-prob", type=field_type(AugmentConfig, "reverb_prob"), help="Probability of room reverberation.  [default: 0]")
@click.option("--speed", help="Speed perturbation factors, comma-separated, e.g. 0.9,1.1 "
                              "(probability 0.5 unless --speed-prob).")
@click.option("--speed-prob", type=field_type(AugmentConfig, "speed_prob"), help="Probability of speed perturbation.  [default: 0]")
@click.option("--workers", type=field_type(SynthConfig, "workers"), help="Processes (0 = all CPUs); the output does not depend on it.  [default: 0]")
@click.option("--strict", is_flag=True, help="Stop at the first bad line of a --text file instead of skipping it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(out: Path, engine, voices_dir, kokoro_voices, mix_prob, config_file: Path | None, num_train, num_dev,
          num_test, hours, seed, text_files, generator, domains, accents, variants, dev_voices, test_voices, rate,
          pitch, noise_snr, noise_prob, noise_types, reverb_prob, speed, speed_prob, workers, strict, quiet) -> None:
    """Synthesize a speech corpus offline: eSpeak NG accents x voice variants, Kokoro's 54 voices and their blends,
    or Piper's one voice, with prosody drawn from the seed; dev and test get voices (Piper: only sentences) and
    sentences that train never has; resumable; optional noise, reverberation and speed augmentation."""
    from malsori.config import from_dict, load_yaml
    from malsori.data.synth import corpus_summary, synthesize_corpus

    d = load_yaml(config_file) if config_file else {}  # fields left out take their (engine's) defaults
    given = {
        "engine": engine, "voices_dir": str(voices_dir) if voices_dir else None, "kokoro_voices": _csv(kokoro_voices),
        "mix_prob": mix_prob, "num_train": num_train, "num_dev": num_dev, "num_test": num_test, "train_hours": hours,
        "seed": seed,
        "text_files": [str(p) for p in text_files] or None, "use_generator": generator, "domains": _csv(domains),
        "accents": _csv(accents), "variants": _csv(variants), "dev_voices": dev_voices, "test_voices": test_voices,
        "rate": rate, "pitch": pitch, "workers": workers, "strict": strict or None,
    }
    d.update({k: v for k, v in given.items() if v is not None})
    aug = d.setdefault("augment", {})
    if noise_snr is not None:
        aug["snr_db"], aug["noise_prob"] = list(noise_snr), 0.5
    if speed is not None:
        aug["speeds"], aug["speed_prob"] = [float(s) for s in _csv(speed) or []], 0.5
    for key, value in (("noise_prob", noise_prob), ("reverb_prob", reverb_prob), ("speed_prob", speed_prob),
                       ("noise_types", _csv(noise_types))):
        if value is not None:
            aug[key] = value
    cfg = from_dict(SynthConfig, d)

    start = time.perf_counter()
    manifests = synthesize_corpus(cfg, out, progress=not quiet)
    elapsed = time.perf_counter() - start
    stats = json.loads((out / "synth_stats.json").read_text(encoding="utf-8"))
    click.echo(f"\n{'split':6s} {'utts':>7s} {'hours':>7s} {'voices':>7s} {'sentences':>9s} {'words':>6s}  manifest")
    for split, s in corpus_summary(manifests).items():
        click.echo(f"{split:6s} {s['utterances']:7d} {s['hours']:7.3f} {s['voices']:7d} {s['sentences']:9d} "
                   f"{s['vocabulary']:6d}  {manifests[split]}")
    speedup = stats["seconds_synthesized"] / max(stats["synthesis_s"], 1e-9)
    click.echo(f"synthesized {stats['synthesized']} utterances ({stats['seconds_synthesized'] / 3600:.3f} h) "
               f"in {elapsed:.1f} s with {stats['workers']} worker(s): {speedup:.0f}x real time; "
               f"{stats['skipped_existing']} already there (skipped)")
    if stats.get("note"):
        click.echo(f"note: {stats['note']}")
    if stats["text_lines_skipped"]:
        click.echo(f"text lines skipped: {len(stats['text_lines_skipped'])} "
                   f"(first: {stats['text_lines_skipped'][0]}); --strict makes them errors")
    if stats["sentences_too_long"]:
        click.echo(f"sentences dropped for more than {cfg.max_words} words: {stats['sentences_too_long']}")
