"""Disk images on lab hosts: base images and qcow2 overlays, as the host sees them.

A lab host's /var/lib/libvirt is its own directory (lab/host.py bind-mounts <host dir>/lib there),
so an image made here at /var/lib/libvirt/images/x.qcow2 exists on that host only: host-local
storage, like a hypervisor's local disk. `qemu-img` runs in the root namespace on the host's
directory; paths written into an overlay are the host's own (/var/lib/libvirt/...), so libvirtd
inside the host resolves them.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab.host import LabHost

HOST_LIB = "/var/lib/libvirt/"
IMAGES = "/var/lib/libvirt/images"


def on_disk(host: LabHost, path: str) -> Path:
    """Where the host's `path` (under /var/lib/libvirt) lives in the root namespace."""
    if not path.startswith(HOST_LIB):
        raise ValueError(f"{path}: lab hosts keep images under {HOST_LIB}")
    return Path(host.dir) / "lib" / path[len(HOST_LIB):]


def _qemu_img(*args: str) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def create_base(host: LabHost, path: str, size: str = "16M", fmt: str = "qcow2") -> None:
    """A base (golden) image at `path` on the host."""
    on_disk(host, path).parent.mkdir(parents=True, exist_ok=True)
    _qemu_img("create", "-q", "-f", fmt, str(on_disk(host, path)), size)


def create_overlay(host: LabHost, path: str, base: str, base_format: str = "qcow2") -> None:
    """A qcow2 overlay at `path` backed by the host's `base` (both as the host sees them)."""
    target = on_disk(host, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # -u: the backing path is the host's, not resolvable from here; the host checks it at start.
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", base, "-F", base_format, str(target),
              str(_virtual_size(on_disk(host, base))))


def _virtual_size(path: Path) -> int:
    return int(json.loads(_qemu_img("info", "--output=json", str(path)))["virtual-size"])


def info(host: LabHost, path: str) -> dict | None:
    """`qemu-img info` of the host's image (format, backing file and its format), None when absent."""
    target = on_disk(host, path)
    if not target.exists():
        return None
    return json.loads(_qemu_img("info", "--output=json", "-U", str(target)))
