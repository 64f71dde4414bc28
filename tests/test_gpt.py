"""The GPT: causal, tied, fused q/k/v; cached incremental decoding equals the full forward (also after a beam
reorders the cache); sampling options behave as documented."""

import pytest
import torch

from malsori.lm.generate import SamplingOptions, generate, next_token
from malsori.lm.gpt import GPT, GPTConfig
from malsori.nn.state import select_state


def _gpt(vocab: int = 23, **kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(d_model=32, num_layers=3, num_heads=2, context=24, **kw), vocab).eval()


def test_cached_decoding_equals_the_full_forward():
    model = _gpt()
    x = torch.randint(3, 23, (3, 17))
    full = model(x)
    logits, cache = model.forward_cached(x[:, :6], model.init_cache(3))  # a prompt of 6, then one token at a time
    steps = [logits]
    for t in range(6, 17):
        logits, cache = model.forward_cached(x[:, t : t + 1], cache)
        steps.append(logits)
    assert cache.shape[:5] == (3, 3, 2, 2, 17)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_cache_follows_a_beam_reorder():
    model = _gpt()
    x = torch.randint(3, 23, (3, 9))
    _, cache = model.forward_cached(x[:, :8], model.init_cache(3))
    order = torch.tensor([2, 2, 0])  # keep hypothesis 2 twice and 0 once
    logits, _ = model.forward_cached(x[order, 8:9], select_state(cache, order))
    torch.testing.assert_close(logits[:, 0], model(x[order])[:, -1], atol=1e-5, rtol=1e-5)


def test_causal_tied_and_fused():
    model = _gpt()
    x = torch.randint(3, 23, (1, 12))
    y = x.clone()
    y[0, 8:] = 3
    torch.testing.assert_close(model(x)[:, :8], model(y)[:, :8])  # later tokens never change earlier outputs
    assert not torch.allclose(model(x)[:, 8:], model(y)[:, 8:])
    names = dict(model.named_parameters())
    assert "embed.weight" in names and not [n for n in names if n.startswith(("output", "head"))]  # one matrix in and out
    qkv = model.layers[0].attention.qkv
    assert isinstance(qkv, torch.nn.Linear) and qkv.out_features == 3 * 32  # one projection gives q, k and v


def test_sampling_options():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]])
    g = torch.Generator().manual_seed(0)
    assert int(next_token(logits, SamplingOptions(temperature=0), g)) == 1
    assert {int(next_token(logits, SamplingOptions(top_k=1), g)) for _ in range(20)} == {1}
    assert {int(next_token(logits, SamplingOptions(top_p=0.3), g)) for _ in range(20)} == {1}  # p(1) ≈ 0.5 fills it
    assert {int(next_token(logits, SamplingOptions(top_k=2), g)) for _ in range(200)} == {1, 2}
    model = _gpt()
    a = generate(model, [2, 5, 6], eos=2, opts=SamplingOptions(seed=3, max_tokens=40))
    assert a == generate(model, [2, 5, 6], eos=2, opts=SamplingOptions(seed=3, max_tokens=40))  # seeded
    assert 2 not in a and len(a) <= 40
    # past the context the sample goes on (the cache is rebuilt from the recent text)
    long = generate(model, [2, 5], eos=-1, opts=SamplingOptions(temperature=0, max_tokens=60))
    assert len(long) == 60
    with pytest.raises(Exception, match="top_p"):  # the field is named
        SamplingOptions(top_p=0)
    with pytest.raises(Exception, match="temperature"):  # NaN passed the hand-written check
        SamplingOptions(temperature=float("nan"))
