"""`malsori serve`: a websocket server speaking sherpa-onnx's streaming protocol, and a browser microphone page.

    from malsori.serve.server import Server
    server = await Server(malsori.load("en-small"), ServeConfig(port=6006)).start()
    ...
    await server.shutdown()   # finalizes open streams

The server needs the `websockets` package (`pip install 'malsori[serve]'`).
"""

from malsori.serve.config import ServeConfig

__all__ = ["ServeConfig"]
