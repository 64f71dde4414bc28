"""`malsori stream MODEL FILE`: recognize a file as if it were arriving live (or a microphone), printing partial
results as they change and final results with timestamps."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from malsori.commands.options import DEVICE, field_type
from malsori.commands.recognize import decode_options, lm_options
from malsori.decode.options import DecodeOptions
from malsori.files import strict_json
from malsori.streaming import StreamConfig


def _show_partial(text: str, last: list[str]) -> None:
    """Partial results go to stderr: rewritten in place on a terminal, one line per change otherwise."""
    if text == last[0]:
        return
    last[0] = text
    if sys.stderr.isatty():
        click.echo("\r\033[K… " + text[-150:], nl=False, err=True)
    elif text:
        click.echo(f"… {text}", err=True)


def _show_finals(finals, as_json: bool) -> None:
    for t in finals:
        if sys.stderr.isatty():
            click.echo("\r\033[K", nl=False, err=True)
        if as_json:
            click.echo(strict_json(t.to_json(), t.id or "stream"))
        else:
            start = t.words[0].start if t.words else 0.0
            end = t.words[-1].end if t.words else 0.0
            click.echo(f"[{start:7.2f} – {end:7.2f}] {t.text}")


def _microphone_blocks(block: int):
    """16 kHz mono float32 blocks of `block` samples from the default input device, until Ctrl-C."""
    from malsori.errors import AudioError

    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
        raise AudioError(f"--mic: cannot use sounddevice ({e})") from None
    try:
        sd.check_input_settings(samplerate=16000, channels=1, dtype="float32")
    except Exception as e:  # no device, or it cannot do 16 kHz mono
        raise AudioError(f"--mic: no usable microphone ({str(e).splitlines()[0]})") from None
    with sd.InputStream(samplerate=16000, channels=1, dtype="float32", blocksize=block) as mic:
        click.echo("listening (Ctrl-C to stop)", err=True)
        try:
            while True:
                data, _ = mic.read(block)
                yield data[:, 0].copy()
        except KeyboardInterrupt:
            return


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--mic", is_flag=True, help="Read the default microphone instead of FILE (needs sounddevice + PortAudio).")
@click.option("--fast", is_flag=True, help="Feed the file as fast as possible instead of in real time.")
@click.option("--chunk-ms", type=field_type(StreamConfig, "chunk_ms"), default=320.0, show_default=True, help="Encoder chunk: latency vs accuracy.")
@click.option("--left-chunks", type=field_type(StreamConfig, "left_chunks"), default=4, show_default=True, help="Chunks of carried left context (-1 = unbounded, 0 = none).")
@click.option("--lookahead-ms", type=field_type(StreamConfig, "lookahead_ms"), default=0.0, show_default=True, help="Right look-ahead per chunk (adds latency, helps accuracy).")
@click.option("--method", default="greedy", show_default=True, help="greedy or beam.")
@click.option("--beam", "beam_size", type=field_type(DecodeOptions, "beam_size"), default=4, show_default=True, help="Beam width for --method beam.")
@click.option("--endpoint-silence", type=field_type(StreamConfig, "endpoint_silence_s"), default=1.0, show_default=True, help="Seconds without a new token that end an utterance.")
@click.option("--max-utterance", type=field_type(StreamConfig, "max_utterance_s"), default=20.0, show_default=True, help="Seconds after which an utterance is ended anyway.")
@click.option("--json", "as_json", is_flag=True, help="Final results as JSON lines with word timestamps.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads.")
@lm_options
def stream(model, file, mic, fast, chunk_ms, left_chunks, lookahead_ms, method, beam_size, endpoint_silence, max_utterance, as_json, device, threads,
           **lm) -> None:
    """Stream FILE (or --mic) through a streaming MODEL; partial results on stderr, final results on stdout."""
    import torch

    import malsori
    from malsori.audio import SAMPLE_RATE, fixed_blocks, iter_audio
    from malsori.errors import ConfigError
    from malsori.pretrained import bound_heap

    if mic == (file is not None):
        raise ConfigError("stream: give either FILE or --mic")
    torch.set_num_threads(threads)
    bound_heap()
    cfg = StreamConfig(chunk_ms=chunk_ms, left_chunks=left_chunks, lookahead_ms=lookahead_ms,
                       decode=decode_options(model, method, beam_size, **lm),
                       endpoint_silence_s=endpoint_silence, max_utterance_s=max_utterance)
    s = malsori.load(model, device).stream(cfg)
    block = int(round(chunk_ms / 1000 * SAMPLE_RATE))
    if mic:
        blocks = _microphone_blocks(block)
    else:
        blocks = fixed_blocks(iter_audio(file), block)  # read in blocks: memory does not grow with the file
    last, compute, t_start = [""], 0.0, time.perf_counter()
    for piece in blocks:
        if not (fast or mic):  # real time: this piece has fully "arrived" only at its end
            wait = t_start + (s.received + len(piece)) / SAMPLE_RATE - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        t0 = time.perf_counter()
        finals = s.accept_waveform(piece)
        compute += time.perf_counter() - t0
        _show_finals(finals, as_json)
        _show_partial(s.partial.text, last)
    t0 = time.perf_counter()
    n_before = len(s.finals)
    s.finish()
    compute += time.perf_counter() - t0
    _show_finals(s.finals[n_before:], as_json)
    audio_s = s.received / SAMPLE_RATE
    click.echo(f"{audio_s:.1f} s of audio, {len(s.finals)} utterance(s), compute {compute:.2f} s "
               f"(RTF {compute / max(audio_s, 1e-9):.3f}), chunk {chunk_ms:g} ms", err=True)
