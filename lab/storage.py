"""Lab storage: a shared directory at the same path on every host (as an NFS mount would be), a
host-local pool per host, qcow2 overlays of a small base image, and libvirt's lock manager.

- Shared: one size-limited tmpfs (the "NFS export") mounted in the root namespace at
  `<data dir>/shared`, bind-mounted at SHARED_PATH in every process of every host. Its size limit is
  what `fill_shared_storage` exhausts (ENOSPC: a guest disk with error_policy='stop' pauses).
- Host-local: `<host dir>/local`, bind-mounted at LOCAL_PATH on its own host only; also a libvirt
  dir pool "local" (autostarted), so the remediator can recreate a disk there through libvirt.
- Leases: each host runs virtlockd (own pid file, socket in its own /run/libvirt) and qemu.conf says
  `lock_manager = "lockd"`; qemu-lockd.conf puts the lockspace on the shared storage, so a disk
  leased by one host's QEMU cannot be opened by another host's. A power loss kills the host's
  virtlockd and so releases its leases (as the lease expiry would on a real cluster: docs/operations.md).

`self` is a Lab (mixin, like lab/simulate.py). See docs/lab.md "Storage".
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab import procs, state as st
from lab.host import LabHost

SHARED_PATH = "/srv/remediator-lab/shared"
LOCAL_PATH = "/srv/remediator-lab/local"
LOCKSPACE_PATH = f"{SHARED_PATH}/lockspace"
BASE_IMAGE = "base.qcow2"
SHARED_SIZE_MIB = 64
DISK_SIZE_MIB = 16
FILLER = ".lab-filler"

QEMU_CONF_LOCKD = '\n# remediator lab (lab/storage.py): disk leases through virtlockd\nlock_manager = "lockd"\n'
LOCKD_CONF = (
    "# remediator lab (lab/storage.py)\n"
    "auto_disk_leases = 1\n"          # every disk gets a lease without a <lease> element
    "require_lease_for_disks = 1\n"   # a disk that cannot be leased is not opened
    f'file_lockspace_dir = "{LOCKSPACE_PATH}"\n')  # one lease file per disk path, on the shared storage


def pool_xml(name: str, path: str) -> str:
    return (f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>")


def prepare_host(host: LabHost, shared_real: Path) -> None:
    """The host's storage dirs and lock manager config (before its libvirtd first starts)."""
    hdir = Path(host.dir)
    (hdir / "local").mkdir(exist_ok=True)
    shared_link = hdir / "shared"
    if not shared_link.is_symlink():
        shared_link.symlink_to(shared_real)
    qemu_conf = hdir / "etc" / "qemu.conf"
    if "lockd" not in qemu_conf.read_text():
        with qemu_conf.open("a") as f:
            f.write(QEMU_CONF_LOCKD)
    (hdir / "etc" / "qemu-lockd.conf").write_text(LOCKD_CONF)


def mount_shared(shared_real: Path, size_mib: int = SHARED_SIZE_MIB) -> None:
    shared_real.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(shared_real):
        _run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "remediator-lab-shared",
              str(shared_real)])
    (shared_real / "lockspace").mkdir(exist_ok=True)


def unmount_shared(shared_real: Path) -> None:
    if os.path.ismount(shared_real):
        _run(["umount", "-l", str(shared_real)])


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def create_overlay(real_path: Path, backing_in_host: str, size_mib: int = DISK_SIZE_MIB) -> None:
    """A qcow2 overlay whose backing file is named by its path inside the hosts (-u: that path need not
    exist in the root namespace)."""
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", backing_in_host, "-F", "qcow2",
          str(real_path), f"{size_mib}M"])


def open_by(real_path: Path) -> list[int]:
    """Pids with the file open (every lab host shares this kernel, so /proc sees every QEMU)."""
    try:
        target = os.stat(real_path)
    except FileNotFoundError:
        return []

    def has_it_open(path: str) -> bool:
        for fd in os.scandir(f"{path}/fd"):
            try:
                if procs.same_file(os.stat(fd.path), target):
                    return True
            except OSError:
                continue  # closed meanwhile
        return False

    return sorted(procs.pids_where(has_it_open))


def posix_lock_holders(inode: int) -> list[int]:
    """Pids holding a POSIX (fcntl) lock on the inode, from /proc/locks."""
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 00:2e:5678 0 EOF"
        if len(fields) >= 6 and fields[1] == "POSIX" and fields[5].rsplit(":", 1)[-1] == str(inode):
            holders.append(int(fields[4]))
    return sorted(set(holders))


class LabStorage:
    hosts: list[LabHost]
    index: int | None
    roots: st.Roots
    storage: bool

    def host(self, name: str | LabHost) -> LabHost:  # provided by Lab
        raise NotImplementedError

    @property
    def shared_dir(self) -> Path:
        """The shared storage as the root namespace sees it (SHARED_PATH inside every host)."""
        return st.data_dir(self.roots, self.index) / "shared"

    def local_dir(self, host: str | LabHost) -> Path:
        """The host's own pool as the root namespace sees it (LOCAL_PATH inside that host)."""
        return Path(self.host(host).dir) / "local"

    def real_path(self, path_in_host: str, host: str | LabHost | None = None) -> Path:
        """A disk path as the hosts name it -> the file in the root namespace."""
        if path_in_host.startswith(SHARED_PATH + "/"):
            return self.shared_dir / path_in_host[len(SHARED_PATH) + 1:]
        if path_in_host.startswith(LOCAL_PATH + "/") and host is not None:
            return self.local_dir(host) / path_in_host[len(LOCAL_PATH) + 1:]
        raise ValueError(f"{path_in_host} is on no lab storage (or names no host for a local path)")

    def _setup_storage(self) -> None:
        mount_shared(self.shared_dir)
        create_overlay_base = self.shared_dir / BASE_IMAGE
        if not create_overlay_base.exists():
            _run(["qemu-img", "create", "-q", "-f", "qcow2", str(create_overlay_base), f"{DISK_SIZE_MIB}M"])
        for h in self.hosts:
            h.storage = True
            prepare_host(h, self.shared_dir)

    def _define_pools(self) -> None:
        for h in self.hosts:
            for name, path in (("local", LOCAL_PATH), ("shared", SHARED_PATH)):
                self.exec(h, ["sh", "-c", f"virsh pool-define /dev/stdin >/dev/null && virsh pool-autostart {name} "
                                          f">/dev/null && virsh pool-start {name} >/dev/null"],
                          input=pool_xml(name, path), text=True, check=True, capture_output=True)

    @property
    def base_image(self) -> str:
        """The base image every lab disk is an overlay of, as the hosts name it."""
        return f"{SHARED_PATH}/{BASE_IMAGE}"

    def make_disk(self, name: str, host: str | LabHost | None = None) -> str:
        """A qcow2 overlay of the base image for guest `name`: on the shared storage, or (host=...)
        in that host's own pool. Returns its path as the hosts name it."""
        if host is None:
            path, real = f"{SHARED_PATH}/{name}.qcow2", self.shared_dir / f"{name}.qcow2"
        else:
            path, real = f"{LOCAL_PATH}/{name}.qcow2", self.local_dir(host) / f"{name}.qcow2"
        create_overlay(real, self.base_image)
        return path

    def disk_openers(self, path_in_host: str, host: str | LabHost | None = None) -> dict[int, str]:
        """pid -> host name of every process that has the disk file open now."""
        owner = {}
        for h in self.hosts:
            for pid in procs.netns_pids(h.netns):
                owner[pid] = h.name
        return {pid: owner.get(pid, "root") for pid in open_by(self.real_path(path_in_host, host))}

    def lease_holders(self, path_in_host: str) -> dict[int, str]:
        """pid -> host of the virtlockd holding the disk's lease (its lock file in the lockspace,
        named by the SHA-256 of the disk's path)."""
        import hashlib
        lease = self.shared_dir / "lockspace" / hashlib.sha256(path_in_host.encode()).hexdigest()
        if not lease.exists():
            return {}
        owner = {pid: h.name for h in self.hosts for pid in procs.netns_pids(h.netns)}
        return {pid: owner.get(pid, "root") for pid in posix_lock_holders(os.stat(lease).st_ino)}

    # ---- faults ----------------------------------------------------------------------
    def fill_shared_storage(self) -> int:
        """Fill the shared storage to the last byte (a full NFS export): writes that need a new block
        fail with ENOSPC. Returns the bytes written."""
        filler = self.shared_dir / FILLER
        free = os.statvfs(self.shared_dir)
        size = free.f_bavail * free.f_frsize
        with open(filler, "ab") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError:
                pass
            chunk = b"\0" * (1 << 16)
            while True:  # what fallocate rounded off, a chunk at a time
                try:
                    f.write(chunk)
                    f.flush()
                except OSError:
                    break
        return filler.stat().st_size

    def free_shared_storage(self) -> None:
        (self.shared_dir / FILLER).unlink(missing_ok=True)

    def fail_shared_mount(self, host: str | LabHost) -> None:
        """The host loses its shared mount (an NFS mount gone): unmounted in every process of the host.
        Its running QEMUs keep their open files; new opens and the exporter's check fail."""
        for pid in procs.netns_pids(self.host(host).netns):
            subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "-l", SHARED_PATH], capture_output=True)

    def restore_shared_mount(self, host: str | LabHost) -> None:
        for pid in procs.netns_pids(self.host(host).netns):
            subprocess.run(["nsenter", "-t", str(pid), "-m", "sh", "-c",
                            f"mountpoint -q {SHARED_PATH} || mount --bind {self.shared_dir} {SHARED_PATH}"],
                           capture_output=True)
