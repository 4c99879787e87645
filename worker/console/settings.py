"""The console's own settings (who may log in, what signs CSRF tokens), from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from producer.config import env_str


@dataclass(frozen=True)
class ConsoleSettings:
    """HTTP Basic credentials and the CSRF secret; build it with :meth:`from_env`.

    An empty ``password`` means no Basic login: only a console bound to loopback (or one a
    host application guards with its own ``authorize`` hook) may run that way. An empty
    ``secret`` means a random one per process (tokens then die with the process).
    """

    user: str = field(default="admin", metadata={"env": "LIMECHAT_WEB_USER"})
    password: str = field(default="", repr=False, metadata={"env": "LIMECHAT_WEB_PASSWORD"})
    secret: str = field(default="", repr=False, metadata={"env": "LIMECHAT_WEB_SECRET"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ConsoleSettings:
        d = {f.name: f.default for f in fields(cls)}
        return cls(
            user=env_str(environ, "LIMECHAT_WEB_USER", str(d["user"])),
            # (not stripped: a password may end in a space)
            password=environ.get("LIMECHAT_WEB_PASSWORD", ""),
            secret=environ.get("LIMECHAT_WEB_SECRET", ""),
        )


def environment_variables() -> dict[str, Any]:
    """Variable name -> default: the README's configuration table lists these too."""
    return {
        f.metadata["env"]: (None if f.default is MISSING else f.default)
        for f in fields(ConsoleSettings)
    }
