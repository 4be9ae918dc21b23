"""The fence-agents interface: options on stdin, success only when status says off.

The agent runs for real here: fence_ipmilan against a loopback port where no BMC listens,
which is what a host's power loss that took its BMC along looks like. The lab's BMC tests
(tests/e2e) show the other side, an agent that powers a host off and proves it.
"""

import socket

import pytest

from remediator.config import FenceDevice
from remediator.edges.fencing import (
    Fencer,
    PowerState,
    UnknownHost,
    agent_path,
    agent_stdin,
    parse_status,
)


def test_options_go_on_stdin_one_per_line_with_action_last():
    text = agent_stdin({"ip": "127.0.0.1", "ipport": "6230", "action": "reboot"}, "off")
    assert text == "ip=127.0.0.1\nipport=6230\naction=off\n"


def test_an_option_cannot_smuggle_a_second_line():
    with pytest.raises(ValueError, match="newline"):
        agent_stdin({"password": "x\naction=on"}, "off")


@pytest.mark.parametrize(
    "code, output, state",
    [
        (2, "Status: OFF", PowerState.OFF),
        (0, "Status: ON", PowerState.ON),
        (0, "Status: OFF", PowerState.UNKNOWN),  # exit code and text disagree: believe neither
        (2, "", PowerState.UNKNOWN),  # exit 2 is also EC_BAD_ARGS for the other actions
        (1, "Failed: Unable to obtain correct plug status", PowerState.UNKNOWN),
        (None, "timed out", PowerState.UNKNOWN),
    ],
)
def test_status_is_off_only_when_exit_code_and_text_agree(code, output, state):
    assert parse_status(code, output) is state


def test_only_fence_agents_are_run():
    with pytest.raises(ValueError, match="not a fence agent"):
        agent_path("rm")
    with pytest.raises(FileNotFoundError, match="fence_nonexistent"):
        agent_path("fence_nonexistent")


def test_unknown_host_is_named():
    with pytest.raises(UnknownHost, match="h9"):
        Fencer({}).off("h9")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_bmc_is_never_reported_as_fenced():
    device = FenceDevice(
        agent="fence_ipmilan",
        options={"ip": "127.0.0.1", "ipport": str(_free_udp_port()), "username": "admin",
         "password": "password", "lanplus": "1", "power_timeout": "2", "login_timeout": "2"},
    )
    result = Fencer({"h1": device}, timeout=20).off("h1")
    assert not result.ok
    assert result.state is PowerState.UNKNOWN
    assert [run.action for run in result.runs] == ["off", "status"]
    assert "status says unknown" in result.detail
