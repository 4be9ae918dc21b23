"""The inventory: the hypervisor hosts with their fence devices, and the VMs declared highly available."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Mapping
from urllib.parse import urlparse

from pydantic import (BeforeValidator, Field, SecretStr, StrictInt, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from remediator.config.errors import fail, kind, relocated
from remediator.config.reprovision import Reprovision
from remediator.config.types import Record, Text

DEFAULT_FENCE_AGENT_DIRS = ("/usr/sbin", "/usr/bin", "/sbin")
LIBVIRT_URI_SCHEMES = re.compile(r"^(qemu|test|lxc|xen|libxl|ch)(\+(tcp|tls|ssh|unix|libssh2?|ext))?$")
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
FENCE_AGENT = re.compile(r"^fence_[a-z0-9_]+$")
FENCE_OPTION = re.compile(r"^[a-z][a-z0-9_]*$")
# The fencer sets these itself per call; letting the file set them would make `off` mean something else.
FENCE_OPTIONS_RESERVED = frozenset({"action", "o"})
# Options kept as SecretStr (never in a repr or a log): fence-agents' password, passwd, snmp_priv_passwd...
SECRET_FENCE_OPTION = re.compile(r"passw|secret|token")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _mapping(value: Any) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"expected a mapping, got {kind(value)}")
    return value


def _agent_options(value: Any) -> dict[str, str | SecretStr]:
    """Option values as the agent reads them on stdin (`key=value`): YAML `true` is "1", `false` drops it."""
    options: dict[str, str | SecretStr] = {}
    for name, v in _mapping(value).items():
        if not isinstance(name, str) or not FENCE_OPTION.match(name):
            raise fail("option names are lower-case words as the agent reads them on stdin (e.g. ipport)", key=str(name))
        if name in FENCE_OPTIONS_RESERVED:
            raise fail("set by the remediator for each call, not configurable", key=name)
        if isinstance(v, bool):
            if v:
                options[name] = "1"
            continue
        if not isinstance(v, (int, float, str, SecretStr)):
            raise fail(f"expected a string, number or boolean, got {kind(v)}", key=name)
        text = v.get_secret_value() if isinstance(v, SecretStr) else str(v)
        if "\n" in text or "\r" in text:
            raise fail("must be one line (options are passed on stdin as key=value lines)", key=name)
        options[name] = v if isinstance(v, SecretStr) else SecretStr(text) if SECRET_FENCE_OPTION.search(name) else text
    return options


def _labels(value: Any) -> dict[str, str]:
    out = {}
    for k, v in _mapping(value).items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise fail(f"expected a string, got {kind(v)}", key=str(k))
        out[str(k)] = str(v)
    return out


class FenceDevice(Record):
    """A fence-agents agent and its options, as Pacemaker's stonith resources and oVirt's power management give them."""

    agent: Text = Field(description="A fence-agents agent installed on this machine (fence_ipmilan, fence_redfish, ...).")
    options: Annotated[Mapping[str, str | SecretStr], BeforeValidator(_agent_options)] = Field(
        default_factory=dict,
        description="The agent's stdin options (`ip`, `ipport`, `username`, `password`, `lanplus`...); "
                    "`true` is sent as 1, `false` omits the option; `action` is the remediator's. "
                    "Options whose name has passw/secret/token are secrets.")

    @field_validator("agent")
    @classmethod
    def _installed(cls, agent: str, info: ValidationInfo) -> str:
        # The file's loader asks for the installed check (fence_agent_dirs); a device built in code is its own.
        dirs = (info.context or {}).get("fence_agent_dirs")
        if not FENCE_AGENT.match(agent) or (dirs is not None and not any(
                os.access(os.path.join(d, agent), os.X_OK) for d in dirs)):
            where = f" (looked in {', '.join(dirs)})" if dirs is not None else ""
            raise fail(f"unknown agent {agent!r}{where}")
        return agent


class HostConfig(Record):
    name: Text = Field(description="The host's name, as the exporter's `host` label says it.")
    uri: Text = Field(description="libvirt URI (qemu+tcp://..., qemu+tls://..., qemu+ssh://...).")
    # Every power device in order (Pacemaker's fencing levels): fencing tries each until one proves the
    # host off; boot control uses the first whose kind can set a boot device. The file's key is `fence`.
    power: tuple[FenceDevice, ...] = Field(
        (), validation_alias="fence",
        description="How to power the host off and prove it: one device, or a list tried in order (fencing "
                    "levels); absent: never fenced automatically, an operator confirms it off.",
        json_schema_extra={"doc_type": "mapping, or a list of them", "one_or_list": True})
    labels: Annotated[Mapping[str, str], BeforeValidator(_labels)] = Field(
        default_factory=dict, description="Free-form labels (`rack: r1`).")
    reprovision: Reprovision = Field(default_factory=Reprovision,
                                     description="Reinstalling the host once it is out of service (docs/runbooks.md).")

    @property
    def fence(self) -> FenceDevice | None:
        """The first power device (level 1)."""
        return self.power[0] if self.power else None

    @field_validator("power", mode="wrap")
    @classmethod
    def _one_or_levels(cls, value: Any, handler: Any, info: ValidationInfo) -> tuple[FenceDevice, ...]:
        if value is None:
            return ()
        if isinstance(value, dict):  # one device: its errors say `fence.agent`, not `fence[0].agent`
            try:
                return (FenceDevice.model_validate(value, context=info.context),)
            except ValidationError as e:
                raise relocated(e, FenceDevice) from None
        if isinstance(value, list) and not value:
            raise fail("an empty list: give at least one device, or leave fence out")
        if not isinstance(value, (list, tuple)):
            raise fail(f"expected a mapping (one device) or a list of them (fencing levels), got {kind(value)}")
        return handler(value)

    @model_validator(mode="after")
    def _pxe_needs_a_power_device(self) -> HostConfig:
        r = self.reprovision
        if r.pxe and not self.power and (r.damaged != "never" or r.fenced != "never"):
            return self.model_copy(update={"reprovision": r.model_copy(update={"pxe": False})})
        return self

    @field_validator("name")
    @classmethod
    def _host_name(cls, name: str) -> str:
        if not HOST_NAME.match(name):
            raise fail(f"not a valid host name: {name!r}")
        return name

    @field_validator("uri")
    @classmethod
    def _libvirt_uri(cls, uri: str) -> str:
        if not LIBVIRT_URI_SCHEMES.match(urlparse(uri).scheme):
            raise fail(f"not a libvirt URI: {uri!r}")
        return uri


def _uuid(value: Any) -> Any:
    if value is not None and isinstance(value, str) and not UUID.match(value):
        raise fail(f"not a UUID: {value!r}")
    return value.lower() if isinstance(value, str) else value


class VMConfig(Record):
    """A VM declared highly available. Matched by uuid when given, else by name."""

    name: Text = Field(description="The domain's name.")
    uuid: Annotated[Text, BeforeValidator(_uuid)] | None = Field(None, description="The domain's UUID; matched first.")
    priority: StrictInt = Field(0, description="Higher is recovered first.")
    group: Text | None = Field(None, description="Anti-affinity group: its VMs are kept on different hosts.")


def _absolute_dirs(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        for path in value:
            if isinstance(path, str) and not path.startswith("/"):
                raise fail(f"an absolute directory, got {path!r}")
        return tuple(p.rstrip("/") or "/" if isinstance(p, str) else p for p in value)
    return value


class Storage(Record):
    """Where VM disks live (docs/operations.md "Disks")."""

    shared_paths: Annotated[tuple[Text, ...], BeforeValidator(_absolute_dirs)] = Field(
        (), description="Directories of shared storage, mounted at the same path on every host: a VM whose disks all "
                        "are under one restarts anywhere that mounts it (never on a host whose exporter storage check "
                        "fails); any other file disk is host-local (rebuilt from its base-image when its host is "
                        "lost). Empty: disks are not told apart, every disk is taken as reachable everywhere.")


def unique_hosts(hosts: tuple[HostConfig, ...]) -> tuple[HostConfig, ...]:
    if not hosts:
        raise fail("required: at least one host")
    seen: dict[str, int] = {}
    for i, host in enumerate(hosts):
        if host.name in seen:
            raise fail(f"duplicate host {host.name!r} (also hosts[{seen[host.name]}])", key=f"[{i}].name")
        seen[host.name] = i
    return hosts


def unique_vms(vms: tuple[VMConfig, ...]) -> tuple[VMConfig, ...]:
    seen: set[str] = set()
    for i, vm in enumerate(vms):
        ident = vm.uuid or f"name:{vm.name}"
        if ident in seen:
            raise fail(f"declared twice: {vm.uuid or vm.name!r}", key=f"[{i}]")
        seen.add(ident)
    return vms
