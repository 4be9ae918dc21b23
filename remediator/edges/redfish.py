"""One host's power through its Redfish BMC: fencing with fence_redfish, boot override and resets with sushy.

    bmc = RedfishPower("h1", "10.0.0.21", 443, "admin", "secret", verify=True)
    bmc.status()                  # PowerState.ON / OFF            (fence_redfish status)
    bmc.off()                     # FenceResult, ok only when status says off afterwards (fence_redfish off)
    bmc.set_next_boot_pxe_once()  # Boot.BootSourceOverrideTarget=Pxe, BootSourceOverrideEnabled=Once (sushy)
    bmc.power_cycle()             # the host boots again: PowerCycle, or On when it is off (sushy)
    bmc.on()                      # ResetType On (sushy)

Fencing keeps the agent of the fence-agents project (the same rule as every fence device here,
remediator/edges/fencing.py: off counts only when the agent's status says off), so a host fenced over
Redfish is fenced exactly as Pacemaker would fence it. Boot control is not fencing: it goes through sushy,
OpenStack Ironic's Redfish client, rather than hand-written HTTP.

Redfish semantics honoured: a ForceOff of a system that is already off may answer 409 Conflict; that
counts as off once the status says off (`force_off`). A BMC that does not answer (refused, timed out,
TLS failure) or answers with an error raises `RedfishUnavailable`, whose `reason` says what happened.
fence_redfish speaks HTTPS only: `verify=False` is its `ssl_insecure` (a self-signed BMC certificate).
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import sushy
from sushy import exceptions as sushy_exc
from sushy.resources.system import constants as sys_cons

from remediator.edges.fencing import Fencer, FenceResult, PowerState

log = logging.getLogger(__name__)

_CONFLICT = 409


class RedfishUnavailable(RuntimeError):
    """The BMC did not do what was asked: `reason` says why (no answer, an HTTP error, not applied)."""

    def __init__(self, host: str, what: str, reason: str):
        super().__init__(f"Redfish BMC of {host}: {what}: {reason}")
        self.host, self.what, self.reason = host, what, reason


class _Device:
    """A fence device as Fencer takes it (config.FenceDevice's shape)."""

    def __init__(self, agent: str, options: Mapping[str, str]):
        self.agent, self.options = agent, dict(options)


class RedfishPower:
    """Power and boot control of one host's Redfish BMC. Self-contained: no config, no store."""

    def __init__(self, host: str, address: str, port: int, username: str, password: str, *,
                 verify: bool = True, systems_uri: str | None = None, timeout_s: float = 10.0,
                 fence_timeout_s: float = 60.0, power_wait_s: float = 0.0):
        self.host = host
        self.url = f"https://{address}:{port}"
        self._auth = (username, password)
        self._verify = verify
        self._systems_uri = systems_uri
        self._timeout = timeout_s
        options = {"ip": address, "ipport": str(port), "username": username, "password": password,
                   "power_wait": f"{power_wait_s:g}"}
        if not verify:
            options["ssl_insecure"] = "1"
        if systems_uri:
            options["systems_uri"] = systems_uri
        self._fencer = Fencer({host: _Device("fence_redfish", options)}, timeout=fence_timeout_s)

    # ---- fencing: fence_redfish ------------------------------------------------------------------

    def status(self) -> PowerState:
        """ON or OFF as fence_redfish reads it; RedfishUnavailable when it cannot tell."""
        state, run = self._fencer.status(self.host)
        if state is PowerState.UNKNOWN:
            raise RedfishUnavailable(self.host, "status", f"fence_redfish exit {run.exit_code}: "
                                     f"{run.output.strip()[-300:] or 'no output'}")
        return state

    def off(self) -> FenceResult:
        """Fence: fence_redfish off, then its status must say off (ok only then). RedfishUnavailable when
        the BMC did not answer at all (the status is unknown): the host may still be on."""
        result = self._fencer.off(self.host)
        if result.state is PowerState.UNKNOWN:
            raise RedfishUnavailable(self.host, "off", result.detail)
        return result

    # ---- boot control and resets: sushy ----------------------------------------------------------

    def on(self) -> None:
        """ResetType On (nothing to do when it is on)."""
        system = self._system("on")
        if system.power_state is not sushy.PowerState.ON:
            self._reset(system, sushy.ResetType.ON)

    def power_cycle(self) -> str:
        """Make the host boot again, whatever its power: On when it is off (many BMCs refuse to cycle an off
        system), PowerCycle when offered, else ForceOff then On. Returns what it did."""
        system = self._system("power cycle")
        if system.power_state is sushy.PowerState.OFF:
            self._reset(system, sushy.ResetType.ON)
            return "On (it was off)"
        allowed = self._call("power cycle", system.get_allowed_reset_system_values)
        if sushy.ResetType.POWER_CYCLE in allowed:
            self._reset(system, sushy.ResetType.POWER_CYCLE)
            return "PowerCycle"
        self.force_off()
        self._reset(self._system("power cycle"), sushy.ResetType.ON)
        return "ForceOff, then On"

    def force_off(self) -> str:
        """ResetType ForceOff through sushy (power_cycle's way where PowerCycle is not offered). A 409 from a
        system already off counts as off once its PowerState says Off; otherwise RedfishUnavailable."""
        system = self._system("force off")
        try:
            system.reset_system(sushy.ResetType.FORCE_OFF)
            return "ForceOff"
        except sushy_exc.HTTPError as err:
            if err.status_code != _CONFLICT:
                raise RedfishUnavailable(self.host, "force off", _why(err)) from err
            if self._system("force off").power_state is sushy.PowerState.OFF:
                log.info("%s: ForceOff answered 409 and PowerState is Off: counted as off", self.host)
                return "already off (409; PowerState Off)"
            raise RedfishUnavailable(self.host, "force off", f"409 and PowerState is not Off: {_why(err)}") from err
        except sushy_exc.SushyError as err:
            raise RedfishUnavailable(self.host, "force off", _why(err)) from err

    def set_next_boot_pxe_once(self) -> None:
        """Boot from the network at the next power-on only (BootSourceOverrideTarget Pxe, Enabled Once),
        read back from the BMC: RedfishUnavailable unless it says so afterwards."""
        system = self._system("boot override")
        self._call("boot override", system.set_system_boot_options, sys_cons.BootSource.PXE,
                   sys_cons.BootSourceOverrideEnabled.ONCE)
        boot = self._system("boot override").boot
        if (boot.target, boot.enabled) != (sys_cons.BootSource.PXE, sys_cons.BootSourceOverrideEnabled.ONCE):
            raise RedfishUnavailable(self.host, "boot override", f"not applied: the BMC says target "
                                     f"{boot.target}, enabled {boot.enabled}")

    def next_boot(self) -> tuple[str, str]:
        """The boot override the BMC reports now: (BootSourceOverrideTarget, BootSourceOverrideEnabled),
        e.g. ("pxe", "once"); ("none", "disabled") when there is none."""
        boot = self._system("boot override").boot
        return (str(getattr(boot.target, "value", boot.target) or "none").lower(),
                str(getattr(boot.enabled, "value", boot.enabled) or "disabled").lower())

    # ---- sushy ----------------------------------------------------------------------------------

    def _system(self, what: str):
        """The host's ComputerSystem (the one of the Systems collection, or systems_uri), read now."""
        def fetch():
            root = sushy.Sushy(self.url, auth=sushy.auth.BasicAuth(*self._auth), verify=self._verify,
                               server_side_retries=1, read_timeout=self._timeout, connect_timeout=self._timeout)
            if self._systems_uri:
                return root.get_system(self._systems_uri)
            members = root.get_system_collection().get_members()
            if len(members) != 1:
                raise RedfishUnavailable(self.host, what, f"{len(members)} systems at {self.url}: set systems_uri")
            return members[0]
        return self._call(what, fetch)

    def _reset(self, system, kind) -> None:
        self._call(f"reset {kind.value}", system.reset_system, kind)

    def _call(self, what: str, fn, *args):
        started = time.monotonic()
        try:
            return fn(*args)
        except sushy_exc.SushyError as err:
            raise RedfishUnavailable(self.host, what, f"{_why(err)} (after {time.monotonic() - started:.1f} s)") from err


def _why(err: Exception) -> str:
    status = getattr(err, "status_code", None)
    message = getattr(err, "detail", None) or getattr(err, "message", None) or str(err)
    return f"HTTP {status}: {message}" if status else str(message)
