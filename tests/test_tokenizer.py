"""Tokenizers: reserved ids, encode/decode round trips, save/load, determinism, clear errors, the train CLI."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from malsori.commands.tokenizer import tokenizer as tokenizer_cli
from malsori.data.manifest import Utterance, write_manifest
from malsori.errors import MalsoriError
from malsori.tokenizer import SpecialIds, load_tokenizer, train_tokenizer

WORDS = ("the quick brown fox jumps over lazy dog speech recognition is fun when models learn from many "
         "voices and words sound different in every room while we listen closely to zero one two three").split()
# normalized text: lower case, single spaces; sentences built deterministically from the word list
TEXTS = [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 6)) for i in range(300)]
HELD_OUT = "the lazy fox listens to every voice in the room"


@pytest.fixture(scope="module")
def trained():
    return {"char": train_tokenizer("char", TEXTS, None),
            "bpe": train_tokenizer("bpe", TEXTS, 120),
            "unigram": train_tokenizer("unigram", TEXTS, 60)}


@pytest.mark.parametrize("kind", ["char", "bpe", "unigram"])
def test_reserved_ids_and_round_trip(trained, kind):
    tok = trained[kind]
    assert tok.special_ids == SpecialIds(blank=0, unk=1, sos=2, eos=2)
    assert [tok.id_to_piece(i) for i in range(3)] == ["<blank>", "<unk>", "<sos/eos>"]
    for text in TEXTS[:50] + [HELD_OUT]:
        ids = tok.encode(text)
        assert ids and all(3 <= i < tok.vocab_size for i in ids)  # never blank, unk (all chars seen) or sos/eos
        assert tok.decode(ids) == text
        assert tok.decode([0, 2, *ids, 2, 0]) == text  # blank and sos/eos are ignored
        starts = [i for i in ids if tok.is_word_start(i)]
        assert len(starts) == len(text.split())
    assert tok.encode("ß ж") and set(tok.encode("ßж")) <= {1} | {i for i in range(tok.vocab_size)
                                                              if tok.is_word_start(i)}
    if kind != "char":
        assert len(tok.encode(HELD_OUT)) < len(HELD_OUT)  # subwords are longer than characters


def test_char_pieces_and_vocab_limit():
    tok = train_tokenizer("char", ["b a", "c a a"], None)
    assert [tok.id_to_piece(i) for i in range(tok.vocab_size)] == ["<blank>", "<unk>", "<sos/eos>", "▁", "a", "b", "c"]
    assert tok.encode("ab x") == [3, 4, 5, 3, 1] and tok.decode([3, 4, 5, 3, 1]) == "ab ⁇"
    assert [tok.is_word_start(i) for i in range(7)] == [False, False, False, True, False, False, False]
    small = train_tokenizer("char", ["b a", "c a a"], 6)  # keeps the most frequent: a, then b (ties by char)
    assert [small.id_to_piece(i) for i in range(3, 6)] == ["▁", "a", "b"]
    with pytest.raises(MalsoriError, match="vocab size 9 is too large.*at most 7"):
        train_tokenizer("char", ["b a", "c a a"], 9)


@pytest.mark.parametrize("kind", ["char", "bpe", "unigram"])
def test_save_load_identical(trained, tmp_path, kind):
    tok = trained[kind]
    tok.save(tmp_path / kind)
    meta = json.loads((tmp_path / kind / "tokenizer.json").read_text())
    assert meta["kind"] == kind and meta["vocab_size"] == tok.vocab_size
    assert (tmp_path / kind / "tokenizer.model").is_file() == (kind != "char")
    loaded = load_tokenizer(tmp_path / kind)
    assert type(loaded) is type(tok) and loaded.vocab_size == tok.vocab_size
    for text in TEXTS[::30] + [HELD_OUT, "unseen ß"]:
        assert loaded.encode(text) == tok.encode(text)


@pytest.mark.parametrize("kind,size", [("bpe", 120), ("unigram", 60)])
def test_deterministic(trained, tmp_path, kind, size):
    again = train_tokenizer(kind, iter(TEXTS), size, out_dir=tmp_path)
    assert again.model == trained[kind].model
    assert load_tokenizer(tmp_path).encode(HELD_OUT) == trained[kind].encode(HELD_OUT)


def test_errors(tmp_path):
    with pytest.raises(MalsoriError, match=r"vocab size 5000 is too large for this text: use at most \d+"):
        train_tokenizer("unigram", TEXTS, 5000)
    with pytest.raises(MalsoriError, match="vocab size 10 is too small"):
        train_tokenizer("bpe", TEXTS, 10)
    with pytest.raises(MalsoriError, match="needs a vocab size"):
        train_tokenizer("bpe", TEXTS, None)
    with pytest.raises(MalsoriError, match="no text"):
        train_tokenizer("char", ["", "  "], None)
    with pytest.raises(MalsoriError, match="unknown tokenizer kind"):
        train_tokenizer("word", TEXTS, None)
    with pytest.raises(MalsoriError, match="tokenizer.json: tokenizer not found"):
        load_tokenizer(tmp_path / "nothing")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(MalsoriError, match="tokenizer.json: malformed"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "bpe", "model": "tokenizer.model"}')
    with pytest.raises(MalsoriError, match="tokenizer.model: SentencePiece model not found"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(MalsoriError, match="tokenizer.model: not a SentencePiece model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "char", "pieces": ["a", "b", "c"]}')
    with pytest.raises(MalsoriError, match="ids 0-2 must be"):
        load_tokenizer(tmp_path)


def test_train_cli(tmp_path, monkeypatch):
    # a stand-in normalizer, so this test does not depend on malsori.text
    monkeypatch.setitem(sys.modules, "malsori.text", types.SimpleNamespace(normalize=lambda s: " ".join(s.lower().split())))
    utts = [Utterance(f"u{i}", f"{i}.flac", t.upper()) for i, t in enumerate(TEXTS[:150])]
    write_manifest(tmp_path / "m.jsonl", utts)
    (tmp_path / "extra.txt").write_text("\n".join(TEXTS[150:]) + "\n")
    out = tmp_path / "tok"
    r = CliRunner().invoke(tokenizer_cli, ["train", "--kind", "bpe", "--vocab-size", "120", "--manifest",
                                           str(tmp_path / "m.jsonl"), "--text", str(tmp_path / "extra.txt"),
                                           "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "120 ids" in r.output
    tok = load_tokenizer(out)
    assert tok.decode(tok.encode(HELD_OUT)) == HELD_OUT
    assert all(tok.id_to_piece(i) == tok.id_to_piece(i).lower() for i in range(3, tok.vocab_size))  # normalized
    r = CliRunner().invoke(tokenizer_cli, ["train", "--kind", "char", "--out", str(out)])
    assert r.exit_code != 0 and "at least one --manifest or --text" in r.output
