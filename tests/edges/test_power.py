"""Power devices: boot control read from ipmitool's words, fencing levels tried in order, the hook.

The lab tests (tests/e2e/test_reprovision.py) drive ipmitool against the lab's BMCs; here the parts
that need no BMC: what ipmitool's answer means, the order of fencing levels (with two small agents
that speak the fence-agents interface), and the provisioning hook's templates."""

from __future__ import annotations

import stat
import sys

import pytest

from remediator.config import FenceDevice, ProvisioningHook
from remediator.edges import hook
from remediator.edges.fencing import Fencer, PowerState
from remediator.edges.power import NoBootControl, PowerDevices, parse_bootparam

PXE_ONCE = """Boot parameter version: 1
Boot parameter 5 is valid/unlocked
Boot parameter data: 8004000000
 Boot Flags :
   - Boot Flag Valid
   - Options apply to only next boot
   - BIOS PC Compatible (legacy) boot
   - Boot Device Selector : Force PXE
"""


def test_bootparam_says_pxe_once_disk_persistent_or_no_override():
    assert (parse_bootparam(PXE_ONCE).target, parse_bootparam(PXE_ONCE).once) == ("pxe", True)
    disk = PXE_ONCE.replace("only next boot", "all future boots").replace("Force PXE", "Force Boot from default Hard-Drive")
    assert (parse_bootparam(disk).target, parse_bootparam(disk).once) == ("disk", False)
    invalid = PXE_ONCE.replace("Boot Flag Valid", "Boot Flag Invalid")
    assert parse_bootparam(invalid).target == "none"


def test_a_host_whose_devices_cannot_set_a_boot_device_says_which_kinds_can():
    power = PowerDevices({"h1": (FenceDevice(agent="fence_virsh", options={}),)})
    assert not power.can_boot("h1")
    with pytest.raises(NoBootControl, match="fence_virsh.*fence_ipmilan"):
        power.boot_control("h1")


AGENT = """#!{python}
import sys
opts = dict(line.strip().split("=", 1) for line in sys.stdin if "=" in line)
with open(opts["log"], "a") as log:
    log.write(opts["name"] + " " + opts["action"] + "\\n")
if opts["works"] != "1":
    print("Failed: no route to the device"); sys.exit(1)
if opts["action"] == "status":
    print("Status: OFF"); sys.exit(2)
sys.exit(0)
"""


def test_fencing_levels_are_tried_in_order_until_one_proves_the_host_off(tmp_path, monkeypatch):
    agent = tmp_path / "fence_leveltest"
    agent.write_text(AGENT.format(python=sys.executable))
    agent.chmod(agent.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    log = tmp_path / "calls"
    levels = (FenceDevice(agent="fence_leveltest", options={"name": "ipmi", "works": "0", "log": str(log)}),
              FenceDevice(agent="fence_leveltest", options={"name": "pdu", "works": "1", "log": str(log)}))
    result = Fencer({"h1": levels}, timeout=10).off("h1")
    assert result.ok and result.state is PowerState.OFF and "level 2" in result.detail
    assert log.read_text().split("\n")[:-1] == ["ipmi off", "ipmi status", "pdu off", "pdu status"]
    state, _ = Fencer({"h1": levels}, timeout=10).status("h1")
    assert state is PowerState.OFF  # the first device without an answer is passed over


def test_hook_command_gets_its_placeholders_and_an_unknown_one_is_an_error(tmp_path):
    out = tmp_path / "out"
    done = hook.call(ProvisioningHook(command=("sh", "-c", f"echo $$1 $$2 > {out}", "x", "$host", "$incident")),
                     {"host": "h1", "address": "10.0.0.1", "incident": "7"})
    assert out.read_text() == "h1 7\n" and "exit 0" in done
    with pytest.raises(hook.HookFailed, match=r"\$hostname"):
        hook.fill("reinstall $hostname", {"host": "h1"})
    with pytest.raises(hook.HookFailed, match="exit 3"):
        hook.call(ProvisioningHook(command=("sh", "-c", "exit 3")), {"host": "h1"})
