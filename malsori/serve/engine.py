"""The recognizers behind the server: audio of many connections in, `Result`s out, one step at a time on one thread.

A chunked (streaming) model decodes each connection incrementally with its own `malsori.streaming.Stream`; a
full-context model (the released en-small) cannot, so it re-decodes each connection's current utterance as it
grows, every `partial_interval_s` of new audio, all such connections stacked into padded batches. Either way
the utterance ends at an endpoint (a stretch with no new token) or at `max_utterance_s`, so memory is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from malsori.audio import SAMPLE_RATE
from malsori.errors import ConfigError
from malsori.pretrained import Recognizer, Transcript
from malsori.serve.protocol import Result
from malsori.streaming import StreamConfig

Job = tuple[object, np.ndarray, bool]  # (a connection's engine state, its new samples, whether its input has ended)
KEEP_AFTER_IDLE_S = 1.0  # full-context models: audio kept when an utterance with no token is dropped (speech may be starting)


def _result(rec: Recognizer, t: Transcript, segment: int, start: float, received: int, final: bool, eof: bool = False) -> Result:
    return Result(text=t.text, segment=segment, start_time=start, is_final=final, received_s=received / SAMPLE_RATE,
                  tokens=[rec.tokenizer.id_to_piece(i) for i in t.tokens], timestamps=[x - start for x in t.token_times],
                  is_eof=eof)


@dataclass
class _StreamState:
    """A chunked model's view of one connection."""

    stream: object  # malsori.streaming.Stream
    segment: int = 0  # finals reported (those with words)
    start: float = 0.0  # seconds from the stream start at which the current utterance starts
    text: str = ""  # last partial reported


class ChunkedEngine:
    """Streaming models: one `Stream` per connection, fed at most one chunk per step, connections visited in turn.

    Round-robin, not batched: the chunked encoder's caches differ in length from stream to stream (and its
    positions are one offset per batch), so chunks of different streams do not stack into one model call.
    """

    batched = False

    def __init__(self, rec: Recognizer, cfg: StreamConfig) -> None:
        self.rec, self.cfg = rec, cfg
        rec.stream(cfg)  # refuses a model or chunk size that cannot stream, before any client comes
        self.step_samples = int(round(cfg.chunk_ms / 1000 * SAMPLE_RATE))

    def open(self) -> _StreamState:
        return _StreamState(self.rec.stream(self.cfg))

    def step(self, jobs: list[Job]) -> list[list[Result] | Exception]:
        out: list[list[Result] | Exception] = []
        for state, samples, finish in jobs:
            try:
                out.append(self._advance(state, samples, finish))
            except Exception as e:  # noqa: BLE001 - one broken stream must not stop the others
                out.append(e)
        return out

    def _advance(self, st: _StreamState, samples: np.ndarray, finish: bool) -> list[Result]:
        s, results = st.stream, []
        if len(samples):
            s.accept_waveform(samples)
        if finish:
            s.finish()
        start = st.start
        for t in s.finals:  # utterances follow each other: the next starts where this one ended
            if t.text:
                results.append(_result(self.rec, t, st.segment, start, s.received, final=True))
                st.segment += 1
            start += t.duration
        s.finals.clear()  # reported: an endless stream keeps no history
        st.start = s.start_feature * self.rec.frame_shift
        if finish:
            if not results:  # sherpa ends a stream with a final result, empty if need be
                results.append(_result(self.rec, Transcript(text=""), st.segment, st.start, s.received, final=True))
            results[-1].is_eof = True
            return results
        partial = s.partial
        if partial.text != st.text or (results and partial.text):
            results.append(_result(self.rec, partial, st.segment, st.start, s.received, final=False))
        st.text = partial.text
        return results


@dataclass
class _BufferState:
    """A full-context model's view of one connection: the current utterance's samples."""

    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # samples since the utterance start
    start: int = 0  # stream sample at which `buf` starts
    received: int = 0  # samples received
    decoded: int = 0  # len(buf) at the last decode
    segment: int = 0  # finals reported
    text: str = ""  # last partial reported


class RedecodeEngine:
    """Full-context models: re-decode each connection's utterance every `interval_s` of new audio, in padded batches.

    The cost of an utterance grows with its square (bounded by `max_utterance_s`); results equal offline decoding of
    the same samples (padding does not change a masked encoder's outputs).
    """

    batched = True

    def __init__(self, rec: Recognizer, cfg: StreamConfig, interval_s: float, max_batch: int) -> None:
        self.rec, self.cfg, self.max_batch = rec, cfg, max_batch
        self.interval = max(1, int(round(interval_s * SAMPLE_RATE)))
        self.step_samples = self.interval
        self.max_len = int(cfg.max_utterance_s * SAMPLE_RATE)
        self.segment_s = cfg.max_utterance_s + interval_s + 1.0  # never cut: an utterance is one segment

    def open(self) -> _BufferState:
        return _BufferState()

    def step(self, jobs: list[Job]) -> list[list[Result] | Exception]:
        due = []
        for k, (st, samples, finish) in enumerate(jobs):
            if len(samples):
                st.buf = np.concatenate([st.buf, samples]) if len(st.buf) else samples.astype(np.float32)
                st.received += len(samples)
            if finish or len(st.buf) - st.decoded >= self.interval or len(st.buf) >= self.max_len:
                due.append(k)
        out: list[list[Result] | Exception] = [[] for _ in jobs]
        try:
            transcripts = self.rec.transcribe_waves([jobs[k][0].buf for k in due], self.cfg.decode, self.max_batch, self.segment_s)
        except Exception as e:  # noqa: BLE001 - reported to these connections; the server goes on
            for k in due:
                out[k] = e
            return out
        for k, t in zip(due, transcripts):
            out[k] = self._update(jobs[k][0], t, jobs[k][2])
        return out

    def _update(self, st: _BufferState, t: Transcript, finish: bool) -> list[Result]:
        cfg, rec = self.cfg, self.rec
        st.decoded = len(st.buf)
        start_s = st.start / SAMPLE_RATE
        t.token_times = [x + start_s for x in t.token_times]
        length_s = len(st.buf) / SAMPLE_RATE
        if finish:
            return [_result(rec, t, st.segment, start_s, st.received, final=True, eof=True)]
        if t.words:  # (a lone word-boundary token is no word: it neither ends nor holds an utterance)
            last = t.words[-1].end  # seconds from the utterance start
            if length_s - last >= cfg.endpoint_silence_s or len(st.buf) >= self.max_len:
                cut = len(st.buf) if len(st.buf) >= self.max_len else int((last + (length_s - last) / 2) * SAMPLE_RATE)
                result = _result(rec, t, st.segment, start_s, st.received, final=True)
                self._restart(st, cut)
                st.segment += 1
                return [result]
        elif length_s >= cfg.endpoint_idle_s or len(st.buf) >= self.max_len:
            self._restart(st, max(0, len(st.buf) - int(KEEP_AFTER_IDLE_S * SAMPLE_RATE)))
        if t.text == st.text:
            return []
        st.text = t.text
        return [_result(rec, t, st.segment, start_s, st.received, final=False)]

    @staticmethod
    def _restart(st: _BufferState, cut: int) -> None:
        st.buf, st.start, st.decoded, st.text = st.buf[cut:].copy(), st.start + cut, 0, ""


def make_engine(rec: Recognizer, cfg: StreamConfig, interval_s: float, max_batch: int) -> ChunkedEngine | RedecodeEngine:
    """The chunked engine when the model streams, else re-decoding (a full-context model)."""
    encoder = rec.model.encoder
    try:
        if not hasattr(encoder, "forward_chunk"):
            raise ConfigError("no forward_chunk")
        encoder.check_streamable()
    except ConfigError:
        return RedecodeEngine(rec, cfg, interval_s, max_batch)
    return ChunkedEngine(rec, cfg)
