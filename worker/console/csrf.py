"""Every state-changing request carries a token tied to the user, and comes from our origin.

The token is an HMAC of the user's name with the console's secret (``LIMECHAT_WEB_SECRET``,
or a random one per process): a page from another site cannot read it, so cannot forge a
form. A browser's ``Origin`` header, when sent, must also be ours.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import Request

FIELD = "csrf_token"


class Csrf:
    def __init__(self, secret: str = "") -> None:
        self._key = (secret or secrets.token_hex(32)).encode()

    def token(self, user: str) -> str:
        return hmac.new(self._key, b"csrf:" + user.encode(), hashlib.sha256).hexdigest()

    def problem(self, request: Request, user: str) -> str | None:
        """Why this POST is refused (None: it is not)."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return "the request comes from another site (its Origin is not this console's)"
        given = request.form.get(FIELD, "")
        if not given or not hmac.compare_digest(given, self.token(user)):
            return "the form's CSRF token is missing or wrong: reload the page and try again"
        return None
