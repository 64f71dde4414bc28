"""Decoder-only ASR: a tiny one (frozen random Conformer encoder → projector → GPT with LoRA) overfits a handful of
utterances: the loss falls and greedy decoding with the KV cache reproduces every transcript; padding in a batch
changes no utterance's loss; with the text prompt before or after the audio, the cached search scores what one
uncached forward does."""

import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.llm.adapters import AdaptedLM, AdapterConfig
from malsori.llm.speech_prefix import DecoderOnlyASR, SpeechPrefixConfig
from malsori.lm.gpt import GPT, GPTConfig
from malsori.nn.conformer import ConformerConfig, ConformerEncoder
from malsori.tokenizer import train_tokenizer
from tests.helpers.llm import pretrain_on
from tests.helpers.training import overfit

TRANSCRIPTS = ["go left", "stop now", "turn right", "yes"]


def _model(tok, prompt=None, position="after") -> DecoderOnlyASR:
    torch.manual_seed(0)
    enc = ConformerEncoder(ConformerConfig(input_dim=20, d_model=32, num_layers=1, num_heads=2, ff_expansion=2, conv_kernel=3,
                                           dropout=0.0, subsampling_channels=8))
    gpt = GPT(GPTConfig(d_model=48, num_layers=2, num_heads=2, dropout=0.0, context=128), tok.vocab_size)
    pretrain_on(gpt, tok, TRANSCRIPTS)
    adapted = AdaptedLM(gpt, AdapterConfig(kind="lora", lora_rank=8, lora_alpha=16.0, lora_targets=["qkv", "out", "ff_in", "ff_out"]))
    return DecoderOnlyASR(enc, adapted.gpt, SpeechPrefixConfig(stride=2, hidden=64, prompt_position=position), tok.special_ids.eos, prompt)


def _batch(tok):
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([64, 80, 72, 56])
    feats = torch.randn(4, 80, 20, generator=g)
    ids = [tok.encode(t) for t in TRANSCRIPTS]
    tokens = torch.zeros(4, max(map(len, ids)), dtype=torch.long)
    for i, t in enumerate(ids):
        tokens[i, : len(t)] = torch.tensor(t)
    return feats, lens, tokens, torch.tensor([len(t) for t in ids])


def _uncached_scores(model, feats, lens, tokens, tlens) -> torch.Tensor:
    """log p(transcript, eos | audio, prompt) of each utterance from one forward over the padded batch."""
    x, mask, y = model._sequences(*model.prefix(feats, lens), tokens, tlens)
    log_probs = model.gpt.forward_embeddings(x, mask).float().log_softmax(-1)
    return log_probs.gather(2, y.clamp(min=0)[..., None])[..., 0].masked_fill(y == -100, 0.0).sum(1)


@pytest.mark.parametrize("position", ["after", "before"])
def test_padding_in_a_batch_changes_no_utterance(position):
    tok = train_tokenizer("char", TRANSCRIPTS)
    model = _model(tok, tok.encode("go"), position).eval()
    feats, lens, tokens, tlens = _batch(tok)
    x, mask, y = model._sequences(*model.prefix(feats, lens), tokens, tlens)
    logits = model.gpt.forward_embeddings(x, mask)
    for i in range(4):
        xi, mi, yi = model._sequences(*model.prefix(feats[i : i + 1, : lens[i]], lens[i : i + 1]), tokens[i : i + 1, : tlens[i]], tlens[i : i + 1])
        alone = model.gpt.forward_embeddings(xi, mi)
        keep, keep_i = y[i] != -100, yi[0] != -100
        assert torch.equal(y[i][keep], yi[0][keep_i])
        torch.testing.assert_close(logits[i][keep], alone[0][keep_i], atol=1e-5, rtol=1e-5)


def test_tiny_decoder_only_asr_overfits_a_handful_of_utterances():
    tok = train_tokenizer("char", TRANSCRIPTS + ["transcribe:"])
    model = _model(tok, prompt=tok.encode("transcribe:"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all(".lora_" in n or n.startswith("projector.") for n, p in model.named_parameters() if p.requires_grad)
    feats, lens, tokens, tlens = _batch(tok)
    losses = overfit(lambda: model.compute_loss(feats, lens, tokens, tlens)[0], trainable)
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    assert [tok.decode(ids) for ids in model.greedy(feats, lens)] == TRANSCRIPTS
    beam = model.decode(feats, lens, DecodeOptions(method="beam", beam_size=3))
    assert [tok.decode(h.tokens) for h in beam] == TRANSCRIPTS
    # the search's cached scores = log p(transcript, eos | audio, prompt) of one uncached forward
    total = _uncached_scores(model, feats, lens, tokens, tlens)
    torch.testing.assert_close(torch.tensor([h.score for h in beam]), total, atol=1e-4, rtol=1e-5)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize("position", ["after", "before"])
def test_cached_search_scores_equal_the_uncached_forward_with_the_prompt_on_either_side(position):
    tok = train_tokenizer("char", TRANSCRIPTS + ["transcribe:"])
    prompt = tok.encode("transcribe:")
    model = _model(tok, prompt, position).eval()
    feats, lens, _, _ = _batch(tok)
    x, mask, _ = model._sequences(*model.prefix(feats, lens), torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    first = mask[0].nonzero()[0, 0]  # utterance 0's first real position: the prompt's first token only when before
    assert torch.equal(x[0, first], model.gpt.embed(torch.tensor(prompt[:1]))[0]) == (position == "before")
    hyps = model.decode(feats, lens, DecodeOptions(method="beam", beam_size=3, max_len=12))
    ids = [h.tokens for h in hyps]
    tokens = torch.zeros(4, max(1, max(map(len, ids))), dtype=torch.long)
    for i, t in enumerate(ids):
        tokens[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    total = _uncached_scores(model, feats, lens, tokens, torch.tensor([len(t) for t in ids]))
    torch.testing.assert_close(torch.tensor([h.score for h in hyps]), total, atol=1e-4, rtol=1e-5)
