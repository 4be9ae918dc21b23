"""Fencing and power control through the standard fence-agents interface.

Every agent of the fence-agents project (fence_ipmilan, fence_redfish, fence_virsh, ...) reads its
options as `key=value` lines on stdin, so credentials never appear on a command line (`ps` shows
them) nor in a shell. `status` exits 0 when the target is on and 2 when it is off, printing
`Status: ON|OFF`; anything else means the state is unknown.

The one rule this module exists for: a host counts as fenced only when the agent, asked *after*
the `off`, says it is off. An `off` that exits 0 is not enough (the BMC may have accepted the
command and done nothing), and an `off` that failed is not the last word either (the host may
already be off). Pacemaker and oVirt apply the same rule.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Mapping, Protocol, Sequence

# Agents print "Status: ON" / "Status: OFF"; the exit code says the same (0 on, 2 off).
_STATUS_LINE = re.compile(r"^Status:\s*(ON|OFF)\s*$", re.MULTILINE | re.IGNORECASE)
_AGENT_NAME = re.compile(r"^fence_[a-z0-9_]+$")
_EXIT_STATUS_OFF = 2
# Where Debian's fence-agents installs the agents; searched when PATH lacks /usr/sbin.
_AGENT_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class PowerState(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class Secret(Protocol):
    """pydantic's SecretStr, as the config keeps passwords: shown as ********** until revealed."""

    def get_secret_value(self) -> str: ...


class FenceDeviceSpec(Protocol):
    """What the config gives for each host (config.FenceDevice): an agent name and its options."""

    agent: str
    options: Mapping[str, str | Secret]


def revealed(options: Mapping[str, str | Secret]) -> dict[str, str]:
    """The options with their secrets in the clear: only for the agent (its stdin, ipmitool's environment)."""
    return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in options.items()}


@dataclass(frozen=True)
class AgentRun:
    """One invocation of a fence agent, kept for the incident's history."""

    action: str
    exit_code: int | None  # None: killed at the timeout
    output: str
    seconds: float


@dataclass(frozen=True)
class FenceResult:
    ok: bool  # True only when the agent's status says off
    state: PowerState
    detail: str
    runs: tuple[AgentRun, ...]

    @property
    def seconds(self) -> float:
        return sum(run.seconds for run in self.runs)


class UnknownHost(KeyError):
    pass


def agent_path(agent: str) -> str:
    """The agent's executable; raises ValueError for a name that is not a fence agent."""
    if not _AGENT_NAME.match(agent):
        raise ValueError(f"not a fence agent name: {agent!r} (expected fence_<name>)")
    found = shutil.which(agent) or next(
        (path for d in _AGENT_DIRS if (path := shutil.which(agent, path=d))), None
    )
    if found is None:
        raise FileNotFoundError(f"fence agent {agent} is not installed (Debian package fence-agents)")
    return found


def agent_stdin(options: Mapping[str, str | Secret], action: str) -> str:
    """The agent's stdin: one `key=value` line per option, `action` last so config cannot override it."""
    lines = []
    for key, value in revealed(options).items():
        if key == "action":
            continue
        if "\n" in str(key) or "\n" in str(value):
            raise ValueError(f"fence option {key!r} contains a newline")
        lines.append(f"{key}={value}")
    lines.append(f"action={action}")
    return "\n".join(lines) + "\n"


def parse_status(exit_code: int | None, output: str) -> PowerState:
    """Read a status run: both the exit code and the printed line must agree on off."""
    match = _STATUS_LINE.search(output)
    printed = match.group(1).lower() if match else None
    if exit_code == _EXIT_STATUS_OFF and printed == "off":
        return PowerState.OFF
    if exit_code == 0 and printed == "on":
        return PowerState.ON
    return PowerState.UNKNOWN


class Fencer:
    """Runs fence agents for the hosts of the inventory. A host may have several devices, tried in order
    (Pacemaker's fencing levels): the host is fenced when one of them proves it off."""

    def __init__(self, devices: Mapping[str, FenceDeviceSpec | Sequence[FenceDeviceSpec]], timeout: float = 30.0,
                 gate: Callable[[str], None] | None = None):
        """`gate(what)` runs right before each agent is started (leadership.LeaseLost: not started)."""
        self._devices = {host: tuple(d) if isinstance(d, (list, tuple)) else (d,) for host, d in devices.items()}
        self._timeout = timeout
        self._gate = gate or (lambda what: None)

    def devices(self, host: str) -> tuple[FenceDeviceSpec, ...]:
        try:
            return self._devices[host]
        except KeyError:
            raise UnknownHost(f"no fence device configured for host {host!r}") from None

    def run_agent(self, device: FenceDeviceSpec, action: str) -> AgentRun:
        self._gate(f"{device.agent} {action}")
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [agent_path(device.agent)],
                input=agent_stdin(device.options, action),
                capture_output=True,
                text=True,
                timeout=self._timeout,
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return AgentRun(action, None, f"timed out after {self._timeout:g}s. {output}".strip(),
                            time.monotonic() - started)
        output = (proc.stdout + proc.stderr).strip()
        return AgentRun(action, proc.returncode, output, time.monotonic() - started)

    def status(self, host: str) -> tuple[PowerState, AgentRun]:
        """The first device's definite answer (on or off); unknown when none gives one."""
        run = None
        for device in self.devices(host):
            run = self.run_agent(device, "status")
            state = parse_status(run.exit_code, run.output)
            if state is not PowerState.UNKNOWN:
                return state, run
        return PowerState.UNKNOWN, run

    def off(self, host: str) -> FenceResult:
        """Power the host off and prove it: `off`, then `status` must say off; each device in turn."""
        runs: list[AgentRun] = []
        whys = []
        state = PowerState.UNKNOWN
        for level, device in enumerate(self.devices(host), start=1):
            off_run = self.run_agent(device, "off")
            status_run = self.run_agent(device, "status")
            runs += (off_run, status_run)
            state = parse_status(status_run.exit_code, status_run.output)
            if state is PowerState.OFF:
                via = f" ({device.agent}, level {level})" if len(self.devices(host)) > 1 else ""
                return FenceResult(True, state, f"power off confirmed by status{via}", tuple(runs))
            why = _summary(off_run) if off_run.exit_code != 0 else "off reported success"
            whys.append(f"{device.agent}: {why}; status says {state.value}: {_summary(status_run)}")
        return FenceResult(False, state, " | ".join(whys), tuple(runs))

    def on(self, host: str) -> FenceResult:
        device = self.devices(host)[0]
        on_run = self.run_agent(device, "on")
        status_run = self.run_agent(device, "status")
        state = parse_status(status_run.exit_code, status_run.output)
        return FenceResult(state is PowerState.ON, state, _summary(on_run), (on_run, status_run))


def _summary(run: AgentRun) -> str:
    code = "timeout" if run.exit_code is None else f"exit {run.exit_code}"
    last = run.output.strip().splitlines()[-1] if run.output.strip() else "no output"
    return f"{run.action}: {code} ({last})"
