"""A TCP relay to Redis whose replies come late: a slow Redis, or a slow network back.

Commands reach Redis at once (and run); a reply can be held before it goes back: the next
``slow`` ones, ``delay`` seconds each. A client that times out meanwhile has had its command
run all the same, which is what a producer must reckon with.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowReplies:
    """Listens on 127.0.0.1; relays to ``target_port``, holding the next ``slow`` replies."""

    def __init__(self, target_port: int, delay: float = 1.0) -> None:
        self.target_port = target_port
        self.delay = delay
        #: how many of the next replies (on any connection) are held ``delay`` seconds
        self.slow = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if replies and self._take_slow():
                    time.sleep(self.delay)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _take_slow(self) -> bool:
        with self._lock:
            if self.slow <= 0:
                return False
            self.slow -= 1
            return True
