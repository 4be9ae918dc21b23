"""Lab: N hypervisor hosts on this machine, each with libvirtd on TCP and an IPMI BMC.

    with Lab(hosts=3) as lab:                       # up() on enter, down() on exit
        uuid = lab.define_guest("h1", "web1", metadata=lab.ha_metadata(priority=100))
        lab.power_off("h1")                         # kill -9 every process of h1

Everything the lab creates is recorded in its state file before it is created, so down()
works from another process (`python -m lab down`) and after a crash. See docs/lab.md.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import guests, host as hostmod, keeper, power, procs, state as st, storage as storagemod, virt
from lab.host import LabHost
from lab.simulate import HostSimulation
from lab.storage import LabStorage
from lab.virt import HostUnreachable

REPO_ROOT = Path(__file__).resolve().parents[1]
# The capabilities cache of a lab host that probed every QEMU binary (not only x86_64: the older
# "cache-seed" lacked qemu-system-i386, which each fresh libvirtd then probed at its first guest).
SEED_NAME = "cache-seed-every-arch"


def _kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def _owner_alive(pid: int, start: int) -> bool:
    return procs.alive(pid, start)


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def teardown(state_file: Path, keeper_proc: subprocess.Popen | None = None) -> None:
    """Remove everything a lab's state file records. Idempotent; safe after a crash."""
    data = st.read(state_file)
    run_dir = state_file.parent
    if data is not None:
        hosts = [LabHost.from_dict(h) for h in data.get("hosts", [])]
        for d in data.get("daemons", []):
            procs.kill(d["pid"], d["start"])
        for h in hosts:
            procs.kill(h.bmc_pid, h.bmc_start)
            if hostmod.netns_exists(h.netns):
                power.power_loss(h)
            hostmod.delete_host_net(h)
        if data.get("bridge"):
            hostmod.delete_bridge(data["bridge"])
        kp = data.get("keeper") or {}
        if procs.kill(kp.get("pid"), kp.get("start")):
            procs.wait_gone(kp["pid"], kp.get("start"), 5.0)
        if data.get("data_dir"):
            if data.get("storage"):
                storagemod.unmount_shared(Path(data["data_dir"]) / "shared")
            shutil.rmtree(data["data_dir"], ignore_errors=True)
    if keeper_proc is not None:
        keeper_proc.wait(timeout=5)  # our child: reap it, or it stays a zombie
    shutil.rmtree(run_dir, ignore_errors=True)  # last: this releases the index


def reap_abandoned(roots: st.Roots, index: int) -> bool:
    """Tear down the lab at index if its owner died; True when the index became free."""
    if not st.is_abandoned(roots, index, _owner_alive):
        return False
    if not st.claim_for_reaping(roots, index):
        return False
    print(f"lab: tearing down abandoned lab {st.lab_id(index)} (its owner is gone)", file=sys.stderr)
    teardown(st.state_path(roots, index))
    return True


def find_lab(roots: st.Roots, name: str) -> Path | None:
    for path, data in st.list_states(roots):
        if data.get("name") == name:
            return path
    return None


def cache_seed(roots: st.Roots = st.Roots()) -> Path | None:
    """The QEMU capabilities cache new lab hosts start from; None until a first lab made it."""
    for candidate in (hostmod.SYSTEM_CACHE, roots.data / SEED_NAME):
        if (candidate / "qemu" / "capabilities").is_dir() and any((candidate / "qemu" / "capabilities").iterdir()):
            return candidate
    return None


def leftovers(resources: dict) -> list[str]:
    """What still exists of a lab's resources (from Lab.resources()) after it was torn down.

    Every name derives from the lab's index, and an index is free only once the run dir (state
    file) of its last lab is gone: a state file recording another keeper is a newer lab (another
    test run on this machine) that took the index after ours was fully torn down; then only the
    recorded pids are ours to check."""
    left = [f"pid {pid}" for pid, start in resources["pids"] if procs.alive(pid, start)]
    now = st.read(Path(resources["state_file"])) if resources.get("state_file") else None
    if now is not None and resources.get("keeper") and now.get("keeper") != resources["keeper"]:
        return left
    left += [f"netns {n}" for n in resources["netns"] if hostmod.netns_exists(n)]
    left += [f"link {l}" for l in resources["links"] if l and hostmod.link_exists(l)]
    left += [f"netns pids {n}: {procs.netns_pids(n)}" for n in resources["netns"] if procs.netns_pids(n)]
    for key in ("state_file", "data_dir"):
        if resources[key] and Path(resources[key]).exists():
            left.append(f"{key} {resources[key]}")
    return left


class Lab(HostSimulation, LabStorage):
    """Also refuse_migration, set_host_load, ... (lab/simulate.py); with storage=True, shared and
    host-local disks guarded by virtlockd (lab/storage.py)."""

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

    # ---- faults ----------------------------------------------------------------------

    def crash_guest(self, host: str | LabHost, vm_name: str) -> int:
        """kill -9 the guest's qemu; libvirt then shows it shut off (crashed). Returns the pid."""
        h = self.host(host)
        pid = int((h.run_dir / "qemu" / f"{vm_name}.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        return pid

    def power_off(self, host: str | LabHost) -> None:
        """Power loss: kill -9 every process of the host's namespace."""
        power.power_loss(self.host(host))

    def restart_libvirtd(self, host: str | LabHost, down_s: float = 2.0) -> None:
        """libvirtd stopped (SIGTERM to its recorded pid) and started again after `down_s`; the
        guests' QEMUs keep running, as on a package upgrade. Returns once it answers again."""
        h = self.host(host)
        pid = hostmod.libvirtd_pid(h)
        if pid is None:
            raise RuntimeError(f"{h.name}: libvirtd has no pid file")
        start = procs.start_time(pid)
        os.kill(pid, signal.SIGTERM)
        procs.wait_gone(pid, start, 10.0)
        time.sleep(down_s)
        power.start_libvirtd(h, self.keeper_socket)
        power.wait_listening(h, self.boot_timeout)
        virt.wait_ready(h.uri, self.boot_timeout)

    def power_on(self, host: str | LabHost) -> None:
        """Boot: libvirtd (+ services); returns when libvirtd answers. Old guests stay shut off."""
        h = self.host(host)
        power.boot(h, self.keeper_socket, self.boot_timeout)
        virt.wait_ready(h.uri, self.boot_timeout)
        virt.load_capabilities(h.uri)

    def is_on(self, host: str | LabHost) -> bool:
        return power.is_on(self.host(host))

    def partition(self, host: str | LabHost) -> None:
        """Link down (the switch port): daemon and guests keep running, unreachable from outside."""
        hostmod.set_link(self.host(host), up=False)

    def heal(self, host: str | LabHost, timeout: float = 10.0) -> None:
        """Link up again; returns once the host's libvirtd answers at its address (if it is on).

        The bridge's neighbour entry for the host went FAILED while the link was down, and until
        it is resolved again connects fail with "No route to host": forget it, then wait."""
        h = self.host(host)
        hostmod.set_link(h, up=True)
        hostmod.forget_neighbour(h, self.bridge)
        if self.is_on(h):
            virt.wait_ready(h.uri, timeout)

    def packet_loss(self, host: str | LabHost, percent: int) -> None:
        """Drop `percent` % of the packets on the host's link, both ways (nftables in its netns)."""
        hostmod.set_packet_loss(self.host(host), percent)

    def clear_packet_loss(self, host: str | LabHost) -> None:
        hostmod.set_packet_loss(self.host(host), 0)

    def refuse_start(self, host: str | LabHost, vm_name: str, refuse: bool = True) -> None:
        """Make every start of vm_name on host fail (a libvirt hook refuses it), or allow it again."""
        hostmod.refuse_start(self.host(host), vm_name, refuse)

    def kill_bmc(self, host: str | LabHost) -> None:
        h = self.host(host)
        if procs.kill(h.bmc_pid, h.bmc_start):
            procs.wait_gone(h.bmc_pid, h.bmc_start, 5.0)
        h.bmc_pid = h.bmc_start = None
        self._save()

    def start_bmc(self, host: str | LabHost, timeout: float = 10.0) -> None:
        """Start the host's BMC (again on its recorded port, so its address does not change)."""
        h = self.host(host)
        if procs.alive(h.bmc_pid, h.bmc_start):
            return
        port_file = self.state_file.parent / f"{h.name}.bmc-port"
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "lab.bmc", "--state", str(self.state_file), "--host", h.name,
                "--port", str(h.bmc_port), "--port-file", str(port_file),
                "--user", h.bmc_user, "--password", h.bmc_password]
        pid = keeper.spawn(self.keeper_socket, argv, str(self.state_file.parent / f"{h.name}.bmc.log"))
        h.bmc_pid, h.bmc_start = pid, procs.start_time(pid)
        self._save()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if not procs.alive(pid, h.bmc_start) or time.monotonic() > deadline:
                log = self.state_file.parent / f"{h.name}.bmc.log"
                raise RuntimeError(f"BMC of {h.name} did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.01)
        h.bmc_port = int(port_file.read_text())
        self._save()

    def bmc_alive(self, host: str | LabHost) -> bool:
        h = self.host(host)
        return procs.alive(h.bmc_pid, h.bmc_start)

    def damage_boot(self, host: str | LabHost) -> None:
        """Remove the fake kernel and initrd from host.boot_dir (the exporter's boot check)."""
        hostmod.damage_boot(self.host(host))

    def repair_boot(self, host: str | LabHost) -> None:
        hostmod.repair_boot(self.host(host))

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
