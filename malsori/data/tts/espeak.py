"""eSpeak NG through its C API (the espeakng-loader wheel): accents x voice variants, prosody in eSpeak's own units.

eSpeak keeps hidden state between utterances (pitch flutter phase, cycle counters), so each utterance runs in a
freshly loaded copy of the library: the output depends only on its own text, voice and parameters.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from malsori.audio import resample
from malsori.data.tts.engine import SAMPLE_RATE, Engine, hold_out, plain_reading, trim_and_level
from malsori.errors import ConfigError, MalsoriError

ESPEAK_RATE = 22050  # eSpeak NG's own output rate


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice: an English accent (language file) with a voice variant."""

    accent: str  # language id, e.g. "en-us", "en-gb-scotland"
    variant: str = ""  # variant file name in voices/!v, e.g. "f3", "klatt2"; "" = the accent's plain voice

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}" if self.variant else self.accent


@dataclass
class SynthParams:
    """Prosody and level of one utterance."""

    rate: int = 175  # speaking rate, words per minute (eSpeak 80–450)
    pitch: int = 50  # base pitch, 0–100
    pitch_range: int = 50  # pitch variation, 0 (monotone) – 100
    volume: int = 100  # eSpeak amplitude, 0–200 (loud values clip and compress a little inside eSpeak)
    word_gap: int = 0  # extra pause between words, units of 10 ms
    lead_silence: float = 0.1  # seconds of silence before speech, after trimming
    trail_silence: float = 0.1  # seconds of silence after speech
    level_db: float = -20.0  # speech RMS level after normalization, dBFS
    espeak_seed: int = 0  # seed of eSpeak's noise generators (breathy variants)


def espeak_data_path() -> Path:
    import espeakng_loader

    return Path(espeakng_loader.get_data_path())


def available_accents() -> list[str]:
    """English accents shipped in the eSpeak NG data (lang/gmw/en*), as lower-case voice ids."""
    lang = espeak_data_path() / "lang" / "gmw"
    return sorted(p.name.lower() for p in lang.glob("en*") if p.name.lower() != "en-shaw")  # Shavian: a script


def available_variants() -> list[str]:
    """Voice variant names in voices/!v (only names eSpeak can take after '+': no spaces)."""
    return sorted(p.name for p in (espeak_data_path() / "voices" / "!v").iterdir() if p.is_file() and " " not in p.name)


def default_variants() -> list[str]:
    """Variants used unless listed: all but the unstable test voice "fast", whispering ones (voicing < 25) and
    heavy-echo effect voices (echo amplitude > 100: robots, "Demonic"), which sound like effects, not speakers."""
    keep = []
    for name in available_variants():
        settings = {}
        text = (espeak_data_path() / "voices" / "!v" / name).read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            parts = line.split("//")[0].split()
            if len(parts) >= 2 and all(p.lstrip("-").isdigit() for p in parts[1:]):
                settings[parts[0]] = [int(p) for p in parts[1:]]
        echo_amp = settings.get("echo", [0, 0])[-1]
        if name != "fast" and echo_amp <= 100 and settings.get("voicing", [64])[0] >= 25:
            keep.append(name)
    return keep


class Synthesizer:
    """Text → 16 kHz float32 speech with eSpeak NG, trimmed and level-normalized.

    eSpeak is loaded afresh for each utterance (about a millisecond) so that no state leaks between
    utterances. eSpeak is not thread-safe: use one Synthesizer per process, from one thread.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, data_dir: Path | None = None):
        """`data_dir`: a folder made by `english_data_copy` to share between processes (default: a private one)."""
        import espeakng_loader

        self.sample_rate = sample_rate
        self._lib_path = espeakng_loader.get_library_path()
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="malsori-espeak-")  # removed with this object
            data_dir = english_data_copy(Path(self._tmp.name))
        self._data = Path(data_dir)
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = proto(self._collect)  # keep a reference: eSpeak holds the pointer

    def _collect(self, wav, n: int, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue

    def espeak(self, text: str, voice: Voice, params: SynthParams) -> np.ndarray:
        """Raw eSpeak output: int16 samples at 22050 Hz."""
        variant_ok = not voice.variant or (self._data / "voices" / "!v" / voice.variant).is_file()
        if not (self._data / "lang" / "gmw" / voice.accent).is_file() or not variant_ok:
            raise MalsoriError(f"eSpeak NG has no voice '{voice.name}' (accents: {', '.join(available_accents())}; "
                               f"variants: {', '.join(available_variants())})")
        self._chunks = []
        lib = ctypes.CDLL(self._lib_path, mode=ctypes.RTLD_LOCAL)
        c_int, c_uint, c_void_p, c_char_p = ctypes.c_int, ctypes.c_uint, ctypes.c_void_p, ctypes.c_char_p
        lib.espeak_Initialize.argtypes = [c_int, c_int, c_char_p, c_int]
        lib.espeak_Synth.argtypes = [c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint, c_void_p, c_void_p]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        try:
            if lib.espeak_Initialize(2, 0, str(self._data).encode(), 0) != ESPEAK_RATE:  # 2 = AUDIO_OUTPUT_SYNCHRONOUS
                raise MalsoriError(f"{self._lib_path}: eSpeak NG failed to initialize with data {self._data}")
            try:
                self._speak(lib, text, voice, params)
            finally:
                lib.espeak_Terminate()
        finally:
            _unload(lib)
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def _speak(self, lib: ctypes.CDLL, text: str, voice: Voice, p: SynthParams) -> None:
        """Set voice, seed and parameters on an initialized eSpeak, and synthesize into self._chunks."""
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_ng_SetRandSeed(p.espeak_seed)
        _c_srand(p.espeak_seed)  # breath noise uses the C library's rand()
        if lib.espeak_SetVoiceByName(f"gmw/{voice.name}".encode()) != 0:  # a file path: no scan of all voices
            raise MalsoriError(f"eSpeak NG could not load voice '{voice.name}'")
        # espeak_PARAMETER ids: 1 rate, 2 volume, 3 pitch, 4 range, 7 word gap
        for pid, value in ((1, p.rate), (2, p.volume), (3, p.pitch), (4, p.pitch_range), (7, p.word_gap)):
            lib.espeak_SetParameter(pid, int(value), 0)
        data = text.encode("utf-8") + b"\0"
        lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None)  # 1 = POS_CHARACTER; flags 1 = UTF-8

    def synthesize(self, text: str, voice: Voice | str, params: SynthParams | None = None) -> np.ndarray:
        """Speak `text` (spoken as written: normalize it first for exact targets); float32 at `sample_rate`."""
        if isinstance(voice, str):
            voice = Voice(*voice.split("+", 1))
        params = params or SynthParams()
        raw = self.espeak(text, voice, params).astype(np.float32) / 32768.0
        wave = resample(raw, ESPEAK_RATE, self.sample_rate)
        return trim_and_level(wave, self.sample_rate, params.lead_silence, params.trail_silence,
                              level_db=params.level_db)


def english_data_copy(folder: Path) -> Path:
    """Copy eSpeak's English data into `folder`/espeak-ng-data, accent files under lower-case names, so that
    espeak_SetVoiceByName finds "gmw/en-us" as a file instead of reading every voice file (15 ms) at each load."""
    src, dst = espeak_data_path(), Path(folder) / "espeak-ng-data"
    (dst / "lang" / "gmw").mkdir(parents=True)
    (dst / "voices" / "!v").mkdir(parents=True)
    for name in ("phondata", "phonindex", "phontab", "intonations", "en_dict"):
        shutil.copyfile(src / name, dst / name)
    for f in (src / "lang" / "gmw").glob("en*"):
        shutil.copyfile(f, dst / "lang" / "gmw" / f.name.lower())
    for f in (src / "voices" / "!v").iterdir():
        if f.is_file() and " " not in f.name:
            shutil.copyfile(f, dst / "voices" / "!v" / f.name)
    return dst


def _c_srand(seed: int) -> None:
    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))
    except (OSError, AttributeError):  # no process-wide C library handle (Windows): breathy voices may vary slightly
        pass


def _unload(lib: ctypes.CDLL) -> None:
    """Unmap the library so the next load starts from pristine static state."""
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary")
    close(lib._handle)



class EspeakEngine(Engine):
    """eSpeak NG: voices are accent x variant combinations; rate, pitch, range, volume and word gap are drawn."""

    name = "espeak"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.data_dir: Path | None = None  # English data copy shared by the workers (set by prepare)

    def prepare(self, workdir: Path) -> None:
        self.data_dir = english_data_copy(workdir)

    def split_voices(self) -> dict[str, list[Voice]]:
        """Partition accent x variant combinations: dev and test get their own, train the rest."""
        cfg = self.cfg
        accents = cfg.accents or available_accents()
        variants = cfg.variants or default_variants()
        for name, chosen, known in (("accents", accents, available_accents()),
                                    ("variants", variants, available_variants())):
            bad = [x for x in chosen if x not in known]
            if bad:
                raise ConfigError(f"{name}: unknown {', '.join(bad)} (known: {', '.join(known)})")
        combos = [Voice(a, v) for a in sorted(accents) for v in sorted(variants)]
        np.random.default_rng([cfg.seed, 1]).shuffle(combos)
        return hold_out(combos, cfg, "the accent × variant combinations")

    def draw(self, rng: np.random.Generator, split: str, voices: list[Voice]) -> tuple[Voice, SynthParams]:
        cfg = self.cfg
        p = SynthParams(
            rate=int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)),
            pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
            pitch_range=int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)),
            volume=int(rng.integers(cfg.volume[0], cfg.volume[1] + 1)),
            word_gap=int(rng.integers(cfg.word_gap[0], cfg.word_gap[1] + 1)),
            lead_silence=round(float(rng.uniform(*cfg.silence)), 3),
            trail_silence=round(float(rng.uniform(*cfg.silence)), 3),
            level_db=round(float(rng.uniform(*cfg.level_db)), 2),
            espeak_seed=int(rng.integers(2**31)),
        )
        return voices[int(rng.integers(len(voices)))], p

    def default_params(self) -> SynthParams:
        return SynthParams()

    def reading(self, text: str) -> str:
        """The words alone with a final mark: eSpeak corpora made before the other engines read this way."""
        return plain_reading(text)

    def estimate_seconds(self, spoken: str) -> float:
        """eSpeak speaks about 18.5 characters/s at 175 words per minute."""
        return len(spoken) / (18.5 * sum(self.cfg.rate) / 2 / 175) + sum(self.cfg.silence)

    def synthesize(self, text: str, voice: Voice, params: SynthParams) -> np.ndarray:
        if "synth" not in self._lazy:
            self._lazy["synth"] = Synthesizer(data_dir=self.data_dir)
        return self._lazy["synth"].synthesize(text, voice, params)
