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
                                               drain a host by live migration, or return it

--config defaults to $REMEDIATOR_CONFIG, else /etc/remediator/config.yml.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
from typing import Any, Iterable, Sequence

from remediator import __version__
from remediator.config import Config, ConfigError, load_config
from remediator.store import StoreError, open_store
from remediator.store.database import redacted

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
    m = hosts.add_parser("maintenance", parents=[host_options],
                         help="on: drain by live migration; off: schedulable again")
    m.add_argument("name")
    m.add_argument("state", choices=["on", "off"])

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
            return serve(config)
        if args.command == "status":
            return status(config, api=args.api, out=sys.stdout, tls=tls_options(args))
        if args.command == "host":
            return host_request(config, args, out=sys.stdout)
        return plan_evacuation(config, args.evacuate, out=sys.stdout)
    except StoreError as e:
        print(f"remediator: store: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- serve


def build_engine(config: Config, store: Any, metrics: Any, leadership: Any = None) -> Any | None:
    """The engine with its edges, built from the config; None when remediator.engine is not installed.

    Without an engine the service still validates and stores every alert (nothing is lost), and says so."""
    if importlib.util.find_spec("remediator.engine") is None:
        log.warning("remediator.engine is not installed: alerts are stored but nothing is acted on")
        return None
    from remediator.edges.fencing import Fencer
    from remediator.edges.libvirt import Hypervisors
    from remediator.edges.prometheus import LoadSource
    from remediator.engine import Engine

    # The leader acts only under its lease: every call to a host or a BMC checks the dispatch deadline
    # right before it is sent, and every engine write carries the epoch (store/fenced.py).
    gate = leadership.check_dispatch if leadership is not None else None
    hypervisors = Hypervisors(config.host_uris, connect_timeout=config.libvirt_connect_timeout_s, gate=gate)
    fencer = Fencer(config.fence_devices, timeout=config.policy.action_timeouts.fence_s, gate=gate)
    if leadership is not None:
        from remediator.store.fenced import FencedStore

        store = FencedStore(store, leadership.token, leadership.refused)
    load = LoadSource(config.prometheus.url, config.prometheus.timeout_s) if config.prometheus.url else None
    if load is None:
        log.warning("no prometheus.url: placement uses the allocation libvirt reports")
    events = None
    if config.policy.fast_path:
        from remediator.edges.libvirt_events import DomainEvents

        events = DomainEvents(config.host_uris, connect_timeout=config.libvirt_connect_timeout_s)
    return Engine(config, store, hypervisors, fencer, load, metrics, events=events)


# Timer job -> the engine method it calls (scheduler.INTERVALS gives the intervals).
# "tick" only wakes the engine's loop: the loop is the one consumer of pending alerts and events.
ENGINE_JOBS = {"tick": "notify", "inventory-sync": "sync_inventory", "reconcile": "reconcile"}


def engine_jobs(engine: Any) -> dict[str, Any]:
    """The timer jobs the engine provides; a missing one is named in the log, not silently skipped."""
    jobs = {}
    for job_id, method in ENGINE_JOBS.items():
        fn = getattr(engine, method, None)
        if fn is None:
            log.warning("timer %s disabled: the engine has no %s()", job_id, method)
            continue
        jobs[job_id] = fn
    return jobs


def leader_only(jobs: dict[str, Any], leadership: Any) -> dict[str, Any]:
    """The timer jobs, run only on the replica that holds the lease (a standby acts on nothing)."""
    from remediator.leadership import LeaseLost

    def only_leading(job_id: str, fn: Any) -> Any:
        def run() -> Any:
            if not leadership.may_dispatch():
                return None
            try:
                return fn()
            except LeaseLost as err:  # the lease lapsed while it ran: the next leader runs it
                log.warning("timer %s stopped: %s", job_id, err)
                return None
        return run
    return {job_id: only_leading(job_id, fn) for job_id, fn in jobs.items()}


def make_server(config: Config, app: Any) -> Any:
    """cheroot's WSGI server, bound (listen.port 0 picks a free port), with TLS when listen.tls is set.

    cheroot rather than waitress: the same threaded in-process server, but with TLS of its own
    (Python's ssl), so the credentials Alertmanager and operators send never cross the network in
    clear without a proxy in front. With listen.tls.client_ca_file, a client must also present a
    certificate signed by that CA (Alertmanager's tls_config cert_file/key_file)."""
    import ssl

    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server = wsgi.Server((config.listen.host, config.listen.port),
                         buffer_chunked_bodies(app, config.limits.max_body_bytes),
                         numthreads=config.listen.threads, server_name="remediator")
    server.shutdown_timeout = 3  # on SIGTERM, a request still running gets this long before its socket is shut
    tls = config.listen.tls
    if tls is not None:
        adapter = BuiltinSSLAdapter(tls.cert_file, tls.key_file)
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.client_ca_file:
            adapter.context.load_verify_locations(cafile=tls.client_ca_file)
            adapter.context.verify_mode = ssl.CERT_REQUIRED
        server.ssl_adapter = adapter
    server.prepare()
    return server


def buffer_chunked_bodies(app: Any, limit: int) -> Any:
    """A chunked body (no Content-Length) read up to limit + 1 bytes and handed on with its length.

    cheroot streams chunked bodies; werkzeug then cuts them at MAX_CONTENT_LENGTH silently instead
    of answering 413. With the length known, the app's own limit check answers 413 as for any body."""
    import io

    def wrapped(environ: dict, start_response: Any) -> Any:
        if environ.get("CONTENT_LENGTH") in (None, "") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = environ["wsgi.input"].read(limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("wsgi.input_terminated", None)
            del environ["HTTP_TRANSFER_ENCODING"]  # werkzeug ignores Content-Length while this says chunked
        return app(environ, start_response)

    return wrapped


def serve(config: Config) -> int:
    from remediator.metrics import Metrics
    from remediator.scheduler import Scheduler
    from remediator.web import create_app

    from remediator.leadership import Leadership

    store = open_store(config.store.url)
    metrics = Metrics()
    metrics.watch_store(store, lambda: [h.name for h in config.hosts])
    engine_box: list[Any] = []
    # Built before the server binds its port but named after it: started only once the port is bound.
    leadership = Leadership(store, "", config.cluster, metrics=metrics,
                            on_elected=lambda epoch: engine_box[0].start() if engine_box else None,
                            on_lost=lambda why: engine_box[0].stop_acting() if engine_box else None)
    engine = build_engine(config, store, metrics, leadership)
    if engine is not None:
        engine_box.append(engine)
    app = create_app(config, store=store, engine=engine, metrics=metrics, leadership=leadership)
    scheduler = (Scheduler(config.policy.timings, leader_only(engine_jobs(engine), leadership))
                 if engine is not None else None)
    server = make_server(config, app)
    leadership.replica = config.cluster.name(server.bind_addr[1])

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        raise SystemExit(0)  # leaves server.serve(); the finally below stops its workers

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        # The engine starts when this replica takes the lease (it resumes unfinished intents, checking the
        # world, before it takes new work) and stops acting when it loses it; the web answers throughout.
        leadership.start()
        if scheduler is not None:
            scheduler.start()
        # the actual port (listen.port 0 picks a free one): tests and operators read it here
        log.info("remediator %s replica %s listening on %s://%s:%s (config %s, store %s, dry_run=%s, client "
                 "certificates %s)", __version__, leadership.replica, config.listen.scheme, config.listen.host,
                 server.bind_addr[1], config.source, redacted(config.store.url), config.dry_run,
                 "required" if config.listen.tls and config.listen.tls.client_ca_file else "not required")
        server.serve()
    finally:
        server.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        leadership.stop(release=True)  # a clean stop hands the lease over at once
        if engine is not None:
            engine.shutdown(wait=False)
        store.close()
        log.info("stopped")
    return 0


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
    if args.host_command == "activate":
        ok, words = client.host_request(args.name, "activate", {"reason": args.reason})
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
