"""``limechat-events up``: everything a developer needs on one machine, in one command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from producer.config import redacted_url, redis_url

from .sandbox import Sandbox
from .settings import Settings

SANDBOX_TOKEN = "sandbox-token"
SANDBOX_ACCOUNT = "sandbox-account"
_BANNER = """\
==============================================================================
  SANDBOX MODE: LIMECHAT_ACCESS_TOKEN / LIMECHAT_ACCOUNT_ID are not set.
  Events go to the local stand-in at {url}
  and are printed below. Nothing reaches LimeChat.
  Set both variables to deliver to LimeChat for real.
=============================================================================="""


def bring_up(sandbox_port: int) -> Settings:
    """Make sure Redis answers and, without credentials (nor an accounts file), start the
    sandbox; return settings."""
    url = redis_url(os.environ)
    ensure_redis(url)
    configured = os.environ.get("LIMECHAT_ACCOUNTS_FILE") or (
        os.environ.get("LIMECHAT_ACCESS_TOKEN") and os.environ.get("LIMECHAT_ACCOUNT_ID")
    )
    if not configured:
        sandbox = Sandbox("127.0.0.1", sandbox_port, out=sys.stdout).start()
        os.environ.update(
            LIMECHAT_ACCESS_TOKEN=SANDBOX_TOKEN,
            LIMECHAT_ACCOUNT_ID=SANDBOX_ACCOUNT,
            LIMECHAT_API_URL=sandbox.url,
        )
        print(_BANNER.format(url=sandbox.url), flush=True)
    return Settings.from_env(os.environ)


def ensure_redis(url: str) -> None:
    """Start a local ``redis-server`` (with an append-only file) if ``url`` does not answer."""
    if _answers(url):
        return
    parts = urlsplit(url)
    local = parts.scheme == "redis" and parts.hostname in ("localhost", "127.0.0.1", "::1")
    server = shutil.which("redis-server")
    if not local or server is None:
        raise SystemExit(
            f"error: Redis at {redacted_url(url)} does not answer"
            + ("" if local else " (and it is not local, so it was not started)")
            + ("" if server or not local else "; install redis-server or set REDIS_URL")
        )
    data_dir = Path(".limechat-dev")
    data_dir.mkdir(exist_ok=True)
    port = str(parts.port or 6379)
    print(f"starting redis-server on port {port} (data in {data_dir}/)", flush=True)
    subprocess.run(
        [
            server,
            "--port",
            port,
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            str(data_dir.resolve()),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            "redis.log",
            # (not the default /var/run/redis.pid, which another Redis on the machine may use)
            "--pidfile",
            str((data_dir / "redis.pid").resolve()),
        ],
        check=True,
    )
    for _ in range(50):
        if _answers(url):
            return
        time.sleep(0.1)
    raise SystemExit(f"error: started redis-server but {redacted_url(url)} still does not answer")


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False
