"""A stand-in for a Redis server older than 6.2, speaking just enough RESP for our checks.

Debian ships Redis 7 only, so an old server is played by a real TCP server that answers as
Redis 6.0 does: ``HELLO`` (RESP2 or RESP3, as asked), ``PING``, ``SELECT``, ``INFO`` (version
6.0.16), and a syntax error for ``ZRANGE ... BYSCORE`` (new in 6.2); anything else is an
unknown command.
"""

from __future__ import annotations

import socket
import threading

VERSION = "6.0.16"
_INFO = (
    f"# Server\r\nredis_version:{VERSION}\r\n# Memory\r\nused_memory:1048576\r\n"
    "maxmemory:0\r\nmaxmemory_policy:noeviction\r\n"
)


class OldRedis:
    """Serves on 127.0.0.1 until :meth:`stop`; ``url`` points a client at it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.commands: list[list[str]] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                command = _read_command(reader)
                if command is None:
                    return
                self.commands.append(command)
                conn.sendall(_answer(command))


def _read_command(reader: object) -> list[str] | None:
    readline = reader.readline  # type: ignore[attr-defined]
    read = reader.read  # type: ignore[attr-defined]
    head = readline()
    if not head.startswith(b"*"):
        return None
    args = []
    for _ in range(int(head[1:])):
        size = int(readline()[1:])
        args.append(read(size + 2)[:-2].decode())
    return args


def _answer(command: list[str]) -> bytes:
    name = command[0].upper()
    if name == "HELLO":
        return _hello(command[1] if len(command) > 1 else "2")
    if name == "PING":
        return b"+PONG\r\n"
    if name == "SELECT":
        return b"+OK\r\n"
    if name == "INFO":
        data = _INFO.encode()
        return b"$%d\r\n%s\r\n" % (len(data), data)
    if name == "ZRANGE" and "BYSCORE" in (a.upper() for a in command):
        return b"-ERR syntax error\r\n"
    return b"-ERR unknown command '%s'\r\n" % command[0].encode()


def _hello(protocol: str) -> bytes:
    fields = [("server", "+redis"), ("version", f"+{VERSION}"), ("proto", f":{protocol}")]
    fields += [("id", ":1"), ("mode", "+standalone"), ("role", "+master"), ("modules", "*0")]
    if protocol == "3":
        body = "".join(f"+{key}\r\n{value}\r\n" for key, value in fields)
        return f"%{len(fields)}\r\n{body}".encode()
    parts = []
    for key, value in fields:
        parts.append(f"${len(key)}\r\n{key}\r\n")
        if value[0] == "+":
            parts.append(f"${len(value) - 1}\r\n{value[1:]}\r\n")
        else:
            parts.append(f"{value}\r\n")
    return f"*{2 * len(fields)}\r\n{''.join(parts)}".encode()
