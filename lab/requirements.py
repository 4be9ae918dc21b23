"""Check that every component the lab and the lab-based tests need is present.

    python -m lab.requirements        # exit 1 naming each missing component

A missing component must fail a run loudly, never skip tests.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

COMMANDS = ("ip", "unshare", "nsenter", "libvirtd", "virsh", "qemu-system-x86_64", "prometheus",
            "prometheus-alertmanager", "promtool", "amtool", "fence_ipmilan", "ipmitool",
            "prometheus-libvirt-exporter", "corosync", "corosync-cfgtool", "pacemakerd", "cibadmin",
            "crm_mon", "docker-compose", "systemd-analyze", "openssl", "virtlockd", "qemu-img", "as", "ld",
            "mount", "umount")
FILES = ("/usr/share/qemu/qboot.rom", "/etc/libvirt/qemu.conf", "/usr/lib/ocf/resource.d/heartbeat/VirtualDomain",
         "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so")
MODULES = ("libvirt", "pyghmi", "grafana_foundation_sdk", "cheroot", "bcrypt", "sqlalchemy", "alembic", "psycopg")
# Debian packages giving each command, to say how to fix it.
PACKAGE_OF = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux",
              "libvirtd": "libvirt-daemon", "virsh": "libvirt-clients",
              "qemu-system-x86_64": "qemu-system-x86", "prometheus": "prometheus",
              "prometheus-alertmanager": "prometheus-alertmanager", "promtool": "prometheus",
              "amtool": "prometheus-alertmanager", "fence_ipmilan": "fence-agents",
              "ipmitool": "ipmitool", "prometheus-libvirt-exporter": "prometheus-libvirt-exporter",
              "corosync": "corosync", "corosync-cfgtool": "corosync", "pacemakerd": "pacemaker",
              "cibadmin": "pacemaker-cli-utils", "crm_mon": "pacemaker-cli-utils",
              "/usr/lib/ocf/resource.d/heartbeat/VirtualDomain": "resource-agents",
              "docker-compose": "docker-compose", "systemd-analyze": "systemd", "openssl": "openssl",
              "virtlockd": "libvirt-daemon", "qemu-img": "qemu-utils", "as": "binutils", "ld": "binutils",
              "mount": "mount", "umount": "mount",
              "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so": "libvirt-daemon",
              "/usr/share/qemu/qboot.rom": "qemu-system-data",
              "/etc/libvirt/qemu.conf": "make bootstrap (writes it)",
              "libvirt": "pip libvirt-python", "pyghmi": "pip pyghmi",
              "grafana_foundation_sdk": "pip grafana-foundation-sdk", "cheroot": "pip cheroot", "bcrypt": "pip bcrypt",
              "sqlalchemy": "pip SQLAlchemy", "alembic": "pip alembic", "psycopg": "pip psycopg[binary]"}


def missing(path: str | None = None, need_root: bool = True) -> list[str]:
    """Each missing component with how to get it; [] when all are present.

    Commands are looked up on PATH (or `path`): that is where the lab and tests run them from.
    """
    gone = []
    if need_root and os.geteuid() != 0:
        gone.append("root (the lab creates network namespaces and runs libvirtd)")
    search = path if path is not None else os.environ.get("PATH", "")
    for cmd in COMMANDS:
        if shutil.which(cmd, path=search) is None:
            gone.append(f"command {cmd} ({PACKAGE_OF[cmd]})")
    for f in FILES:
        if not Path(f).is_file():
            gone.append(f"file {f} ({PACKAGE_OF[f]})")
    if not any(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        gone.append("PostgreSQL server /usr/lib/postgresql/*/bin/postgres (postgresql; the store suite starts its own)")
    for mod in MODULES:
        if importlib.util.find_spec(mod) is None:
            gone.append(f"python module {mod} ({PACKAGE_OF[mod]})")
    return gone


def main() -> int:
    gone = missing()
    if gone:
        print("missing components:\n  " + "\n  ".join(gone), file=sys.stderr)
        return 1
    print("all lab components present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
