"""Machine translation: parallel files and their errors, the split by sentence group, multi-reference scoring, and the
three translator families (a tiny one of each overfits a handful of pairs; padding, beam 1 = greedy, save → load)."""

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from malsori.decode.options import DecodeOptions
from malsori.errors import MalsoriError
from malsori.mt.data import ParallelReadStats, group_references, read_parallel
from malsori.mt.model import RNNConfig, TransformerMTConfig, TranslatorConfig, build_translator, reverse_padded
from malsori.mt.score import score
from malsori.mt.split import make_split, overlap, read_split, sentence_groups, write_split
from malsori.mt.translate import TextTranslator, pad_batch
from malsori.pretrained import load_model_dir, write_model_dir
from malsori.tokenizer import train_tokenizer
from tests.helpers.training import overfit

PAIRS = [("the cat sleeps.", "le chat dort."), ("the dog eats.", "le chien mange."), ("a red car.", "une voiture rouge."),
         ("i see the cat.", "je vois le chat."), ("we like green tea.", "nous aimons le thé vert."),
         ("she reads a book.", "elle lit un livre.")]
FAMILIES = {
    "fixed": RNNConfig(embed_dim=48, hidden_size=48, num_layers=1, decoder_hidden=96, dropout=0.0),
    "attention": RNNConfig(embed_dim=48, hidden_size=48, num_layers=1, decoder_hidden=64, attention_dim=32, dropout=0.0),
    "transformer": TransformerMTConfig(d_model=48, encoder_layers=1, decoder_layers=1, num_heads=2, dropout=0.0, attention_dropout=0.0),
}


def _config(kind: str, **rnn) -> TranslatorConfig:
    fam = FAMILIES[kind]
    if kind == "transformer":
        return TranslatorConfig(kind=kind, transformer=fam, label_smoothing=0.0)
    return TranslatorConfig(kind=kind, rnn=RNNConfig(**{**fam.__dict__, **rnn}), label_smoothing=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", [t for p in PAIRS for t in p])


def _batch(tok, texts):
    return pad_batch([tok.encode(t) for t in texts])


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny model of each family trained on PAIRS until it reproduces them: {kind: (model, first loss, last loss)}."""
    out = {}
    src, src_lens = _batch(tokenizer, [s for s, _ in PAIRS])
    tgt, tgt_lens = _batch(tokenizer, [t for _, t in PAIRS])
    for kind in FAMILIES:
        torch.manual_seed(0)
        model = build_translator(_config(kind), tokenizer.vocab_size)
        losses = overfit(lambda: model.compute_loss(src, src_lens, tgt, tgt_lens)[0], model.parameters())
        out[kind] = (model.eval(), losses[0], losses[-1])
    return out


# ---- data ----------------------------------------------------------------------------------------------------------
def test_tsv_jsonl_and_gz_are_read_with_line_numbers(tmp_path):
    (tmp_path / "a.tsv").write_text("Go.\tVa !\n\nHi.\tSalut !\tCC-BY attribution\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(json.dumps({"source": "Go.", "target": "Va !", "id": "x1"}) + "\n")
    a = read_parallel(tmp_path / "a.tsv")
    assert [(p.source, p.target, p.line) for p in a] == [("Go.", "Va !", 1), ("Hi.", "Salut !", 3)]
    (b,) = read_parallel(tmp_path / "b.jsonl.gz")
    assert (b.source, b.target, b.id, b.line) == ("Go.", "Va !", "x1", 1)
    assert read_parallel(tmp_path / "a.tsv", reverse=True)[0].source == "Va !"


@pytest.mark.parametrize("name, line, reason", [
    ("bad.tsv", "no tab here", "no tab"),
    ("bad.tsv", "\tonly a target", "empty source"),
    ("bad.jsonl", "{not json", "not JSON"),
    ("bad.jsonl", '{"source": "a", "target": 3}', "'target' must be a string"),
    ("bad.jsonl", '["a", "b"]', "not a JSON object"),
])
def test_a_malformed_line_is_one_error_naming_file_and_line_or_a_counted_skip(tmp_path, name, line, reason):
    good = "a\tb" if name.endswith(".tsv") else json.dumps({"source": "a", "target": "b"})
    path = tmp_path / name
    path.write_text(f"{good}\n{line}\n{good}\n")
    with pytest.raises(MalsoriError, match=f"{name}:2: .*{reason}") as e:
        read_parallel(path)
    assert "\n" not in str(e.value)
    stats = ParallelReadStats()
    assert len(read_parallel(path, strict=False, stats=stats)) == 2 and len(stats.skipped) == 1


def test_not_utf8_and_missing_files(tmp_path):
    (tmp_path / "latin.tsv").write_bytes(b"ok\tfine\ncaf\xe9\tcafe\n")
    with pytest.raises(MalsoriError, match="latin.tsv:2: not UTF-8"):
        read_parallel(tmp_path / "latin.tsv")
    with pytest.raises(MalsoriError, match="not found"):
        read_parallel(tmp_path / "nope.tsv")


# ---- split ---------------------------------------------------------------------------------------------------------
def _repeated(tmp_path) -> Path:
    """Sources with several translations, translations shared by two sources, and singletons."""
    rows = ["I'm sorry.\tJe suis désolé.", "I'm sorry.\tDésolé.", "I am sorry.\tJe suis désolé.", "Run!\tCours !",
            "Run!\tCourez !", "Hello.\tBonjour.", "Thanks.\tMerci.", "Thanks.\tMerci bien.", "Go.\tVa !", "Yes.\tOui.",
            "No.\tNon.", "Wait.\tAttends.", "Wait.\tAttendez.", "Stop.\tArrête.", "Help!\tÀ l'aide !"]
    path = tmp_path / "rep.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_groups_join_pairs_that_share_a_source_or_a_target(tmp_path):
    pairs = read_parallel(_repeated(tmp_path))
    g = sentence_groups(pairs)
    assert g[0] == g[1] == g[2] != g[3]  # "I'm sorry." and "I am sorry." share "Je suis désolé."
    assert g[3] == g[4] and len(set(g)) == 10


@pytest.mark.parametrize("seed", range(5))
def test_split_has_no_overlap_and_keeps_every_translation_of_a_test_source(tmp_path, seed):
    data = _repeated(tmp_path)
    pairs = read_parallel(data)
    split = make_split(pairs, forced_train={"Hello.", "Oui."}, dev_sources=2, test_sources=3, seed=seed)
    assert all(v == 0 for v in overlap(pairs, split).values())
    test = split.select(pairs, "test")
    for m in group_references(test):  # all of a test source's translations are its references
        assert sorted(m.references) == sorted({p.target for p in pairs if p.source == m.source})
    held = {p.source for p in test + split.select(pairs, "dev")} | {p.target for p in test + split.select(pairs, "dev")}
    assert not held & {"Hello.", "Oui.", "Yes."}  # forced sentences (either side) pull their group into training
    path = write_split(tmp_path / "split.tsv", split, data, "a comment")
    again = read_split(path, data)
    assert again.assignment == split.assignment
    data.write_text(data.read_text() + "New.\tNouveau.\n")
    with pytest.raises(MalsoriError, match="sha256 differs"):
        read_split(path, data)


def test_split_refuses_when_too_few_groups_are_free(tmp_path):
    pairs = read_parallel(_repeated(tmp_path))
    with pytest.raises(MalsoriError, match="free of forced training sentences"):
        make_split(pairs, set(), dev_sources=5, test_sources=20)


def test_committed_splits_are_readable():
    root = Path(__file__).resolve().parents[1] / "data" / "mt"
    split = read_split(root / "split_eng_fra.tsv")
    assert set(split.assignment.values()) == {"dev", "test"} and len(split.sha256) == 64


# ---- scoring -------------------------------------------------------------------------------------------------------
def test_scores_are_multi_reference_sacrebleu():
    hyps = ["le chat dort sur le tapis .", "il pleut ."]
    one = score(hyps, [["le chat est sur le tapis ."], ["il pleut ."]])
    two = score(hyps, [["le chat est sur le tapis .", "le chat dort sur le tapis ."], ["il pleut ."]])
    assert two.bleu == pytest.approx(100.0) and one.bleu < 100 and two.references == 2
    assert "nrefs:var" in two.bleu_signature and "tok:13a" in two.bleu_signature
    assert "tok:char" in score(["고양이가 잔다"], [["고양이가 잔다"]], char_level=True).bleu_signature
    with pytest.raises(MalsoriError):
        score(["a"], [[]])


# ---- models --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FAMILIES)
def test_a_tiny_model_of_each_family_overfits_a_handful_of_pairs(trained, tokenizer, kind):
    model, first, last = trained[kind]
    assert last < 0.05 * first
    got = TextTranslator(model, tokenizer).translate([s for s, _ in PAIRS])
    assert [t.text for t in got] == [t for _, t in PAIRS]


@pytest.mark.parametrize("kind", FAMILIES)
def test_beam_of_one_is_greedy_and_beam_gives_an_nbest(trained, tokenizer, kind):
    model = trained[kind][0]
    src, lens = _batch(tokenizer, [s for s, _ in PAIRS] + ["the red cat eats."])
    greedy = model.decode(src, lens, DecodeOptions())
    beam1 = model.decode(src, lens, DecodeOptions(method="beam", beam_size=1))
    assert [h.tokens for h in greedy] == [h.tokens for h in beam1]
    for g, b in zip(greedy, beam1):
        assert b.score == pytest.approx(g.score, abs=1e-4)
    beam = model.decode(src, lens, DecodeOptions(method="beam", beam_size=4, nbest=3))
    assert all(len(h.nbest) == 3 and len({tuple(x.tokens) for x in h.nbest}) == 3 for h in beam)


@pytest.mark.parametrize("kind", FAMILIES)
def test_encoder_output_does_not_depend_on_padding(tokenizer, kind):
    torch.manual_seed(1)
    model = build_translator(_config(kind, reverse_source=kind == "fixed"), tokenizer.vocab_size).eval()
    texts = ["a red car.", "we like green tea and a book."]
    src, lens = _batch(tokenizer, texts)
    enc, _ = model.encoder(src, lens)
    for i, t in enumerate(texts):
        alone, _ = model.encoder(*_batch(tokenizer, [t]))
        n = len(tokenizer.encode(t))
        assert torch.allclose(enc[i, :n], alone[0], atol=1e-5)
        assert enc[i, n:].abs().max() == 0 if n < enc.size(1) else True
    with torch.no_grad():
        batched = model.decode(src, lens, DecodeOptions(method="beam", beam_size=3))
        single = [model.decode(*_batch(tokenizer, [t]), DecodeOptions(method="beam", beam_size=3))[0] for t in texts]
    assert [h.tokens for h in batched] == [h.tokens for h in single]


def test_reversed_source_reverses_within_each_length():
    tokens = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    assert reverse_padded(tokens, torch.tensor([3, 2])).tolist() == [[7, 6, 5, 0], [9, 8, 0, 0]]


def test_transformer_ties_one_matrix_and_saves_it_once(tokenizer):
    model = build_translator(_config("transformer"), tokenizer.vocab_size)
    names = list(model.state_dict())
    assert [n for n in names if n.endswith("embed.weight")] == ["encoder.embed.weight"]
    assert model.decoder.embed.weight is model.encoder.embed.weight


@pytest.mark.parametrize("kind", FAMILIES)
def test_save_load_translates_identically(trained, tokenizer, tmp_path, kind):
    model = trained[kind][0]
    from malsori.config import to_dict

    write_model_dir(tmp_path / "m", "mt", model, {"model": to_dict(model.mt_cfg)}, tokenizer)
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.task == "mt"
    texts = [s for s, _ in PAIRS] + ["the cat reads."]
    opts = DecodeOptions(method="beam", beam_size=3, nbest=2)
    before = TextTranslator(model, tokenizer).translate(texts, opts)
    after = TextTranslator.load(tmp_path / "m", "cpu").translate(texts, opts)
    assert [(t.text, t.nbest) for t in before] == [(t.text, t.nbest) for t in after]


@pytest.mark.parametrize("attention", ["dot", "general"])
def test_luong_attention_trains(tokenizer, attention):
    torch.manual_seed(0)
    model = build_translator(_config("attention", attention=attention, decoder_hidden=96, hidden_size=48), tokenizer.vocab_size)
    src, src_lens = _batch(tokenizer, [s for s, _ in PAIRS])
    tgt, tgt_lens = _batch(tokenizer, [t for _, t in PAIRS])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, _ = model.compute_loss(src, src_lens, tgt, tgt_lens)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    from malsori.models.aed import decoder_io

    ys_in, _, ys_lens = decoder_io(tgt, tgt_lens)
    w = model.attention_weights(src, src_lens, ys_in, ys_lens)
    assert w.shape == (len(PAIRS), ys_in.size(1), src.size(1))
    assert torch.allclose(w.sum(-1), torch.ones(w.shape[:2]), atol=1e-5)


# ---- the task and the commands -------------------------------------------------------------------------------------
def _cli(*args, stdin=None):
    from click.testing import CliRunner

    from malsori.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args], input=stdin)
    return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=r.stderr + (repr(r.exception) if r.exit_code == 1 else ""))


@pytest.fixture(scope="module")
def mt_run(tmp_path_factory) -> Path:
    from malsori.tasks import load_train_config
    from malsori.train import train

    d = tmp_path_factory.mktemp("mt")
    (d / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS))
    cfg = load_train_config(None, [
        "task=mt", f"out={d / 'run'}", f"data.train={d / 'pairs.tsv'}", f"data.valid={d / 'pairs.tsv'}",
        "data.tokenizer=char", "data.max_tokens=200", "model.kind=transformer", "model.transformer.d_model=32",
        "model.transformer.num_heads=2", "model.transformer.encoder_layers=1", "model.transformer.decoder_layers=1",
        "model.transformer.dropout=0", "model.transformer.attention_dropout=0", "model.label_smoothing=0",
        "optim.lr=5e-3", "optim.warmup_steps=10", "max_epochs=200", "average_last=1", "progress=false", "threads=1", "checkpoint_every=40",
        "log_every=10", "valid_every=60"])
    train(cfg)
    return d


def test_mt_task_trains_through_the_loop_and_validates_by_bleu(mt_run):
    import csv

    rows = list(csv.DictReader(open(mt_run / "run" / "valid.csv")))
    assert float(rows[-1]["bleu"]) > float(rows[0]["bleu"]) and float(rows[-1]["chrf"]) > 90
    log = list(csv.DictReader(open(mt_run / "run" / "log.csv")))
    assert float(log[-1]["loss"]) < 0.2 * float(log[0]["loss"]) and float(log[0]["target_tokens_per_sec"]) > 0
    import malsori

    assert malsori.load(mt_run / "run" / "model", "cpu").translate("a red car.").text == "une voiture rouge."


def test_translate_and_eval_commands(mt_run):
    model = mt_run / "run" / "model"
    r = _cli("translate", model, "a red car.", "the dog eats.")
    assert r.returncode == 0 and r.stdout.splitlines() == ["une voiture rouge.", "le chien mange."], r.stderr
    r = _cli("translate", model, "--method", "greedy", stdin="i see the cat.\n\nthe cat sleeps.\n")
    assert r.stdout.splitlines() == ["je vois le chat.", "", "le chat dort."], r.stderr
    (mt_run / "in.txt").write_text("a red car.\n")
    assert _cli("translate", model, "--input", mt_run / "in.txt").stdout == "une voiture rouge.\n"
    r = _cli("translate", model, "--nbest", "2", "a red car.")
    assert r.returncode == 0 and len(r.stdout.strip().split("\t")) == 2
    r = _cli("eval", model, mt_run / "pairs.tsv", "--method", "beam", "--beam", "3")
    assert r.returncode == 0 and "BLEU 100.00" in r.stdout and "nrefs:" in r.stdout, r.stderr
    assert (mt_run / "run" / "eval_pairs_beam.tsv").is_file()
    r = _cli("translate", model, "--nbest", "2", "--method", "greedy", "x")
    assert r.returncode == 2 and "needs --method beam" in r.stderr


def test_mt_run_resumes_exactly(tmp_path):
    """Killed after step 8 with its last checkpoint at 5: resumed, it logs the losses of an uninterrupted run."""
    import csv
    import shutil

    from malsori.tasks import load_train_config
    from malsori.train import train

    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS * 4))

    def run(out, steps):
        train(load_train_config(None, [
            "task=mt", f"out={out}", f"data.train={tmp_path / 'pairs.tsv'}", "data.tokenizer=char", "data.max_tokens=60",
            "model.kind=attention", "model.rnn.embed_dim=16", "model.rnn.hidden_size=16", "model.rnn.num_layers=1",
            "model.rnn.decoder_hidden=16", "model.rnn.attention_dim=16", "model.rnn.dropout=0.3", "max_epochs=100",
            f"max_steps={steps}", "progress=false", "threads=1", "checkpoint_every=5", "log_every=1", "average_last=1"]))

    run(tmp_path / "ref", 12)
    run(tmp_path / "run", 8)
    shutil.rmtree(tmp_path / "run" / "ckpt-00000008")
    run(tmp_path / "run", 12)
    losses = [{int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(d / "log.csv"))} for d in (tmp_path / "ref", tmp_path / "run")]
    assert sorted(losses[0]) == sorted(losses[1]) == list(range(1, 13))
    for step, loss in losses[0].items():
        assert losses[1][step] == pytest.approx(loss, rel=1e-6, abs=1e-6), step


def test_speech_translation_by_cascade_carries_word_times(mt_run):
    root = Path(__file__).resolve().parents[1]
    audio = sorted((root / "demo" / "audio").glob("*.ogg"))[:1]
    if not (root / "models" / "en-small" / "config.json").is_file() or not audio:
        pytest.skip("the released en-small model or the demo audio is not in this checkout")
    r = _cli("translate", mt_run / "run" / "model", "--asr", "en-small", "--json", audio[0], mt_run / "pairs.tsv")
    assert r.returncode == 2 and "pairs.tsv" in r.stderr  # not audio: named, the good file still translated
    got = json.loads(r.stdout.splitlines()[0])
    assert got["text"] and got["words"] and isinstance(got["translation"], str) and got["translation"]
    assert _cli("translate", mt_run / "run" / "model", "--json", "x").returncode == 2
