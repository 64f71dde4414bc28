"""Shared fixtures: a tiny synthesized corpus (made once per test session), the shared real-speech folder, and the
decoding helpers (toy scorers, a stand-in encoder)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from malsori.decode.scorers import Scorer
from tests.helpers.searches import SEARCHES

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
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



# ---- decoding helpers: toy scorers written in the tests, a frame-wise stand-in encoder ----------------------------
class ToyBigramScorer(Scorer):
    """A tiny label "language model": log p(label | previous label) = log_softmax(table)[previous]; the start id (or a
    prompt's last token) is the previous label of the first one. `calls` counts `score` calls."""

    def __init__(self, table: torch.Tensor, start: int) -> None:
        self.log_probs, self.start, self.calls = table.log_softmax(-1), start, 0

    @classmethod
    def rewarding(cls, vocab: int, token: int, start: int, eos: int, penalty: float = 20.0) -> "ToyBigramScorer":
        """Every label but `token` costs about `penalty` nats, and so does ending (eos) unless `token` came last: a
        scorer that wants `token` in the output."""
        table = torch.full((vocab, vocab), -penalty)
        table[:, token] = 0.0
        table[token, eos] = 0.0
        return cls(table, start)

    @classmethod
    def random(cls, vocab: int, start: int, seed: int) -> "ToyBigramScorer":
        return cls(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 2.0, start)

    def logprob(self, tokens: list[int], eos: int | None = None) -> float:
        """Σ log p(label | previous) over `tokens` (then `eos`, when given), recomputed on its own in float64."""
        total, prev = 0.0, self.start
        for tok in list(tokens) + ([] if eos is None else [eos]):
            total += float(self.log_probs[prev, tok].double())
            prev = tok
        return total

    def init_state(self, n, memory=None, memory_lens=None, prompt=()):
        return {"prev": torch.full((n,), int(prompt[-1]) if prompt else self.start, dtype=torch.long)}

    def score(self, state, memory=None, memory_lens=None, candidates=None):
        self.calls += 1
        lp = self.log_probs[state["prev"]]
        return (lp if candidates is None else lp.gather(1, candidates)), state

    def extend(self, state, index, tokens):
        return {"prev": tokens.clone()}


class ToyConstantScorer(Scorer):
    """Every label gets the same log-probability `value`; the end (eos) gets 0, so it counts labels only."""

    def __init__(self, value: float, vocab: int, eos: int) -> None:
        self.scores = torch.full((vocab,), value)
        self.scores[eos] = 0.0
        self.value, self.calls = value, 0

    def logprob(self, tokens: list[int], eos: int | None = None) -> float:
        return self.value * len(tokens)

    def init_state(self, n, memory=None, memory_lens=None, prompt=()):
        return {"rows": torch.zeros(n)}

    def score(self, state, memory=None, memory_lens=None, candidates=None):
        self.calls += 1
        scores = self.scores.expand(state["rows"].size(0), -1)
        return (scores if candidates is None else scores.gather(1, candidates)), state

    def extend(self, state, index, tokens):
        return {"rows": state["rows"].index_select(0, index)}


class FrameLinearEncoder(torch.nn.Module):
    """Stand-in encoder for search tests: one linear map per frame."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(in_dim, out_dim)
        self.output_dim = out_dim

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(feats), lengths


@pytest.fixture(scope="session")
def toys() -> SimpleNamespace:
    """Decoding test helpers: the toy scorers `bigram` and `constant` (real Scorers) and `encoder` (frame-wise linear)."""
    return SimpleNamespace(bigram=ToyBigramScorer, constant=ToyConstantScorer, encoder=FrameLinearEncoder)


@pytest.fixture(params=list(SEARCHES), scope="module")
def search(request, toys):
    """Each search of tests/helpers/searches.py in turn (a module may narrow the list with its own `search`)."""
    return SEARCHES[request.param](toys)
