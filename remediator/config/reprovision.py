"""Reinstalling a host out of service: per host, whether and how (PXE, a provisioning hook); per phase, a timeout."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Mapping
from urllib.parse import urlparse

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from remediator.config.errors import fail, kind
from remediator.config.types import Flag, Positive, Record, Section, Text

REPROVISION_POLICIES = ("automatic", "on_request", "never")
HOOK_METHODS = ("GET", "POST", "PUT", "PATCH")


def _policy(value: str) -> str:
    if value not in REPROVISION_POLICIES:
        raise fail(f"one of {', '.join(REPROVISION_POLICIES)}, got {value!r}")
    return value


ReprovisionPolicy = Annotated[Text, AfterValidator(_policy), Field(json_schema_extra={"doc_type": "automatic, on_request or never"})]


def _argv(value: Any) -> Any:
    if value is not None and not (isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value)):
        raise fail(f"expected a list of strings (argv), got {kind(value)}")
    return value


def _headers(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"expected a mapping, got {kind(value)}")
    for name, header in value.items():
        if not isinstance(header, str) or not header:
            raise fail(f"expected a non-empty string, got {kind(header)}", key=str(name))
    return value


class ProvisioningHook(Record):
    """What asks the installer (Foreman, MAAS, Cobbler, an in-house one) to reinstall the host: an HTTP
    request whose body is a template (`$host`, `$address`, `$incident` are filled in; `$$` is a `$`), or
    a command (argv, the same placeholders in each argument). A status >= 400 or a non-zero exit fails."""

    url: Text | None = Field(None, description="An http(s) URL to call (with $host, $address, $incident); or command.")
    method: Text = Field("POST", description="GET, POST, PUT or PATCH (any case).")
    headers: Annotated[Mapping[str, str], BeforeValidator(_headers)] = Field(
        default_factory=dict, description="Request headers.")
    body: str = Field("", description="The request's body, a template like the URL.")
    command: Annotated[tuple[str, ...], BeforeValidator(_argv)] = Field(
        (), description="Instead of url: argv of a command (the same placeholders); a non-zero exit fails.")
    timeout_s: Positive = Field(30.0, description="No answer (or exit) in this long fails the phase.")

    @model_validator(mode="before")
    @classmethod
    def _url_or_command(cls, value: Any) -> Any:
        if isinstance(value, dict) and (value.get("url") is None) == (value.get("command") is None):
            raise fail("give either url (an HTTP request) or command (argv), not both")
        return value

    @field_validator("url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and urlparse(url).scheme not in ("http", "https"):
            raise fail(f"expected an http(s) URL, got {url!r}")
        return url

    @field_validator("method")
    @classmethod
    def _method(cls, method: str) -> str:
        if method.upper() not in HOOK_METHODS:
            raise fail(f"one of {', '.join(HOOK_METHODS)}, got {method.upper()!r}")
        return method.upper()


class Reprovision(Section):
    """Whether a host out of service is reinstalled, per how it went out.

    damaged: `on_request` by default: a reinstall wipes the host, and a damage check can fail for a
    reason a reinstall does not cure (a full disk on shared storage, a check that is wrong): an operator
    decides unless the host's entry says `automatic`. fenced: `never` by default: a host that lost power
    is usually whole, and the cause (a PDU, a PSU) wants a person's look first."""

    damaged: ReprovisionPolicy = Field("on_request", description="A damaged (drained) host: reinstalled "
                                       "automatically, on an operator's request, or never.")
    fenced: ReprovisionPolicy = Field("never", description="A fenced host: the same choice.")
    pxe: Flag = Field(True, description="Set the next boot to the network (once) and power-cycle, through the "
                                        "host's power device (off when the host has none).")
    hook: ProvisioningHook | None = Field(None, description="Called after the cycle (or alone, with pxe: false).")

    @model_validator(mode="after")
    def _something_installs(self) -> Reprovision:
        if not self.pxe and self.hook is None and (self.damaged != "never" or self.fenced != "never"):
            raise fail("with pxe: false, a hook must do the install (give reprovision.hook)")
        return self


class ReprovisionTimeouts(Section):
    """A timeout per reprovision phase: past it the incident fails and the host stays out, with the reason."""

    boot_device_s: Positive = Field(30.0, description="The BMC takes the next boot device (network, once).")
    power_cycle_s: Positive = Field(60.0, description="The power cycle.")
    hook_s: Positive = Field(120.0, description="The provisioning hook answers.")
    ready_s: Positive = Field(1800.0, description="From the power cycle (or hook) until libvirt answers, every "
                                                  "check is ok, no stale domains.")
    activate_s: Positive = Field(60.0, description="Putting the reinstalled host back in service.")
    ready_poll_s: Positive = Field(5.0, description="How often readiness is looked at.")

    BY_ACTION: ClassVar[dict[str, str]] = {
        "set_boot_pxe": "boot_device_s", "power_cycle": "power_cycle_s", "call_hook": "hook_s",
        "check_ready": "ready_poll_s", "activate_reinstalled": "activate_s"}
