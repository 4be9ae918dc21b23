"""Delay on a lab host's traffic, where this kernel has no netem: a delaying TCP proxy in the host.

The proxy runs inside the host (a service of the host: its network namespace; a power loss takes it
down like everything else there) and listens beside each proxied service on PROXY_PORT_OFFSET +
its port. An nftables `redirect` in the host's namespace sends every TCP connection that comes in on
eth0 for a proxied port (libvirtd's 16509, the exporter's 9177) to the proxy, which connects to the
real service at the host's own address (local traffic takes no prerouting hook, so it is not
redirected again). So Prometheus's scrapes, the remediator's libvirt connections and the other
hosts' migrations reach the host through the proxy with no address changing anywhere: the proxy and
the rule are installed when the lab host is prepared, before anything connects (an established
connection keeps the path it started on), and the delay is changed at run time through a file.

Delay semantics are netem's on the host's egress: every chunk the host sends out is held `delay`
before it is passed on, in order; what comes in passes at once. A round trip grows by `delay`.
Packet loss is the lab's nftables rule (Lab.packet_loss), on the same link.

Run as a script (no imports from the project, so it starts in any host's mount namespace):
    python lab/delay_proxy.py --address 10.77.0.11 --ports 16509,9177 --delay-file /path/delay_ms
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

PROXY_PORT_OFFSET = 10000
TABLE = "remediator_lab_delay"
CHUNK = 65536
POLL_S = 0.1


def proxy_port(port: int) -> int:
    return port + PROXY_PORT_OFFSET


def redirect_rules(ports: list[int]) -> str:
    """The nftables ruleset (idempotent replace) that sends incoming connections to the proxy."""
    lines = "".join(f'    iifname "eth0" tcp dport {p} redirect to :{proxy_port(p)}\n' for p in ports)
    return (f"table ip {TABLE} {{}}\ndelete table ip {TABLE}\n"
            f"table ip {TABLE} {{\n  chain prerouting {{\n"
            f"    type nat hook prerouting priority dstnat; policy accept;\n{lines}  }}\n}}\n")


def install_redirect(netns: str, ports: list[int]) -> None:
    proc = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=redirect_rules(ports),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nft redirect in {netns}: {proc.stderr.strip()}")


def write_delay(path: Path, delay_s: float) -> None:
    """Set the delay (seconds) every proxy reading `path` applies from its next chunk on."""
    if delay_s < 0:
        raise ValueError(f"a delay cannot be negative: {delay_s}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{round(delay_s * 1000)}\n")
    os.replace(tmp, path)


class DelayFile:
    """The current delay in seconds, re-read when the file changes (checked every POLL_S)."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds = 0.0
        self._mtime = None
        self._checked = 0.0

    def current(self) -> float:
        now = time.monotonic()
        if now - self._checked >= POLL_S:
            self._checked = now
            try:
                mtime = self.path.stat().st_mtime_ns
                if mtime != self._mtime:
                    self._mtime = mtime
                    self.seconds = max(0.0, int(self.path.read_text().strip() or 0) / 1000)
            except (OSError, ValueError):
                pass  # no file, or one being replaced: keep the last delay
        return self.seconds


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay) -> None:
    """Copy reader to writer, each chunk held delay() seconds from its arrival, order kept."""
    loop = asyncio.get_running_loop()
    held: asyncio.Queue = asyncio.Queue()

    async def release() -> None:
        while True:
            due, data = await held.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(release())
    try:
        while data := await reader.read(CHUNK):
            held.put_nowait((loop.time() + delay(), data))
        held.put_nowait((loop.time() + delay(), None))
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()


def _serve(address: str, port: int, delay: DelayFile):
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            host_r, host_w = await asyncio.open_connection(address, port)
        except OSError:
            client_w.close()
            return
        # In: at once. Out (what the host sends): held, as netem on the host's egress would.
        await asyncio.gather(_pump(client_r, host_w, lambda: 0.0), _pump(host_r, client_w, delay.current),
                             return_exceptions=True)
    return handle


async def _main(address: str, ports: list[int], delay_file: Path) -> None:
    delay = DelayFile(delay_file)
    servers = [await asyncio.start_server(_serve(address, p, delay), address, proxy_port(p), reuse_address=True)
               for p in ports]
    print(f"delay proxy on {address}: " + ", ".join(f"{proxy_port(p)} -> {p}" for p in ports), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="the host's own address (the services listen on it)")
    parser.add_argument("--ports", required=True, help="comma-separated service ports to proxy")
    parser.add_argument("--delay-file", required=True, type=Path, help="milliseconds of delay, re-read on change")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.address, [int(p) for p in args.ports.split(",")], args.delay_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
