"""Environment overrides: secrets that should not live in the file, read with pydantic-settings.

Each variable of `Environment` sets one key of the file (its `sets`), before validation, so a
value from the environment is checked, and named in errors, exactly as the same value in the file.
Fence options come per host: REMEDIATOR_FENCE_<HOST>_<OPTION> sets hosts[name=HOST].fence.options.OPTION
(HOST and OPTION upper-cased, characters other than A-Z0-9 as `_`), and is kept as a secret.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from remediator.config.errors import ConfigError

FENCE_PREFIX = "REMEDIATOR_FENCE_"


def _env(name: str, sets: str, description: str) -> Any:
    return Field(None, validation_alias=name, description=description, json_schema_extra={"sets": sets})


class Environment(BaseSettings):
    """The REMEDIATOR_* variables that override keys of the file (the environment wins)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    alertmanager_token: SecretStr | None = _env(
        "REMEDIATOR_AUTH_ALERTMANAGER_TOKEN", "auth.alertmanager.bearer_token", "Alertmanager's bearer token.")
    alertmanager_username: str | None = _env(
        "REMEDIATOR_AUTH_ALERTMANAGER_USERNAME", "auth.alertmanager.basic.username", "Alertmanager's basic auth user.")
    alertmanager_password: SecretStr | None = _env(
        "REMEDIATOR_AUTH_ALERTMANAGER_PASSWORD", "auth.alertmanager.basic.password", "Alertmanager's basic auth password.")
    operator_token: SecretStr | None = _env(
        "REMEDIATOR_AUTH_OPERATOR_TOKEN", "auth.operator.bearer_token", "The operator's bearer token.")
    operator_username: str | None = _env(
        "REMEDIATOR_AUTH_OPERATOR_USERNAME", "auth.operator.basic.username", "The operator's basic auth user.")
    operator_password: SecretStr | None = _env(
        "REMEDIATOR_AUTH_OPERATOR_PASSWORD", "auth.operator.basic.password", "The operator's basic auth password.")
    store_url: str | None = _env("REMEDIATOR_STORE_URL", "store.url", "The store's URL (a PostgreSQL URL may hold a password).")
    prometheus_url: str | None = _env("REMEDIATOR_PROMETHEUS_URL", "prometheus.url", "Prometheus' URL.")
    # One credential for both roles is gone; its old variables are refused, not silently ignored.
    old_token: str | None = Field(None, validation_alias="REMEDIATOR_AUTH_TOKEN", exclude=True)
    old_username: str | None = Field(None, validation_alias="REMEDIATOR_AUTH_USERNAME", exclude=True)
    old_password: str | None = Field(None, validation_alias="REMEDIATOR_AUTH_PASSWORD", exclude=True)


OVERRIDES = {name: f for name, f in Environment.model_fields.items() if f.json_schema_extra}


class _GivenEnvironment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (os.environ, or a test's dict)."""

    def __init__(self, given: Mapping[str, str]):
        self._given = dict(given)
        super().__init__(Environment)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def read_environment(env: Mapping[str, str]) -> tuple[Environment, dict[str, str]]:
    """The overrides in `env`, and the REMEDIATOR_FENCE_* variables (their names depend on the hosts)."""
    source = _GivenEnvironment(env)
    fence = {k: v for k, v in source.env_vars.items() if k.startswith(FENCE_PREFIX) and v is not None}
    return Environment.model_validate(source()), fence


def env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def apply_environment(top: dict[str, Any], env: Mapping[str, str], source: str) -> None:
    """Overrides from `env` into the freshly parsed YAML (mutated; the environment wins over the file)."""
    settings, fence = read_environment(env)
    for old in ("TOKEN", "USERNAME", "PASSWORD"):
        if getattr(settings, f"old_{old.lower()}") is not None:
            raise ConfigError(source, "auth", f"REMEDIATOR_AUTH_{old} is no longer read: credentials are per role now, "
                                              f"set REMEDIATOR_AUTH_ALERTMANAGER_{old} and REMEDIATOR_AUTH_OPERATOR_{old}")
    for name, field in OVERRIDES.items():
        if (value := getattr(settings, name)) is not None:
            _put(top, str(field.json_schema_extra["sets"]).split("."), value)
    hosts = top.get("hosts")
    for host in hosts if isinstance(hosts, list) else ():
        if not (isinstance(host, dict) and isinstance(host.get("name"), str)):
            continue  # the host's own error is reported by validation
        prefix = f"{FENCE_PREFIX}{env_name(host['name'])}_"
        for name, value in fence.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                _put(host, ["fence", "options", name[len(prefix):].lower()], SecretStr(value))


def _put(node: Any, keys: list[str], value: Any) -> None:
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None or (i == 0 and child == "none"):  # `auth: none` with credentials in the environment
            child = node[k] = {}
        if not isinstance(child, dict):
            return  # the type error is reported by validation
        node = child
    node[keys[-1]] = value
