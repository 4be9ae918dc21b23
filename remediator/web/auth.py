"""Who may call what: each protected blueprint requires one role, Alertmanager's or the operator's.

A request's credential (bearer token or basic auth, compared in constant time) is matched against every
role's: no match is a 401, a match of another role a 403 naming the role needed. So the webhook's
credential posts alerts and nothing else. Only an explicit `auth: none` in the config turns this off
(the config refuses a file without auth, or with a secret both roles share: config/service.py).
"""

from __future__ import annotations

import hmac
from typing import Callable

from flask import Request, g, jsonify, request
from flask.typing import ResponseReturnValue

from remediator.config import ROLES, Auth, Credentials
from remediator.web.context import error, services


def _matches(credentials: Credentials, req: Request) -> str | None:
    """The caller's name when the request carries this credential ("token" or the basic username)."""
    header = req.headers.get("Authorization", "")
    if credentials.bearer_token is not None and header[:7].lower() == "bearer ":
        if hmac.compare_digest(header[7:].strip().encode(), credentials.bearer_token.get_secret_value().encode()):
            return "token"
        return None
    creds = req.authorization
    if credentials.basic is not None and creds is not None and creds.type == "basic":
        user_ok = hmac.compare_digest((creds.username or "").encode(), credentials.basic.username.encode())
        password_ok = hmac.compare_digest((creds.password or "").encode(),
                                          credentials.basic.password.get_secret_value().encode())
        if user_ok and password_ok:
            return credentials.basic.username
    return None


def caller(auth: Auth, req: Request) -> tuple[str, str] | None:
    """(role, name) of an authenticated caller, or None. With `auth: none` every caller is ("any", "anonymous")."""
    if auth.none:
        return "any", "anonymous"
    # Every role is tried, so the time taken does not tell which role a wrong secret came close to.
    found = [(role, name) for role in ROLES if (creds := auth.of(role)) and (name := _matches(creds, req))]
    return found[0] if found else None


def require(role: str) -> Callable[[], ResponseReturnValue | None]:
    """A before_request hook for a blueprint that only `role` may call."""
    assert role in ROLES, role

    def check_auth() -> ResponseReturnValue | None:
        auth = services().config.auth
        found = caller(auth, request)
        if found is None:
            return _unauthorized(auth.of(role))
        their_role, name = found
        if their_role not in (role, "any"):
            return error(403, f"{request.method} {request.path} needs the {role} credential; "
                              f"this is the {their_role}'s", required_role=role)
        g.role = their_role
        g.caller = name if auth.none else f"{their_role} {name}"  # e.g. "operator alice", "operator token"
        return None

    return check_auth


def _unauthorized(credentials: Credentials | None) -> ResponseReturnValue:
    challenges = []
    if credentials is not None and credentials.bearer_token is not None:
        challenges.append('Bearer realm="remediator"')
    if credentials is not None and credentials.basic is not None:
        challenges.append('Basic realm="remediator"')
    response = jsonify({"error": "bad credentials" if "Authorization" in request.headers else "missing credentials"})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = ", ".join(challenges)
    return response
