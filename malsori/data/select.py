"""Choosing the utterances an evaluation reads: an evenly spaced subset, and the readable ones with their samples."""

from __future__ import annotations

import numpy as np

from malsori.data.dataset import load_utterance_audio
from malsori.data.manifest import Utterance
from malsori.errors import AudioError


def evenly_spaced(items: list, n: int) -> list:
    """At most n items at evenly spaced positions of the list (all of them when n <= 0 or n covers it)."""
    if n <= 0 or len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def load_waves(utts: list[Utterance]) -> tuple[list[Utterance], list[np.ndarray], list[AudioError]]:
    """The readable utterances, their samples, and the errors of those left out (missing, corrupt, empty audio)."""
    keep, waves, errors = [], [], []
    for u in utts:
        try:
            waves.append(load_utterance_audio(u))
            keep.append(u)
        except AudioError as e:
            errors.append(e)
    return keep, waves, errors
