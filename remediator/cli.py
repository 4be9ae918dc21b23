"""Command line: `remediator serve|status|plan`.

  remediator serve  --config FILE              the webhook + API under cheroot (HTTP or HTTPS), the engine and its timers
  remediator status --config FILE [--api URL]  tables: hosts, protected VMs, open incidents
  (--api and host: --cacert FILE, and --cert FILE --key FILE when the service requires client certificates)
  remediator plan   --config FILE --evacuate HOST
                                               what placement would do with HOST's protected VMs now;
                                               changes nothing (exit 3 when some VM has no place)
  remediator host activate NAME [--reason R] --api URL
                                               return a repaired host to service (exit 1 when refused)
  remediator host maintenance NAME on|off [--reason R] --api URL
  remediator host reprovision NAME [--reason R] --api URL
                                               drain a host by live migration, or return it

--config defaults to $REMEDIATOR_CONFIG, else /etc/remediator/config.yml.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Iterable, Sequence

from remediator import __version__
from remediator.config import IO_ERROR_POLICIES, Config, ConfigError, load_config
from remediator.protect import set_protection
from remediator.store import StoreError, open_store

log = logging.getLogger("remediator")

DEFAULT_CONFIG = "/etc/remediator/config.yml"
EXIT_CONFIG = 2
EXIT_UNPLACED = 3


def add_tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cacert", metavar="FILE", help="CA of the service's HTTPS certificate (default: the system's, "
                                                   "or $REQUESTS_CA_BUNDLE)")
    p.add_argument("--cert", metavar="FILE", help="client certificate, when the service requires one "
                                                 "(listen.tls.client_ca_file)")
    p.add_argument("--key", metavar="FILE", help="the client certificate's key")


def tls_options(args: argparse.Namespace) -> dict:
    """requests' verify and cert for the client, from --cacert/--cert/--key."""
    return {"verify": args.cacert or True, "cert": (args.cert, args.key) if args.cert else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="remediator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default=os.environ.get("REMEDIATOR_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)
    config_default = os.environ.get("REMEDIATOR_CONFIG", DEFAULT_CONFIG)

    p = sub.add_parser("serve", help="run the service")
    p.add_argument("--config", default=config_default)

    p = sub.add_parser("status", help="hosts, protected VMs and open incidents")
    p.add_argument("--config", default=config_default)
    p.add_argument("--api", metavar="URL", help="ask a running service (e.g. http://127.0.0.1:9180) instead of "
                                                "reading the store")
    add_tls_options(p)

    p = sub.add_parser("plan", help="what placement would do now, changing nothing")
    p.add_argument("--config", default=config_default)
    p.add_argument("--evacuate", metavar="HOST", required=True, help="place HOST's protected VMs on the others")

    p = sub.add_parser("host", help="an operator's request about a host, carried out by the running service")
    # the options follow the host's name (`remediator host activate h1 --reason R --api URL`, as the
    # docs write it): on the sub-commands, since options of `host` itself would have to come before them
    host_options = argparse.ArgumentParser(add_help=False)
    host_options.add_argument("--config", default=config_default)
    host_options.add_argument("--api", metavar="URL", default=os.environ.get("REMEDIATOR_API", "http://127.0.0.1:9180"))
    host_options.add_argument("--reason", default="")
    add_tls_options(host_options)
    hosts = p.add_subparsers(dest="host_command", required=True)
    hosts.add_parser("activate", parents=[host_options],
                     help="return a fenced, cordoned or down host to service").add_argument("name")
    hosts.add_parser("reprovision", parents=[host_options],
                     help="reinstall a damaged (drained) or fenced host over PXE and/or its provisioning hook, "
                          "then activate it").add_argument("name")
    m = hosts.add_parser("maintenance", parents=[host_options],
                         help="on: drain by live migration; off: schedulable again")
    m.add_argument("name")
    m.add_argument("state", choices=["on", "off"])

    p = sub.add_parser("protect", help="write a VM's protection metadata on its host (through libvirt)")
    p.add_argument("vm", help="the domain's name or UUID")
    p.add_argument("--config", default=config_default)
    p.add_argument("--priority", type=int, default=0, help="higher is placed first (default 0)")
    p.add_argument("--group", help="anti-affinity group: members are kept on different hosts")
    p.add_argument("--base-image", help="what a host-local disk is recreated from when its host is lost")
    p.add_argument("--on-io-error", choices=IO_ERROR_POLICIES,
                   help="when paused on a storage I/O error (default: the service's policy.on_io_error)")
    p = sub.add_parser("unprotect", help="remove a VM's protection metadata on its host")
    p.add_argument("vm", help="the domain's name or UUID")
    p.add_argument("--config", default=config_default)

    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every run of every job at INFO
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "serve":
            from remediator.serve import serve

            return serve(config)
        if args.command == "status":
            return status(config, api=args.api, out=sys.stdout, tls=tls_options(args))
        if args.command == "host":
            return host_request(config, args, out=sys.stdout)
        if args.command in ("protect", "unprotect"):
            return set_protection(config, args.vm, protect=args.command == "protect", out=sys.stdout,
                                  **({"priority": args.priority, "group": args.group, "base_image": args.base_image,
                                      "on_io_error": args.on_io_error} if args.command == "protect" else {}))
        return plan_evacuation(config, args.evacuate, out=sys.stdout)
    except StoreError as e:
        print(f"remediator: store: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- status


def status(config: Config, *, api: str | None, out, tls: dict | None = None) -> int:
    if api:
        hosts, vms, incidents = _status_from_api(config, api, tls or {})
    else:
        from remediator.web.context import plain
        from remediator.web.views import hosts_view, vms_view

        with open_store(config.store.url) as store:
            hosts = hosts_view(config, store)
            vms = vms_view(config, store)
            incidents = [plain(i) for i in store.list_incidents(open_only=True, limit=1000)]
    storm = hosts.get("storm") or {}
    out.write(f"storm hold: {'ACTIVE - ' + str(storm.get('reason', '')) if storm.get('active') else 'no'}\n")
    out.write(f"load: {hosts.get('load_source') or 'none recorded'} (at {hosts.get('load_at') or '-'})\n\n")
    out.write("HOSTS\n")
    out.write(table(
        ["NAME", "CONDITION", "SCHEDULABLE", "LOAD1", "VMS", "INCIDENT", "REASON"],
        [[h["name"], h["condition"], "yes" if h["schedulable"] else "no",
          _fmt((h.get("load") or {}).get("load1")), len(h["vms"]), h["open_incident"] or "-", h["reason"]]
         for h in hosts["hosts"]],
    ))
    out.write("\nPROTECTED VMS\n")
    out.write(table(
        ["NAME", "UUID", "HOST", "PRIORITY", "GROUP", "DEFINITION"],
        [[v["name"], v["uuid"] or "?", v["host"] or "-", v["priority"], v["group"] or "-",
          "stored" if v["definition"] else "none"] for v in vms],
    ))
    out.write("\nOPEN INCIDENTS\n")
    out.write(table(
        ["ID", "SUBJECT", "STATE", "ATTEMPTS", "OPENED", "REASON"],
        [[i["id"], _subject(i), i["state"], i["attempts"], i["opened_at"][:19], i["reason"]] for i in incidents],
    ) if incidents else "(none)\n")
    return 0


def _status_from_api(config: Config, api: str, tls: dict) -> tuple[dict, list, list]:
    from remediator.client import Client

    client = Client(config, api, command="remediator status", tls=tls)
    return client.get("/hosts"), client.get("/vms")["vms"], client.get("/incidents?open=true")["incidents"]


def host_request(config: Config, args: argparse.Namespace, *, out) -> int:
    from remediator.client import Client

    client = Client(config, args.api, command=f"remediator host {args.host_command}", tls=tls_options(args))
    if args.host_command in ("activate", "reprovision"):
        ok, words = client.host_request(args.name, args.host_command, {"reason": args.reason})
    else:
        ok, words = client.host_request(args.name, "maintenance", {"on": args.state == "on", "reason": args.reason})
    out.write(f"{args.name}: {words}\n")
    return 0 if ok else 1


def _subject(incident: dict) -> str:
    if incident.get("vm_name"):
        return f"vm {incident['vm_name']} on {incident['host']}"
    return f"host {incident['host']}" if incident["subject"].startswith("host:") else incident["subject"]


# ---------------------------------------------------------------- plan


def plan_evacuation(config: Config, host: str, *, out) -> int:
    """Ask libvirt (and Prometheus) for the hosts as they are now and run placement; change nothing."""
    from remediator.edges.libvirt import HostUnreachable, Hypervisors
    from remediator.model import HostCapacity, HostCondition
    from remediator.placement import Overcommit, place

    if config.host(host) is None:
        print(f"remediator plan: host {host!r} is not in the inventory ({config.source})", file=sys.stderr)
        return EXIT_CONFIG
    hypervisors = Hypervisors(config.host_uris, connect_timeout=config.libvirt_connect_timeout_s)
    try:
        with open_store(config.store.url) as store:
            states = store.host_states()
            known = store.list_vms()
        vms = [v for v in known if v.host == host and (v.protected or config.vm(uuid=v.uuid, name=v.name))]
        try:
            live = {d.uuid for d in hypervisors.domains(host)}
            origin = f"{host} answers; its protected VMs: {len(vms)} stored, {len(live & {v.uuid for v in vms})} defined there"
        except HostUnreachable as e:
            origin = f"{host} is unreachable ({e.reason}); planning from stored definitions"
        capacities: list[HostCapacity] = []
        notes: list[str] = []
        for h in config.hosts:
            if h.name == host:
                continue
            condition = states[h.name].condition if h.name in states else HostCondition.UP
            try:
                cpus, memory = hypervisors.capacity(h.name)
                domains = [d for d in hypervisors.domains(h.name)]
            except HostUnreachable as e:
                notes.append(f"{h.name}: unreachable ({e.reason})")
                capacities.append(HostCapacity(h.name, 0, 0, condition=HostCondition.DOWN, labels=h.labels))
                continue
            alive = [d for d in domains if d.alive]
            capacities.append(HostCapacity(
                h.name, cpus, memory,
                vcpus_allocated=sum(d.vcpus for d in alive),
                memory_allocated_bytes=sum(d.memory_bytes for d in alive),
                condition=condition, labels=h.labels, vms=frozenset(d.uuid for d in domains),
            ))
    finally:
        hypervisors.close()
    capacities, load_note = _with_load(config, capacities)
    ratios = Overcommit(cpu=config.policy.overcommit.cpu, memory=config.policy.overcommit.memory)
    result = place(capacities, vms, ratios, group_of={v.uuid: v.group for v in known}, exclude=[host])

    out.write(f"evacuate {host}: {origin}\nload: {load_note}\n")
    for note in notes:
        out.write(f"note: {note}\n")
    out.write("\nHOSTS\n")
    out.write(table(["NAME", "CONDITION", "CPUS", "VCPUS", "MEMORY MIB", "ALLOCATED MIB", "LOAD1"],
                    [[c.name, c.condition.value, c.cpus, c.vcpus_allocated, c.memory_bytes >> 20,
                      c.memory_allocated_bytes >> 20, _fmt(c.load1)] for c in capacities]))
    out.write("\nPLAN (nothing changed)\n")
    by_uuid = {v.uuid: v for v in vms}
    rows = [[v.name, v.priority, v.vcpus, v.memory_bytes >> 20, target, ""] for u, target in
            result.assignments.items() for v in [by_uuid[u]]]
    rows += [[by_uuid[u].name, by_uuid[u].priority, by_uuid[u].vcpus, by_uuid[u].memory_bytes >> 20, "-", why]
             for u, why in result.unplaced.items()]
    out.write(table(["VM", "PRIORITY", "VCPUS", "MEMORY MIB", "TARGET", "WHY NOT"], rows) if rows
              else f"(no protected VMs stored for {host})\n")
    return 0 if result.complete else EXIT_UNPLACED


def _with_load(config: Config, hosts: list) -> tuple[list, str]:
    """Fill load from Prometheus in one query; without it placement falls back to libvirt allocation."""
    from dataclasses import replace

    from remediator.edges.prometheus import LoadSource, PrometheusUnavailable

    if config.prometheus.url is None:
        return hosts, "libvirt allocation (no prometheus.url configured)"
    try:
        loads = LoadSource(config.prometheus.url, config.prometheus.timeout_s).host_load([h.name for h in hosts])
    except PrometheusUnavailable as e:
        return hosts, f"libvirt allocation (Prometheus unavailable: {e})"
    filled = [replace(h, load1=loads[h.name].load1, memory_available_bytes=loads[h.name].memory_available_bytes)
              if h.name in loads else h for h in hosts]
    return filled, f"Prometheus {config.prometheus.url} ({len(loads)} of {len(hosts)} hosts reported)"


# ---------------------------------------------------------------- output


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in cells)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
