"""A lab host's BMC: IPMI over LAN (lanplus) on 127.0.0.1, built on pyghmi's Bmc.

power off = the host's power loss, power on = the host boots from its next boot device (pxe:
a reinstall, lab/power.py), power cycle = off then on, power status = whether any process of the
host lives (or a boot is under way). Boot device get/set honours persistence: a non-persistent
("once") override applies to the next power-on only. Boot device and power log are the files
lab/bootdev.py keeps in the host's directory, shared with the host's Redfish BMC.
A file `bmc-no-bootdev` in the host's directory makes this BMC ignore boot-option requests (the
fault of a BMC that does not answer them; Lab.refuse_bootdev); a file `bmc-answer-delay` holding
seconds makes it answer a power command that long after carrying it out (Lab.delay_bmc_answers). Run by the lab (through its keeper):
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
import time
from pathlib import Path

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.command as ipmi_command

from lab import bootdev, power
from lab.host import LabHost

VIA = "ipmi"
NO_BOOTDEV = "bmc-no-bootdev"
ANSWER_DELAY = "bmc-answer-delay"
_BOOT_FLAGS_VALID, _BOOT_FLAGS_PERSISTENT = 0x80, 0x40
_IPMI_DEVICE = {"pxe": ipmi_command.boot_devices["network"], "disk": ipmi_command.boot_devices["hd"]}


def _host_from_state(state_file: Path, name: str) -> tuple[LabHost, str]:
    state = json.loads(state_file.read_text())
    for h in state["hosts"]:
        if h["name"] == name:
            return LabHost.from_dict(h), state["keeper"]["socket"]
    raise KeyError(f"host {name} not in {state_file}")


def power_on_from_state(state_file: Path, name: str) -> str:
    """Power on a host from what the lab's state file records (its hosts, the install settings);
    shared with the Redfish BMC. Returns the boot target."""
    state = json.loads(state_file.read_text())
    host, keeper_sock = _host_from_state(state_file, name)
    seed = state.get("cache_seed")
    return power.power_on(host, keeper_sock, all_hosts=[LabHost.from_dict(h) for h in state["hosts"]],
                          cache_seed=Path(seed) if seed else None,
                          install_delay_s=float(state.get("install_delay_s", 3.0)))


class LabBmc(pyghmi_bmc.Bmc):
    def __init__(self, authdata: dict, port: int, state_file: Path, host_name: str):
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.state_file = state_file
        self.host_name = host_name
        self._lock = threading.Lock()
        self._booting = threading.Event()  # a power-on under way (an install): the chassis is on

    def _host(self) -> tuple[LabHost, str]:
        return _host_from_state(self.state_file, self.host_name)

    def _dir(self) -> str:
        return self._host()[0].dir

    def get_power_state(self) -> str:
        return "on" if self._booting.is_set() or power.is_on(self._host()[0]) else "off"

    def _off(self) -> None:
        with self._lock:
            power.power_loss(self._host()[0])

    def _answer_late(self) -> None:
        """A slow BMC: the command is carried out, its answer comes later (Lab.delay_bmc_answers). Keep it
        under ipmitool's retransmit timeout (-N, 1 s here) or the client sends the command again."""
        try:
            time.sleep(float((Path(self._dir()) / ANSWER_DELAY).read_text()))
        except (FileNotFoundError, ValueError):
            pass

    def power_off(self) -> None:
        bootdev.log_power(self._dir(), VIA, "off")
        self._off()
        self._answer_late()

    def power_on(self) -> None:
        bootdev.log_power(self._dir(), VIA, "on")
        self._on()
        self._answer_late()

    def _on(self) -> None:
        # Answer at once (ipmitool retries a slow answer, which would be a second "on");
        # the boot runs in the background like a real one.
        self._booting.set()
        threading.Thread(target=self._boot, daemon=True).start()

    def _boot(self) -> None:
        with self._lock:
            try:
                target = power_on_from_state(self.state_file, self.host_name)
                print(f"bmc {self.host_name}: powered on ({target})", flush=True)
            except (OSError, TimeoutError) as e:
                print(f"bmc {self.host_name}: power on failed: {e}", flush=True)
            finally:
                self._booting.clear()

    def power_cycle(self) -> None:
        # An off chassis just comes on (many BMCs refuse a cycle when off; the lab's is lenient).
        bootdev.log_power(self._dir(), VIA, "cycle")
        self._off()
        self._on()
        self._answer_late()

    def power_reset(self) -> None:
        bootdev.log_power(self._dir(), VIA, "reset")
        self._off()
        self._on()

    def power_shutdown(self) -> None:
        self.power_off()  # no guest agent to ask: a soft off is a hard off in the lab

    # ---- boot device (IPMI "system boot options", parameter 5: boot flags) ----------------------

    def _bootdev_refused(self) -> bool:
        return (Path(self._dir()) / NO_BOOTDEV).exists()

    def get_system_boot_options(self, request, session):
        if self._bootdev_refused():
            return None  # no answer at all: the client times out
        if request["data"][0] != 5:
            return session.send_ipmi_response(code=0x80)
        device = bootdev.read(self._dir())
        if not (Path(self._dir()) / bootdev.NEXT_BOOT).exists():
            flags, number = 0, 0  # no override: "default"
        else:
            flags = _BOOT_FLAGS_VALID | (0 if device.once else _BOOT_FLAGS_PERSISTENT)
            number = _IPMI_DEVICE[device.target]
        return session.send_ipmi_response(data=[1, 5, flags, number, 0, 0, 0])

    def set_system_boot_options(self, request, session):
        if self._bootdev_refused():
            return None
        data = request["data"]
        if data[0] != 5:
            return session.send_ipmi_response()  # timers and acknowledgements: nothing to keep
        number = data[2] & 0b111100
        if number not in (0, _IPMI_DEVICE["pxe"], _IPMI_DEVICE["disk"]):
            return session.send_ipmi_response(code=0xcc)  # only network and disk in the lab
        target = "pxe" if number == _IPMI_DEVICE["pxe"] else "disk"
        once = not (data[1] & _BOOT_FLAGS_PERSISTENT) and number != 0
        bootdev.write(self._dir(), target, once)
        bootdev.log_power(self._dir(), VIA, f"bootdev-{target}" + ("-once" if once else ""))
        return session.send_ipmi_response()

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
