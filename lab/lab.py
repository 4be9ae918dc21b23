"""Lab: N hypervisor hosts on this machine, each with libvirtd on TCP and an IPMI BMC.

    with Lab(hosts=3) as lab:                       # up() on enter, down() on exit
        uuid = lab.define_guest("h1", "web1", metadata=lab.ha_metadata(priority=100))
        lab.power_off("h1")                         # kill -9 every process of h1

Everything the lab creates is recorded in its state file before it is created, so down()
works from another process (`python -m lab down`) and after a crash. See docs/lab.md.
"""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import guests, host as hostmod, keeper, power, procs, state as st, virt
from lab.faults import HostFaults
from lab.host import LabHost
from lab.registry import SEED_NAME, cache_seed, find_lab, reap_abandoned, teardown
from lab.simulate import HostSimulation
from lab.storage import LabStorage
from lab.virt import HostUnreachable

REPO_ROOT = Path(__file__).resolve().parents[1]


def _kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class Lab(HostFaults, HostSimulation, LabStorage):
    """Also power_off, partition, crash_guest, ... (lab/faults.py); refuse_migration, set_host_load,
    ... (lab/simulate.py); with storage=True, shared and host-local disks guarded by virtlockd
    (lab/storage.py). Labs of other processes, teardown and leftovers: lab/registry.py."""

    def __init__(self, hosts: int = 3, name: str | None = None, *, roots: st.Roots = st.Roots(),
                 detached: bool = False, boot_timeout: float = 30.0, install_delay_s: float = 3.0,
                 storage: bool = False):
        if not 1 <= hosts <= 200:
            raise ValueError(f"hosts must be 1..200, not {hosts}")
        self.n_hosts = hosts
        self.requested_name = name
        self.roots = roots
        self.detached = detached       # True: no owner pid; only `down` removes it
        self.boot_timeout = boot_timeout
        self.storage = storage
        self.install_delay_s = install_delay_s  # a PXE boot's simulated install (lab/power.py reinstall)
        self.domain_type = "kvm" if _kvm_usable() else "qemu"
        self.index: int | None = None
        self.name: str | None = name
        self.hosts: list[LabHost] = []
        self.bridge: str | None = None
        self.state_file: Path | None = None
        self._keeper: subprocess.Popen | None = None
        self._keeper_rec: dict | None = None
        self.daemons: list[dict] = []  # [{"name", "pid", "start"}]: lab processes outside any host

    # ---- lifecycle -----------------------------------------------------------------

    @classmethod
    def attach(cls, name: str, roots: st.Roots = st.Roots()) -> "Lab":
        """A Lab object for a lab already running (started by another process)."""
        path = find_lab(roots, name)
        if path is None:
            raise LookupError(f"no running lab named {name!r} under {roots.run}")
        data = st.read(path)
        lab = cls(len(data["hosts"]), data["name"], roots=roots, detached=data["owner"] is None)
        lab.index, lab.bridge, lab.state_file = data["index"], data["bridge"], path
        lab.hosts = [LabHost.from_dict(h) for h in data["hosts"]]
        lab._keeper_rec = data["keeper"]
        lab.daemons = data.get("daemons", [])
        lab.domain_type = data.get("domain_type", lab.domain_type)
        lab.storage = bool(data.get("storage"))
        lab.install_delay_s = data.get("install_delay_s", lab.install_delay_s)
        return lab

    def __enter__(self) -> "Lab":
        if self.state_file is None:
            self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def _allocate(self) -> None:
        if self.requested_name is not None and find_lab(self.roots, self.requested_name):
            raise FileExistsError(f"a lab named {self.requested_name!r} is already running")
        for index in range(st.MAX_INDEX + 1):
            if st.try_claim(self.roots, index) or (reap_abandoned(self.roots, index)
                                                   and st.try_claim(self.roots, index)):
                self.index = index
                self.state_file = st.state_path(self.roots, index)
                self.name = self.requested_name or st.lab_id(index)
                return
        raise RuntimeError(f"no free lab index under {self.roots.run} (0..{st.MAX_INDEX} in use)")

    def _state(self) -> dict:
        me = os.getpid()
        return {
            "name": self.name, "index": self.index, "domain_type": self.domain_type,
            "owner": None if self.detached else {"pid": me, "start": procs.start_time(me)},
            "bridge": self.bridge, "subnet": f"10.77.{self.index}.0/24",
            "gateway": f"10.77.{self.index}.1",
            "data_dir": str(st.data_dir(self.roots, self.index)),
            "keeper": self._keeper_rec, "hosts": [h.to_dict() for h in self.hosts],
            "daemons": self.daemons, "install_delay_s": self.install_delay_s, "storage": self.storage,
            "cache_seed": str(seed) if (seed := self._cache_seed()) else None,
        }

    def _save(self) -> None:
        st.write(self.state_file, self._state())

    def up(self) -> "Lab":
        """Bridge, namespaces, libvirtd per host, BMC per host; returns when every libvirtd answers."""
        if self.state_file is not None:
            raise RuntimeError(f"lab {self.name} is already up")
        self._allocate()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        idx = self.index
        data_dir = st.data_dir(self.roots, idx)
        self.hosts = [hostmod.make_host(idx, n, data_dir) for n in range(1, self.n_hosts + 1)]
        self.bridge = f"rl{idx}br"
        self._save()  # intent: every name is on disk before anything exists
        self._start_keeper()
        hostmod.create_bridge(self.bridge, f"10.77.{idx}.1/24")
        seed = self._cache_seed()
        for h in self.hosts:
            hostmod.prepare_dirs(h, self.hosts, seed)
            hostmod.create_host_net(h, self.bridge)
        if self.storage:
            self._setup_storage()
            self._save()
        first, rest = (self.hosts, []) if seed else (self.hosts[:1], self.hosts[1:])
        self._boot_all(first)
        if not seed:
            seed = self._make_cache_seed(self.hosts[0])
            for h in rest:
                shutil.copytree(seed, Path(h.dir) / "cache", symlinks=True, dirs_exist_ok=True)
            self._boot_all(rest)
        if self.storage:
            self._define_pools()
        for h in self.hosts:
            self.start_bmc(h)
        if self.detached:
            self._save()

    def _boot_all(self, hosts: list[LabHost]) -> None:
        """Start each host's libvirtd; return once each answers and knows its QEMU capabilities (so a
        test's first guest or statistics call on a fresh host does not pay for a probe)."""
        for h in hosts:
            power.start_libvirtd(h, self._keeper_rec["socket"])
        for h in hosts:
            power.wait_listening(h, self.boot_timeout)
            virt.wait_ready(h.uri, self.boot_timeout)
            virt.load_capabilities(h.uri)

    def _cache_seed(self) -> Path | None:
        return cache_seed(self.roots)

    def _make_cache_seed(self, h: LabHost) -> Path:
        """First lab on this machine: h1 probed every QEMU binary while booting; keep its cache for
        every host after."""
        seed = self.roots.data / SEED_NAME
        tmp = self.roots.data / f".{SEED_NAME}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(Path(h.dir) / "cache", tmp, symlinks=True)
        try:
            os.rename(tmp, seed)
        except OSError:  # another lab made it meanwhile: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
        return seed

    def _start_keeper(self) -> None:
        rdir = self.state_file.parent
        sock = str(rdir / "keeper.sock")
        log = open(rdir / "keeper.log", "ab")
        with log:
            self._keeper = subprocess.Popen(
                [sys.executable, "-m", "lab.keeper", sock], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                env=_python_env())
        pid = self._keeper.pid
        self._keeper_rec = {"pid": pid, "start": procs.start_time(pid), "socket": sock}
        self._save()
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if self._keeper.poll() is not None:
                raise RuntimeError(f"lab keeper exited ({self._keeper.returncode}): see {rdir}/keeper.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"lab keeper not ready after 10 s: see {rdir}/keeper.log")
            time.sleep(0.01)

    def down(self) -> None:
        """Tear down by recorded ids; idempotent."""
        if self.state_file is None:
            return
        # libvirt objects of this lab left in reference cycles (a domain held by an exception's traceback) are
        # freed now, while their daemons answer: freed by a later collection, the last one's virConnect close
        # waits for a reply from an address that no longer exists, until TCP gives up (CI: a test stalled 7 min)
        gc.collect()
        teardown(self.state_file, self._keeper)
        self._keeper = None

    # ---- lookups ---------------------------------------------------------------------

    def host(self, name: str | LabHost) -> LabHost:
        if isinstance(name, LabHost):
            return name
        for h in self.hosts:
            if h.name == name or h.netns == name:
                return h
        raise KeyError(f"lab {self.name} has no host {name!r} (has {[h.name for h in self.hosts]})")

    @property
    def keeper_socket(self) -> str:
        return self._keeper_rec["socket"]

    @property
    def gateway(self) -> str:
        """The root namespace's address on the lab bridge (Prometheus, remediator live there)."""
        return f"10.77.{self.index}.1"

    # ---- guests ----------------------------------------------------------------------

    ha_metadata = staticmethod(guests.ha_metadata)

    def guest_xml(self, name: str, *, uuid: str | None = None, memory_mib: int = 32,
                  vcpus: int = 1, metadata: str | None = None, disk: str | None = None,
                  disk_element: str | None = None, kernel: str | None = None) -> str:
        return guests.guest_xml(name, uuid=uuid, memory_mib=memory_mib, vcpus=vcpus, metadata=metadata,
                                domain_type=self.domain_type, disk=disk, disk_element=disk_element, kernel=kernel)

    def define_guest(self, host: str | LabHost, name: str, *, start: bool = True,
                     uuid: str | None = None, metadata: str | None = None,
                     memory_mib: int = 32, vcpus: int = 1, disk: str | None = None,
                     disk_element: str | None = None, kernel: str | None = None) -> str:
        """Define (and start) a tiny guest on host over qemu+tcp; returns its UUID. `disk`: a qcow2
        path as the host sees it (lab/images.py, lab.make_disk make them); `disk_element`: a whole
        <disk> element instead (guests.disk_xml); `kernel`: lab/firmware.py's writer."""
        xml = self.guest_xml(name, uuid=uuid, memory_mib=memory_mib, vcpus=vcpus, metadata=metadata, disk=disk,
                             disk_element=disk_element, kernel=kernel)
        return virt.define(self.host(host).uri, xml, start)

    def running(self, host: str | LabHost, *, inside: bool = False) -> dict[str, str]:
        """uuid -> name of running domains. Raises HostUnreachable when libvirtd cannot be
        reached. inside=True asks through the host's unix socket (works while partitioned)."""
        h = self.host(host)
        return virt.running(h.unix_uri if inside else h.uri)

    def where_running(self, uuid: str) -> list[str]:
        """The hosts whose libvirt runs the guest now, asked through each host's own socket; a host that
        is off, or dies while asked, runs nothing."""
        found = []
        for h in self.hosts:
            try:
                if self.is_on(h) and uuid in self.running(h, inside=True):
                    found.append(h.name)
            except HostUnreachable:
                continue
        return found

    def domain_state(self, host: str | LabHost, name: str, *, inside: bool = False) -> tuple[str, str]:
        """(state, reason), e.g. ('running', '1') or ('shutoff', 'crashed')."""
        h = self.host(host)
        return virt.state(h.unix_uri if inside else h.uri, name)

    def domains(self, host: str | LabHost, *, inside: bool = False) -> dict[str, tuple[str, str]]:
        h = self.host(host)
        return virt.all_domains(h.unix_uri if inside else h.uri)

    # ---- inside a host -----------------------------------------------------------------

    def exec(self, host: str | LabHost, argv: list[str], **run_kw) -> subprocess.CompletedProcess:
        """Run argv inside the host (its netns, mounts, hostname) and wait for it."""
        return subprocess.run(hostmod.in_host(self.host(host), argv), **run_kw)

    def add_service(self, host: str | LabHost, name: str, argv: list[str]) -> None:
        """A process of the host: started now (if the host is on) and at every power-on,
        killed by power loss. Output goes to <host.dir>/log/<name>.log."""
        h = self.host(host)
        if any(s["name"] == name for s in h.services):
            raise ValueError(f"{h.name} already has a service named {name!r}")
        h.services.append({"name": name, "argv": list(argv)})
        self._save()
        if power.is_on(h):
            power.start_service(h, self.keeper_socket, name, list(argv))

    def spawn_daemon(self, name: str, argv: list[str]) -> int:
        """A process of the lab itself, in the root namespace (not of a host: power does not touch
        it), recorded so that down() ends it. Output goes to <run dir>/<name>.log."""
        pid = keeper.spawn(self.keeper_socket, argv, str(self.state_file.parent / f"{name}.log"))
        self.daemons.append({"name": name, "pid": pid, "start": procs.start_time(pid)})
        self._save()
        return pid

    def daemon_alive(self, name: str) -> bool:
        return any(procs.alive(d["pid"], d["start"]) for d in self.daemons if d["name"] == name)

    # ---- reporting -------------------------------------------------------------------

    def status(self) -> dict:
        out = {"name": self.name, "index": self.index, "bridge": self.bridge,
               "gateway": self.gateway, "state_file": str(self.state_file),
               "domain_type": self.domain_type, "hosts": []}
        for h in self.hosts:
            out["hosts"].append({
                "name": h.name, "netns": h.netns, "address": h.address, "uri": h.uri,
                "unix_uri": h.unix_uri, "bmc_port": h.bmc_port, "bmc_user": h.bmc_user,
                "bmc_password": h.bmc_password, "bmc_alive": self.bmc_alive(h),
                "power": "on" if power.is_on(h) else "off",
                "link": "up" if hostmod.link_is_up(h) else "down",
                "packet_loss": hostmod.packet_loss(h),
                "services": [s["name"] for s in h.services], "dir": h.dir})
        return out

    def resources(self) -> dict:
        """What this lab created, to check that nothing is left after down()."""
        return {"netns": [h.netns for h in self.hosts], "links": [self.bridge] + [h.veth for h in self.hosts],
                "pids": [(h.bmc_pid, h.bmc_start) for h in self.hosts if h.bmc_pid]
                        + [(d["pid"], d["start"]) for d in self.daemons]
                        + ([(self._keeper_rec["pid"], self._keeper_rec["start"])] if self._keeper_rec else []),
                "state_file": str(self.state_file), "keeper": self._keeper_rec,
                "data_dir": str(st.data_dir(self.roots, self.index)) if self.index is not None else None}
