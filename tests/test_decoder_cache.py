"""The Transformer decoder's incremental step with cached self-attention keys/values: equal to the teacher-forced
forward after any beam reordering, reading only the newest token (so a step costs O(prefix), not a recomputation)."""

from __future__ import annotations

import pytest
import torch

from malsori.nn.transformer import TransformerDecoder
from malsori.tokenizer import SPECIAL_IDS

VOCAB, MEMORY_DIM = 11, 12


def decoder(cross: str, seed: int = 0) -> TransformerDecoder:
    torch.manual_seed(seed)
    dec = TransformerDecoder(VOCAB, MEMORY_DIM, d_model=16, num_layers=3, num_heads=2, dropout=0.0, attention_dropout=0.0,
                             cross=cross)
    if cross == "mocha":  # readers that halt now and then, so the cross-attention moves along the memory
        for layer in dec.layers:
            layer.cross_attention.mocha.bias.data.fill_(0.0)
    return dec.eval()


def batch(seed: int, n: int = 3, frames: int = 15, length: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(n, frames, MEMORY_DIM, generator=g)
    lens = torch.tensor([frames, frames - 4, frames - 2][:n])
    ys = torch.randint(3, VOCAB, (n, length), generator=g)
    ys[:, 0] = SPECIAL_IDS.sos
    return memory, lens, ys


@pytest.mark.parametrize("cross", ["full", "mocha"])
def test_cached_steps_equal_the_full_forward_after_beam_reordering(cross: str) -> None:
    dec = decoder(cross)
    memory, lens, ys = batch(seed=1)
    # the beam reorders and duplicates hypotheses at these steps; `rows` tracks which original row each one is
    reorders = {3: torch.tensor([2, 0, 0]), 6: torch.tensor([1, 1, 2]), 9: torch.tensor([2, 0, 1])}
    with torch.no_grad():
        full = dec(memory, lens, ys, torch.full((3,), ys.size(1))).log_softmax(-1)
        rows = torch.arange(3)
        state = dec.init_state(memory, lens)
        for i in range(ys.size(1)):
            if i in reorders:
                state, rows = dec.select_state(state, reorders[i]), rows[reorders[i]]
            lp, state = dec.step(ys[rows, : i + 1], state, memory[rows], lens[rows])
            torch.testing.assert_close(lp, full[rows, i], atol=1e-5, rtol=1e-4)
            assert state["self_kv"].shape == (3, 3, 2, 2, i + 1, 8)  # [N, layers, k/v, heads, positions, head dim]


@pytest.mark.parametrize("cross", ["full", "mocha"])
def test_a_step_reads_only_the_newest_token(cross: str) -> None:
    """The earlier tokens come from the cache: replacing them in ys changes nothing, so nothing recomputes them."""
    dec = decoder(cross, seed=2)
    memory, lens, ys = batch(seed=3)
    other = torch.randint(3, VOCAB, ys.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        state = dec.init_state(memory, lens)
        for i in range(ys.size(1) - 1):
            _, state = dec.step(ys[:, : i + 1], state, memory, lens)
        last = ys.size(1)
        lp, _ = dec.step(ys, state, memory, lens)
        scrambled = torch.cat((other[:, : last - 1], ys[:, -1:]), 1)
        lp_scrambled, _ = dec.step(scrambled, state, memory, lens)
    assert torch.equal(lp, lp_scrambled)


def test_a_state_of_another_prefix_length_is_refused() -> None:
    dec = decoder("full")
    memory, lens, ys = batch(seed=5)
    with torch.no_grad():
        _, state = dec.step(ys[:, :1], dec.init_state(memory, lens), memory, lens)
        with pytest.raises(ValueError, match="positions"):
            dec.step(ys[:, :3], state, memory, lens)
