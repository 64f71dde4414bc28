"""Streaming recognition: audio in pieces of any size → partial results while it arrives → final results per utterance.

Audio → `StreamingFbank` → global CMVN → the chunked encoder's `forward_chunk` (bounded state) → an incremental
search (CTC greedy / prefix beam, transducer greedy / modified beam, MoChA greedy for LAS and Transformer attention decoders).
Endpointing finalizes an utterance after a stretch with no new token and resets the encoder and search, so an
endless stream becomes a sequence of results in bounded memory.

    stream = malsori.load("exp/stream/model").stream(StreamConfig(chunk_ms=320))
    for piece in pieces:
        stream.accept_waveform(piece)
        print(stream.partial.text)
    finals = stream.finish()
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from malsori.audio import SAMPLE_RATE
from malsori.config import bounded, check_ranges
from malsori.decode.ctc import PrefixBeamSearch, ctc_greedy
from malsori.decode.fusion import PrefixFusion, active
from malsori.decode.ilm import with_ilm
from malsori.decode.mocha import monotonic_stream
from malsori.decode.options import DecodeOptions
from malsori.decode.result import Hypothesis
from malsori.decode.transducer import GreedySearch, ModifiedBeamSearch
from malsori.errors import ConfigError
from malsori.features import StreamingFbank
from malsori.transcript import Transcript, Word


@dataclass
class StreamConfig:
    """Latency and endpointing choices of a stream; the model was trained once for all chunk sizes (dynamic chunks)."""

    chunk_ms: float = bounded(320.0, gt=0)  # encoder chunk in ms (a multiple of the encoder frame, e.g. 40 ms at ×4 subsampling)
    left_chunks: int = bounded(4, ge=-1)  # chunks of cached left context per layer (the carried memory); 0 = none, -1 = unbounded
    lookahead_ms: float = bounded(0.0, ge=0)  # right look-ahead per chunk in ms (a multiple of the encoder frame); adds to latency
    decode: DecodeOptions = field(default_factory=lambda: DecodeOptions(beam_size=4))  # method greedy, or beam (CTC prefix beam / transducer modified beam); extra scorers get no memory
    endpoint_silence_s: float = bounded(1.0, gt=0)  # finalize an utterance after this long without a new token (once it has tokens)
    endpoint_idle_s: float = bounded(5.0, gt=0)  # with nothing recognized yet, restart after this long (keeps silence cheap)
    max_utterance_s: float = bounded(20.0, gt=0)  # finalize an utterance that reaches this length in any case
    keep_snapshots: bool = False  # record the partial words after every piece in `Stream.snapshots` (latency studies)

    def __post_init__(self) -> None:
        check_ranges(self)  # built directly by the Python API and the CLI


@dataclass
class Snapshot:
    """The partial result just after a piece of audio was processed (for latency measurement)."""

    received_s: float  # seconds of audio received by then
    utterance: int  # index of the utterance being decoded (= number of finals before it)
    words: list[str] = field(default_factory=list)  # partial words of that utterance


STREAM_METHODS = ("greedy", "beam")  # beam: CTC prefix beam search, transducer modified beam search


def _prefix_fusion(model, options: DecodeOptions, root) -> PrefixFusion | None:
    """The extra scorers and length bonus of a frame-synchronous stream (no memory: the audio is still arriving)."""
    bonus = options.length_bonus or 0.0
    if not active(options.scorers) and bonus == 0:
        return None
    return PrefixFusion(options.scorers, model.vocab_size, root, bonus, options.prompt)


class _CTCSearch:
    """Incremental CTC search over encoder frames: greedy (carrying the previous argmax) or prefix beam."""

    def __init__(self, model, options: DecodeOptions) -> None:
        self.model = model
        beam = options.method == "beam"
        self.beam = PrefixBeamSearch(options.beam_size, model.blank_id, _prefix_fusion(model, options, 0)) if beam else None
        self.hyp, self.prev, self.frames_seen = Hypothesis([], 0.0, []), None, 0

    def advance(self, enc: Tensor) -> None:
        log_probs = self.model.head.log_probs(enc)  # [1, n, V]
        if self.beam is not None:
            self.beam.advance_log_probs(log_probs[0])
        else:
            h = ctc_greedy(log_probs, torch.tensor([enc.size(1)]), self.model.blank_id, self.prev, self.frames_seen)[0]
            self.hyp = Hypothesis(self.hyp.tokens + h.tokens, self.hyp.score + h.score, self.hyp.token_frames + h.token_frames)
            if enc.size(1):
                self.prev = log_probs[0, -1].argmax().view(1)
        self.frames_seen += enc.size(1)

    def best(self) -> Hypothesis:
        return self.beam.ranked()[0] if self.beam is not None else self.hyp

    def finish(self) -> None:
        """The utterance's input has ended (nothing is pending in a frame-synchronous search)."""


class _TransducerSearch:
    """Incremental transducer search: greedy or modified beam, predictor state carried between chunks."""

    def __init__(self, model, options: DecodeOptions, device: torch.device) -> None:
        greedy, prompt = options.method == "greedy", options.prompt
        self.greedy = GreedySearch(model, 1, device, model.cfg.max_symbols_per_frame, prompt) if greedy else None
        self.beam = None if greedy else ModifiedBeamSearch(model, options.beam_size, device,
                                                           _prefix_fusion(model, options, ()), prompt)

    def advance(self, enc: Tensor) -> None:
        if self.greedy is not None:
            self.greedy.advance(enc)
        else:
            self.beam.advance(enc[0])

    def best(self) -> Hypothesis:
        return self.greedy.results()[0] if self.greedy is not None else self.beam.result()

    def finish(self) -> None:
        """The utterance's input has ended (nothing is pending in a frame-synchronous search)."""


class _MonotonicSearch:
    """Online greedy MoChA decoding: a token is emitted once the hard monotonic reader halts inside arrived frames."""

    def __init__(self, model, options: DecodeOptions) -> None:
        ratio = model.cfg.max_len_ratio if options.max_len_ratio is None else options.max_len_ratio
        self.stream = monotonic_stream(model.decoder, ids=model.special_ids, max_len_ratio=ratio, max_len=options.max_len,
                                       scorers=options.scorers, length_bonus=options.length_bonus or 0.0)

    def advance(self, enc: Tensor) -> None:
        if enc.size(1):
            self.stream.accept(enc)

    def best(self) -> Hypothesis:
        return self.stream.hypothesis()

    def finish(self) -> None:
        if self.stream.arrived and not self.stream.finished:
            self.stream.finish()


def make_search(model, options: DecodeOptions, device: torch.device):
    """The incremental search for `model`'s head: an object with advance(enc [1, n, D]) and best() -> Hypothesis."""
    head = type(model).__name__
    if options.method not in STREAM_METHODS:
        raise ConfigError(f"stream method: unknown '{options.method}' (known: {', '.join(STREAM_METHODS)})")
    decoder = getattr(model, "decoder", None)
    mocha = head == "AttentionModel" and "mocha" in (getattr(decoder, "kind", None), getattr(decoder, "cross", None))
    if head not in ("CTCModel", "TransducerModel") and not mocha:
        raise ConfigError(f"{head}: this model cannot stream (streaming needs a CTC, transducer or MoChA attention head)")
    if mocha and options.method != "greedy":
        raise ConfigError("stream method: MoChA attention decoders stream with greedy search only")
    if active(options.rescorers):
        raise ConfigError("rescorers: a stream keeps no n-best to re-rank (fuse the LM with `scorers` instead)")
    model.check_options(options)
    if head != "CTCModel":
        options = with_ilm(options, model.internal_lm)
    if head == "CTCModel":
        return _CTCSearch(model, options)
    if head == "TransducerModel":
        return _TransducerSearch(model, options, device)
    return _MonotonicSearch(model, options)


class Stream:
    """One audio stream: feed samples with `accept_waveform`, read `partial`, collect `finals` (also from `finish`).

    Made by `Recognizer.stream`. Times in results count from the start of the stream.
    """

    def __init__(self, recognizer, cfg: StreamConfig | None = None) -> None:
        self.cfg = cfg = cfg or StreamConfig()
        self.rec = recognizer
        encoder = recognizer.model.encoder
        if not hasattr(encoder, "forward_chunk"):
            raise ConfigError(f"{type(encoder).__name__}: this encoder cannot stream (use a Conformer or Transformer encoder)")
        encoder.check_streamable()
        self.encoder = encoder
        self.frame_s = recognizer.subsampling * recognizer.frame_shift  # seconds per encoder frame
        chunk = cfg.chunk_ms / 1000.0 / self.frame_s
        if chunk < 1 or abs(chunk - round(chunk)) > 1e-6:
            raise ConfigError(f"chunk_ms: must be a positive multiple of the encoder frame ({self.frame_s * 1000:g} ms), got {cfg.chunk_ms:g}")
        self.chunk_frames = round(chunk)
        right = cfg.lookahead_ms / 1000.0 / self.frame_s
        if right < 0 or abs(right - round(right)) > 1e-6:
            raise ConfigError(f"lookahead_ms: must be a multiple of the encoder frame ({self.frame_s * 1000:g} ms) ≥ 0, got {cfg.lookahead_ms:g}")
        self.right_frames = round(right)
        self.fbank = StreamingFbank(recognizer.fbank.cfg, recognizer.device)
        self.finals: list[Transcript] = []  # Transcript per finished utterance, in order
        self.snapshots: list[Snapshot] = []  # partial words after every accepted piece (if cfg.keep_snapshots)
        self.received = 0  # samples received
        self._new_utterance(start_feature=0)

    # -- public API ---------------------------------------------------------------------------------------------
    @property
    def partial(self) -> Transcript:
        """The current utterance's best hypothesis so far, as a Transcript (times from the stream start)."""
        return self._transcript(self.search.best())

    def accept_waveform(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[Transcript]:
        """Add 1-D float samples in [-1, 1]; returns the utterances finalized by this piece (often none)."""
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"stream: audio must be {SAMPLE_RATE} Hz, got {sample_rate} Hz (resample it first)")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.received += len(samples)
        return self._feed(self.fbank.accept_waveform(samples), final=False)

    def finish(self) -> list[Transcript]:
        """End of input: decode what is left and return every final result of the stream."""
        self._feed(self.fbank.flush(), final=True)
        self._finalize()
        return self.finals

    # -- internals ------------------------------------------------------------------------------------------------
    def _new_utterance(self, start_feature: int, carry=None) -> None:
        """Fresh encoder state and search; `carry` = the old state whose not-yet-encoded input moves over."""
        self.state = self.encoder.init_state(1)
        if carry is not None:
            self.state.feats, self.state.frames = carry.feats, carry.frames
        self.start_feature = start_feature  # stream feature frame of this utterance's encoder frame 0
        self.search = make_search(self.rec.model, self.cfg.decode, self.rec.device)
        self.frames = 0  # encoder frames of this utterance decoded so far

    def _feed(self, feats: Tensor, final: bool) -> list[Transcript]:
        n_before = len(self.finals)
        with torch.inference_mode():
            if feats.numel():
                feats = self.rec.cmvn(feats[None])
            else:
                feats = feats.new_zeros(1, 0, self.encoder.subsampling.input_dim)
            enc, self.state = self.encoder.forward_chunk(
                feats, self.state, self.chunk_frames, self.cfg.left_chunks, final, self.right_frames
            )
            # decode chunk by chunk so endpoints are checked at every chunk boundary
            for start in range(0, enc.size(1), self.chunk_frames):
                piece = enc[:, start : start + self.chunk_frames]
                self.search.advance(piece)
                self.frames += piece.size(1)
                self._check_endpoint()
        if self.cfg.keep_snapshots:
            self.snapshots.append(Snapshot(self.received / SAMPLE_RATE, len(self.finals), self.partial.text.split()))
        return self.finals[n_before:]

    def _check_endpoint(self) -> None:
        """Finalize or restart the utterance when the endpoint rules say it has ended."""
        hyp = self.search.best()
        trailing = self.frames - (hyp.token_frames[-1] + 1 if hyp.tokens else 0)
        trailing_s, length_s = trailing * self.frame_s, self.frames * self.frame_s
        if hyp.tokens and (trailing_s >= self.cfg.endpoint_silence_s or length_s >= self.cfg.max_utterance_s):
            self._finalize(restart=True)
        elif not hyp.tokens and (trailing_s >= self.cfg.endpoint_idle_s or length_s >= self.cfg.max_utterance_s):
            self._restart()

    def _restart(self) -> None:
        """Start a new utterance at the next encoder frame, keeping input that is not encoded yet."""
        start = self.start_feature + self.frames * self.encoder.subsampling_factor
        self._new_utterance(start, carry=self.state)

    def _finalize(self, restart: bool = False) -> None:
        self.search.finish()
        hyp = self.search.best()
        if hyp.tokens:
            self.finals.append(self._transcript(hyp))
        if restart:
            self._restart()

    def _transcript(self, hyp: Hypothesis) -> Transcript:
        offset = self.start_feature * self.rec.frame_shift
        words = [Word(w.word, w.start + offset, w.end + offset) for w in self.rec._words(hyp.tokens, hyp.token_frames)]
        return Transcript(text=" ".join(w.word for w in words), tokens=list(hyp.tokens), score=float(hyp.score),
                          words=words, duration=self.frames * self.frame_s,
                          token_times=[offset + f * self.frame_s for f in hyp.token_frames])
