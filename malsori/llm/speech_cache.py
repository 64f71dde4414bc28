"""A manifest's utterances through a speech model's front end (and its frozen encoder) computed once and kept on disk,
so decoder-only ASR runs (sweeps over the projector's stride, the adapter, the prompt) never compute them again.

One safetensors file per (manifest content, model weights, what is stored): "frames" [Σ T, D] in float16 (halves
the disk; the model reads them back as float32), "offsets" [N + 1], and the utterance ids in its metadata. Its name
holds a hash of all three, so a changed manifest or encoder makes a new file instead of reading a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from malsori.data.dataset import load_utterance_audio
from malsori.data.manifest import Utterance
from malsori.errors import AudioError, MalsoriError
from malsori.files import follow_umask
from malsori.pretrained import ModelDir

Stored = Literal["encoder", "features"]  # encoder frames (frozen encoder) or normalized fbank features (trained encoder)


@dataclass
class CachedFrames:
    """Per-utterance frames read from a cache file: utterance i is frames[offsets[i]:offsets[i + 1]]."""

    ids: list[str]  # utterance ids, in manifest order (unreadable ones left out)
    frames: torch.Tensor  # [Σ T, D] float16
    offsets: torch.Tensor  # [N + 1] int64

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, i: int) -> torch.Tensor:
        """Utterance i's frames [T, D] as float32."""
        return self.frames[int(self.offsets[i]) : int(self.offsets[i + 1])].float()

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])


def cache_path(cache_dir: Path, name: str, utts: list[Utterance], model: ModelDir, stored: Stored) -> Path:
    """The cache file of these utterances through `model` (hash of ids, audio, texts, the weights' sha256, `stored`)."""
    h = hashlib.sha256()
    h.update(json.dumps([stored, model.config.get("weights_sha256", str(model.path)), model.config.get("features")],
                        sort_keys=True).encode())
    for u in utts:
        h.update(f"{u.id}\t{u.audio_path}\t{u.extra.get('offset', '')}\t{u.duration}\n".encode())
    return cache_dir / f"{name}-{stored}-{h.hexdigest()[:16]}.safetensors"


@torch.inference_mode()
def compute_frames(utts: list[Utterance], model: ModelDir, stored: Stored, verbose: bool = True) -> tuple[CachedFrames, list[str]]:
    """Each utterance alone through the model's front end + CMVN (+ its encoder) on the CPU → frames, and the
    reasons of utterances whose audio could not be read (left out)."""
    fbank, cmvn, encoder = model.fbank, model.cmvn, model.model.encoder.eval()
    ids, chunks, skipped = [], [], []
    for n, u in enumerate(tqdm(utts, desc=f"caching {stored}", disable=not verbose, mininterval=30)):
        try:
            wave = torch.from_numpy(load_utterance_audio(u))
        except AudioError as e:
            skipped.append(str(e))
            continue
        feats, lens = fbank(wave[None], torch.tensor([len(wave)]))
        feats = cmvn(feats, lens)
        if stored == "encoder":
            feats, lens = encoder(feats, lens)
        ids.append(u.id)
        chunks.append(feats[0, : int(lens[0])].to(torch.float16))
    if not chunks:
        raise MalsoriError(f"no readable audio among {len(utts)} utterances (first problem: {skipped[0] if skipped else '-'})")
    offsets = torch.tensor(np.cumsum([0] + [len(c) for c in chunks]), dtype=torch.long)
    return CachedFrames(ids, torch.cat(chunks), offsets), skipped


def cached_frames(cache_dir: Path, name: str, utts: list[Utterance], model: ModelDir, stored: Stored,
                  verbose: bool = True) -> CachedFrames:
    """The frames of `utts`, read from `cache_dir` when a file for exactly them exists, else computed and written
    (atomically: a file named so is always whole)."""
    path = cache_path(cache_dir, name, utts, model, stored)
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            return CachedFrames(json.loads(f.metadata()["ids"]), f.get_tensor("frames"), f.get_tensor("offsets"))
    frames, skipped = compute_frames(utts, model, stored, verbose)
    if skipped and verbose:
        tqdm.write(f"{name}: {len(skipped)} utterance(s) with unreadable audio left out (first: {skipped[0]})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_file({"frames": frames.frames, "offsets": frames.offsets}, str(tmp), metadata={"ids": json.dumps(frames.ids)})
    follow_umask(tmp)  # safetensors makes it private; a cache folder is shared like a run's other files
    os.replace(tmp, path)
    if verbose:
        tqdm.write(f"{name}: {len(frames)} utterances, {frames.frames.shape[0]:,} frames of {stored} cached in {path}")
    return frames
