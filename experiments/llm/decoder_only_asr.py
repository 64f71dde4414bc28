"""Decoder-only ASR measurements (docs/llm/decoder_only_asr.md): trained `asr_llm` model folders, speech models on the
same encoder (heads trained by experiments/lm/train_heads.py) and the speech model's own CTC head scored on the same
test utterances from the same cached encoder frames — WER/CER and the decoding CPU time per audio second (RTF of
the part after the encoder; the encoder's own RTF is measured once).

    python -m experiments.llm.decoder_only_asr --test /work/exp-asrllm/data/so762_test200.jsonl \
        --cache /work/exp-asrllm/cache --out docs/llm/results_decoder_only_asr.json \
        --model s2_lora=/work/exp-asrllm/runs/s2_lora/model --model attention=/work/exp-asrhead/runs/attention/model ...

CPU seconds (time.process_time, one thread) rather than wall seconds: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from experiments.lm.frozen_encoder import decode_encoded
from malsori.data.manifest import read_manifest
from malsori.decode.options import DecodeOptions
from malsori.llm.speech_cache import cached_frames, compute_frames
from malsori.llm.speech_prefix import DecoderOnlyASR
from malsori.metrics import error_rates
from malsori.pretrained import load_model_dir
from malsori.text import normalize


def batches(frames, size: int = 16):
    """(encoder frames [B, T, E], lengths [B]) of consecutive cached utterances."""
    for start in range(0, len(frames), size):
        rows = range(start, min(start + size, len(frames)))
        lens = torch.tensor([frames.length(i) for i in rows])
        x = torch.zeros(len(lens), int(lens.max()), frames.frames.size(1))
        for r, i in enumerate(rows):
            x[r, : lens[r]] = frames.get(i)
        yield x, lens


def score(decode, tokenizer, frames, refs: list[str], audio_s: float) -> dict:
    """Decode every cached utterance with `decode(enc, lens)` → hypotheses; WER/CER, CPU seconds and RTF."""
    hyps, t0 = [], time.process_time()
    with torch.inference_mode():
        for x, lens in batches(frames):
            hyps += [normalize(tokenizer.decode(h.tokens)) for h in decode(x, lens)]
    cpu = time.process_time() - t0
    rates = error_rates(refs, hyps)
    return {"wer": rates.wer, "cer": rates.cer, "utterances": rates.utterances, "decode_cpu_s": round(cpu, 2),
            "decode_rtf": round(cpu / audio_s, 6), "examples": [[r, h] for r, h in list(zip(refs, hyps))[:5]]}


def decoder(model: torch.nn.Module, options: DecodeOptions):
    """decode(enc, lens) → hypotheses from encoder frames: a decoder-only model's `decode_encoded`, or any other speech
    model's own search on the given frames, one utterance at a time like the decoder-only model."""
    if isinstance(model, DecoderOnlyASR):
        return lambda x, lens: model.decode_encoded(x, lens, options)
    return lambda x, lens: decode_encoded(model, [x[i, : lens[i]] for i in range(len(lens))], options)


def describe(m, folder: str) -> dict:
    """The row's fixed facts: settings, trained parameters (a decoder-only model's trainable ones; another model's
    outside its frozen encoder) and the stored weights' size."""
    model = m.model
    if isinstance(model, DecoderOnlyASR):
        config = {k: m.config[k] for k in ("prefix", "adapter", "prompt")}
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    else:
        config = {"head": m.config["model"]["head"]}
        trained = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    return {"folder": folder, "config": config, "trainable_params": trained,
            "folder_bytes": (m.path / "model.safetensors").stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test", required=True, help="test manifest")
    ap.add_argument("--cache", required=True, help="cache folder of encoder frames")
    ap.add_argument("--speech", default="en-small", help="the speech model whose encoder the models use")
    ap.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR of a speech model folder on the same encoder (repeat)")
    ap.add_argument("--beam", type=int, default=0, help="also decode with this beam (0 = greedy only)")
    ap.add_argument("--beam-only", action="store_true", help="skip greedy (already measured)")
    ap.add_argument("--length-bonus", type=float, default=0.0, help="beam: added per token (counters empty outputs)")
    ap.add_argument("--ctc-weight", type=float, help="beam of an attention model: the CTC prefix scorer's weight (default: its config's)")
    ap.add_argument("--out", required=True, help="results JSON (merged into an existing one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    utts = read_manifest(args.test).utterances
    speech = load_model_dir(args.speech)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if "encoder" not in results:  # the front end + encoder alone, once, on the first 50 utterances
        t0 = time.process_time()
        compute_frames(utts[:50], speech, "encoder", verbose=False)
        cpu = time.process_time() - t0
        results["encoder"] = {"utterances": 50, "cpu_s": round(cpu, 2), "rtf": round(cpu / sum(u.duration for u in utts[:50]), 4)}
    frames = cached_frames(Path(args.cache), "test", utts, speech, "encoder", verbose=False)
    by_id = {u.id: u for u in utts}
    refs = [normalize(by_id[i].text) for i in frames.ids]
    audio_s = sum(by_id[i].duration for i in frames.ids)
    results["test"] = {"manifest": args.test, "utterances": len(frames), "audio_s": round(audio_s, 1)}
    if "ctc_greedy" not in results:
        head = speech.model.head
        results["ctc_greedy"] = score(lambda x, lens: head.greedy(head.log_probs(x), lens), speech.tokenizer, frames, refs, audio_s)
    for spec in args.model:
        name, folder = spec.split("=", 1)
        m = load_model_dir(folder)
        m.model.eval()
        row = describe(m, folder)
        if not args.beam_only:
            row["greedy"] = score(decoder(m.model, DecodeOptions()), m.tokenizer, frames, refs, audio_s)
        if args.beam:
            opts = DecodeOptions(method="beam", beam_size=args.beam, length_bonus=args.length_bonus, ctc_weight=args.ctc_weight)
            key = (f"beam{args.beam}" + (f"_bonus{args.length_bonus:g}" if args.length_bonus else "")
                   + ("" if args.ctc_weight is None else f"_ctc{args.ctc_weight:g}"))
            row[key] = score(decoder(m.model, opts), m.tokenizer, frames, refs, audio_s)
        results.setdefault("models", {}).setdefault(name, {}).update(row)
        print(name, {k: (v["wer"], v["cer"], v["decode_rtf"]) for k, v in row.items() if isinstance(v, dict) and "wer" in v})
    print("ctc_greedy", results["ctc_greedy"]["wer"], results["ctc_greedy"]["cer"], results["ctc_greedy"]["decode_rtf"])
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
