"""`malsori serve MODEL`: a websocket server for many live clients (sherpa-onnx's streaming protocol) and a browser
page with a microphone and a file upload, on one port."""

from __future__ import annotations

from pathlib import Path

import click

from malsori.commands.options import DEVICE, field_type
from malsori.commands.recognize import decode_options, lm_options
from malsori.decode.options import DecodeOptions
from malsori.serve.config import ServeConfig
from malsori.streaming import StreamConfig


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (another than loopback needs --token).")
@click.option("--port", type=field_type(ServeConfig, "port"), default=6006, show_default=True, help="TCP port (0: any free one).")
@click.option("--token", default="", help="Require `Authorization: Bearer TOKEN` or `?token=TOKEN` from websocket clients.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without --token.")
@click.option("--max-connections", type=field_type(ServeConfig, "max_connections"), default=32, show_default=True, help="Open connections; more are closed with 1013.")
@click.option("--idle-timeout", type=field_type(ServeConfig, "idle_timeout_s"), default=20.0, show_default=True, help="Seconds without a message before a connection is closed (1008).")
@click.option("--partial-interval", type=field_type(ServeConfig, "partial_interval_s"), default=0.5, show_default=True, help="Full-context models: seconds of new audio between re-decodings.")
@click.option("--chunk-ms", type=field_type(StreamConfig, "chunk_ms"), default=320.0, show_default=True, help="Streaming models: encoder chunk.")
@click.option("--left-chunks", type=field_type(StreamConfig, "left_chunks"), default=4, show_default=True, help="Streaming models: chunks of carried left context.")
@click.option("--endpoint-silence", type=field_type(StreamConfig, "endpoint_silence_s"), default=1.0, show_default=True, help="Seconds without a new token that end an utterance.")
@click.option("--max-utterance", type=field_type(StreamConfig, "max_utterance_s"), default=20.0, show_default=True, help="Seconds after which an utterance is ended anyway.")
@click.option("--method", default="greedy", show_default=True, help="greedy or beam.")
@click.option("--beam", "beam_size", type=field_type(DecodeOptions, "beam_size"), default=4, show_default=True, help="Beam width for --method beam.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="CPU threads of the decoding worker.")
@lm_options
def serve(model, host, port, token, insecure, max_connections, idle_timeout, partial_interval, chunk_ms, left_chunks,
          endpoint_silence, max_utterance, method, beam_size, device, threads, **lm) -> None:
    """Serve MODEL to websocket clients (sherpa-onnx's streaming protocol) and a browser page at http://HOST:PORT/."""
    import asyncio
    import logging

    import torch

    import malsori
    from malsori.errors import MalsoriError
    from malsori.pretrained import bound_heap

    try:
        from malsori.serve.server import run
    except ImportError as e:
        raise MalsoriError(f"serve: needs the websockets package ({e}); pip install 'malsori[serve]'") from None

    stream = StreamConfig(chunk_ms=chunk_ms, left_chunks=left_chunks, decode=decode_options(model, method, beam_size, **lm),
                          endpoint_silence_s=endpoint_silence, max_utterance_s=max_utterance)
    cfg = ServeConfig(host=host, port=port, token=token, insecure=insecure, max_connections=max_connections,
                      idle_timeout_s=idle_timeout, partial_interval_s=partial_interval, stream=stream)
    torch.set_num_threads(threads)
    bound_heap()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("malsori.serve.websockets").setLevel(logging.WARNING)
    asyncio.run(run(malsori.load(model, device), cfg))
