"""The wire protocol of sherpa-onnx's streaming websocket server, so its clients and web page work unchanged.

Client → server: binary messages of float32 little-endian mono samples in [-1, 1] (at the model's rate, or at
the rate declared by `?sample_rate=N` in the URL or by a first text message `{"sample_rate": N}`), then the text
message `Done`. Server → client: a JSON result whenever a partial changes or an utterance ends (`text`,
`tokens`, `timestamps` per token from the segment start, `segment`, `start_time`, `is_final`, `is_eof`, plus
`received_s`, the seconds of this stream's audio the result covers), then the text `Done!` and a normal close.
A connection that breaks the protocol or a limit is closed with one of the codes below and a one-line reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

DONE = "Done"  # the client's end of input
DONE_REPLY = "Done!"  # the server's last text message on a stream

# close codes (RFC 6455 §7.4.1; 1013 from the IANA registry)
NORMAL = 1000  # all results sent after Done
GOING_AWAY = 1001  # the server is shutting down (open streams were finalized first)
UNSUPPORTED = 1003  # a text message that is neither Done nor a config, or an unsupported sample rate
BAD_DATA = 1007  # a binary message that is not float32 samples (length not a multiple of 4, NaN or infinity)
POLICY = 1008  # idle too long, audio after Done, config after audio, results not read
TOO_BIG = 1009  # a message over the frame limit (closed by the websockets library itself)
INTERNAL = 1011  # decoding failed for this stream (the others go on)
TRY_LATER = 1013  # the server already holds its maximum number of connections

MIN_RATE, MAX_RATE = 8000, 192000  # declared sample rates the server resamples from


class ProtocolViolation(Exception):
    """A client message the protocol does not allow; `code` is the close code, the message its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def decode_samples(payload: bytes) -> np.ndarray:
    """A binary message as float32 samples; ProtocolViolation(BAD_DATA) for a ragged length or non-finite values."""
    if len(payload) % 4:
        raise ProtocolViolation(BAD_DATA, f"binary message of {len(payload)} bytes is not float32 samples (length not a multiple of 4)")
    samples = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolViolation(BAD_DATA, "samples must be finite float32 values (got NaN or infinity)")
    return samples


def parse_rate(value) -> int:
    """A declared sample rate (query value or JSON number) → int in [MIN_RATE, MAX_RATE], else ProtocolViolation."""
    try:
        rate = int(value)
        ok = rate == float(value) and MIN_RATE <= rate <= MAX_RATE
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ProtocolViolation(UNSUPPORTED, f"sample_rate must be an integer from {MIN_RATE} to {MAX_RATE} Hz, got {str(value)[:40]!r}")
    return rate


def parse_config(text: str) -> int:
    """A text config message `{"sample_rate": N}` → N; ProtocolViolation for anything else."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or set(obj) != {"sample_rate"}:
        raise ProtocolViolation(UNSUPPORTED, f"text messages are 'Done' or {{\"sample_rate\": N}}, got {text[:40]!r}")
    return parse_rate(obj["sample_rate"])


@dataclass
class Result:
    """One result message: the current (partial) or finished (final) hypothesis of one segment of a stream."""

    text: str  # the segment's words so far
    segment: int  # index of the utterance in the stream (finals before it)
    start_time: float  # seconds from the stream start at which the segment starts
    is_final: bool  # the segment is finished (endpoint, end of input, or shutdown)
    received_s: float  # seconds of the stream's audio received when this result was computed
    tokens: list[str] = field(default_factory=list)  # token pieces
    timestamps: list[float] = field(default_factory=list)  # per token, seconds from `start_time`
    is_eof: bool = False  # the last result of the stream (after Done)

    def to_json(self) -> str:
        return json.dumps({"text": self.text, "tokens": self.tokens,
                           "timestamps": [round(t, 2) if math.isfinite(t) else 0.0 for t in self.timestamps],
                           "segment": self.segment, "start_time": round(self.start_time, 2), "is_final": self.is_final,
                           "is_eof": self.is_eof, "received_s": round(self.received_s, 3)}, ensure_ascii=False)
