"""A server on a background thread, for synchronous clients (the browser test)."""

from __future__ import annotations

import asyncio
import threading

from malsori.serve.config import ServeConfig
from malsori.serve.server import Server


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
