"""`malsori serve` on loopback: concurrent streams each get their own transcript, equal to offline decoding of their
audio (the released full-context model through batched re-decoding, a chunked model through its Stream); endpoints
split a stream; hostile clients are closed with a clear code while the others are served; the page is served."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("websockets", reason="malsori serve needs websockets (pip install 'malsori[serve]')")

from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from malsori.audio import load_audio  # noqa: E402
from malsori.commands.demo import DEMO_AUDIO, RELEASED  # noqa: E402
from malsori.data.manifest import read_manifest  # noqa: E402
from malsori.errors import ConfigError  # noqa: E402
from malsori.features import Fbank, FbankConfig, GlobalCMVN  # noqa: E402
from malsori.models.registry import ModelConfig, build_model  # noqa: E402
from malsori.nn.chunked import ChunkConfig  # noqa: E402
from malsori.nn.conformer import ConformerConfig  # noqa: E402
from malsori.pretrained import RELEASED_MODELS, Recognizer  # noqa: E402
from malsori.serve import protocol as P  # noqa: E402
from malsori.serve.client import talk  # noqa: E402
from malsori.serve.config import ServeConfig  # noqa: E402
from malsori.serve.server import Server  # noqa: E402
from malsori.streaming import StreamConfig  # noqa: E402
from malsori.tokenizer import train_tokenizer  # noqa: E402

needs_released = pytest.mark.skipif(not (RELEASED_MODELS / RELEASED / "model.safetensors").is_file(),
                                    reason=f"no released model in {RELEASED_MODELS / RELEASED}")
NO_ENDPOINT = StreamConfig(endpoint_silence_s=1e6, endpoint_idle_s=1e6, max_utterance_s=60.0)


@pytest.fixture(scope="module")
def released() -> Recognizer:
    return Recognizer.load(RELEASED, device="cpu")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    utts = read_manifest(DEMO_AUDIO, strict=True).utterances
    return [load_audio(DEMO_AUDIO.parent / u.audio) for u in utts]


def serving(rec: Recognizer, scenario, **cfg):
    """Run `scenario(server, url)` against a fresh server on a free loopback port, then shut the server down."""

    async def main():
        server = await Server(rec, ServeConfig(port=0, **cfg)).start()
        try:
            return await scenario(server, f"ws://127.0.0.1:{server.port}")
        finally:
            await server.shutdown()

    return asyncio.run(main())


def _chunked_recognizer() -> Recognizer:
    """An untrained chunked (causal) Conformer-CTC: streams incrementally, emits a long text that every chunk shapes."""
    torch.manual_seed(0)
    tokenizer = train_tokenizer("char", ["a serenade an evening concert", "monday morning at five"])
    conformer = ConformerConfig(d_model=48, num_layers=2, num_heads=2, conv_kernel=7, dropout=0.0, subsampling_channels=8,
                                chunk=ChunkConfig(causal=True))
    fbank = Fbank(FbankConfig())
    model = build_model(ModelConfig(encoder="conformer", conformer=conformer, head="ctc"), fbank.dim, tokenizer.vocab_size)
    with torch.no_grad():  # sharpen the head so the best token changes from frame to frame; bar <unk> and <sos/eos>
        model.head.weight.mul_(30.0)
        model.head.bias[1:3] = -50.0
    return Recognizer(model, tokenizer, fbank, GlobalCMVN(fbank.dim), "cpu")


@needs_released
def test_concurrent_streams_get_their_own_offline_transcripts(released, clips):
    """Eight clients at once, at 4× real time in 100 ms messages: each gets partials, then one final equal to offline
    decoding of its own clip, then Done! and a normal close (no dropped or crossed results)."""
    offline = [released.transcribe(c).text for c in clips]
    assert all(offline) and len(set(offline)) == len(offline)

    async def scenario(server, url):
        return await asyncio.gather(*(talk(url, c, speed=4.0) for c in clips))

    sessions = serving(released, scenario, stream=NO_ENDPOINT)
    for s, want, clip in zip(sessions, offline, clips):
        assert s.done and s.code == P.NORMAL
        assert [r["is_final"] for r in s.results][-1] and s.results[-1]["is_eof"]
        assert s.text == want
        assert any(not r["is_final"] and r["text"] for r in s.results)  # partials while audio arrived
        assert s.results[-1]["received_s"] == pytest.approx(len(clip) / 16000, abs=1e-3)
        final = s.finals[-1]
        assert len(final["tokens"]) == len(final["timestamps"]) > 0
        assert final["timestamps"] == sorted(final["timestamps"]) and final["timestamps"][-1] <= len(clip) / 16000


@needs_released
def test_endpoint_splits_a_stream_into_segments(released, clips):
    """clip · 2 s of silence · clip: two finals, segments 0 and 1, cut between the first final's last token and the
    second clip (where in the silence depends on how much audio had arrived when the endpoint fired)."""
    a, b = clips[6], clips[3]
    wave = np.concatenate([a, np.zeros(32000, np.float32), b])

    async def scenario(server, url):
        return await talk(url, wave, speed=0.0)

    s = serving(released, scenario, stream=StreamConfig(endpoint_silence_s=1.0))
    finals = [r for r in s.finals if r["text"]]
    assert [r["segment"] for r in finals] == [0, 1]
    assert finals[0]["start_time"] + finals[0]["timestamps"][-1] < finals[1]["start_time"] <= (len(a) + 32000) / 16000
    assert s.done and s.code == P.NORMAL


def test_chunked_model_streams_like_its_offline_stream(clips):
    """A streaming model serves through its own Stream (round-robin): three clients get what `Recognizer.stream` gives."""
    rec = _chunked_recognizer()
    cfg = StreamConfig(chunk_ms=320, left_chunks=2, endpoint_silence_s=1e6, endpoint_idle_s=1e6, max_utterance_s=1e6)
    waves = clips[:3]
    want = []
    for w in waves:
        stream = rec.stream(cfg)
        stream.accept_waveform(w)
        want.append(" ".join(t.text for t in stream.finish()))
    assert all(want)

    async def scenario(server, url):
        assert not server.engine.batched
        return await asyncio.gather(*(talk(url, w, frame=777) for w in waves))

    sessions = serving(rec, scenario, stream=cfg)
    assert [s.text for s in sessions] == want
    assert all(s.done and s.code == P.NORMAL for s in sessions)

    # endpoints: a head rigged to emit one token per utterance, so every second of audio ends a segment
    with torch.no_grad():
        rec.model.head.weight.zero_()
        rec.model.head.bias.zero_()
        rec.model.head.bias[5] = 100.0
    cfg = StreamConfig(chunk_ms=160, left_chunks=2, endpoint_silence_s=1.0, max_utterance_s=1e6)
    wave = np.concatenate(waves)

    async def one(server, url):
        return await talk(url, wave, frame=1600)

    s = serving(rec, one, stream=cfg)
    finals = s.finals[:-1]  # the last is the end of input
    assert len(finals) >= int(len(wave) / 16000 / 1.2) - 1
    assert [r["segment"] for r in finals] == list(range(len(finals))) and all(r["text"] for r in finals)
    starts = [r["start_time"] + r["timestamps"][0] for r in finals]  # when each segment's token came
    assert np.all(np.diff(starts) >= 1.0)


@needs_released
def test_hostile_clients_are_closed_and_the_others_served(released, clips, caplog):
    """Garbage bytes, NaN samples, an unknown text message, a config after audio, an oversized frame, a silent
    (half-open) client and one that vanishes mid-utterance: each is closed (or dropped) with its code and logged,
    while a well-behaved client, streaming all along, gets its offline transcript."""
    good, want = clips[6], released.transcribe(clips[6]).text
    nan = np.full(100, np.nan, np.float32)

    async def raw(url, *messages):
        from websockets.asyncio.client import connect

        async with connect(url) as ws:
            try:
                for m in messages:
                    await ws.send(m)
                async for _ in ws:
                    pass
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason

    async def vanish(url):
        from websockets.asyncio.client import connect

        ws = await connect(url)
        await ws.send(clips[0][:8000].tobytes())
        await asyncio.sleep(0.2)
        ws.transport.abort()  # no close frame: the TCP connection just drops

    async def scenario(server, url):
        return await asyncio.gather(
            talk(url, good, speed=4.0),
            raw(url, b"\x01\x02\x03\x04\x05\x06\x07"),
            raw(url, nan.tobytes()),
            raw(url, "hello"),
            raw(url, clips[1][:1600].tobytes(), '{"sample_rate": 8000}'),
            raw(url, np.zeros(40000, np.float32).tobytes()),  # 160 kB > max_message_bytes
            raw(url),  # says nothing: idle timeout
            vanish(url),
        )

    with caplog.at_level(logging.INFO, logger="malsori.serve"):
        good_s, *codes, _ = serving(released, scenario, max_message_bytes=65536, idle_timeout_s=1.0, stream=NO_ENDPOINT)
    assert good_s.text == want and good_s.done and good_s.code == P.NORMAL
    assert [c for c, _ in codes] == [P.BAD_DATA, P.BAD_DATA, P.UNSUPPORTED, P.POLICY, P.TOO_BIG, P.POLICY]
    assert "multiple of 4" in codes[0][1] and "idle" in codes[5][1]
    log = caplog.text
    assert all(f"closing ({c})" in log for c in (1007, 1003, 1008, 1009)) and "left mid-stream" in log


@needs_released
def test_limits_token_and_sample_rate(released, clips):
    """--token refuses a client without it (HTTP 401) and accepts both forms; a connection over the limit is closed
    with 1013; a bad declared rate is refused at the handshake (400); 8 kHz audio declared by a config message is
    resampled to the model's rate (as soxr resamples it whole)."""
    import soxr

    clip = clips[6]
    low = soxr.resample(clip, 16000, 8000).astype(np.float32)

    async def scenario(server, url):
        with pytest.raises(InvalidStatus, match="401"):
            await talk(url, clip[:1600])
        bearer = await talk(url, clip[:16000], headers={"Authorization": "Bearer s3cret"})
        query = await talk(f"{url}/?token=s3cret", clip[:16000])
        with pytest.raises(InvalidStatus, match="400"):
            await talk(f"{url}/?token=s3cret&sample_rate=123", clip[:1600])
        declared = await talk(f"{url}/?token=s3cret", low, first='{"sample_rate": 8000}')
        # three connections are allowed: two held open, the third refused
        from websockets.asyncio.client import connect

        held = [await connect(f"{url}/?token=s3cret") for _ in range(3)]
        await asyncio.sleep(0.2)
        third = await talk(f"{url}/?token=s3cret", clip[:1600])
        for ws in held:
            await ws.close()
        return bearer, query, declared, third

    bearer, query, declared, third = serving(released, scenario, token="s3cret", max_connections=3, stream=NO_ENDPOINT)
    assert bearer.done and query.done and bearer.text == query.text
    assert declared.done and declared.results[-1]["received_s"] == pytest.approx(len(clip) / 16000, abs=0.01)
    assert declared.text == released.transcribe(soxr.resample(low, 8000, 16000)).text
    assert third.code == P.TRY_LATER and "full" in third.reason


@needs_released
def test_shutdown_finalizes_open_streams(released, clips):
    """A client that has sent its audio but not Done when the server stops gets its final result, Done! and 1001."""
    clip = clips[3]

    async def scenario(server, url):
        client = asyncio.create_task(talk(url, clip, done=False))
        while not any(c.received_n >= len(clip) for c in server.clients):
            await asyncio.sleep(0.05)
        await server.shutdown()
        return await client

    s = serving(released, scenario, stream=NO_ENDPOINT)
    assert s.done and s.code == P.GOING_AWAY
    assert s.results[-1]["is_final"] and s.text == released.transcribe(clip).text


@needs_released
def test_page_and_config(released):
    """The page and its scripts are served by the same port (GET only, no other paths); a non-loopback host needs a token."""

    async def scenario(server, url):
        base = f"http://127.0.0.1:{server.port}"

        def fetch(path, method="GET"):
            try:
                with urllib.request.urlopen(urllib.request.Request(base + path, method=method), timeout=10) as r:
                    return r.status, r.headers["Content-Type"], r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, None, ""

        return await asyncio.to_thread(lambda: [fetch("/"), fetch("/app.js"), fetch("/capture-worklet.js"),
                                                fetch("/../pyproject.toml"), fetch("/", "POST")])

    page, app, worklet, outside, post = serving(released, scenario)
    assert page[0] == 200 and page[1].startswith("text/html") and "/app.js" in page[2]
    assert app[0] == 200 and "sample_rate" in app[2] and worklet[0] == 200 and "registerProcessor" in worklet[2]
    assert outside[0] == 404 and post[0] == 405
    with pytest.raises(ConfigError, match="--token"):
        ServeConfig(host="0.0.0.0")
    assert ServeConfig(host="0.0.0.0", token="t").host == "0.0.0.0"


@needs_released
def test_cli_sigterm_finalizes_and_exits(released, clips):
    """`malsori serve` as a process: SIGTERM while a client is mid-stream gives that client its final result, Done!
    and 1001, and the process exits 0. A non-loopback host without --token is refused before the model loads."""
    import re
    import signal
    import subprocess
    import sys

    from click.testing import CliRunner

    from malsori.cli import main

    refused = CliRunner().invoke(main, ["serve", RELEASED, "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "--token" in refused.output

    clip = clips[6]
    proc = subprocess.Popen([sys.executable, "-m", "malsori.cli", "serve", RELEASED, "--port", "0", "--endpoint-silence", "100"],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "the server did not say where it listens"

        async def scenario():
            sent = asyncio.Event()
            client = asyncio.create_task(talk(f"ws://127.0.0.1:{port}", clip, done=False, sent=sent))
            await sent.wait()
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            return await client

        s = asyncio.run(scenario())
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert s.done and s.code == P.GOING_AWAY and s.results[-1]["is_eof"]
    got = s.results[-1]["received_s"] * 16000  # whole 100 ms messages (or all of the clip) reached the server
    received = min([*range(0, len(clip), 1600), len(clip)], key=lambda n: abs(n - got))
    assert received >= 16000 and s.text == released.transcribe(clip[:received]).text


@needs_released
def test_sherpa_onnx_client_works_unchanged(released, clips, tmp_path):
    """sherpa-onnx's own C++ client (`sherpa-onnx-online-websocket-client`, from the sherpa-onnx-bin package) streams
    a WAV file to this server and ends with the offline transcript, marked final."""
    import json
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import soundfile as sf

    name = "sherpa-onnx-online-websocket-client"
    client = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(client).is_file():
        pytest.skip(f"needs {name} (pip install sherpa-onnx-bin)")
    wav = tmp_path / "clip.wav"
    sf.write(wav, clips[6], 16000, subtype="PCM_16")
    want = released.transcribe(load_audio(wav)).text

    async def scenario(server, url):
        cmd = [client, f"--server-port={server.port}", "--samples-per-message=1600", "--seconds-per-message=0.02", str(wav)]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, (out + err).decode()

    code, log = serving(released, scenario, stream=NO_ENDPOINT)
    results = [json.loads(m) for m in re.findall(r"OnMessage:\d+ (\{.*\})", log)]
    assert code == 0 and "Done!" in log and results
    assert results[-1]["is_final"] and results[-1]["text"] == want
