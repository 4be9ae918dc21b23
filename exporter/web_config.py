"""TLS and basic auth for /metrics, configured the way every Prometheus exporter is: a web config
file in the exporter-toolkit's format (`--web.config.file`), so Prometheus scrapes it with
`scheme: https`, `tls_config` and `basic_auth` as it scrapes node_exporter.

    tls_server_config:
      cert_file: /etc/remediator-exporter/tls.crt
      key_file: /etc/remediator-exporter/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional; then client_ca_file is required
      client_ca_file: /etc/remediator-exporter/clients-ca.crt
      min_version: TLS12                             # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')

The subset of the toolkit's keys that matter here; any other key is an error naming it, never
silently ignored (a `cipher_suites` that was ignored would be a false sense of security).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import bcrypt
import yaml

from exporter.config import ConfigError

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
MIN_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"


@dataclass(frozen=True)
class WebConfig:
    tls: TLSServerConfig | None = None
    basic_auth_users: Mapping[str, str] = field(default_factory=dict)  # user -> bcrypt hash


def load_web_config(path: str) -> WebConfig:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    _only(path, "", data, {"tls_server_config", "basic_auth_users"})
    tls = None
    if data.get("tls_server_config") is not None:
        raw = data["tls_server_config"]
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: tls_server_config must be a mapping")
        _only(path, "tls_server_config.", raw, set(TLSServerConfig.__dataclass_fields__))
        for key in ("cert_file", "key_file"):
            if not isinstance(raw.get(key), str):
                raise ConfigError(f"{path}: tls_server_config.{key} is required")
        tls = TLSServerConfig(**raw)
        if tls.client_auth_type not in CLIENT_AUTH_TYPES:
            raise ConfigError(f"{path}: tls_server_config.client_auth_type must be one of "
                              f"{', '.join(CLIENT_AUTH_TYPES)}, not {tls.client_auth_type!r}")
        if tls.client_auth_type != "NoClientCert" and not tls.client_ca_file:
            raise ConfigError(f"{path}: tls_server_config.client_ca_file is required with {tls.client_auth_type}")
        if tls.min_version not in MIN_VERSIONS:
            raise ConfigError(f"{path}: tls_server_config.min_version must be TLS12 or TLS13, not {tls.min_version!r}")
        try:
            ssl_context(tls)  # unreadable or mismatched files fail at start, naming the key
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{path}: tls_server_config: {err}") from err
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
        raise ConfigError(f"{path}: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{path}: basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 \"\" | tr -d ':')")
    return WebConfig(tls=tls, basic_auth_users=dict(users))


def _only(path: str, prefix: str, raw: dict, allowed: set[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key {prefix}{key} (known: {', '.join(sorted(allowed))})")


def ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSIONS[tls.min_version]
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    if tls.client_ca_file:
        context.load_verify_locations(cafile=tls.client_ca_file)
    return context


class BasicAuth:
    """WSGI middleware: 401 unless the request carries one of the users' passwords.

    bcrypt is deliberately slow (~50 ms at cost 10) and Prometheus scrapes every few seconds, so a
    verified (user, password) is remembered as the hash it matched, as the exporter-toolkit does."""

    def __init__(self, app: Callable, users: Mapping[str, str]):
        self.app = app
        self.users = dict(users)
        self._verified: dict[tuple[str, bytes], str] = {}  # (user, sha256 of password) -> hash
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return self.app(environ, start_response)
        body = b"unauthorized\n"
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", 'Basic realm="remediator-exporter"'),
                                            ("Content-Length", str(len(body)))])
        return [body]

    def authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if not sep or hashed is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:
            if hmac.compare_digest(self._verified.get(key, ""), hashed):
                return True
        ok = bcrypt.checkpw(password.encode(), hashed.replace("$2y$", "$2b$", 1).encode())
        if ok:
            with self._lock:
                self._verified[key] = hashed
        return ok
