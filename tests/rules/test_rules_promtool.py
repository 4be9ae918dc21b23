"""The alerting rules and Alertmanager routing, checked by the real promtool and amtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
REMEDIATIONS = {"vm_down", "vm_io_error", "host_down", "host_damaged", "host_overloaded"}


def run(argv: list[str], cwd: Path = RULES) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def alerting_rules() -> list[dict]:
    groups = yaml.safe_load((RULES / "hypervisor.rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_is_clean():
    assert "SUCCESS: 6 rules found" in run(["promtool", "check", "rules", "hypervisor.rules.yml"])


def test_promtool_unit_tests_pass():
    assert "SUCCESS" in run(["promtool", "test", "rules", "tests/hypervisor.rules.test.yml"])


def test_recording_rules_are_clean_and_their_unit_tests_pass():
    assert "SUCCESS: 8 rules found" in run(["promtool", "check", "rules", "recording.rules.yml"])
    assert "SUCCESS" in run(["promtool", "test", "rules", "tests/recording.rules.test.yml"])


def test_example_prometheus_config_is_valid():
    run(["promtool", "check", "config", "prometheus.yml"])


def test_amtool_check_config_is_clean():
    assert "SUCCESS" in run(["amtool", "check-config", "alertmanager.yml"])


def test_every_alert_follows_the_contract():
    rules = alerting_rules()
    assert {r["alert"] for r in rules} == {
        "HypervisorVMDown", "HypervisorVMPausedIOError", "HypervisorHostDown", "HypervisorLibvirtDown",
        "HypervisorHostDamaged",
        "HypervisorHostOverloaded",
    }
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {_anchor(heading) for heading in re.findall(r"^#+\s+(.+)$", runbooks, re.MULTILINE)}
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"Hypervisor[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["labels"]["remediation"] in REMEDIATIONS, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/runbooks.md has no section {name}"
        assert "host" in rule["expr"], f"{name} must keep the host label"


def test_every_alert_has_promtool_tests_that_fire_it_and_hold_it_back():
    tests = yaml.safe_load((RULES / "tests" / "hypervisor.rules.test.yml").read_text())["tests"]
    fired, silent = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert names <= fired, f"never shown firing: {names - fired}"
    assert names <= silent, f"never shown not firing: {names - silent}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_each_overload_threshold_label_is_the_number_its_expression_compares_with():
    """The remediator rebalances to the alert's `threshold` label: it must be the rule's own figure."""
    import re

    import yaml

    rules = yaml.safe_load((RULES / "hypervisor.rules.yml").read_text())
    [rule] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "HypervisorHostOverloaded"]
    pairs = re.findall(r'> ([0-9.]+),\s*"reason", "(\w+)", "", ""\), "threshold", "([0-9.]+)"', rule["expr"])
    assert {reason for _, reason, _ in pairs} == {"load", "memory"}, rule["expr"]
    for compared, reason, label in pairs:
        assert float(compared) == float(label), (reason, compared, label)
