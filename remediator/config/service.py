"""The service's own sections: where it listens, who may call it, what it reads and where it keeps state."""

from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import AfterValidator, Field, SecretStr, field_serializer, field_validator, model_validator

from remediator.config.errors import Required, fail
from remediator.config.types import AtLeastOne, Port, Positive, Record, Secret, Section, Text

DEFAULT_STORE_URL = "sqlite:///var/lib/remediator/state.db"
# Alertmanager's credential may only post alerts; the operators' API (reads and writes) and the CLI need
# the operator's. Separate, so a leaked webhook token cannot confirm a host off or close an incident.
ROLES = ("alertmanager", "operator")
AUTH_FORM = (
    "give each role its credential (bearer_token and/or basic: {username, password}): "
    "`auth: {alertmanager: {bearer_token: ...}, operator: {bearer_token: ...}}`; "
    "Alertmanager's may only post alerts, the operator's serves the API and the CLI"
)
MIN_TOKEN_LENGTH = 16


def _readable(path: str) -> str:
    if not os.access(path, os.R_OK):  # fail at start, not at the first handshake
        raise fail(f"cannot read {path}")
    return path


ReadableFile = Annotated[Text, AfterValidator(_readable)]


class TLS(Record):
    """HTTPS for the webhook and the API: credentials cross the network only encrypted.

    With `client_ca_file`, a client must present a certificate signed by that CA (what
    Alertmanager's `tls_config.cert_file` sends); without it, any client may connect and the
    bearer token or basic auth decides."""

    cert_file: Annotated[ReadableFile, Required("required when listen.tls is given")] = Field(
        description="The server's certificate (PEM); read at start.")
    key_file: Annotated[ReadableFile, Required("required when listen.tls is given")] = Field(
        description="Its private key (PEM, unencrypted); read at start.")
    client_ca_file: ReadableFile | None = Field(
        None, description="When given, clients (Alertmanager) must show a certificate this CA signed.")


class WebhookListener(Record):
    """A port for Alertmanager alone, served by several processes: the webhook's ingest grows with cores
    (one process is one core at most: the GIL). The API and /metrics stay on listen.port."""

    port: Port = Field(description="TCP port of POST /api/v1/alerts (with /healthz and /readyz), on listen.host "
                                   "with listen.tls; 0 picks a free one (the log says which).")
    processes: AtLeastOne = Field(2, description="Processes serving it, each with listen.threads threads and its "
                                                 "own store connection; one core each at most.")


class Listen(Section):
    host: Text = Field("127.0.0.1", description="Address Alertmanager posts to; loopback or a management network.")
    port: Port = Field(9180, description="TCP port of the webhook and the API; 0 picks a free one (the log says which).")
    threads: AtLeastOne = Field(8, description="Worker threads of the WSGI server (cheroot).")
    tls: TLS | None = Field(None, description="HTTPS; absent: plain HTTP (loopback, or behind a TLS-terminating proxy).")
    webhook: WebhookListener | None = Field(
        None, description="Absent: the webhook is served on listen.port, in the service's process (about one core).")

    @model_validator(mode="after")
    def _ports_differ(self) -> Listen:
        if self.webhook is not None and self.webhook.port and self.webhook.port == self.port:
            raise fail("must differ from listen.port (the API's)", key="webhook.port")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


class BasicAuth(Record):
    username: Text = Field(description="Basic auth user name.")
    password: Secret = Field(description="Basic auth password (secret).")


def _long_token(token: SecretStr) -> SecretStr:
    if len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise fail(f"too short: use at least {MIN_TOKEN_LENGTH} characters")
    return token


class Credentials(Record):
    """One role's credential: a bearer token and/or basic auth."""

    bearer_token: Annotated[Secret, AfterValidator(_long_token)] | None = Field(
        None, description=f"Bearer token (secret, at least {MIN_TOKEN_LENGTH} characters).")
    basic: BasicAuth | None = Field(None, description="Basic auth: `{username, password}`.")

    @model_validator(mode="after")
    def _one_at_least(self) -> Credentials:
        if self.bearer_token is None and self.basic is None:
            raise fail("give bearer_token and/or basic")
        return self

    def secrets(self) -> list[tuple[str, str]]:
        """(key below the role, secret) of each secret of this credential."""
        found = [("bearer_token", self.bearer_token), ("basic.password", self.basic.password if self.basic else None)]
        return [(key, secret.get_secret_value()) for key, secret in found if secret is not None]


_ROLE_REQUIRED = Required(f"required: {AUTH_FORM}")


class Auth(Record):
    """Who may call the API, per role; or `auth: none`, written out, for nobody checked."""

    alertmanager: Annotated[Credentials, _ROLE_REQUIRED] = Field(
        description="May only POST /api/v1/alerts (rules/alertmanager.yml's credentials_file holds it).")
    operator: Annotated[Credentials, _ROLE_REQUIRED] = Field(
        description="The operators' API, reads and writes, and the CLI's `--api` commands.")

    @property
    def none(self) -> bool:
        return self.alertmanager is None

    def of(self, role: str) -> Credentials | None:
        return getattr(self, role) if role in ROLES else None

    @model_validator(mode="wrap")
    @classmethod
    def _none_or_roles(cls, value: Any, handler: Any) -> Any:
        if value == "none":
            return cls.model_construct(alertmanager=None, operator=None)
        if isinstance(value, str):
            raise fail(f"the only string value is `none`, got {value!r}")
        if isinstance(value, dict):
            for flat in ("bearer_token", "basic"):
                if flat in value:
                    raise fail(f"one credential for everything is no longer accepted: {AUTH_FORM}", key=flat)
        return handler(value)

    @model_validator(mode="after")
    def _no_shared_secret(self) -> Auth:
        # A secret both roles know would give the webhook's credential the operator's rights.
        if self.none:
            return self
        for key, secret in self.operator.secrets():
            for other_key, other in self.alertmanager.secrets():
                if secret == other:
                    raise fail(f"the same secret as auth.alertmanager.{other_key}: Alertmanager's credential would "
                               "then have the operator's rights; give each role its own", key=f"operator.{key}")
        return self


class Prometheus(Section):
    url: Text | None = Field(None, description="Prometheus' http(s) URL, where load for placement comes from; "
                                               "absent: placement uses libvirt's allocation only.")
    timeout_s: Positive = Field(2.0, description="Timeout of one query, seconds.")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise fail(f"expected an http(s) URL, got {url!r}")
        return url


class Store(Section):
    url: Text = Field(DEFAULT_STORE_URL, description="`sqlite:///PATH` (SQLite in WAL mode) or `postgresql://...`.")

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            # (the URL may hold a password: say only its scheme)
            raise fail(f"expected sqlite:///PATH or postgresql://..., got {url.split(':', 1)[0]!r}://...")
        if url == "sqlite:///":
            raise fail("sqlite URL without a path")
        return url

    @property
    def sqlite_path(self) -> str | None:
        """The file of a `sqlite:///path` URL (`sqlite:///:memory:` gives `:memory:`), else None."""
        if not self.url.startswith("sqlite:///"):
            return None
        rest = self.url[len("sqlite:///") :]
        return rest if rest == ":memory:" else "/" + rest.lstrip("/")

    @property
    def display_url(self) -> str:
        """The URL with any password masked: what logs and pages show (the store's own redacted())."""
        from remediator.store.database import redacted  # SQLAlchemy's URL parsing, loaded when asked

        return redacted(self.url)

    def __repr_args__(self) -> Any:
        yield "url", self.display_url

    @field_serializer("url", when_used="json")
    def _masked(self, url: str) -> str:
        return self.display_url


class Limits(Section):
    max_body_bytes: AtLeastOne = Field(1024 * 1024, description="Larger webhook bodies are refused with 413.")


class Libvirt(Section):
    # Verifying a host that stopped answering costs this much when it is cut off (no RST comes back);
    # a healthy libvirtd answers in milliseconds, and the exporter uses the same 2 s.
    connect_timeout_s: Positive = Field(
        2.0, description="Timeout of a libvirt connection; also what verifying a cut-off host costs (docs/tuning.md).")


class Cluster(Section):
    """Replicas sharing one PostgreSQL: the leader lease (remediator/leadership.py, docs/tuning.md "Replicas")."""

    replica: Text | None = Field(None, description="This replica's name; absent: `<hostname>-<listen port>` "
                                                   "(unique on a host: the port is bound).")
    lease_s: Positive = Field(6.0, description="How long a taken or renewed leader lease lasts (the database's "
                                               "clock); a standby takes over after it expires.")
    renew_s: Positive = Field(1.0, description="The leader renews its lease this often (Patroni's loop_wait).")
    retry_timeout_s: Positive = Field(2.0, description="The bound of one renewal; `renew_s + 2 * retry_timeout_s` "
                                                       "must be at most `lease_s` (Patroni's rule).")
    max_call_s: Positive = Field(4.0, description="The longest one call to libvirt or a BMC may take; the leader "
                                                  "starts none later than `lease_s - max_call_s` after its last "
                                                  "renewal was sent. Must be below `lease_s - renew_s`.")

    @field_validator("replica")
    @classmethod
    def _replica_name(cls, name: str | None) -> str | None:
        from remediator.config.inventory import HOST_NAME

        if name is not None and not HOST_NAME.match(name):
            raise fail(f"a replica name (letters, digits, . _ -): {name!r}")
        return name

    @model_validator(mode="after")
    def _timings(self) -> Cluster:
        # Patroni's rule: two renewals that each take their whole bound still leave the lease valid.
        if self.renew_s + 2 * self.retry_timeout_s > self.lease_s:
            raise fail(f"must be >= renew_s + 2 * retry_timeout_s = {self.renew_s + 2 * self.retry_timeout_s:g}, "
                       f"got {self.lease_s:g}", key="lease_s")
        # The dispatch deadline (renewal + lease_s - max_call_s) must stay ahead of the next renewal.
        if self.max_call_s + self.renew_s >= self.lease_s:
            raise fail(f"must be < lease_s - renew_s = {self.lease_s - self.renew_s:g} (else the leader may not "
                       f"dispatch between renewals), got {self.max_call_s:g}", key="max_call_s")
        return self

    def name(self, port: int) -> str:
        import socket

        return self.replica or f"{socket.gethostname()}-{port or os.getpid()}"
