"""Serving the console: the standard library's WSGI server, one thread per request.

Why this server: it ships with Python (nothing to install beyond Flask), a thread per
request is plenty for the few operators of one console, and its request loop is plain
enough to stop cleanly on SIGTERM. werkzeug's server would do as well, but its authors
document it for development only. For more, run the application under any WSGI server
(``gunicorn 'worker.console:create_app()'``) or mount it in your own (see the README).
"""

from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("limechat_events.console")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # (a request left hanging never keeps the process from exiting)
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # (to our logger, not stderr's raw lines; the path may carry filters, never secrets)
        log.info("%s %s", self.address_string(), format % args)


def server(app: Any, host: str, port: int) -> WSGIServer:
    """A server bound to ``host:port`` (port 0: any free one; read ``server_port``)."""
    kind = _Server6 if ":" in host else _Server
    return make_server(host.strip("[]"), port, app, server_class=kind, handler_class=_Handler)


def in_thread(app: Any, host: str, port: int) -> WSGIServer:
    """Serve from a daemon thread (``limechat-events up`` runs a worker beside it)."""
    running = server(app, host, port)
    threading.Thread(target=running.serve_forever, name="console", daemon=True).start()
    return running


def url(running: WSGIServer, host: str) -> str:
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{running.server_port}/"
