"""Corpus importers: each layout built in tmp_path, imported, read back; bad items skipped or strict errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from malsori.audio import load_audio, save_audio
from malsori.commands.corpora import import_
from malsori.data.corpora import detect_format, import_corpus
from malsori.data.manifest import read_manifest
from malsori.errors import MalsoriError

SR = 16000
FSDD = Path("/work/shared/data/fsdd/manifest.jsonl")


def tone(path: Path, seconds: float, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    save_audio(path, 0.3 * np.sin(2 * np.pi * freq * t), SR)
    return path


def librispeech(root: Path) -> Path:
    """Two speakers, one chapter each; 19-198-0002's audio is missing."""
    for spk, chap, durs in (("19", "198", (0.5, 0.25, 0.75)), ("26", "495", (1.0,))):
        d = root / spk / chap
        lines = []
        for k, dur in enumerate(durs):
            uid = f"{spk}-{chap}-{k:04d}"
            if uid != "19-198-0002":
                tone(d / f"{uid}.flac", dur)
            lines.append(f"{uid} WORDS OF {spk} NUMBER {k}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_round_trip(tmp_path):
    src = librispeech(tmp_path / "LibriSpeech" / "dev-clean")
    out = tmp_path / "out" / "ls.jsonl"
    report = import_corpus("librispeech", tmp_path / "LibriSpeech", out)
    m = read_manifest(out)
    assert [u.id for u in m] == ["19-198-0000", "19-198-0001", "26-495-0000"]
    assert [u.duration for u in m] == [0.5, 0.25, 1.0]
    assert [u.speaker for u in m] == ["19", "19", "26"]
    assert m.utterances[2].text == "WORDS OF 26 NUMBER 0" and m.utterances[0].extra == {"chapter": "198"}
    assert all(u.audio_path.is_file() and not Path(u.audio).is_absolute() for u in m)
    assert len(load_audio(m.utterances[1].audio_path)) == int(0.25 * SR)
    assert report.skipped == [(str(src / "19" / "198" / "19-198-0002.flac"), "audio file not found")]
    assert "3 utterances" in report.summary() and "1 skipped" in report.summary()
    assert detect_format(tmp_path / "LibriSpeech") == "librispeech"


def test_librispeech_malformed_line_and_strict(tmp_path):
    src = librispeech(tmp_path / "ls")
    trans = src / "26" / "495" / "26-495.trans.txt"
    trans.write_text(trans.read_text() + "26-495-0001\n")  # no text
    report = import_corpus("librispeech", src, tmp_path / "m.jsonl")
    assert (f"{trans}:2", "malformed line (expected '<utt-id> <TEXT>')") in report.skipped
    with pytest.raises(MalsoriError, match="19-198-0002.flac: audio file not found"):
        import_corpus("librispeech", src, tmp_path / "m2.jsonl", strict=True)
    assert not (tmp_path / "m2.jsonl").exists()


def test_commonvoice_with_bad_clips(tmp_path):
    src = tmp_path / "cv"
    tone(src / "clips" / "a.wav", 0.5)
    sf.write(src / "clips" / "b.mp3", np.zeros(SR, dtype=np.float32), SR, format="MP3")
    (src / "clips" / "empty.flac").write_bytes(b"")
    (src / "clips" / "corrupt.flac").write_bytes(b"fLaC not really a flac file" * 10)
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
    rows = ["spk1\ta.wav\tHello \"quoted\" world.\t2\t0\ttwenties\t\t\ten\t",
            "spk2\tb.mp3\tSecond one!\t2\t0\t\t\t\ten\t",
            "spk2\tempty.flac\tEmpty.\t2\t0\t\t\t\ten\t",
            "spk3\tcorrupt.flac\tCorrupt.\t2\t0\t\t\t\ten\t",
            "spk3\ttoo\tfew"]
    (src / "dev.tsv").write_text("\n".join([header, *rows]) + "\n")
    report = import_corpus("commonvoice", src, tmp_path / "out", split="dev")
    m = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [(u.id, u.speaker, u.text) for u in m] == [("a", "spk1", 'Hello "quoted" world.'),
                                                      ("b", "spk2", "Second one!")]
    assert m.utterances[0].duration == 0.5 and abs(m.utterances[1].duration - 1.0) < 0.1
    assert m.utterances[0].extra == {"age": "twenties", "locale": "en"}
    reasons = dict(report.skipped)
    assert reasons[str(src / "clips" / "empty.flac")] == "empty audio file (0 bytes)"
    assert str(src / "clips" / "corrupt.flac") in reasons
    assert "expected 10 tab-separated fields" in reasons[f"{src / 'dev.tsv'}:6"]
    assert detect_format(src) == "commonvoice"
    with pytest.raises(MalsoriError, match="empty.flac: empty audio file"):
        import_corpus("commonvoice", src, tmp_path / "x.jsonl", split="dev.tsv", strict=True)
    with pytest.raises(MalsoriError, match="train.tsv: Common Voice split not found"):
        import_corpus("commonvoice", src, tmp_path / "x.jsonl")


def kaldi_dir(root: Path, segments: bool) -> Path:
    d = root / "data" / "train"
    tone(root / "wav" / "rec1.wav", 2.0)
    tone(root / "wav" / "rec2.flac", 1.0)
    scp = ["rec1 wav/rec1.wav", "rec2\twav/rec2.flac", "rec3 sox in.wav -t wav - |", "rec4 wav/missing.wav"]
    (d).mkdir(parents=True)
    (d / "wav.scp").write_text("\n".join(scp) + "\n")
    if segments:
        (d / "segments").write_text("u1 rec1 0.00 0.75\nu2 rec1 0.75 2.00\nu3 rec2 0.10 -1\nu4 rec3 0 1\n"
                                    "u5 rec1 1.5 9.0\nu6 rec1 zero 1\n")
        (d / "text").write_text("u1 first part\nu2 second part\nu3 third\nu4 piped\nu5 too long\nu6 bad\nu7 orphan\n")
        (d / "utt2spk").write_text("u1 alice\nu2 bob\nu3 alice\n")
    else:
        (d / "text").write_text("rec1 whole one\nrec3 piped\nrec4 missing\n")
    return d


def test_kaldi_segments(tmp_path):
    d = kaldi_dir(tmp_path, segments=True)
    report = import_corpus("kaldi", d, tmp_path / "out.jsonl", audio_root=tmp_path)
    m = read_manifest(tmp_path / "out.jsonl")
    got = [(u.id, u.speaker, u.text, u.duration, u.extra.get("offset", 0.0)) for u in m]
    assert got == [("u1", "alice", "first part", 0.75, 0.0), ("u2", "bob", "second part", 1.25, 0.75),
                   ("u3", "alice", "third", 0.9, 0.1)]
    assert m.utterances[1].audio_path == (tmp_path / "wav" / "rec1.wav").resolve()
    reasons = [r for _, r in report.skipped]
    assert len(reasons) == 4
    assert any("rec3: is a shell pipe" in r for r in reasons)
    assert any("slice 1.500+7.500 s is outside" in r for r in reasons)
    assert any("u6: malformed line" in r for r in reasons)
    assert any("'u7' has no audio" in r for r in reasons)
    assert detect_format(d) == "kaldi"


def test_kaldi_without_segments_and_strict(tmp_path):
    d = kaldi_dir(tmp_path, segments=False)
    (tmp_path / "data" / "train" / "wav").mkdir()
    for f in ("rec1.wav", "rec2.flac"):  # default audio root: the data directory
        (tmp_path / "wav" / f).rename(d / "wav" / f)
    report = import_corpus("kaldi", d, tmp_path / "out.jsonl")
    assert [(u.id, u.duration, u.extra) for u in report.utterances] == [("rec1", 2.0, {})]
    reasons = dict(report.skipped)
    assert "no transcript for utterance 'rec2'" == reasons[str(d / "text")]
    assert str(d / "wav" / "missing.wav") in reasons
    (d / "text").write_text("rec1 whole one\nrec2 two\nrec3 piped\nrec4 missing\n")
    with pytest.raises(MalsoriError, match=r"wav\.scp: rec3: is a shell pipe"):
        import_corpus("kaldi", d, tmp_path / "strict.jsonl", strict=True)
    with pytest.raises(MalsoriError, match="split do not apply to kaldi"):
        import_corpus("kaldi", d, tmp_path / "o.jsonl", split="dev")


def test_jsonl_rebases_paths(tmp_path):
    src = tmp_path / "corpus"
    tone(src / "audio" / "x.flac", 0.5)
    tone(src / "audio" / "y.flac", 1.0)
    lines = [{"id": "x", "audio": "audio/x.flac", "text": "ex", "speaker": "s", "label": 3},
             {"id": "y", "audio": str((src / "audio" / "y.flac").resolve()), "text": "why", "duration": 0.5,
              "offset": 0.25},
             {"id": "z", "audio": "audio/z.flac", "text": "missing"}]
    (src / "manifest.jsonl").write_text("\n".join(json.dumps(d) for d in lines) + "\nnot json\n")
    out = tmp_path / "elsewhere" / "deep" / "m.jsonl"
    report = import_corpus("auto", src, out)
    m = read_manifest(out)
    assert [u.audio for u in m] == ["../../corpus/audio/x.flac", "../../corpus/audio/y.flac"]
    assert all(u.audio_path.is_file() for u in m)
    assert [(u.duration, u.extra) for u in m] == [(0.5, {"label": 3}), (0.5, {"offset": 0.25})]
    assert len(report.skipped) == 2 and report.skipped[0][0] == f"{src / 'manifest.jsonl'}:4"
    absolute = import_corpus("jsonl", src / "manifest.jsonl", tmp_path / "abs.jsonl", absolute_paths=True)
    assert all(Path(u.audio).is_absolute() for u in absolute.utterances)


def test_nothing_imported_is_an_error(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "train.tsv").write_text("client_id\tpath\tsentence\n")
    (tmp_path / "e" / "clips").mkdir()
    with pytest.raises(MalsoriError, match="no utterances imported"):
        import_corpus("commonvoice", tmp_path / "e", tmp_path / "o.jsonl")
    with pytest.raises(MalsoriError, match="cannot tell the corpus format"):
        detect_format(tmp_path)


@pytest.mark.skipif(not FSDD.is_file(), reason="shared FSDD data absent")
def test_jsonl_on_fsdd(tmp_path):
    report = import_corpus("jsonl", FSDD, tmp_path / "fsdd.jsonl")
    original = read_manifest(FSDD)
    m = read_manifest(tmp_path / "fsdd.jsonl")
    assert len(m) == len(original) and not report.skipped
    for a, b in zip(m.utterances[::300], original.utterances[::300]):
        assert (a.id, a.text, a.speaker, a.duration, a.extra) == (b.id, b.text, b.speaker, b.duration, b.extra)
        assert a.audio_path.resolve() == b.audio_path.resolve() and a.audio != b.audio


def test_cli(tmp_path):
    librispeech(tmp_path / "ls")
    runner = CliRunner()
    r = runner.invoke(import_, ["librispeech", str(tmp_path / "ls"), str(tmp_path / "o.jsonl"), "--absolute-paths"])
    assert r.exit_code == 0, r.output
    assert "3 utterances" in r.output and "skipped" in r.output
    assert all(Path(u.audio).is_absolute() for u in read_manifest(tmp_path / "o.jsonl"))
    r = runner.invoke(import_, ["librispeech", str(tmp_path / "ls"), str(tmp_path / "s.jsonl"), "--strict"])
    assert isinstance(r.exception, MalsoriError) and "19-198-0002.flac" in str(r.exception)
    r = runner.invoke(import_, ["--help"])
    assert r.exit_code == 0 and "commonvoice" in r.output and "--split" in r.output


def test_unicode_line_separator_inside_a_transcript(tmp_path):
    src = tmp_path / "cv"
    tone(src / "clips" / "a.flac", 0.25)
    (src / "train.tsv").write_bytes("client_id\tpath\tsentence\nc\ta.flac\tone\u2028two\r\n\n".encode())
    report = import_corpus("commonvoice", src, tmp_path / "m.jsonl")
    assert [u.text for u in report.utterances] == ["one\u2028two"] and not report.skipped
    (src / "train.tsv").write_bytes(b"client_id\tpath\tsentence\nc\ta.flac\t\xff\n")
    with pytest.raises(MalsoriError, match="train.tsv: not UTF-8"):
        import_corpus("commonvoice", src, tmp_path / "m.jsonl")
