"""A client of the streaming protocol (`malsori serve`, or a sherpa-onnx online websocket server): stream a waveform,
collect every result with its arrival time (the serving tests and benchmarks/bench_serve.py use it)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


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

    def latencies(self, final: bool) -> list[float]:
        """Seconds from sending the last audio a result covers (its `received_s`) to receiving it, for the final or
        the partial results."""
        sent_s = [a for a, _ in self.sent_at]
        out = []
        for r, t in zip(self.results, self.received_at):
            if r["is_final"] == final and self.sent_at:
                k = min(int(np.searchsorted(sent_s, r["received_s"] - 1e-6)), len(sent_s) - 1)
                out.append(t - self.sent_at[k][1])
        return out

    @property
    def text(self) -> str:
        """The stream's transcript: its final results' texts joined."""
        return " ".join(r["text"] for r in self.finals if r["text"])


async def talk(url: str, wave: np.ndarray, frame: int = 1600, speed: float = 0.0, done: bool = True,
               headers: dict | None = None, first: str | None = None, sent: asyncio.Event | None = None,
               keepalive: bool = True) -> Session:
    """Send `wave` in `frame`-sample float32 messages (`speed` × real time; 0: as fast as possible), then Done;
    collect results until the server closes. `first`: a text message sent before the audio; `sent`: set once all
    the audio is sent; `keepalive=False`: no ping timeout (for a client far ahead of real time, whose pings wait
    behind its audio)."""
    s = Session()
    async with connect(url, additional_headers=headers, max_size=2**22, ping_timeout=20 if keepalive else None) as ws:
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
            if sent is not None:
                sent.set()
            if done:
                s.done_sent_at = time.perf_counter()
                await ws.send("Done")
        except ConnectionClosed:
            pass
        await reader
        s.code, s.reason = ws.close_code, ws.close_reason or ""
    return s
