"""A ``redis-server`` of a test's own, in a temporary directory: stop it, kill it, restart it.

Tests that take Redis away never touch the shared one on 6379. By default the server runs as
docker-compose runs it: an append-only file, ``appendfsync everysec``, no RDB snapshots.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Generate the CA and the server certificate with ``openssl``.

    Skips if it is missing; in CI every skip fails (tests/conftest.py).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a certificate for the TLS test")
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_subject = ["-subj", "/CN=limechat-events test CA"]
    signing = ["-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-extfile", ext]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", *ca_subject],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, *signing, "-out", cert, "-days", "1"],
    ]
    for step in steps:
        subprocess.run([str(a) for a in step], check=True, capture_output=True, timeout=60)
    return TlsFiles(ca, cert, key)


def redis_supports_tls() -> bool:
    """Whether this ``redis-server`` was built with TLS (it refuses ``--tls-port`` if not)."""
    if REDIS_SERVER is None:
        return False
    probe = subprocess.run(
        [REDIS_SERVER, "--port", "0", "--tls-port", "0", "--save", ""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "Bad directive" not in probe.stdout + probe.stderr


class RedisServer:
    """One ``redis-server`` process on a fixed port; survives :meth:`kill` and :meth:`restart`."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        tls: TlsFiles | None = None,
        appendonly: bool = True,
    ) -> None:
        if REDIS_SERVER is None:
            # (a failure in CI, like every skip: tests/conftest.py)
            pytest.skip("redis-server is not installed: this test starts Redis servers of its own")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        """The URL of this server, carrying ``password`` (percent-encoded) if given."""
        auth = f":{quote(password, safe='')}@" if password else ""
        if self.tls is None:
            return f"redis://{auth}127.0.0.1:{self.port}/0"
        return (
            f"rediss://{auth}127.0.0.1:{self.port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={self.tls.ca}"
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        self.kill()  # never two servers on one port and directory
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--logfile", "redis.log", "--daemonize", "no"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            args += ["--tls-ca-cert-file", str(self.tls.ca)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.kill()
                raise AssertionError(f"redis-server did not start on {self.port}:\n{log}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, as ``docker compose restart`` does: Redis flushes its AOF and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash; writes not yet fsynced to the AOF are lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(5)
        self.kill()
