"""Serving pieces shared by the server tests and the serving benchmark: a server on a background thread, and a
websocket client that streams a waveform and collects every result."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from malsori.serve.config import ServeConfig
from malsori.serve.server import Server


@dataclass
class Session:
    """What one client saw: the JSON results, whether `Done!` came, the close code and reason, send/receive times."""

    results: list[dict] = field(default_factory=list)
    done: bool = False
    code: int | None = None
    reason: str = ""
    sent_at: list[tuple[float, float]] = field(default_factory=list)  # (audio seconds sent so far, time)
    received_at: list[float] = field(default_factory=list)  # arrival time of each result
    done_sent_at: float = 0.0

    @property
    def finals(self) -> list[dict]:
        return [r for r in self.results if r["is_final"]]

    @property
    def text(self) -> str:
        """The stream's transcript: its final results' texts joined."""
        return " ".join(r["text"] for r in self.finals if r["text"])


async def talk(url: str, wave: np.ndarray, frame: int = 1600, speed: float = 0.0, done: bool = True,
               headers: dict | None = None, first: str | None = None) -> Session:
    """Send `wave` in `frame`-sample float32 messages (`speed` × real time; 0: as fast as possible), then Done;
    collect results until the server closes. `first`: a text message sent before the audio."""
    s = Session()
    async with connect(url, additional_headers=headers, max_size=2**22) as ws:
        async def receive() -> None:
            try:
                async for msg in ws:
                    if msg == "Done!":
                        s.done = True
                    else:
                        s.results.append(json.loads(msg))
                        s.received_at.append(time.perf_counter())
            except ConnectionClosed:
                pass

        reader = asyncio.create_task(receive())
        try:
            if first is not None:
                await ws.send(first)
            start = time.perf_counter()
            for i in range(0, len(wave), frame):
                await ws.send(wave[i : i + frame].astype("<f4").tobytes())
                s.sent_at.append((min(len(wave), i + frame) / 16000, time.perf_counter()))
                if speed:
                    await asyncio.sleep(max(0.0, start + (i + frame) / 16000 / speed - time.perf_counter()))
            if done:
                s.done_sent_at = time.perf_counter()
                await ws.send("Done")
        except ConnectionClosed:
            pass
        await reader
        s.code, s.reason = ws.close_code, ws.close_reason or ""
    return s


class ServerThread:
    """`with ServerThread(rec, cfg) as port:` a server on its own event loop in a thread (for synchronous clients
    such as a browser driver); leaving shuts it down gracefully."""

    def __init__(self, rec, cfg: ServeConfig) -> None:
        self.rec, self.cfg = rec, cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(Server(self.rec, self.cfg).start(), self.loop).result(60)
        return self.server.port

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
