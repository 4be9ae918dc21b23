"""A Pacemaker + Corosync cluster over a lab's hosts: the peer the remediator is measured against.

    with Lab(3) as lab:
        cluster = Cluster(lab, TUNED, guests={"app-0": xml, ...}, prefer="h1").start()
        lab.power_off("h1")              # corosync notices, the others fence h1 through its BMC
        cluster.placement()              # {"app-0": "rl3h2", ...} as crm_mon sees it

Each node is a service of its host (lab.add_service), so a power loss kills it and power-on starts
it again. Inside the host's own mount namespace the node gets private copies of what the cluster
keeps per node (bind mounts), fresh tmpfs where its daemons talk (/run/crm, /run/resource-agents,
/dev/shm: libqb's ring buffers) and its own corosync pid file (/run/corosync.pid is otherwise one
lock for every node, and the second says "Another Corosync instance is already running").
Fencing: fence_ipmilan against the lab's BMCs, through a UDP relay on the bridge's gateway (the
BMCs listen on the root namespace's loopback, which no host can reach). lab.md has the traps.
Never imported by the service.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from lab import procs
from lab.lab import Lab
from lab.pacemaker_config import Fence, Node, Timings, cib_configuration, corosync_conf

# Per-node private copies (source in the root filesystem -> name under the node's dir).
PRIVATE_DIRS = {"/etc/corosync": "etc-corosync", "/var/lib/corosync": "lib-corosync",
                "/var/log/corosync": "log-corosync", "/var/lib/pacemaker": "lib-pacemaker",
                "/var/log/pacemaker": "log-pacemaker"}
TMPFS = ("/run/crm", "/run/resource-agents", "/dev/shm")
PID_FILE = "/run/corosync.pid"
SERVICE = "pacemaker"
# The first DC election waits dc-deadtime (20 s) for every node before it elects; a node throttled by
# the machine's load starts one guest at a time.
FORM_TIMEOUT_S = 120.0
START_TIMEOUT_S = 180.0

# Runs inside the host (after lab.host's view script): private dirs, tmpfs, pid file, then corosync
# in the background and pacemakerd in its place once corosync answers.
NODE_SCRIPT = """set -e
C="$1"
mount --bind "$C/etc-corosync" /etc/corosync
mount --bind "$C/lib-corosync" /var/lib/corosync
mount --bind "$C/log-corosync" /var/log/corosync
mount --bind "$C/lib-pacemaker" /var/lib/pacemaker
mount --bind "$C/log-pacemaker" /var/log/pacemaker
mount --bind "$C/corosync.pid" /run/corosync.pid
mount -t tmpfs -o mode=0750 tmpfs /run/crm
chown hacluster:haclient /run/crm
mount -t tmpfs -o mode=1777 tmpfs /run/resource-agents
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
corosync -f &
until corosync-cfgtool -s >/dev/null 2>&1; do sleep 0.05; done
export PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none
exec pacemakerd
"""


def node_name(host) -> str:
    return host.netns  # the host's hostname, which is what Pacemaker calls the node


class Cluster:
    def __init__(self, lab: Lab, timings: Timings, *, guests: dict[str, str], prefer: str):
        """guests: name -> domain XML (with a <uuid>); they start on host `prefer` (a location preference)."""
        self.lab = lab
        self.timings = timings
        self.guests = guests
        self.prefer = lab.host(prefer)
        self.dir = Path(lab.hosts[0].dir).parent / "pacemaker"  # in the lab's data dir: down() removes it

    # ---- set up ------------------------------------------------------------------------
    def start(self) -> "Cluster":
        """Nodes up, cluster formed, configuration loaded, every guest started; returns self."""
        for target in (*TMPFS, *PRIVATE_DIRS):
            os.makedirs(target, exist_ok=True)
        Path(PID_FILE).touch()  # a bind mount needs its target to exist
        xml_files = self._write_guests()
        nodes = [Node(node_name(h), h.n, h.address) for h in self.lab.hosts]
        conf = corosync_conf(f"lab{self.lab.index}", nodes, self.timings)
        for h in self.lab.hosts:
            self._prepare_node(h, conf)
        relay_ports = self._start_relay()
        for h in self.lab.hosts:
            self.lab.add_service(h, SERVICE, ["sh", "-c", NODE_SCRIPT, "pcmk-node", str(self.node_dir(h))])
        self.wait(lambda: self._online() == {node_name(h) for h in self.lab.hosts} and self._dc(),
                  FORM_TIMEOUT_S, "every node online and a DC elected", on_timeout=self.crm_mon)
        fences = [Fence(node_name(h), self.lab.gateway, relay_ports[str(h.bmc_port)], h.bmc_user, h.bmc_password)
                  for h in self.lab.hosts]
        config = cib_configuration(self.timings, nodes, fences, xml_files, node_name(self.prefer))
        self.run(self.prefer, ["cibadmin", "--replace", "--scope", "configuration", "--xml-text", config])
        want = {f"vm-{g}": node_name(self.prefer) for g in self.guests}
        self.wait(lambda: want.items() <= self.resources().items(), START_TIMEOUT_S,
                  f"every guest started on {self.prefer.name}", on_timeout=self.crm_mon)
        return self

    def node_dir(self, host) -> Path:
        return Path(host.dir) / "pacemaker"

    def _write_guests(self) -> dict[str, str]:
        """One XML per guest where every node reads it (VirtualDomain's `config`)."""
        gdir = self.dir / "guests"
        gdir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, xml in self.guests.items():
            path = gdir / f"{name}.xml"
            path.write_text(xml)
            paths[name] = str(path)
        return paths

    def _prepare_node(self, host, conf: str) -> None:
        ndir = self.node_dir(host)
        shutil.rmtree(ndir, ignore_errors=True)
        ndir.mkdir(parents=True)
        for src, name in PRIVATE_DIRS.items():
            # cp -a keeps hacluster:haclient ownership (the CIB daemon runs as hacluster)
            subprocess.run(["cp", "-a", src, str(ndir / name)], check=True)
        (ndir / "etc-corosync" / "corosync.conf").write_text(conf)
        (ndir / "corosync.pid").touch()

    def _start_relay(self, timeout: float = 10.0) -> dict[str, int]:
        port_file = self.dir / "relay-ports.json"
        port_file.unlink(missing_ok=True)
        self.lab.spawn_daemon("bmc-relay", [sys.executable, "-m", "lab.udp_relay", "--listen", self.lab.gateway,
                                            "--port-file", str(port_file)]
                              + [str(h.bmc_port) for h in self.lab.hosts])
        self.wait(port_file.exists, timeout, "the BMC relay's ports")
        return json.loads(port_file.read_text())

    # ---- inside a node -----------------------------------------------------------------
    def pacemakerd_pid(self, host) -> int | None:
        for pid in procs.netns_pids(host.netns):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "pacemakerd":
                    return pid
            except OSError:
                continue
        return None

    def run(self, host, argv: list[str], timeout: float = 30.0) -> str:
        """argv inside the node (its netns, mounts and hostname: where its daemons' IPC is)."""
        pid = self.pacemakerd_pid(self.lab.host(host))
        if pid is None:
            raise RuntimeError(f"no pacemakerd on {self.lab.host(host).name}")
        proc = subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "-u", "--", *argv],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} on {self.lab.host(host).name}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def _status(self, host=None) -> ET.Element | None:
        """crm_mon's view from a live node (the first one on and answering)."""
        for h in ([self.lab.host(host)] if host else self.lab.hosts):
            try:
                return ET.fromstring(self.run(h, ["crm_mon", "-1", "--output-as=xml"], timeout=10))
            except (RuntimeError, subprocess.TimeoutExpired, ET.ParseError):
                continue
        return None

    def _online(self) -> set[str]:
        status = self._status()
        if status is None:
            return set()
        return {n.get("name") for n in status.iter("node") if n.get("online") == "true"}

    def _dc(self) -> bool:
        status = self._status()
        dc = status.find("summary/current_dc") if status is not None else None
        return dc is not None and dc.get("present") == "true"

    def resources(self) -> dict[str, str]:
        """resource id -> the node where crm_mon says it is started."""
        status = self._status()
        out = {}
        for r in (status.iter("resource") if status is not None else ()):
            if r.get("role") == "Started":
                for n in r.iter("node"):
                    out[r.get("id")] = n.get("name")
        return out

    def placement(self) -> dict[str, str]:
        """guest name -> node name, for the guests the cluster says are started."""
        return {rid[3:]: node for rid, node in self.resources().items() if rid.startswith("vm-")}

    def log_dirs(self, host) -> dict[str, Path]:
        ndir = self.node_dir(self.lab.host(host))
        return {"corosync": ndir / "log-corosync" / "corosync.log",
                "pacemaker": ndir / "log-pacemaker" / "pacemaker.log"}

    def crm_mon(self) -> str:
        """crm_mon's text from the first node that answers (for error messages)."""
        for h in self.lab.hosts:
            try:
                return self.run(h, ["crm_mon", "-1", "-r"], timeout=10)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                last = str(e)
        return f"no node answers crm_mon: {last}"

    @staticmethod
    def wait(condition, timeout: float, what: str, interval: float = 0.2, on_timeout=None) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                context = f"\n{on_timeout()}" if on_timeout else ""
                raise TimeoutError(f"pacemaker cluster: not within {timeout} s: {what}{context}")
            time.sleep(interval)
