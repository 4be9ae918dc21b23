"""What a Pacemaker + Corosync cluster over the lab's hosts is configured with (pure: text only).

Two sets of timings are measured against the remediator (docs/peer-bench.md):
- `DEFAULTS`: what the packages ship. corosync's token 3000 ms (with 3 nodes and token_coefficient
  650 ms the real token is 3650 ms, consensus 1.2 x that = 4380 ms), the VirtualDomain agent's
  advertised monitor (interval 10 s, timeout 30 s), fence_ipmilan's power_wait 2 s.
- `TUNED`: as far as the projects' documentation supports: token 1000 ms (corosync.conf(5): the
  time to detect a failure; below about a second a busy node risks being declared lost, and
  fenced, for a late token), a 1 s VirtualDomain monitor (a `virsh domstate` per guest per second
  on every node), fence_ipmilan's power_wait 0 (the agent still waits for status off) and
  load-threshold 1000%: by default (80%) a node whose machine's load average is above 80 % per core
  throttles itself to one action at a time ("New throttle mode: extreme" in its log), which on a
  busy machine serializes the guests' starts; the cost is no back-off when the node is really
  overloaded.
Both use `stonith-action=off` (a lab host "reboots" in a second and the guests' location
preference would pull them back onto it) and no colocation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from xml.sax.saxutils import quoteattr


@dataclass(frozen=True)
class Timings:
    name: str
    token_ms: int | None      # None: corosync's default (3000)
    monitor_interval: str     # VirtualDomain recurring monitor
    monitor_timeout: str
    power_wait: int | None    # fence_ipmilan's; None: its default (2 s)
    load_threshold: str | None = None  # None: Pacemaker's default (80%)
    placement: str = "default"         # placement-strategy; "balanced" gives every node a capacity

    def describe(self) -> dict:
        token = self.token_ms if self.token_ms is not None else 3000
        real = token + 650  # token_coefficient 650 ms x (3 nodes - 2)
        return {"token_ms": token, "token_coefficient_ms": 650, "real_token_ms_3_nodes": real,
                "consensus_ms": round(1.2 * real), "virtualdomain_monitor_interval": self.monitor_interval,
                "virtualdomain_monitor_timeout": self.monitor_timeout,
                "fence_ipmilan_power_wait_s": self.power_wait if self.power_wait is not None else 2,
                "load_threshold": self.load_threshold or "80%",
                "stonith_action": "off", "placement_strategy": self.placement}


DEFAULTS = Timings("pacemaker_defaults", token_ms=None, monitor_interval="10s", monitor_timeout="30s",
                   power_wait=None)
TUNED = Timings("pacemaker_tuned", token_ms=1000, monitor_interval="1s", monitor_timeout="10s", power_wait=0,
                load_threshold="1000%")
# Tuned, placing by utilization: VirtualDomain sets each guest's (cpu, hv_memory, host_memory from its
# XML; autoset_utilization_* default true) and every node gets NODE_CAPACITY.
TUNED_BALANCED = replace(TUNED, name="pacemaker_tuned_balanced", placement="balanced")
NODE_CAPACITY = {"cpu": 8, "hv_memory": 2048, "host_memory": 2048}


@dataclass(frozen=True)
class Node:
    name: str        # the host's hostname: corosync's and Pacemaker's node name
    nodeid: int
    address: str     # the host's lab address (knet link 0)


@dataclass(frozen=True)
class Fence:
    node: str        # the node this device powers off
    ip: str          # where the peers reach its BMC (a relay on the bridge's gateway)
    port: int
    username: str
    password: str


def corosync_conf(cluster: str, nodes: list[Node], timings: Timings) -> str:
    token = f"\ttoken: {timings.token_ms}\n" if timings.token_ms is not None else ""
    nodelist = "".join(f"\tnode {{\n\t\tname: {n.name}\n\t\tnodeid: {n.nodeid}\n\t\tring0_addr: {n.address}\n\t}}\n"
                       for n in nodes)
    return (f"totem {{\n\tversion: 2\n\tcluster_name: {cluster}\n\ttransport: knet\n"
            f"\tcrypto_cipher: none\n\tcrypto_hash: none\n{token}}}\n"
            "logging {\n\tto_logfile: yes\n\tlogfile: /var/log/corosync/corosync.log\n"
            "\tto_syslog: no\n\tto_stderr: no\n\ttimestamp: hires\n}\n"
            "quorum {\n\tprovider: corosync_votequorum\n}\n"
            f"nodelist {{\n{nodelist}}}\n")


def _nvpairs(owner: str, pairs: dict) -> str:
    return "".join(f'<nvpair id={quoteattr(f"{owner}-{k}")} name={quoteattr(k)} value={quoteattr(str(v))}/>'
                   for k, v in pairs.items())


def _attrs(owner: str, pairs: dict) -> str:
    return f'<instance_attributes id={quoteattr(owner + "-ia")}>{_nvpairs(owner, pairs)}</instance_attributes>'


def cib_configuration(timings: Timings, nodes: list[Node], fences: list[Fence], guests: dict[str, str],
                      prefer: str) -> str:
    """The <configuration> section: stonith on, off as the action, one fence_ipmilan per node (never
    run on the node it fences), one VirtualDomain per guest (name -> XML file) preferring `prefer`."""
    options = {"stonith-enabled": "true", "stonith-action": "off"}
    if timings.load_threshold is not None:
        options["load-threshold"] = timings.load_threshold
    node_xml = ""
    if timings.placement != "default":
        options["placement-strategy"] = timings.placement
        node_xml = "".join(f'<node id="{n.nodeid}" uname="{n.name}"><utilization id="{n.name}-capacity">'
                           f'{_nvpairs(n.name, NODE_CAPACITY)}</utilization></node>' for n in nodes)
    props = _nvpairs("opt", options)
    resources, constraints = [], []
    for f in fences:
        rid = f"fence-{f.node}"
        options = {"ip": f.ip, "ipport": f.port, "username": f.username, "password": f.password,
                   "lanplus": "1", "pcmk_host_list": f.node}
        if timings.power_wait is not None:
            options["power_wait"] = timings.power_wait
        resources.append(f'<primitive id="{rid}" class="stonith" type="fence_ipmilan">{_attrs(rid, options)}</primitive>')
        constraints.append(f'<rsc_location id="avoid-{rid}" rsc="{rid}" node="{f.node}" score="-INFINITY"/>')
    for name, xml_path in guests.items():
        rid = f"vm-{name}"
        attrs = _attrs(rid, {"config": xml_path, "hypervisor": "qemu:///system", "force_stop": "true"})
        op = (f'<operations><op id="{rid}-monitor" name="monitor" interval="{timings.monitor_interval}" '
              f'timeout="{timings.monitor_timeout}"/></operations>')
        resources.append(f'<primitive id="{rid}" class="ocf" provider="heartbeat" type="VirtualDomain">{attrs}{op}</primitive>')
        constraints.append(f'<rsc_location id="prefer-{rid}" rsc="{rid}" node="{prefer}" score="100"/>')
    return ("<configuration><crm_config><cluster_property_set id=\"cib-bootstrap-options\">"
            f"{props}</cluster_property_set></crm_config><nodes>{node_xml}</nodes>"
            f"<resources>{''.join(resources)}</resources><constraints>{''.join(constraints)}</constraints>"
            "</configuration>")
