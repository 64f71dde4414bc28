"""Fixtures for the export tests: the released model re-based to features.input_scale 1 (the scale every sherpa-onnx
layout reproduces exactly), a tiny causal streaming CTC model fitted to the demo recordings, and transducers made
from a CTC model (its encoder, a joiner started from its CTC head, a prediction network fitted to the demo texts)."""

from __future__ import annotations

import math
from pathlib import Path

from malsori.config import from_dict
from malsori.features import FbankConfig
from malsori.models.registry import ModelConfig
from malsori.pretrained import load_model_dir, save_model_dir


def rebase_scale(model: str | Path, out: Path, scale: float = 1.0) -> Path:
    """A copy of a speech model folder whose front-end reads waves × `scale`: log-mel bins move by 2 ln(scale ratio),
    and so does the CMVN mean, so normalized features are unchanged wherever the energy clears the log floor."""
    md = load_model_dir(model)
    feat = from_dict(FbankConfig, md.config["features"], "features")
    md.cmvn.mean -= 2.0 * math.log(feat.input_scale / scale)
    feat.input_scale = scale
    return save_model_dir(out, md.model, from_dict(ModelConfig, md.config["model"], "model"), feat, md.tokenizer, md.cmvn)


def demo_batch(md) -> tuple[list, "torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """The demo recordings as (waves, normalized features, lengths, targets, target lengths) for model folder `md`."""
    import numpy as np
    import torch

    from malsori.commands.demo import DEMO_AUDIO
    from malsori.data.dataset import utterance_blocks
    from malsori.data.manifest import read_manifest
    from malsori.text import normalize

    utts = read_manifest(DEMO_AUDIO, strict=True).utterances
    waves = [np.concatenate(list(utterance_blocks(u))) for u in utts]
    batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(w) for w in waves], batch_first=True)
    with torch.inference_mode():
        feats, lens = md.fbank(batch, torch.tensor([len(w) for w in waves]))
        feats = md.cmvn(feats, lens)
    ids = [torch.tensor(md.tokenizer.encode(normalize(u.text))) for u in utts]
    return waves, feats.clone(), lens.clone(), torch.nn.utils.rnn.pad_sequence(ids, batch_first=True), torch.tensor([len(i) for i in ids])


def train_transducer(base: Path, out: Path, steps: int = 30) -> Path:
    """A Conformer-Transducer (stateless predictor, context 2) on `base`'s CTC model: its encoder, a joiner started as
    the CTC head (tanh kept in its near-linear range), and prediction network and joiner fitted to the demo recordings'
    transcripts with the encoder frozen; greedy search at one label per frame, as sherpa-onnx's."""
    import torch

    from malsori.losses import rnnt_loss
    from malsori.models.registry import build_model
    from malsori.models.transducer import PredictorConfig, TransducerConfig

    torch.manual_seed(0)
    md = load_model_dir(base)
    cfg = from_dict(ModelConfig, md.config["model"], "model")
    d = md.model.encoder.output_dim
    cfg.head = "transducer"
    cfg.transducer = TransducerConfig(PredictorConfig(kind="stateless", embed_dim=64, context=2, dropout=0.0), joiner_dim=d,
                                      max_symbols_per_frame=1)
    model = build_model(cfg, md.fbank.cfg.num_mel_bins, md.tokenizer.vocab_size).eval()
    model.encoder.load_state_dict(md.model.encoder.state_dict())
    eps, j = 0.05, model.joiner
    with torch.no_grad():
        j.enc_proj.weight.copy_(torch.eye(d) * eps)
        j.enc_proj.bias.zero_()
        j.pred_proj.weight.mul_(eps)
        j.out.weight.copy_(md.model.head.weight / eps)
        j.out.bias.copy_(md.model.head.bias)
    _, feats, lens, targets, target_lens = demo_batch(md)
    with torch.no_grad():
        enc, enc_lens = model.encoder(feats, lens)
    opt = torch.optim.Adam([*model.predictor.parameters(), *j.pred_proj.parameters()], lr=3e-3)
    ys = torch.nn.functional.pad(targets, (1, 0), value=model.special_ids.blank)
    for _ in range(steps):
        logits = j(j.enc_proj(enc)[:, :, None], j.pred_proj(model.predictor(ys))[:, None])
        loss = rnnt_loss(logits, targets, enc_lens, target_lens, blank=model.special_ids.blank)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_model_dir(out, model, cfg, md.fbank.cfg, md.tokenizer, md.cmvn)


def train_streaming_ctc(base: Path, out: Path, steps: int = 150) -> Path:
    """A tiny causal chunked Conformer-CTC (dynamic chunks) fitted from scratch to the demo recordings, on `base`'s
    front-end and tokenizer."""
    import torch

    from malsori.models.registry import build_model
    from malsori.nn.chunked import ChunkConfig
    from malsori.nn.conformer import ConformerConfig

    torch.manual_seed(0)
    md = load_model_dir(base)
    cfg = ModelConfig(encoder="conformer", head="ctc", conformer=ConformerConfig(
        d_model=64, num_layers=2, num_heads=2, conv_kernel=7, dropout=0.0, subsampling_channels=16,
        chunk=ChunkConfig(causal=True, dynamic_chunk=True, max_dynamic_chunk=8, max_dynamic_left=4)))
    model = build_model(cfg, md.fbank.cfg.num_mel_bins, md.tokenizer.vocab_size)
    _, feats, lens, targets, target_lens = demo_batch(md)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss, _ = model.compute_loss(feats, lens, targets, target_lens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return save_model_dir(out, model, cfg, md.fbank.cfg, md.tokenizer, md.cmvn)
