"""`remediator serve`: the web (cheroot), the engine with its edges and timers, and the leader lease.

Every replica serves the web and stores what it is given; the engine acts only while this replica holds
the lease (remediator/leadership.py): it starts when the lease is taken and stops acting when it is lost.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
from typing import Any

from remediator import __version__
from remediator.config import Config
from remediator.store import open_store
from remediator.store.database import redacted

log = logging.getLogger("remediator")


def build_engine(config: Config, store: Any, metrics: Any, leadership: Any = None) -> Any | None:
    """The engine with its edges, built from the config; None when remediator.engine is not installed.

    Without an engine the service still validates and stores every alert (nothing is lost), and says so."""
    if importlib.util.find_spec("remediator.engine") is None:
        log.warning("remediator.engine is not installed: alerts are stored but nothing is acted on")
        return None
    from remediator.edges.fencing import Fencer
    from remediator.edges.libvirt import Hypervisors
    from remediator.edges.power import PowerDevices
    from remediator.edges.prometheus import LoadSource
    from remediator.engine import Engine

    # The leader acts only under its lease: every call to a host or a BMC checks the dispatch deadline
    # right before it is sent, and every engine write carries the epoch (store/fenced.py).
    gate = leadership.check_dispatch if leadership is not None else None
    hypervisors = Hypervisors(config.host_uris, connect_timeout=config.libvirt_connect_timeout_s, gate=gate)
    fencer = Fencer(config.power_devices, timeout=config.policy.action_timeouts.fence_s, gate=gate)
    power = PowerDevices(config.power_devices, timeout=config.policy.reprovision.boot_device_s, gate=gate)
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
    engine = Engine(config, store, hypervisors, fencer, load, metrics, events=events, power=power)
    if gate is not None:
        engine.gate = gate  # the provisioning hook's call checks it too
    return engine


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


def make_server(config: Config, app: Any, listening: Any = None) -> Any:
    """cheroot's WSGI server, bound (listen.port 0 picks a free port), with TLS when listen.tls is set;
    on `listening` instead when given (a socket listen.webhook's processes share: webhook_procs.py).

    cheroot rather than waitress: the same threaded in-process server, but with TLS of its own
    (Python's ssl), so the credentials Alertmanager and operators send never cross the network in
    clear without a proxy in front. With listen.tls.client_ca_file, a client must also present a
    certificate signed by that CA (Alertmanager's tls_config cert_file/key_file)."""
    import ssl

    from cheroot import wsgi
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    server_class = wsgi.Server if listening is None else _on_socket(listening)
    address = (config.listen.host, config.listen.port) if listening is None else listening.getsockname()[:2]
    server = server_class(address, buffer_chunked_bodies(app, config.limits.max_body_bytes),
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
    if listening is not None:
        # Several processes accept from this socket: when another took the connection, accept() must say so
        # at once. With the 1 s timeout prepare() sets, it waited up to 1 s for the next connection, and the
        # process's keep-alive connections, served from the same loop, waited with it (max latency 1,010 ms).
        server.socket.setblocking(False)
    return server


def _on_socket(listening: Any) -> Any:
    """cheroot's server, serving a socket already bound and listening (prepare() binds through bind())."""
    from cheroot import wsgi

    class OnSocket(wsgi.Server):
        def bind(self, family: int, type: int, proto: int = 0) -> Any:
            self.socket = self.ssl_adapter.bind(listening) if self.ssl_adapter is not None else listening
            self.bind_addr = self.resolve_real_bind_addr(self.socket)
            return self.socket

    return OnSocket


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
    webhook = None
    if config.listen.webhook is not None:
        from remediator.webhook_procs import WebhookProcesses

        # checks the config file is still what was loaded; the children are started in the try below
        webhook = WebhookProcesses(config, metrics, wake=engine.notify if engine is not None else lambda: None,
                                   replica=leadership.replica)

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
        if webhook is not None:
            port = webhook.start()
            ready = webhook.wait_ready(30.0)
            log.info("webhook for Alertmanager on %s://%s:%s, %d processes%s", config.listen.scheme, config.listen.host,
                     port, webhook.settings.processes, "" if ready else " (not all ready after 30 s: see their log)")
        # the actual port (listen.port 0 picks a free one): tests and operators read it here
        log.info("remediator %s replica %s listening on %s://%s:%s (config %s, store %s, dry_run=%s, client "
                 "certificates %s)", __version__, leadership.replica, config.listen.scheme, config.listen.host,
                 server.bind_addr[1], config.source, redacted(config.store.url), config.dry_run,
                 "required" if config.listen.tls and config.listen.tls.client_ca_file else "not required")
        server.serve()
    finally:
        if webhook is not None:
            webhook.stop()
        server.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        leadership.stop(release=True)  # a clean stop hands the lease over at once
        if engine is not None:
            engine.shutdown(wait=False)
        store.close()
        log.info("stopped")
    return 0
