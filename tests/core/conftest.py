"""A small data center for the engine: three libvirt test-driver hosts, a real SQLite store, the real
libvirt edge, the real fencing edge running a tiny fence agent, and a Prometheus URL nobody answers.

Two stand-ins, named so, because libvirt's test driver has no power and no BMC:
- `PowerSwitch` marks hosts as powered off or cut off; `SwitchedHypervisors` (a subclass of the real
  edge, only `_lease` overridden) raises the edge's own `HostUnreachable` for such hosts, as it does
  for a dead libvirtd (code 38). Every other call is the real edge on the real test driver.
- `fence_coretest` is a real fence agent as far as the Fencer knows (options on stdin, `off` and
  `status` with the standard exit codes), whose "power" is a file per host in the switch's directory.
"""

from __future__ import annotations

import os
import socket
import stat
import uuid as uuidlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from remediator.config import parse_config
from remediator.edges.fencing import Fencer
from remediator.edges.libvirt import HostUnreachable, Hypervisors
from remediator.edges.prometheus import LoadSource
from remediator.engine import Engine
from remediator.metrics import Metrics
from remediator.reconcile import sync_inventory
from remediator.store import open_store

NOW = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)
HA = "<metadata><rem:ha xmlns:rem='urn:remediator:ha:1' protected='true' priority='{p}' group='{g}'/></metadata>"

AGENT = """#!/bin/sh
# fence_coretest: a fence agent for the core tests. Reads key=value options on stdin like every
# fence agent; its "power" is the file $statedir/$port.off. mode=dead plays a BMC that lost power.
while IFS='=' read -r key value; do
  case "$key" in
    action) action="$value" ;; port) port="$value" ;; statedir) statedir="$value" ;; mode) mode="$value" ;;
  esac
done
echo "$action $port" >> "$statedir/agent.log"
if [ "$mode" = dead ]; then echo "Failed: Unable to obtain correct plug status or plug is not available"; exit 1; fi
case "$action" in
  off) touch "$statedir/$port.off"; echo "Success: Powered OFF"; exit 0 ;;
  status) if [ -e "$statedir/$port.off" ]; then echo "Status: OFF"; exit 2; else echo "Status: ON"; exit 0; fi ;;
esac
exit 1
"""


def domain_xml(name: str, uuid: str, running: bool, priority: int = 0, group: str = "", vcpus: int = 1) -> str:
    state = "" if running else "<test:runstate xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>5</test:runstate>"
    return (f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>"
            f"<vcpu>{vcpus}</vcpu><os><type>hvm</type></os>{HA.format(p=priority, g=group)}{state}</domain>")


def node_xml(*domains: str, cpus: int = 8) -> str:
    return (f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores><threads>1</threads>"
            f"<active>{cpus}</active><mhz>2000</mhz><model>x86_64</model></cpu><memory>16777216</memory>"
            f"{''.join(domains)}</node>")


def vm_uuid(name: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, name))


class PowerSwitch:
    """Which test hosts are off (fenced through the agent's file) or cut off (partition, power loss)."""

    def __init__(self, statedir: Path):
        self.statedir = statedir
        self.cut: set[str] = set()

    def is_off(self, host: str) -> bool:
        return (self.statedir / f"{host}.off").exists()

    def agent_calls(self) -> list[str]:
        log = self.statedir / "agent.log"
        return log.read_text().splitlines() if log.exists() else []


class SwitchedHypervisors(Hypervisors):
    """Stand-in (see module doc): the real edge, with hosts the switch made unreachable."""

    def __init__(self, hosts, switch: PowerSwitch):
        super().__init__(hosts, connect_timeout=3)
        self.switch = switch

    def _lease(self, host):
        if host in self.switch.cut or self.switch.is_off(host):
            raise HostUnreachable(self._uris[host], "host cut off by the test")
        return super()._lease(host)

    def raw(self, host):
        """The underlying test-driver connection, to change a host behind the remediator's back (an
        in-process driver's connection is the one every thread of the edge shares)."""
        with super()._lease(host) as conn:
            return conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DataCenter:
    def __init__(self, tmp_path: Path, layout: dict[str, list[str]], *, dead_bmc: tuple[str, ...] = (),
                 policy: str = "", running: bool = True, cpus: dict[str, int] | None = None,
                 dry_run: bool = False):
        self.tmp = tmp_path
        agents = tmp_path / "agents"
        agents.mkdir()
        agent = agents / "fence_coretest"
        agent.write_text(AGENT)
        agent.chmod(agent.stat().st_mode | stat.S_IEXEC)
        statedir = tmp_path / "power"
        statedir.mkdir()
        self.switch = PowerSwitch(statedir)
        uris, hosts_yaml = {}, []
        self.vms: dict[str, str] = {}
        for host, names in layout.items():
            doms = [domain_xml(n, vm_uuid(n), running, priority=int(n.rsplit("p", 1)[-1]) if "p" in n else 0)
                    for n in names]
            self.vms.update({n: vm_uuid(n) for n in names})
            path = tmp_path / f"{host}.xml"
            path.write_text(node_xml(*doms, cpus=(cpus or {}).get(host, 8)))
            uris[host] = f"test://{path}"
            mode = "dead" if host in dead_bmc else "ok"
            hosts_yaml.append(f"  - {{name: {host}, uri: 'test://{path}', fence: {{agent: fence_coretest, "
                              f"options: {{port: {host}, statedir: '{statedir}', mode: {mode}}}}}}}")
        self.config = parse_config(
            "auth: none\n" + ("dry_run: true\n" if dry_run else "") +
            f"prometheus: {{url: 'http://127.0.0.1:{_free_port()}', timeout_s: 0.5}}\n"
            f"store: {{url: 'sqlite:///{tmp_path}/state.db'}}\n"
            "hosts:\n" + "\n".join(hosts_yaml) + "\n"
            "policy:\n  max_concurrent_actions: 3\n"
            "  backoff: {initial_s: 0.01, max_s: 0.05}\n" + policy,
            env={}, fence_agent_dirs=[str(agents)])
        os.environ["PATH"] = f"{agents}:{os.environ['PATH']}"
        self.hv = SwitchedHypervisors(uris, self.switch)
        self.store = open_store(f"sqlite:///{tmp_path}/state.db")
        self.metrics = Metrics()
        self.fencer = Fencer(self.config.fence_devices, timeout=10)
        self.load = LoadSource(self.config.prometheus.url, timeout=0.5)
        self.engine = self.new_engine()

    def new_engine(self) -> Engine:
        return Engine(self.config, self.store, self.hv, self.fencer, self.load, self.metrics)

    def power_on(self, host: str) -> None:
        """A fenced or cut-off host comes back: like a rebooted host, its guests are shut off, still defined."""
        (self.switch.statedir / f"{host}.off").unlink(missing_ok=True)
        self.switch.cut.discard(host)
        for dom in self.hv.raw(host).listAllDomains():
            if dom.isActive():
                dom.destroy()

    def sync(self):
        return sync_inventory(self.config, self.store, self.hv, NOW)

    def running(self) -> dict[str, list[str]]:
        """uuid -> hosts where it is alive, over every host the switch has not cut (the true world)."""
        seen: dict[str, list[str]] = {}
        for host in self.config.host_uris:
            if host in self.switch.cut or self.switch.is_off(host):
                continue
            for d in self.hv.domains(host):
                if d.alive:
                    seen.setdefault(d.uuid, []).append(host)
        return seen

    def settle(self, rounds: int = 50) -> None:
        """Let the engine finish: wait for actions, fire retry timers at once, until nothing is left
        but the re-check of a host that answered while its alert fires (a standing watch that lasts
        until the alert resolves, not unfinished work: a test fires it with fire_timers_now)."""
        for _ in range(rounds):
            assert self.engine.wait_idle(30), "actions still running after 30 s"
            if all(event.detail.get("state") == "host_rechecking" for _, _, event in self.engine.pending_timers()):
                return
            self.engine.fire_timers_now()
        raise AssertionError("the engine kept arming timers")

    def close(self):
        self.engine.shutdown()
        self.hv.close()
        self.store.close()


@pytest.fixture
def make_dc(tmp_path):
    made = []
    old_path = os.environ["PATH"]

    def make(layout, **kw) -> DataCenter:
        dc = DataCenter(tmp_path, layout, **kw)
        made.append(dc)
        return dc

    yield make
    for dc in made:
        dc.close()
    os.environ["PATH"] = old_path
