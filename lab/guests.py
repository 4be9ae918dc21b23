"""The lab's guest: a disk-less domain with qboot firmware (starts in ~0.35 s, idles at ~0 CPU).

Pure: builds XML text only. docs/lab-facts.md explains why qboot and not SeaBIOS (20 SeaBIOS guests
take ~26 s to start and keep burning CPU) and why no disk (no real kernel boots in useful time
on this nested hypervisor).
"""
from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

HA_NAMESPACE = "urn:remediator:ha:1"
QBOOT_ROM = "/usr/share/qemu/qboot.rom"
QEMU = "/usr/bin/qemu-system-x86_64"


def ha_metadata(protected: bool = True, priority: int = 0, group: str | None = None,
                base_image: str | None = None, base_format: str | None = None) -> str:
    """The element the exporter reads from a domain's <metadata> to know it is protected (and, for the
    rebuild rung, which base image its disk is an overlay of)."""
    attrs = f'protected="{"true" if protected else "false"}" priority="{int(priority)}"'
    if group is not None:
        attrs += f" group={quoteattr(group)}"
    if base_image is not None:
        attrs += f" base-image={quoteattr(base_image)}"
    if base_format is not None:
        attrs += f" base-format={quoteattr(base_format)}"
    return f'<rem:ha xmlns:rem="{HA_NAMESPACE}" {attrs}/>'


def guest_xml(name: str, *, uuid: str | None = None, memory_mib: int = 32, vcpus: int = 1,
              metadata: str | None = None, domain_type: str = "kvm",
              loader: str = QBOOT_ROM, emulator: str = QEMU, disk: str | None = None) -> str:
    """Domain XML for a tiny guest; domain_type 'kvm', or 'qemu' (TCG) where /dev/kvm is absent.
    `disk`: the path of a qcow2 file attached as vda (nothing boots from it: qboot finds no OS and idles;
    QEMU opens it at start, so a missing file fails the start as it would on a real host)."""
    if domain_type not in ("kvm", "qemu"):
        raise ValueError(f"domain_type must be 'kvm' or 'qemu', not {domain_type!r}")
    lines = [f"<domain type='{domain_type}'>", f"  <name>{escape(name)}</name>"]
    if uuid is not None:
        lines.append(f"  <uuid>{escape(uuid)}</uuid>")
    lines += [f"  <memory unit='MiB'>{int(memory_mib)}</memory>", f"  <vcpu>{int(vcpus)}</vcpu>"]
    if metadata is not None:
        lines.append(f"  <metadata>{metadata}</metadata>")
    lines += [
        "  <os><type arch='x86_64' machine='pc'>hvm</type>"
        f"<loader type='rom'>{escape(loader)}</loader></os>",
        f"  <devices><emulator>{escape(emulator)}</emulator><console type='pty'/>" + (
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file={quoteattr(disk)}/>"
            "<target dev='vda' bus='virtio'/></disk>" if disk is not None else "") + "</devices>",
        "</domain>",
    ]
    return "\n".join(lines) + "\n"
