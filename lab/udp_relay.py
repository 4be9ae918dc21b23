"""UDP relay: makes loopback-only UDP services (the lab's BMCs) reachable at another address.

The BMCs listen on the root namespace's 127.0.0.1, which no host namespace can reach. A cluster
node's stonith device (fence_ipmilan inside a host) needs its peers' BMCs, so each BMC gets a
port on the bridge's gateway address that relays to it. Each client (address, port) gets its
own upstream socket, so the BMC sees one peer per client and pyghmi's sessions stay apart.

    python -m lab.udp_relay --listen 10.77.3.1 --port-file F UPSTREAM_PORT...

writes {"<upstream port>": <listening port>, ...} to F once every socket is bound.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
from pathlib import Path

UPSTREAM_HOST = "127.0.0.1"


def serve(listen: str, upstream_ports: list[int], port_file: Path) -> None:
    sel = selectors.DefaultSelector()
    ports = {}
    for up in upstream_ports:
        front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        front.bind((listen, 0))
        ports[str(up)] = front.getsockname()[1]
        sel.register(front, selectors.EVENT_READ, ("front", front, up, {}))
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(json.dumps(ports))
    os.replace(tmp, port_file)
    print(f"relay on {listen}: {ports}", flush=True)
    while True:
        for key, _ in sel.select():
            kind, sock, *rest = key.data
            try:
                data, peer = sock.recvfrom(65535)
            except OSError:  # a connected upstream socket reports a dead BMC (ECONNREFUSED)
                continue
            if kind == "front":
                up, clients = rest
                back = clients.get(peer)
                if back is None:
                    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    back.connect((UPSTREAM_HOST, up))
                    clients[peer] = back
                    sel.register(back, selectors.EVENT_READ, ("back", back, sock, peer))
                back.send(data)
            else:  # the BMC's answer: to the client this upstream socket belongs to
                front, client = rest
                front.sendto(data, client)

def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.udp_relay")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port-file", required=True, type=Path)
    ap.add_argument("upstream", nargs="+", type=int)
    args = ap.parse_args()
    serve(args.listen, args.upstream, args.port_file)


if __name__ == "__main__":
    main()
