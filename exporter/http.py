"""A tiny threaded WSGI server: /metrics (bounded by Prometheus's scrape timeout) and /healthz."""

from __future__ import annotations

import socket
import ssl
import socketserver
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from exporter.collector import HypervisorCollector
from exporter.web_config import BasicAuth, WebConfig, ssl_context

# Time kept back from Prometheus's scrape timeout for rendering and the network. Only a scrape whose
# libvirt work hits the bound (a hung daemon) gets this close to it; a hypervisor busy enough to
# starve the exporter's threads then still answers in time (0.15 s was once 0.06 s late on a machine
# at load 14), and Prometheus records the exporter's answer, hypervisor_up 0, not a failed scrape.
_RENDER_MARGIN_SECONDS = 0.3
_MIN_TIMEOUT_SECONDS = 0.1

StartResponse = Callable[..., object]


def scrape_timeout(configured: float, header: str | None) -> float:
    """The configured bound, lowered to fit Prometheus's own timeout when it sends one."""
    if header:
        try:
            return max(_MIN_TIMEOUT_SECONDS, min(configured, float(header) - _RENDER_MARGIN_SECONDS))
        except ValueError:
            return configured  # a malformed header is Prometheus's problem; keep our own bound
    return configured


def make_app(collector: HypervisorCollector, configured_timeout: float) -> Callable:
    def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            timeout = scrape_timeout(configured_timeout, environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"))
            body = collector.render_within(timeout)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/":
            return _text(start_response, "200 OK", "remediator-exporter: /metrics /healthz\n")
        return _text(start_response, "404 Not Found", "not found\n")

    return app


def _text(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """One line per scrape would drown the logs; errors still reach stderr through WSGI."""


def parse_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:9177", "[::1]:9177" or ":9177" -> (address, port)."""
    address, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be ADDRESS:PORT, not {listen!r}")
    address = address.strip("[]") or "0.0.0.0"
    return address, int(port)


class _TLSHandler(_QuietHandler):
    """The TLS handshake runs here, in the request's own thread: a client that stalls it holds only
    its thread, never the accept loop, and is dropped after the timeout."""

    timeout = 10

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.request.close()  # a plain-HTTP client or a refused certificate: nothing to serve
            raise
        super().setup()


class _TLSServerMixin:
    def handle_error(self, request, client_address) -> None:
        """Failed handshakes are expected (scanners, wrong certificates): no traceback each."""


class _ThreadingTLSServer(_TLSServerMixin, _ThreadingServer):
    pass


class _ThreadingTLSServer6(_TLSServerMixin, _ThreadingServer6):
    pass


def make_http_server(listen: str, app: Callable, web: WebConfig | None = None) -> WSGIServer:
    """The /metrics server; with a web config (exporter-toolkit format), HTTPS and basic auth."""
    web = web or WebConfig()
    if web.basic_auth_users:
        app = BasicAuth(app, web.basic_auth_users)
    address, port = parse_listen(listen)
    v6 = ":" in address
    if web.tls is None:
        return make_server(address, port, app, server_class=_ThreadingServer6 if v6 else _ThreadingServer,
                           handler_class=_QuietHandler)
    server = make_server(address, port, app, server_class=_ThreadingTLSServer6 if v6 else _ThreadingTLSServer,
                         handler_class=_TLSHandler)
    server.socket = ssl_context(web.tls).wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server
