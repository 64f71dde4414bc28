"""What a recognizer returns: the text of an utterance with its tokens, score and word times (`Transcript`,
`Word`); below both the Recognizer (pretrained.py) and the Stream (streaming.py), which make them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Word:
    """A recognized word and its time span in seconds (from the token alignment)."""

    word: str
    start: float
    end: float


@dataclass
class Transcript:
    """One recognition result."""

    text: str  # normalized words
    tokens: list[int] = field(default_factory=list)  # token ids
    score: float = 0.0  # log-probability from the search
    words: list[Word] = field(default_factory=list)  # word timestamps
    id: str = ""  # utterance id or file path
    duration: float = 0.0  # seconds of audio
    token_times: list[float] = field(default_factory=list)  # seconds at which each token was emitted (empty if unknown)

    def to_json(self) -> dict:
        score = round(self.score, 4) if math.isfinite(self.score) else None  # JSON has no NaN or Infinity
        return {"id": self.id, "text": self.text, "score": score, "duration": round(self.duration, 3),
                "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words]}
