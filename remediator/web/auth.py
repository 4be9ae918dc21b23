"""Who may call the API: a bearer token and/or basic auth, compared in constant time.

Only an explicit `auth: none` in the config turns this off (config.py refuses a config without auth).
"""

from __future__ import annotations

import hmac

from flask import Request, g, jsonify, request
from flask.typing import ResponseReturnValue

from remediator.config import Auth
from remediator.web.context import services


def caller(auth: Auth, req: Request) -> str | None:
    """The name of an authenticated caller ("token", the basic username, or "anonymous" when auth is none)."""
    if auth.none:
        return "anonymous"
    header = req.headers.get("Authorization", "")
    if auth.bearer_token is not None and header[:7].lower() == "bearer ":
        if hmac.compare_digest(header[7:].strip().encode(), auth.bearer_token.encode()):
            return "token"
        return None
    creds = req.authorization
    if auth.basic is not None and creds is not None and creds.type == "basic":
        user_ok = hmac.compare_digest((creds.username or "").encode(), auth.basic.username.encode())
        password_ok = hmac.compare_digest((creds.password or "").encode(), auth.basic.password.encode())
        if user_ok and password_ok:
            return auth.basic.username
    return None


def check_auth() -> ResponseReturnValue | None:
    """before_request hook of the protected blueprints: 401 unless the caller is authenticated."""
    auth = services().config.auth
    who = caller(auth, request)
    if who is not None:
        g.caller = who
        return None
    challenges = []
    if auth.bearer_token is not None:
        challenges.append('Bearer realm="remediator"')
    if auth.basic is not None:
        challenges.append('Basic realm="remediator"')
    response = jsonify({"error": "bad credentials" if "Authorization" in request.headers else "missing credentials"})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = ", ".join(challenges)
    return response
