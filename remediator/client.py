"""The operators' side of the API, for the command line: `remediator status --api` and `remediator host`.

The service carries out an operator's request about a host (activate, maintenance) in its engine and
answers with the outcome: 200 applied, 409 refused with the reason, 202 still queued.
"""

from __future__ import annotations

from typing import Any

import requests

from remediator.config import Config


class ApiError(SystemExit):
    """A request the service refused or could not answer; exits the command with its message."""


class Client:
    def __init__(self, config: Config, api: str, *, command: str = "remediator", tls: dict | None = None):
        self.base = api.rstrip("/") + "/api/v1"
        self.command = command
        # verify/cert given per request: a session's own verify loses to $REQUESTS_CA_BUNDLE
        self.tls = tls or {}
        self.session = requests.Session()
        operator = config.auth.operator  # the API refuses Alertmanager's credential (403)
        if operator is not None and operator.bearer_token:
            self.session.headers["Authorization"] = f"Bearer {operator.bearer_token.get_secret_value()}"
        elif operator is not None and operator.basic:
            self.session.auth = (operator.basic.username, operator.basic.password.get_secret_value())

    def get(self, path: str) -> Any:
        response = self._send("GET", path)
        if response.status_code != 200:
            raise ApiError(f"{self.command}: {self.base}{path}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def host_request(self, host: str, what: str, body: dict[str, Any]) -> tuple[bool, str]:
        """POST hosts/<host>/<what>; (applied or queued, the service's words)."""
        response = self._send("POST", f"/hosts/{host}/{what}", json=body)
        data = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if response.status_code == 200:
            return True, data.get("reason", "applied")
        if response.status_code == 202:
            return True, f"queued as event {data.get('queued_event')}: the service carries it out shortly"
        return False, data.get("error") or f"HTTP {response.status_code}: {response.text[:200]}"

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, self.base + path, timeout=60, **self.tls, **kwargs)
        except requests.RequestException as e:
            raise ApiError(f"{self.command}: {self.base}{path}: {e}") from e
