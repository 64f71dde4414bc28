"""Dynamic batching invariants and atomic, exact checkpoints."""

import numpy as np
import pytest
import torch

from malsori.checkpoint import average_checkpoints, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from malsori.data.dataset import BatchConfig, BucketBatchSampler

from helpers.training import toy_model_and_optimizer, toy_step


def test_buckets_respect_limits_and_cover_each_kept_utterance_once():
    rng = np.random.default_rng(0)
    durs = list(rng.uniform(0.5, 12.0, 500)) + [40.0, 0.01]
    cfg = BatchConfig(max_frames=3000, max_batch_size=16, max_duration=30.0)
    s = BucketBatchSampler(durs, cfg, seed=1)
    batches = s.batches()
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500))  # the 40 s and 0.01 s utterances are left out, the rest appear once
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or len(b) * np.ceil(max(durs[i] for i in b) * 100) <= 3000
    # padding stays small: batches hold similar durations
    spread = np.median([max(durs[i] for i in b) - min(durs[i] for i in b) for b in batches])
    assert spread < 1.5


def test_batch_order_is_a_function_of_seed_and_epoch_and_skip_resumes():
    durs = list(np.random.default_rng(1).uniform(1, 5, 200))
    cfg = BatchConfig(max_frames=2000)
    a, b = BucketBatchSampler(durs, cfg, seed=3), BucketBatchSampler(durs, cfg, seed=3)
    a.set_epoch(2)
    b.set_epoch(2, skip=5)
    assert list(b) == a.batches()[5:]
    c = BucketBatchSampler(durs, cfg, seed=3)
    c.set_epoch(3)
    assert c.batches() != a.batches()
    # ranks split the batches without overlap and in equal numbers
    r0, r1 = (BucketBatchSampler(durs, cfg, seed=3, rank=r, world_size=2) for r in (0, 1))
    for s in (r0, r1):
        s.set_epoch(2)
    assert len(r0) == len(r1) and not {i for bt in r0 for i in bt} & {i for bt in r1 for i in bt}


def test_checkpoint_restores_model_optimizer_and_rng_exactly(tmp_path):
    m, o = toy_model_and_optimizer()
    for _ in range(3):
        toy_step(m, o)
    save_checkpoint(tmp_path, 3, m, o, {"epoch": 0, "pos": 3})
    expected = [toy_step(m, o) for _ in range(4)]
    m2, o2 = toy_model_and_optimizer()
    torch.manual_seed(123)  # a different RNG state, restored by the checkpoint
    state = load_checkpoint(latest_checkpoint(tmp_path), m2, o2)
    assert state["pos"] == 3
    assert [toy_step(m2, o2) for _ in range(4)] == expected


def test_interrupted_checkpoint_write_keeps_last_good(tmp_path, monkeypatch):
    m, o = toy_model_and_optimizer()
    save_checkpoint(tmp_path, 1, m, o, {"epoch": 0, "pos": 1})
    import malsori.checkpoint as ck

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, m, o, {"epoch": 0, "pos": 2})
    assert latest_checkpoint(tmp_path).name == "ckpt-00000001"
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt")]


def test_average_and_pruning(tmp_path):
    m, o = toy_model_and_optimizer()
    ws = []
    for step in range(1, 5):
        toy_step(m, o)
        ws.append(m[0].weight.detach().clone())
        save_checkpoint(tmp_path, step, m, o, {"epoch": 0, "pos": step}, keep_last=3)
    ck = list_checkpoints(tmp_path)
    assert [p.name for p in ck] == ["ckpt-00000002", "ckpt-00000003", "ckpt-00000004"]
    avg = average_checkpoints(ck[-2:])
    assert torch.allclose(avg["0.weight"], (ws[2] + ws[3]) / 2, atol=1e-7)


def test_warm_start_copies_matching_tensors_only(tmp_path):
    """init_from: a CTC model's encoder starts a transducer; the transducer's own layers keep their fresh init."""
    import pytest as _pytest

    from malsori.errors import ConfigError
    from malsori.features import Fbank, FbankConfig, GlobalCMVN
    from malsori.models.registry import ModelConfig, build_model
    from malsori.nn.conformer import ConformerConfig
    from malsori.pretrained import save_model_dir
    from malsori.tokenizer import train_tokenizer
    from malsori.train import warm_start

    conformer = ConformerConfig(d_model=32, num_layers=1, num_heads=2, subsampling_channels=4)
    tok = train_tokenizer("char", ["abc"])
    torch.manual_seed(0)
    ctc_cfg = ModelConfig(conformer=conformer, head="ctc")
    ctc = build_model(ctc_cfg, 80, tok.vocab_size)
    save_model_dir(tmp_path / "ctc", ctc, ctc_cfg, FbankConfig(), tok, GlobalCMVN(80))
    torch.manual_seed(1)
    rnnt = build_model(ModelConfig(conformer=conformer, head="transducer"), 80, tok.vocab_size)
    joiner_before = {k: v.clone() for k, v in rnnt.state_dict().items() if k.startswith("joiner")}
    n = warm_start(rnnt, tmp_path / "ctc")
    assert n == len(ctc.encoder.state_dict())
    for k, v in ctc.encoder.state_dict().items():
        assert torch.equal(rnnt.encoder.state_dict()[k], v)
    assert all(torch.equal(rnnt.state_dict()[k], v) for k, v in joiner_before.items())
    with _pytest.raises(ConfigError, match="init_from"):
        warm_start(rnnt, tmp_path)


def test_resume_accepts_a_run_saved_before_new_config_fields_existed(tmp_path):
    """A train_config.json written by an older malsori (fewer fields) resumes; a real difference is still refused."""
    import json

    from malsori.config import to_dict
    from malsori.errors import ConfigError
    from malsori.train import TrainConfig, _check_resumable

    cfg = TrainConfig(out=str(tmp_path))
    old = to_dict(cfg)
    del old["init_from"], old["model"]["conformer"]["chunk"]
    (tmp_path / "train_config.json").write_text(json.dumps(old))
    _check_resumable(tmp_path, cfg)
    cfg.model.conformer.d_model = 32
    import pytest as _pytest

    with _pytest.raises(ConfigError, match="model"):
        _check_resumable(tmp_path, cfg)


def test_weighted_sources_are_drawn_in_the_stated_proportions():
    """Weight w draws an utterance floor(w) or floor(w)+1 times per epoch (mean w), each draw a distinct id."""
    durs = [2.0] * 300 + [3.0] * 100  # source A: 300 utterances, weight 0.5; source B: 100 utterances, weight 2.5
    weights = [0.5] * 300 + [2.5] * 100
    s = BucketBatchSampler(durs, BatchConfig(max_frames=4000), seed=0, weights=weights)
    counts = np.zeros(400)
    epochs = 40
    for e in range(epochs):
        s.set_epoch(e)
        draws = [j for b in s.batches() for j in b]
        assert len(draws) == len(set(draws))  # a repeated utterance gets its own draw id (its own augmentation)
        idx = np.array(draws) % 400
        per_epoch = np.bincount(idx, minlength=400)
        assert per_epoch[:300].max() <= 1 and set(per_epoch[300:]) <= {2, 3}
        counts += per_epoch
    share_b = counts[300:].sum() / counts.sum()
    assert abs(share_b - 250 / (150 + 250)) < 0.01  # B's stated share of the draws: 100 x 2.5 of 300 x 0.5 + 100 x 2.5
    assert abs(counts[:300].mean() / epochs - 0.5) < 0.02
    # deterministic per (seed, epoch); unweighted sampling is unchanged by the weights code path
    a, b = (BucketBatchSampler(durs, BatchConfig(max_frames=4000), seed=0, weights=weights) for _ in range(2))
    a.set_epoch(3)
    b.set_epoch(3)
    assert a.batches() == b.batches()
    plain = BucketBatchSampler(durs, BatchConfig(max_frames=4000), seed=0)
    ones = BucketBatchSampler(durs, BatchConfig(max_frames=4000), seed=0, weights=[1.0] * 400)
    assert plain.batches() == ones.batches()


def test_dataset_gives_each_repeated_draw_its_own_augmentation(tmp_path):
    from malsori.audio import save_audio
    from malsori.data.augment import AugmentConfig, Augmenter
    from malsori.data.dataset import SpeechDataset
    from malsori.data.manifest import Utterance

    save_audio(tmp_path / "a.flac", 0.1 * np.sin(np.arange(16000) / 5.0).astype(np.float32))
    utts = [Utterance("a", str(tmp_path / "a.flac"), "a", duration=1.0), Utterance("b", str(tmp_path / "a.flac"), "b", duration=1.0)]
    ds = SpeechDataset(utts, lambda t: [1], str, Augmenter(AugmentConfig(noise_prob=1.0)), seed=0)
    first, repeat, other = ds[1], ds[1 + 2], ds[0]
    assert first["index"] == repeat["index"] == 1 and other["index"] == 0 and first["text"] == "b"
    assert not torch.equal(first["wave"], repeat["wave"])
    assert torch.equal(ds[3]["wave"], repeat["wave"])  # and each draw replays exactly
