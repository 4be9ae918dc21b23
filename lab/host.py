"""One lab host: its network plumbing, its private directories, and how it boots.

A host is a network namespace plus, for each process it runs, a private mount/UTS namespace
in which per-host copies are bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/log/libvirt, /var/cache/libvirt, /etc/hosts and /etc/resolv.conf (docs/lab-facts.md lists the
traps each of them avoids). libvirtd and every service see the same "machine".
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab import figures

SYSTEM_QEMU_CONF = Path("/etc/libvirt/qemu.conf")   # written by scripts/bootstrap.sh
SYSTEM_CACHE = Path("/var/cache/libvirt")
# The bind-mount targets must exist in the root filesystem.
MOUNT_TARGETS = ("/etc/libvirt", "/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt",
                 "/var/cache/libvirt", "/srv/remediator-lab/shared", "/srv/remediator-lab/local")
LIBVIRTD_PORT = 16509
BOOT_FILES = ("vmlinuz-lab", "initrd.img-lab")


@dataclass
class LabHost:
    name: str            # "h1"
    n: int               # 1-based host number
    netns: str           # "rl<idx>h<n>": also the host's hostname
    address: str         # 10.77.<idx>.(10+n)
    uri: str             # qemu+tcp://<address>/system
    unix_uri: str        # qemu+unix:// through the host's socket file: works while partitioned
    veth: str            # root-namespace end of the host's link (the "switch port")
    dir: str             # private dirs of this host
    boot_dir: str        # fake kernel + initrd (the exporter's boot check looks here)
    bmc_port: int = 0    # IPMI (UDP) on 127.0.0.1
    bmc_user: str = "admin"
    bmc_password: str = "password"
    bmc_pid: int | None = None
    bmc_start: int | None = None
    services: list[dict] = field(default_factory=list)   # [{"name":..., "argv": [...]}]
    storage: bool = False  # shared + host-local storage mounted, virtlockd guarding disks (lab/storage.py)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LabHost":
        return cls(**d)

    @property
    def run_dir(self) -> Path:
        """The host's /run/libvirt, seen from the root namespace."""
        return Path(self.dir) / "run"

    @property
    def log_dir(self) -> Path:
        return Path(self.dir) / "log"

    @property
    def procfs_dir(self) -> Path:
        """The exporter's procfs root: loadavg and meminfo, real or simulated (lab/figures.py)."""
        return Path(self.dir) / "procfs"


def make_host(index: int, n: int, data_dir: Path) -> LabHost:
    netns = f"rl{index}h{n}"
    address = f"10.77.{index}.{10 + n}"
    hdir = data_dir / f"h{n}"
    return LabHost(
        name=f"h{n}", n=n, netns=netns, address=address,
        uri=f"qemu+tcp://{address}/system",
        unix_uri=f"qemu+unix:///system?socket={hdir}/run/libvirt-sock",
        veth=f"rl{index}h{n}v", dir=str(hdir), boot_dir=str(hdir / "boot"))


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


# ---- network ---------------------------------------------------------------------------

def create_bridge(bridge: str, address_cidr: str) -> None:
    _ip("link", "add", "name", bridge, "type", "bridge")
    _ip("addr", "add", address_cidr, "dev", bridge)
    _ip("link", "set", bridge, "up")


def create_host_net(host: LabHost, bridge: str) -> None:
    """Namespace + veth into the bridge. No default route: DNS stalls otherwise (docs/lab-facts.md)."""
    _ip("netns", "add", host.netns)
    _ip("link", "add", host.veth, "type", "veth", "peer", "name", f"{host.veth}p",
        "netns", host.netns)
    _ip("link", "set", host.veth, "master", bridge, "up")
    _ip("-n", host.netns, "link", "set", f"{host.veth}p", "name", "eth0")
    _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
    _ip("-n", host.netns, "link", "set", "eth0", "up")
    _ip("-n", host.netns, "link", "set", "lo", "up")


def set_link(host: LabHost, up: bool) -> None:
    _ip("link", "set", host.veth, "up" if up else "down")


def forget_neighbour(host: LabHost, bridge: str) -> None:
    """Drop the root namespace's ARP entry for the host (it may be FAILED after a partition)."""
    _ip("neigh", "flush", "to", host.address, "dev", bridge, check=False)


# Packet loss on the host's link, both directions, from nftables inside the host's namespace (this
# kernel has no netem: ../shared/notes/lab.md). Loopback inside the host is untouched. The table
# lives in the namespace, so it goes when the lab deletes the namespace.
LOSS_TABLE = "remediator_lab_loss"


def set_packet_loss(host: LabHost, percent: int) -> None:
    """Drop `percent` % of the packets in and out of the host's eth0 (0: drop none; 100 is partition())."""
    if not 0 <= percent <= 99:
        raise ValueError(f"packet loss must be 0..99 % (nft numgen's range; 100 % is a partition), not {percent}")
    rules = f"table inet {LOSS_TABLE} {{}}\ndelete table inet {LOSS_TABLE}\n"  # idempotent replace
    if percent:
        # counters: every packet on the link, then the dropped ones (packet_loss() reads them)
        drop = f"counter numgen random mod 100 < {percent} counter drop"
        rules += (f"table inet {LOSS_TABLE} {{\n"
                  f"  chain in {{ type filter hook input priority 0; policy accept; iifname \"eth0\" {drop}; }}\n"
                  f"  chain out {{ type filter hook output priority 0; policy accept; oifname \"eth0\" {drop}; }}\n"
                  f"}}\n")
    proc = _nft_in(host, ["-f", "-"], rules)
    if proc.returncode != 0:
        raise RuntimeError(f"nft in {host.netns}: {proc.stderr.strip()}")


def _nft_in(host: LabHost, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """nft inside the host's namespace. A power loss of the host (a fence) SIGKILLs every process in
    the namespace for a moment, nft included: it is run again, as the namespace and its rules remain."""
    for _ in range(100):
        proc = subprocess.run(["ip", "netns", "exec", host.netns, "nft", *args], input=stdin,
                              capture_output=True, text=True)
        if proc.returncode >= 0:
            return proc
        time.sleep(0.1)
    return proc


def packet_loss(host: LabHost) -> dict:
    """{"percent": set loss, "seen": packets on the link since, "dropped": of them} (zeros when none)."""
    proc = _nft_in(host, ["list", "table", "inet", LOSS_TABLE])
    rules = re.findall(r"counter packets (\d+) bytes \d+ numgen random mod 100 < (\d+) counter packets (\d+)",
                       proc.stdout) if proc.returncode == 0 else []
    if not rules:
        return {"percent": 0, "seen": 0, "dropped": 0}
    return {"percent": int(rules[0][1]), "seen": sum(int(r[0]) for r in rules),
            "dropped": sum(int(r[2]) for r in rules)}


def link_is_up(host: LabHost) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{host.veth}/flags").read_text(), 16)
    except FileNotFoundError:
        return False
    return bool(flags & 0x1)  # IFF_UP


def delete_host_net(host: LabHost) -> None:
    """Idempotent: each piece is removed only if it still exists.

    The veth goes first, explicitly: after `ip netns del` the kernel removes the namespace's
    links asynchronously, so a veth seen a moment ago may vanish under our own `ip link del`.
    """
    if link_exists(host.veth):
        proc = _ip("link", "del", host.veth, check=False)
        if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
            raise RuntimeError(f"ip link del {host.veth}: {proc.stderr.strip()}")
    if netns_exists(host.netns):
        _ip("netns", "del", host.netns)


def delete_bridge(bridge: str) -> None:
    if link_exists(bridge):
        _ip("link", "del", bridge)


# ---- files -----------------------------------------------------------------------------

def libvirtd_conf(address: str) -> str:
    return (f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "{address}"\n'
            f'auth_tcp = "none"\nauth_unix_rw = "none"\n'
            f'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n')


def etc_hosts(all_hosts: list[LabHost]) -> str:
    lines = ["127.0.0.1 localhost"]
    lines += [f"{h.address} {h.netns} {h.name}" for h in all_hosts]
    return "\n".join(lines) + "\n"


def prepare_dirs(host: LabHost, all_hosts: list[LabHost], cache_seed: Path | None, *,
                 keep_figures: bool = False) -> None:
    for target in MOUNT_TARGETS:
        os.makedirs(target, exist_ok=True)
    if not SYSTEM_QEMU_CONF.is_file():
        raise FileNotFoundError(f"{SYSTEM_QEMU_CONF} missing: run `make bootstrap` (it writes it)")
    hdir = Path(host.dir)
    for sub in ("etc", "run", "lib", "log", "boot"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    if cache_seed is not None and cache_seed.is_dir():
        # A seeded capabilities cache saves each fresh libvirtd a ~3.5 s QEMU probe.
        shutil.copytree(cache_seed, hdir / "cache", symlinks=True, dirs_exist_ok=True)
    else:
        (hdir / "cache").mkdir(exist_ok=True)
    (hdir / "etc" / "libvirtd.conf").write_text(libvirtd_conf(host.address))
    # libvirtd looks for hooks once, at start: install it now so refuse_start() and
    # refuse_migration() need no restart.
    (hdir / "etc" / "hooks").mkdir(exist_ok=True)
    for marker_dir in (REFUSE_DIR, REFUSE_MIGRATION_DIR):
        (hdir / "etc" / marker_dir).mkdir(exist_ok=True)
    hook = hdir / "etc" / "hooks" / "qemu"
    hook.write_text(QEMU_HOOK)
    hook.chmod(0o755)
    shutil.copy(SYSTEM_QEMU_CONF, hdir / "etc" / "qemu.conf")
    (hdir / "hosts").write_text(etc_hosts(all_hosts))
    # Nothing listens on 127.0.0.1:53 in the namespace: a lookup fails at once instead of
    # waiting for a resolver that cannot be reached.
    (hdir / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    repair_boot(host)
    if not keep_figures:
        figures.clear(host)


# What a reinstall replaces: every directory the host's processes see as their own (prepare_dirs makes them
# again from the clean template). The BMC's files (next-boot, power.log) are not the host's: they stay.
# The simulated kernel figures (procfs) stay too: they stand for the machine's load, not its software.
HOST_STATE = ("etc", "run", "lib", "log", "cache", "boot", "hosts", "resolv.conf")


def wipe_state(host: LabHost) -> None:
    """Everything the installed system had, gone (its libvirt config and domains, logs, boot files)."""
    hdir = Path(host.dir)
    for name in HOST_STATE:
        path = hdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# One libvirt qemu hook per host (argv: domain, operation, sub-operation; the domain XML on stdin).
# A non-zero exit fails the operation with the hook's stderr in libvirt's error (code 70,
# VIR_ERR_HOOK_SCRIPT_FAILED), as a host whose storage or network for that guest broke would:
# - "prepare begin" comes before every QEMU of the guest starts on this host: a cold start, and
#   also the incoming side of a live migration (libvirt calls "migrate begin", then "prepare").
#   So refuse_start refuses both: the host cannot run the guest at all.
# - "migrate begin" comes only on the destination of an incoming migration: refuse_migration
#   refuses the move into this host and leaves cold starts alone. For "migrate" the hook is a
#   filter whose stdout replaces the incoming XML; empty output keeps it unchanged, so print nothing.
REFUSE_DIR = "lab-refuse-start"
REFUSE_MIGRATION_DIR = "lab-refuse-migration"
QEMU_HOOK = f"""#!/bin/sh
# remediator lab (Lab.refuse_start / Lab.refuse_migration): refuse while a marker named after the guest exists
if [ "$2" = prepare ] && [ -e "/etc/libvirt/{REFUSE_DIR}/$1" ]; then
  echo "lab: start of $1 refused on this host" >&2
  exit 1
fi
if [ "$2" = migrate ] && [ -e "/etc/libvirt/{REFUSE_MIGRATION_DIR}/$1" ]; then
  echo "lab: migration of $1 into this host refused" >&2
  exit 1
fi
exit 0
"""


def _set_marker(host: LabHost, marker_dir: str, vm_name: str, present: bool) -> None:
    marker = Path(host.dir) / "etc" / marker_dir / vm_name
    if present:
        marker.touch()
    else:
        marker.unlink(missing_ok=True)


def refuse_start(host: LabHost, vm_name: str, refuse: bool = True) -> None:
    _set_marker(host, REFUSE_DIR, vm_name, refuse)


def refuse_migration(host: LabHost, vm_name: str, refuse: bool = True) -> None:
    _set_marker(host, REFUSE_MIGRATION_DIR, vm_name, refuse)


def repair_boot(host: LabHost) -> None:
    boot = Path(host.boot_dir)
    boot.mkdir(parents=True, exist_ok=True)
    for f in BOOT_FILES:
        (boot / f).write_bytes(b"remediator lab fake " + f.encode() + b"\n" * 64)


def damage_boot(host: LabHost) -> None:
    for f in BOOT_FILES:
        (Path(host.boot_dir) / f).unlink(missing_ok=True)


# ---- processes -------------------------------------------------------------------------

_VIEW_SCRIPT = """set -e
H="$1"; HOSTNAME_="$2"; shift 2
mount --bind "$H/etc" /etc/libvirt
mount --bind "$H/run" /run/libvirt
mount --bind "$H/lib" /var/lib/libvirt
mount --bind "$H/log" /var/log/libvirt
mount --bind "$H/cache" /var/cache/libvirt
mount --bind "$H/hosts" /etc/hosts
mount --bind "$H/resolv.conf" /etc/resolv.conf
# lab/storage.py: the lab's shared storage (the same directory on every host, as NFS would be) and
# this host's own pool, each at one fixed path on every host
if [ -e "$H/shared" ]; then mount --bind "$H/shared" /srv/remediator-lab/shared; fi
if [ -e "$H/local" ]; then mount --bind "$H/local" /srv/remediator-lab/local; fi
hostname "$HOSTNAME_"
exec "$@"
"""


def in_host(host: LabHost, argv: list[str]) -> list[str]:
    """argv wrapped to run inside the host: its netns, its own mounts and hostname."""
    return ["ip", "netns", "exec", host.netns,
            "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", _VIEW_SCRIPT, "lab-host", host.dir, host.netns, *argv]


def libvirtd_argv(storage: bool = False) -> list[str]:
    # Own pid file inside the host's run dir: the default /run/libvirtd.pid is shared and
    # the second host would die with "Failed to acquire pid file".
    argv = ["libvirtd", "--listen", "--pid-file", "/run/libvirt/libvirtd.pid"]
    if not storage:
        return argv
    # The lock manager's daemon first, in the same namespaces (its socket in the host's own
    # /run/libvirt), with its own pid file for the same reason; when it already runs (a libvirtd
    # restart) the second one exits and the first keeps the leases.
    return ["sh", "-c", 'virtlockd --daemon --pid-file /run/libvirt/virtlockd.pid; exec "$@"', "boot", *argv]


def libvirtd_pid(host: LabHost) -> int | None:
    try:
        return int((host.run_dir / "libvirtd.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
