"""One process of listen.webhook (remediator/webhook_procs.py starts them; not a command for operators).

It serves Alertmanager's webhook on the listening socket the service handed it (--fd), with the service's
config (the first line of its stdin), its own store connection and group commit, and reports on its stdout
what the service needs: its requests and alerts for the service's metrics, and a wake-up after new alerts.
When its stdin closes (the service stopped or died) it stops as on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import IO

log = logging.getLogger("remediator.webhook")


class Relay:
    """Stands for the service's metrics and engine in a webhook process: each fact one line on `out`.

    A line is far under PIPE_BUF, so the writes of concurrent request threads never interleave."""

    def __init__(self, out: IO[bytes]):
        self._fd = out.fileno()

    def _say(self, line: str) -> None:
        try:
            os.write(self._fd, line.encode())
        except OSError:  # the service is gone: the lifeline closes too, and this process stops
            pass

    def alert_received(self, result: str, n: int = 1) -> None:
        if n:
            self._say(f"alerts {result} {n}\n")

    def webhook_request(self, status_code: int) -> None:
        self._say(f"request {status_code}\n")

    def notify(self) -> None:
        self._say("wake\n")

    def ready(self) -> None:
        self._say("ready\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the listening socket, inherited")
    parser.add_argument("--name", required=True, help="how /readyz names this process")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s[{args.name}]: %(message)s")

    from remediator.config import parse_config
    from remediator.leadership import Leadership
    from remediator.serve import make_server
    from remediator.store import open_store
    from remediator.web import create_app

    header = json.loads(sys.stdin.buffer.readline() or b"null")
    if not header:
        log.error("no config on stdin: the service that started this process is gone")
        return 2
    config = parse_config(header["text"], source=header["source"], env=os.environ)
    listening = socket.socket(fileno=args.fd)
    store = open_store(config.store.url)
    relay = Relay(sys.stdout.buffer)
    # Not started: it only reads the lease row, so /readyz says who leads (never this process).
    lease_view = Leadership(store, args.name, config.cluster, on_elected=lambda _: None, on_lost=lambda _: None)
    app = create_app(config, store=store, engine=relay, metrics=relay, leadership=lease_view, webhook_only=True)
    server = make_server(config, app, listening=listening)

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=_lifeline, name="lifeline", daemon=True).start()
    relay.ready()
    try:
        server.serve()
    finally:
        server.stop()
        store.close()
    return 0


def _lifeline() -> None:
    """Wait for stdin to close (the service stopped, or died), then stop as on SIGTERM."""
    while sys.stdin.buffer.read(4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
