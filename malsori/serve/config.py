"""The server's settings: where it listens and the limits it holds each connection to (no websockets import, so the
CLI can build and check them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field

from malsori.config import bounded, check_ranges
from malsori.errors import ConfigError
from malsori.streaming import StreamConfig

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class ServeConfig:
    """Where the server listens and the limits it holds every connection to."""

    host: str = "127.0.0.1"  # listen address: loopback by default; any other needs a token (or `insecure`)
    port: int = bounded(6006, ge=0, le=65535)  # TCP port (0: any free port, read back from `Server.port`)
    token: str = ""  # when set, websocket clients must send `Authorization: Bearer TOKEN` or `?token=TOKEN`
    insecure: bool = False  # allow a non-loopback host without a token
    max_connections: int = bounded(32, ge=1)  # open websocket connections; more are closed with 1013
    max_message_bytes: int = bounded(2**20, ge=4096)  # largest message (1 MiB ≈ 16 s of 16 kHz float32); over: 1009
    idle_timeout_s: float = bounded(20.0, gt=0)  # close (1008) a connection that sends nothing for this long
    max_pending_s: float = bounded(10.0, gt=0)  # undecoded audio held per connection before its reading pauses
    partial_interval_s: float = bounded(0.5, gt=0)  # full-context models: re-decode after this much new audio
    max_batch: int = bounded(16, ge=1)  # full-context models: utterances decoded in one padded batch
    shutdown_timeout_s: float = bounded(10.0, gt=0)  # on shutdown, time given to finalize and send open streams
    stream: StreamConfig = field(default_factory=StreamConfig)  # chunk size, endpointing and search

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.host not in LOOPBACK and not (self.token or self.insecure):
            raise ConfigError(f"host {self.host}: serving beyond this machine needs --token (or --insecure to serve without one)")
