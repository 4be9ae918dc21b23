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
                base_image: str | None = None, base_format: str | None = None, on_io_error: str | None = None) -> str:
    """The element the exporter reads from a domain's <metadata> to know it is protected (and, for the
    rebuild rung, which base image its disk is an overlay of; what to do when it pauses on an I/O error)."""
    attrs = f'protected="{"true" if protected else "false"}" priority="{int(priority)}"'
    for key, value in (("group", group), ("base-image", base_image), ("base-format", base_format),
                       ("on-io-error", on_io_error)):
        if value is not None:
            attrs += f" {key}={quoteattr(value)}"
    return f'<rem:ha xmlns:rem="{HA_NAMESPACE}" {attrs}/>'


def disk_xml(path: str, bus: str = "virtio", error_policy: str | None = None) -> str:
    """A qcow2 disk QEMU opens (and the lock manager leases); the guest does not boot from it.
    error_policy 'stop' or 'enospace': a failed write pauses the guest (reason ioerror)."""
    policy = f" error_policy={quoteattr(error_policy)}" if error_policy else ""
    dev = "vda" if bus == "virtio" else "hda"
    return (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'{policy}/>"
            f"<source file={quoteattr(path)}/><target dev='{dev}' bus={quoteattr(bus)}/></disk>")


def guest_xml(name: str, *, uuid: str | None = None, memory_mib: int = 32, vcpus: int = 1,
              metadata: str | None = None, domain_type: str = "kvm",
              loader: str = QBOOT_ROM, emulator: str = QEMU, disk: str | None = None,
              disk_element: str | None = None, kernel: str | None = None) -> str:
    """Domain XML for a tiny guest; domain_type 'kvm', or 'qemu' (TCG) where /dev/kvm is absent.
    `disk`: the path of a qcow2 file attached as vda (nothing boots from it: qboot finds no OS and idles;
    QEMU opens it at start, so a missing file fails the start as it would on a real host).
    `disk_element`: a whole <disk> element instead (disk_xml: bus, error policy); `kernel`: a multiboot
    image qboot loads through fw_cfg (lab/firmware.py)."""
    if disk is not None:
        disk_element = disk_xml(disk)
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
        f"<loader type='rom'>{escape(loader)}</loader>"
        + (f"<kernel>{escape(kernel)}</kernel>" if kernel else "") + "</os>",
        f"  <devices><emulator>{escape(emulator)}</emulator>{disk_element or ''}<console type='pty'/></devices>",
        "</domain>",
    ]
    return "\n".join(lines) + "\n"
