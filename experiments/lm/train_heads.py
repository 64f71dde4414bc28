"""Train a transducer, a joint CTC/attention or a CTC head on a released CTC model's frozen encoder, within a CPU-second budget.

The encoder (en-small's) runs once over the training utterances (`--cache`, shared by the heads); the head then
trains on those outputs with its own loss (`compute_loss` through `GivenEncoder`), no augmentation. Transducer: a
stateless predictor, the joiner started as the CTC head (as tests/helpers/export.py does), so its greedy output
starts near the CTC model's. Attention: a 2-layer Transformer decoder from scratch, the CTC head copied and frozen
(`--fresh-ctc`: a new CTC head trained along, loss weight 0.3). CTC: a new linear CTC head.

    python experiments/lm/train_heads.py --head transducer --cache C.pt --out DIR --cpu-seconds 1000 [--per-source 400]

With `--manifest M` the training utterances are M's (≤ `--max-seconds`, as the `asr_llm` task takes them) and
`--cache` is a folder of `malsori.llm.speech_cache` files — the decoder-only ASR runs' cache, so every head reads
the same encoder frames (docs/llm/decoder_only_asr.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.lm.frozen_encoder import GivenEncoder, encode_waves, load_cache, pad_encoded  # noqa: E402
from malsori.config import from_dict  # noqa: E402
from malsori.data.manifest import read_manifest  # noqa: E402
from malsori.data.select import evenly_spaced, load_waves  # noqa: E402
from malsori.llm.speech_cache import cached_frames  # noqa: E402
from malsori.models.registry import ModelConfig, build_model  # noqa: E402
from malsori.pretrained import Recognizer, load_model_dir, save_model_dir  # noqa: E402
from malsori.provenance import git_commit  # noqa: E402
from malsori.text import normalize  # noqa: E402

# en-small's real-speech training manifests (exp/realspeech/en_small/train_config.json), read only
SOURCES = ["speechocean762_train", "commonvoice_en_small", "cmu_arctic", "rhasspy_kathleen"]


def build_cache(args: argparse.Namespace, rec: Recognizer) -> None:
    """Encode `--per-source` evenly spaced utterances of each source and store outputs + target ids."""
    utts = []
    for name in SOURCES:
        utts += evenly_spaced(read_manifest(args.data / f"{name}.jsonl").utterances, args.per_source)
    utts, waves, errors = load_waves(utts)
    cpu0 = time.process_time()
    encs, secs = encode_waves(rec, waves)
    texts = [normalize(u.text) for u in utts]
    torch.save({"enc": [e.half() for e in encs], "ids": [u.id for u in utts], "texts": texts,
                "targets": [rec.tokenizer.encode(t) for t in texts], "encode_s": secs,
                "encode_cpu_s": time.process_time() - cpu0, "unreadable": len(errors),
                "audio_s": sum(len(w) for w in waves) / 16000}, args.cache)
    print(f"encoded {len(encs)} utterances ({len(errors)} unreadable) in {secs:.0f} s → {args.cache}")


def manifest_cache(args: argparse.Namespace, md) -> dict:
    """`build_cache`'s dict for `--manifest`'s utterances, their encoder frames from the speech_cache folder `--cache`."""
    utts = [u for u in read_manifest(args.manifest).utterances if u.duration <= args.max_seconds]
    cpu0 = time.process_time()
    frames = cached_frames(args.cache, "train", utts, md, "encoder")
    by_id = {u.id: u for u in utts}
    texts = [normalize(by_id[i].text) for i in frames.ids]
    return {"enc": [frames.get(i) for i in range(len(frames))], "ids": frames.ids, "texts": texts,
            "targets": [md.tokenizer.encode(t) for t in texts], "encode_cpu_s": time.process_time() - cpu0,
            "audio_s": sum(by_id[i].duration for i in frames.ids)}


def head_model(args: argparse.Namespace, md) -> tuple[torch.nn.Module, ModelConfig, list[torch.nn.Parameter]]:
    """The new model (en-small's encoder, the new head started as described above) and the parameters to train."""
    raw = copy.deepcopy(md.config["model"])
    raw["head"] = args.head
    if args.head == "transducer":
        d = md.model.encoder.output_dim
        raw["transducer"] = {"predictor": {"kind": "stateless", "embed_dim": 128, "context": 2, "dropout": 0.1},
                             "joiner_dim": d, "ctc_weight": 0.0, "max_symbols_per_frame": 3}
    cfg = from_dict(ModelConfig, raw, "model")
    model = build_model(cfg, md.fbank.cfg.num_mel_bins, md.tokenizer.vocab_size)
    model.encoder.load_state_dict(md.model.encoder.state_dict())
    ctc = md.model.head
    with torch.no_grad():
        if args.head == "transducer":
            eps, j = 0.05, model.joiner
            j.enc_proj.weight.copy_(torch.eye(d) * eps)
            j.enc_proj.bias.zero_()
            j.pred_proj.weight.mul_(eps)
            j.out.weight.copy_(ctc.weight / eps)
            j.out.bias.copy_(ctc.bias)
            params = [*model.predictor.parameters(), *j.parameters()]
        elif args.head == "ctc":
            params = list(model.head.parameters())
        elif args.fresh_ctc:
            params = [*model.decoder.parameters(), *model.ctc.parameters()]
        else:
            model.ctc.load_state_dict(ctc.state_dict())
            params = list(model.decoder.parameters())
    return model, cfg, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="en-small")
    ap.add_argument("--head", choices=["transducer", "attention", "ctc"], required=True)
    ap.add_argument("--data", type=Path, default=Path("exp/realspeech/data"), help="en-small's training manifests")
    ap.add_argument("--per-source", type=int, default=300, help="evenly spaced utterances of each source")
    ap.add_argument("--manifest", type=Path, help="train on this manifest's utterances instead of --data's sources")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="--manifest: leave longer utterances out")
    ap.add_argument("--cache", type=Path, required=True, help="encoder outputs (made if missing); a folder with --manifest")
    ap.add_argument("--fresh-ctc", action="store_true", help="attention: train a new CTC head along instead of copying")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cpu-seconds", type=float, default=1000.0, help="training budget (process CPU time)")
    ap.add_argument("--wall-seconds", type=float, default=1e9, help="stop earlier when this much wall time has passed")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    md = load_model_dir(args.model)
    if args.manifest:
        cache = manifest_cache(args, md)
    else:
        if not args.cache.is_file():
            build_cache(args, Recognizer(md.model, md.tokenizer, md.fbank, md.cmvn))
        cache = load_cache(args.cache)
    model, cfg, params = head_model(args, md)
    encoder, model.encoder = model.encoder, GivenEncoder(model.encoder.output_dim)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-3)
    order = sorted(range(len(cache["enc"])), key=lambda i: cache["enc"][i].size(0))
    batches = [order[i : i + args.batch] for i in range(0, len(order), args.batch)]
    rng, log, step, cpu0, start = random.Random(0), [], 0, time.process_time(), time.time()
    model.train()
    def spent() -> bool:
        return time.process_time() - cpu0 >= args.cpu_seconds or time.time() - start >= args.wall_seconds

    while not spent():
        rng.shuffle(batches)
        for b in batches:
            enc, lens = pad_encoded([cache["enc"][i].float() for i in b])
            targets, tlens = pad_encoded([torch.tensor(cache["targets"][i])[:, None] for i in b])
            loss, stats = model.compute_loss(enc, lens, targets[..., 0], tlens)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            if step % 20 == 0:
                row = {"step": step, "cpu_s": round(time.process_time() - cpu0, 1), "loss": round(stats["loss"], 3)}
                log.append(row)
                print(row, flush=True)
            if spent():
                break
    model.encoder = encoder
    save_model_dir(args.out / "model", model.eval(), cfg, md.fbank.cfg, md.tokenizer, md.cmvn)
    (args.out / "train_heads.json").write_text(json.dumps({
        "head": args.head, "model": args.model, "manifest": str(args.manifest or ""), "fresh_ctc": args.fresh_ctc, "utterances": len(order), "audio_s": round(cache["audio_s"], 1),
        "encode_cpu_s": round(cache["encode_cpu_s"], 1), "steps": step, "epochs": round(step / len(batches), 2),
        "train_cpu_s": round(time.process_time() - cpu0, 1), "wall_s": round(time.time() - start, 1),
        "trained_params": sum(p.numel() for p in params), "log": log, "commit": git_commit()}, indent=1))
    print(f"{args.out / 'model'}: {step} steps")


if __name__ == "__main__":
    main()
