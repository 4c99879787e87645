"""Every state-changing request carries a token tied to the user, and comes from our origin.

The token is an HMAC of the user's name with the console's secret (``LIMECHAT_WEB_SECRET``,
or a random one per process): a page from another site cannot read it, so cannot forge a
form. What a browser says of where a request comes from must also be ours: its
``Sec-Fetch-Site`` when sent, and its ``Origin`` when sent and not ``null`` (under our
``Referrer-Policy: no-referrer`` chromium sends ``Origin: null`` for our own forms).
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
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site != "same-origin":
            return f"the request comes from another site (Sec-Fetch-Site: {site[:20]})"
        origin = request.headers.get("Origin")
        if origin not in (None, "null", f"{request.scheme}://{request.host}"):
            return "the request comes from another site (its Origin is not this console's)"
        given = request.form.get(FIELD, "")
        if not given or not hmac.compare_digest(given, self.token(user)):
            return "the form's CSRF token is missing or wrong: reload the page and try again"
        return None
