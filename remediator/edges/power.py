"""A host's power devices: fencing (edges/fencing.py, the fence agents) and boot control, one interface.

A host's devices are configured the way Pacemaker and oVirt configure power management: a fence agent
and its options (`hosts[].fence`, one device or several in order). The same options reach the
device's boot control, chosen by the agent's kind:
- `fence_ipmilan`: `ipmitool` (chassis bootdev, bootparam, power) with the agent's own options (ip,
  ipport, username, password, lanplus, cipher, privlvl); the password goes through the environment
  (`-E`), never on a command line.
- `fence_redfish`: sushy (edges/redfish.py) with the agent's own options (ip, ipport, username,
  password, ssl_insecure, systems_uri): `BootSourceOverrideTarget: Pxe` with
  `BootSourceOverrideEnabled: Once`, and `PowerCycle` (`On` when the system is off).
- another kind registers a factory in `BOOT_CONTROLS` and slots in beside them.

Fencing stays "off, then status must say off" (Fencer); boot control is what a reprovision needs:
set the next boot to the network for one boot, read it back, and power-cycle (power on when off).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

from remediator.edges.fencing import FenceDeviceSpec, PowerState, UnknownHost, revealed


class BootControlError(RuntimeError):
    """The device did not do what was asked, or did not answer."""


@dataclass(frozen=True)
class BootOverride:
    target: str  # "pxe", "disk", "none" (no override: the firmware's own order), or what the device says
    once: bool  # applies to the next boot only


class BootControl(Protocol):
    kind: str

    def set_next_boot(self, target: str, once: bool) -> str: ...

    def next_boot(self) -> BootOverride: ...

    def power_state(self) -> PowerState: ...

    def cycle(self) -> str:
        """Power-cycle an on host, power on an off one; returns which ("cycle" or "on")."""
        ...


def _first(options: Mapping[str, str], *names: str, default: str | None = None) -> str | None:
    return next((options[n] for n in names if options.get(n)), default)


class IpmiBootControl:
    """Boot device and power through ipmitool, from fence_ipmilan's options."""

    kind = "ipmi"
    _BOOTDEV = {"pxe": "pxe", "disk": "disk"}
    _SELECTOR = re.compile(r"Boot Device Selector\s*:\s*(.+)")

    def __init__(self, options: Mapping[str, str], timeout: float = 15.0):
        ip = _first(options, "ip", "ipaddr")
        if not ip:
            raise ValueError("fence_ipmilan device without ip: boot control needs the BMC's address")
        self._base = ["ipmitool", "-I", "lanplus" if options.get("lanplus") in ("1", "true", "on") else "lan",
                      "-H", ip, "-p", _first(options, "ipport", default="623"),
                      "-U", _first(options, "username", "login", "user", default=""),
                      "-E", "-N", "1", "-R", "3"]
        if options.get("cipher"):
            self._base += ["-C", options["cipher"]]
        if options.get("privlvl"):
            self._base += ["-L", options["privlvl"].upper()]
        self._password = _first(options, "password", "passwd", default="")
        self._timeout = timeout

    def _run(self, *args: str) -> str:
        try:
            proc = subprocess.run(self._base + list(args), capture_output=True, text=True, timeout=self._timeout,
                                  env={**os.environ, "IPMI_PASSWORD": self._password})
        except subprocess.TimeoutExpired:
            raise BootControlError(f"ipmitool {' '.join(args)}: no answer within {self._timeout:g}s") from None
        except FileNotFoundError:
            raise BootControlError("ipmitool is not installed (Debian package ipmitool)") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise BootControlError(f"ipmitool {' '.join(args)}: exit {proc.returncode} ({last})")
        return proc.stdout

    def set_next_boot(self, target: str, once: bool) -> str:
        if target not in self._BOOTDEV:
            raise ValueError(f"boot target {target!r}: pxe or disk")
        args = ["chassis", "bootdev", self._BOOTDEV[target]] + ([] if once else ["options=persistent"])
        return self._run(*args).strip()

    def next_boot(self) -> BootOverride:
        return parse_bootparam(self._run("chassis", "bootparam", "get", "5"))

    def power_state(self) -> PowerState:
        out = self._run("chassis", "power", "status").lower()
        return PowerState.ON if "is on" in out else PowerState.OFF if "is off" in out else PowerState.UNKNOWN

    def cycle(self) -> str:
        if self.power_state() is PowerState.OFF:
            self._run("chassis", "power", "on")
            return "on"
        self._run("chassis", "power", "cycle")
        return "cycle"


def parse_bootparam(output: str) -> BootOverride:
    """`ipmitool chassis bootparam get 5` -> the override it reports (pure)."""
    if "Boot Flag Invalid" in output:
        return BootOverride("none", False)
    match = IpmiBootControl._SELECTOR.search(output)
    selector = match.group(1).strip().lower() if match else ""
    target = ("pxe" if "pxe" in selector else "disk" if "hard-drive" in selector or "disk" in selector
              else "none" if "no override" in selector else selector or "none")
    return BootOverride(target, "only next boot" in output)


class RedfishBootControl:
    """Boot override and power through sushy (edges/redfish.py), from fence_redfish's options."""

    kind = "redfish"

    def __init__(self, options: Mapping[str, str], timeout: float = 15.0):
        from remediator.edges.redfish import RedfishPower  # sushy is imported only where Redfish is used

        ip = _first(options, "ip", "ipaddr")
        if not ip:
            raise ValueError("fence_redfish device without ip: boot control needs the BMC's address")
        self._bmc = RedfishPower(ip, ip, int(_first(options, "ipport", default="443")),
                                 _first(options, "username", "login", "user", default=""),
                                 _first(options, "password", "passwd", default=""),
                                 verify=options.get("ssl_insecure") not in ("1", "true", "on"),
                                 systems_uri=options.get("systems_uri"), timeout_s=timeout)

    def _do(self, fn, *args):
        from remediator.edges.redfish import RedfishUnavailable

        try:
            return fn(*args)
        except RedfishUnavailable as err:
            raise BootControlError(str(err)) from None

    def set_next_boot(self, target: str, once: bool) -> str:
        if (target, once) != ("pxe", True):
            raise ValueError("the Redfish device sets the network for one boot only (Pxe, Once)")
        self._do(self._bmc.set_next_boot_pxe_once)
        return "BootSourceOverrideTarget Pxe, BootSourceOverrideEnabled Once"

    def next_boot(self) -> BootOverride:
        target, enabled = self._do(self._bmc.next_boot)
        if enabled == "disabled":
            return BootOverride("none", False)
        return BootOverride({"pxe": "pxe", "hdd": "disk"}.get(target, target), enabled == "once")

    def power_state(self) -> PowerState:
        return self._do(self._bmc.status)

    def cycle(self) -> str:
        did = self._do(self._bmc.power_cycle)
        return "on" if did.startswith("On") else "cycle"


# agent -> boot control factory (options, timeout).
BOOT_CONTROLS: dict[str, Callable[[Mapping[str, str], float], BootControl]] = {
    "fence_ipmilan": IpmiBootControl,
    "fence_redfish": RedfishBootControl,
}


class NoBootControl(LookupError):
    pass


class PowerDevices:
    """Boot control of each host: the first of its power devices whose kind can set a boot device."""

    def __init__(self, devices: Mapping[str, Sequence[FenceDeviceSpec]], timeout: float = 15.0,
                 gate: Callable[[str], None] | None = None):
        """`gate(what)` runs right before each call to a BMC (leadership.LeaseLost: not called)."""
        self._devices = {h: tuple(d) for h, d in devices.items()}
        self._timeout = timeout
        self._gate = gate

    def can_boot(self, host: str) -> bool:
        return any(d.agent in BOOT_CONTROLS for d in self._devices.get(host, ()))

    def boot_control(self, host: str) -> BootControl:
        if host not in self._devices:
            raise UnknownHost(f"no power device configured for host {host!r}")
        for device in self._devices[host]:
            if device.agent in BOOT_CONTROLS:
                control = BOOT_CONTROLS[device.agent](revealed(device.options), self._timeout)
                return control if self._gate is None else _Gated(control, self._gate, host)
        kinds = ", ".join(d.agent for d in self._devices[host])
        raise NoBootControl(f"no power device of {host} can set a boot device ({kinds}; "
                            f"these can: {', '.join(sorted(BOOT_CONTROLS))})")


class _Gated:
    """A boot control whose every call to the BMC first passes the leader's gate."""

    def __init__(self, control: BootControl, gate: Callable[[str], None], host: str):
        self._control, self._gate, self._host = control, gate, host
        self.kind = getattr(control, "kind", "")

    def set_next_boot(self, target: str, once: bool) -> str:
        self._gate(f"set next boot of {self._host}")
        return self._control.set_next_boot(target, once)

    def next_boot(self) -> BootOverride:
        self._gate(f"next boot of {self._host}")
        return self._control.next_boot()

    def power_state(self) -> PowerState:
        self._gate(f"power state of {self._host}")
        return self._control.power_state()

    def cycle(self) -> str:
        self._gate(f"power cycle of {self._host}")
        return self._control.cycle()
