"""A lab host's BMC: IPMI over LAN (lanplus) on 127.0.0.1, built on pyghmi's Bmc.

power off = the host's power loss, power on = the host boots, power status = whether any
process of the host lives. Run by the lab (through its keeper):
  python -m lab.bmc --state STATE_JSON --host h1 --port PORT --port-file FILE
Port 0 picks a free UDP port (pyghmi itself cannot bind port 0: sessions then fail at RAKP 1),
written to --port-file once the socket is bound.
The host's record (its services, its dirs) is re-read from the state file at each power on,
so services added after the BMC started are booted too.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import threading
from pathlib import Path

import pyghmi.ipmi.bmc as pyghmi_bmc

from lab import power
from lab.host import LabHost


def _host_from_state(state_file: Path, name: str) -> tuple[LabHost, str]:
    state = json.loads(state_file.read_text())
    for h in state["hosts"]:
        if h["name"] == name:
            return LabHost.from_dict(h), state["keeper"]["socket"]
    raise KeyError(f"host {name} not in {state_file}")


class LabBmc(pyghmi_bmc.Bmc):
    def __init__(self, authdata: dict, port: int, state_file: Path, host_name: str):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.state_file = state_file
        self.host_name = host_name
        self._lock = threading.Lock()

    def _host(self) -> tuple[LabHost, str]:
        return _host_from_state(self.state_file, self.host_name)

    def get_power_state(self) -> str:
        return "on" if power.is_on(self._host()[0]) else "off"

    def power_off(self) -> None:
        with self._lock:
            power.power_loss(self._host()[0])

    def power_on(self) -> None:
        # Answer at once (ipmitool retries a slow answer, which would be a second "on");
        # the boot runs in the background like a real one.
        host, keeper_sock = self._host()
        threading.Thread(target=self._boot, args=(host, keeper_sock), daemon=True).start()

    def _boot(self, host: LabHost, keeper_sock: str) -> None:
        with self._lock:
            try:
                power.boot(host, keeper_sock)
            except (OSError, TimeoutError) as e:
                print(f"bmc {self.host_name}: power on failed: {e}", flush=True)

    def power_cycle(self) -> None:
        self.power_off()
        self.power_on()

    def power_reset(self) -> None:
        self.power_cycle()

    def power_shutdown(self) -> None:
        self.power_off()  # no guest agent to ask: a soft off is a hard off in the lab

    def is_active(self) -> bool:
        return self.get_power_state() == "on"

    def cold_reset(self) -> None:
        pass  # resetting the BMC itself: nothing to do for a pretend one


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bind(authdata: dict, port: int, state_file: Path, host_name: str) -> LabBmc:
    if port:
        return LabBmc(authdata, port, state_file, host_name)
    for _ in range(20):  # the probed port may be taken before we bind it again: try another
        try:
            return LabBmc(authdata, _free_udp_port(), state_file, host_name)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free UDP port for the BMC after 20 tries")


def arguments(prog: str) -> argparse.ArgumentParser:
    """The command line every lab BMC takes (this IPMI one, lab/redfish.py)."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True, type=Path)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="password")
    return ap


def announce_port(port_file: Path, port: int) -> None:
    """The bound port, written whole (rename) for the lab that waits for the file."""
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)


def main() -> None:
    args = arguments("python -m lab.bmc").parse_args()
    bmc = _bind({args.user: args.password}, args.port, args.state, args.host)
    port = bmc.serversocket.getsockname()[1]
    announce_port(args.port_file, port)
    print(f"bmc {args.host} listening on 127.0.0.1:{port}", flush=True)
    bmc.listen()


if __name__ == "__main__":
    main()
