"""Pure: libvirt's domain states and reasons by name, and what a domain's definition declares.

No I/O here: `parse_definition` takes the XML text libvirt returned, `vm_from_stats` the dict
one `getAllDomainStats` record holds. Both are tested without a hypervisor.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

# The project's XML namespace for HA declarations inside a domain's <metadata>.
HA_NAMESPACE = "urn:remediator:ha:1"

# virDomainState, in libvirt's order; the exporter publishes every one as a state set.
STATES: tuple[str, ...] = (
    "nostate",
    "running",
    "blocked",
    "paused",
    "shutdown",
    "shutoff",
    "crashed",
    "pmsuspended",
)
# The state set the exporter publishes (issue 4): every state but the never-reported "nostate".
PUBLISHED_STATES: tuple[str, ...] = STATES[1:]
# States in which the domain has a live QEMU process holding vCPUs and memory on the host.
ACTIVE_STATES = frozenset({"running", "blocked", "paused", "shutdown", "pmsuspended"})

# virDomain<State>Reason enums (libvirt include/libvirt/libvirt-domain.h), indexed by code.
REASONS: dict[str, tuple[str, ...]] = {
    "nostate": ("unknown",),
    "running": (
        "unknown",
        "booted",
        "migrated",
        "restored",
        "from_snapshot",
        "unpaused",
        "migration_canceled",
        "save_canceled",
        "wakeup",
        "crashed",
        "postcopy",
        "postcopy_failed",
    ),
    "blocked": ("unknown",),
    "paused": (
        "unknown",
        "user",
        "migration",
        "save",
        "dump",
        "ioerror",
        "watchdog",
        "from_snapshot",
        "shutting_down",
        "snapshot",
        "crashed",
        "starting_up",
        "postcopy",
        "postcopy_failed",
        "api_error",
    ),
    "shutdown": ("unknown", "user"),
    "shutoff": (
        "unknown",
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from_snapshot",
        "daemon",
    ),
    "crashed": ("unknown", "panicked"),
    "pmsuspended": ("unknown",),
}


def state_name(code: int) -> str:
    """libvirt's state code as a name; codes from a newer libvirt read as "nostate"."""
    return STATES[code] if 0 <= code < len(STATES) else "nostate"


def reason_name(state: str, code: int) -> str:
    """The reason code of `state` as a name; unknown codes keep their number visible."""
    names = REASONS.get(state, ("unknown",))
    return names[code] if 0 <= code < len(names) else f"code_{code}"


@dataclass(frozen=True)
class HADeclaration:
    """What `<rem:ha protected=".." priority=".." group=".." base-image=".." base-format=".." on-io-error=".."/>`
    declares; absent means not protected. `base_image` (a path on every host) is what the rebuild rung recreates
    the VM's qcow2 disk from (remediator/rebuild.py); empty means its disks are left as they are. `on_io_error`:
    wait, resume or restart_elsewhere when it pauses on a storage I/O error (empty: policy.on_io_error)."""

    protected: bool = False
    priority: int = 0
    group: str = ""
    base_image: str = ""
    base_format: str = "qcow2"
    on_io_error: str = ""


@dataclass(frozen=True)
class DomainDefinition:
    """The slowly-changing part of a domain, read from its XML and cached between scrapes."""

    name: str
    uuid: str
    vcpus: int
    memory_bytes: int
    ha: HADeclaration


@dataclass(frozen=True)
class DomainState:
    """The fast-changing part, read from one getAllDomainStats record every scrape."""

    state: str
    reason: str
    reason_code: int
    cpu_seconds: float | None  # None when the driver reports no CPU time for this domain


class DefinitionError(ValueError):
    """A domain's XML does not say what the exporter needs (names the missing part)."""


_MEMORY_UNITS = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


def parse_definition(xml_text: str) -> DomainDefinition:
    """Name, UUID, vCPUs, memory and HA declaration from a domain's XML."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise DefinitionError(f"domain XML does not parse: {err}") from err
    name = _required_text(root, "name")
    uuid = _required_text(root, "uuid")
    return DomainDefinition(
        name=name,
        uuid=uuid,
        vcpus=_vcpus(root),
        memory_bytes=_memory_bytes(root),
        ha=parse_ha(root.find("metadata")),
    )


def parse_ha(metadata: ET.Element | None) -> HADeclaration:
    """The HA declaration inside <metadata>; a missing or malformed element means not protected."""
    if metadata is None:
        return HADeclaration()
    element = metadata.find(f"{{{HA_NAMESPACE}}}ha")
    if element is None:
        return HADeclaration()
    protected = element.get("protected", "false").strip().lower() in ("true", "1", "yes")
    try:
        priority = int(element.get("priority", "0"))
    except ValueError:
        # A typo in the priority must not silently drop the VM's protection.
        priority = 0
    return HADeclaration(protected=protected, priority=priority, group=element.get("group", "").strip(),
                         base_image=element.get("base-image", "").strip(),
                         base_format=element.get("base-format", "qcow2").strip() or "qcow2",
                         on_io_error=element.get("on-io-error", "").strip())


def vm_state_from_stats(stats: dict) -> DomainState:
    """State, reason and CPU time from one record of getAllDomainStats(STATE | CPU_TOTAL)."""
    state = state_name(int(stats.get("state.state", 0)))
    reason_code = int(stats.get("state.reason", 0))
    cpu_ns = stats.get("cpu.time")
    return DomainState(
        state=state,
        reason=reason_name(state, reason_code),
        reason_code=reason_code,
        cpu_seconds=None if cpu_ns is None else cpu_ns / 1e9,
    )


def _required_text(root: ET.Element, tag: str) -> str:
    element = root.find(tag)
    if element is None or not (element.text or "").strip():
        raise DefinitionError(f"domain XML has no <{tag}>")
    return element.text.strip()


def _vcpus(root: ET.Element) -> int:
    element = root.find("vcpu")
    if element is None:
        raise DefinitionError("domain XML has no <vcpu>")
    # <vcpu current="2">8</vcpu>: 8 may be hot-plugged, 2 are online and scheduled.
    value = element.get("current") or element.text or ""
    try:
        return int(value)
    except ValueError as err:
        raise DefinitionError(f"domain XML <vcpu> is not a number: {value!r}") from err


def _memory_bytes(root: ET.Element) -> int:
    # <memory> is the most the guest can ever use: what the host must be able to back.
    element = root.find("memory")
    if element is None:
        raise DefinitionError("domain XML has no <memory>")
    unit = element.get("unit", "KiB").lower()
    if unit not in _MEMORY_UNITS:
        raise DefinitionError(f"domain XML <memory> has an unknown unit {unit!r}")
    try:
        return int(element.text or "") * _MEMORY_UNITS[unit]
    except ValueError as err:
        raise DefinitionError(f"domain XML <memory> is not a number: {element.text!r}") from err
