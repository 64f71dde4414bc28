"""Shared fixtures: a tiny synthesized corpus (made once per test session) and the shared real-speech folder."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    """~600 short synthesized utterances (train/dev/test split by voice and sentence)."""
    from malsori.data.synth import SynthConfig, synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    cfg = SynthConfig(num_train=600, num_dev=40, num_test=40, seed=7, domains=["commands", "numbers", "navigation"], max_words=8)
    return synthesize_corpus(cfg, out, progress=False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny tensors: one intra-op thread is faster and does not fight other processes; restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
