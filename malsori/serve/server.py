"""The asyncio websocket server: connections, limits, one decoding thread, the browser page, graceful shutdown.

Each connection's reader checks and queues its audio; one scheduler hands every connection with queued audio at
most one step of it (`engine.step_samples`) per round to the engine, on one worker thread, so a fast sender cannot
starve the others; a per-connection sender writes the results. A reader pauses (TCP backpressure) while its
connection holds more than `max_pending_s` of undecoded audio.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import soxr
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from malsori.audio import SAMPLE_RATE
from malsori.pretrained import Recognizer
from malsori.serve import protocol as P
from malsori.serve.config import ServeConfig
from malsori.serve.engine import make_engine

log = logging.getLogger("malsori.serve")
STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}
MAX_OUTBOX = 1000  # results queued for a client that does not read them before it is closed


class _Client:
    """One websocket connection: its queued audio (loop thread) and its engine state (worker thread only)."""

    def __init__(self, ws: ServerConnection, state, rate: int, max_pending: int) -> None:
        self.ws, self.state, self.max_pending = ws, state, max_pending
        self.pending: deque[np.ndarray] = deque()
        self.pending_n = 0  # samples queued, at the model's rate
        self.got_audio = False
        self.received_n = 0  # samples received, at the model's rate
        self.reader: asyncio.Task | None = None  # the task reading this connection's messages
        self.finishing = False  # input ended (Done, or the server is shutting down)
        self.finished = False  # the engine has taken the end of input
        self.closed = False  # gone: the scheduler skips it
        self.close_code, self.close_reason = P.NORMAL, "done"
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.drained = asyncio.Event()
        self.drained.set()
        self.resampler = None
        self.set_rate(rate)

    def set_rate(self, rate: int) -> None:
        self.rate = rate
        self.resampler = None if rate == SAMPLE_RATE else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def add(self, samples: np.ndarray) -> None:
        if self.resampler is not None:
            samples = self.resampler.resample_chunk(samples)
        self.got_audio = True
        self.received_n += len(samples)
        if len(samples):
            self.pending.append(samples)
            self.pending_n += len(samples)
        if self.pending_n > self.max_pending:
            self.drained.clear()

    def finish(self) -> None:
        if not self.finishing:
            if self.resampler is not None:
                tail, self.resampler = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True), None
                self.add(tail)
            self.finishing = True

    def has_work(self) -> bool:
        return not (self.closed or self.finished) and (self.pending_n > 0 or self.finishing)

    def take(self, n: int):
        """The next step's job: up to n queued samples, and whether they end the input."""
        parts, got = [], 0
        while self.pending and got < n:
            x = self.pending.popleft()
            if got + len(x) > n:
                x, rest = x[: n - got], x[n - got :]
                self.pending.appendleft(rest)
            parts.append(x)
            got += len(x)
        self.pending_n -= got
        if self.pending_n <= self.max_pending:
            self.drained.set()
        finish = self.finishing and self.pending_n == 0
        self.finished = finish
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return self.state, samples, finish

    def deliver(self, out) -> None:
        if self.closed:
            return
        if isinstance(out, Exception):
            log.error("%s: decoding failed: %r", self.name, out)
            self.close(P.INTERNAL, "decoding failed")
            return
        for r in out:
            self.outbox.put_nowait(r.to_json())
        if self.finished:
            self.outbox.put_nowait(P.DONE_REPLY)
        if self.outbox.qsize() > MAX_OUTBOX:
            self.close(P.POLICY, "results are not being read")

    def close(self, code: int, reason: str) -> None:
        self.closed = True
        self.drained.set()
        asyncio.ensure_future(self.ws.close(code, reason))

    @property
    def name(self) -> str:
        addr = self.ws.remote_address
        return f"{addr[0]}:{addr[1]}" if addr else "client"


class Server:
    """`malsori serve`: sherpa-onnx's streaming protocol over websockets, and the browser page at `/`."""

    def __init__(self, rec: Recognizer, cfg: ServeConfig | None = None) -> None:
        self.cfg = cfg = cfg or ServeConfig()
        self.engine = make_engine(rec, cfg.stream, cfg.partial_interval_s, cfg.max_batch)
        self.clients: set[_Client] = set()
        self.port = cfg.port
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="malsori-decode")
        self._wake = asyncio.Event()
        self._closing = False
        self._pages = {f"/{p.name}": p for p in STATIC.iterdir() if p.suffix in CONTENT_TYPES}
        self._pages["/"] = STATIC / "index.html"

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self) -> "Server":
        cfg = self.cfg
        # keepalive pings without a timeout: while a connection's reading is paused by backpressure its pongs wait
        # behind its audio, so a fast sender would time out; a dead peer is closed by the idle timeout instead
        self._ws = await serve(self._handle, cfg.host, cfg.port, process_request=self._process_request,
                               max_size=cfg.max_message_bytes, max_queue=4, ping_interval=20, ping_timeout=None,
                               open_timeout=10, close_timeout=5, logger=logging.getLogger("malsori.serve.websockets"))
        self.port = self._ws.sockets[0].getsockname()[1]
        self._scheduler = asyncio.create_task(self._schedule())
        kind = "batched re-decoding (full-context model)" if self.engine.batched else "chunked streaming, round-robin"
        log.info("listening on ws://%s:%d (%s); page at http://%s:%d/", cfg.host, self.port, kind, cfg.host, self.port)
        return self

    async def shutdown(self) -> None:
        """Stop accepting, finalize every open stream and send its results, close with 1001, stop the worker."""
        if self._closing:
            return
        self._closing = True
        log.info("shutting down: finalizing %d open stream(s)", len(self.clients))
        self._ws.close(close_connections=False)
        for c in list(self.clients):
            c.close_code, c.close_reason = P.GOING_AWAY, "server shutting down"
            c.reader.cancel()
        try:
            await asyncio.wait_for(self._ws.wait_closed(), self.cfg.shutdown_timeout_s)
        except asyncio.TimeoutError:  # (the builtin TimeoutError only from Python 3.11)
            log.warning("shutdown: streams not finished after %g s, closing them", self.cfg.shutdown_timeout_s)
            self._ws.close(close_connections=True)
            await self._ws.wait_closed()
        self._scheduler.cancel()
        self._pool.shutdown(wait=True)

    # -- handshake: auth, the page ----------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request):
        url = urlsplit(request.path)
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self._page(connection, request, url.path)
        query = parse_qs(url.query)
        if self.cfg.token:
            bearer = request.headers.get("Authorization", "")
            given = bearer[7:] if bearer.startswith("Bearer ") else (query.get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), self.cfg.token.encode()):
                log.warning("%s: refused, bad or missing token", connection.remote_address)
                return connection.respond(HTTPStatus.UNAUTHORIZED, "a valid token is required (Authorization: Bearer or ?token=)\n")
        if url.path not in ("/", "/asr"):
            return connection.respond(HTTPStatus.NOT_FOUND, "websocket endpoint is / (or /asr)\n")
        if "sample_rate" in query:
            try:
                P.parse_rate(query["sample_rate"][0])
            except P.ProtocolViolation as e:
                return connection.respond(HTTPStatus.BAD_REQUEST, f"{e}\n")
        return None

    def _page(self, connection: ServerConnection, request, path: str):
        if request.method not in ("GET", "HEAD"):
            return connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, "only GET\n")
        page = self._pages.get(path)
        if page is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        body = page.read_bytes()
        headers = Headers([("Content-Type", CONTENT_TYPES[page.suffix]), ("Content-Length", str(len(body))),
                           ("Cache-Control", "no-store"), ("Connection", "close")])
        return Response(HTTPStatus.OK, "OK", headers, body)

    # -- connections ----------------------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        if self._closing:
            await ws.close(P.GOING_AWAY, "server shutting down")
            return
        if len(self.clients) >= self.cfg.max_connections:
            log.warning("%s: refused, %d connections already open", ws.remote_address, len(self.clients))
            await ws.close(P.TRY_LATER, f"server full ({self.cfg.max_connections} connections)")
            return
        rate = P.parse_rate(parse_qs(urlsplit(ws.request.path).query).get("sample_rate", [SAMPLE_RATE])[0])
        c = _Client(ws, self.engine.open(), rate, int(self.cfg.max_pending_s * SAMPLE_RATE))
        self.clients.add(c)
        log.info("%s: connected (%d open)", c.name, len(self.clients))
        sender = asyncio.create_task(self._send(c))
        c.reader = asyncio.create_task(self._receive(c))
        try:
            await asyncio.wait([c.reader])
            problem = None if c.reader.cancelled() else c.reader.exception()
            if isinstance(problem, P.ProtocolViolation):
                log.warning("%s: closing (%d): %s", c.name, problem.code, problem)
                c.closed = True
                await c.ws.close(problem.code, str(problem))
            elif isinstance(problem, ConnectionClosed):
                if problem.sent is not None and problem.sent.code == P.TOO_BIG:
                    log.warning("%s: closing (%d): a message over %d bytes", c.name, P.TOO_BIG, self.cfg.max_message_bytes)
                elif not c.finishing:
                    log.info("%s: left mid-stream after %.1f s of audio", c.name, c.received_n / SAMPLE_RATE)
                c.closed = True
            elif problem is not None:
                log.error("%s: reader failed: %r", c.name, problem)
                c.closed = True
                await c.ws.close(P.INTERNAL, "internal error")
            if not c.closed:  # input ended (Done or shutdown): finalize, then the sender closes
                c.finish()
                self._wake.set()
                await sender
        finally:
            c.closed = True
            sender.cancel()
            self.clients.discard(c)
            log.info("%s: closed (%d open)", c.name, len(self.clients))

    async def _receive(self, c: _Client) -> None:
        """Read messages until Done; raises ProtocolViolation for a message or a pause the protocol does not allow."""
        idle = self.cfg.idle_timeout_s
        while True:
            try:
                msg = await asyncio.wait_for(c.ws.recv(), idle)
            except asyncio.TimeoutError:
                raise P.ProtocolViolation(P.POLICY, f"idle: no message for {idle:g} s") from None
            if isinstance(msg, bytes):
                c.add(P.decode_samples(msg))
                self._wake.set()
                await c.drained.wait()
            elif msg == P.DONE:
                return
            elif c.got_audio:
                raise P.ProtocolViolation(P.POLICY, "a config message must come before any audio")
            else:
                c.set_rate(P.parse_config(msg))

    async def _send(self, c: _Client) -> None:
        try:
            while True:
                msg = await c.outbox.get()
                await c.ws.send(msg)
                if msg == P.DONE_REPLY:
                    await c.ws.close(c.close_code, c.close_reason)
                    return
        except ConnectionClosed:
            c.closed = True

    # -- the decoding loop ------------------------------------------------------------------------------------------
    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                ready = [c for c in self.clients if c.has_work()]
                if not ready:
                    break
                jobs = [c.take(self.engine.step_samples) for c in ready]
                outs = await loop.run_in_executor(self._pool, self.engine.step, jobs)
                for c, out in zip(ready, outs):
                    c.deliver(out)


async def run(rec: Recognizer, cfg: ServeConfig) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    import signal

    server = await Server(rec, cfg).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown()
