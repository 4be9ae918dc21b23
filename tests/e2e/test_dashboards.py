"""Every query of every dashboard panel, run against a real Prometheus fed by the lab.

The stack (exporters on the lab hosts, Prometheus with rules/, Alertmanager, the remediator) goes
through a guest crash and a host power loss; then each panel's PromQL, with the dashboard's
variables substituted as Grafana would, must return data. Grafana is not packaged for these
machines: the JSON is proven by the library's model (tests/test_grafana.py), the queries here.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from lab.stack import wait_for

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
STEP_S = 5
# Grafana's $__rate_interval at a 5 s step and the 1 s scrape interval of rules/prometheus.yml
# is max(4 x scrape, step + scrape) = 6 s; 15 s keeps a few samples in each window on a busy machine.
RATE_INTERVAL = "15s"
# Panels that may legitimately show nothing once the lab has recovered, and why.
LEGITIMATELY_EMPTY = {
    ("remediator-fleet", "Protected VMs not running"): "every protected VM runs again after the recovery",
}
BUILTIN = {"up", "ALERTS"}  # Prometheus's own series (docs/metrics.md names them too)


def targets(dashboard: dict) -> list[tuple[str, dict]]:
    return [(panel["title"], target) for panel in dashboard["panels"] for target in panel.get("targets") or []]


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (metric selectors, not functions or labels)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_matchers = re.sub(r"\{[^}]*\}", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_matchers)
    without_groupings = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_ranges)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_groupings))
    return {n for n in names if n in BUILTIN or n.startswith(("hypervisor_", "remediator_")) or ":" in n}


def documented(name: str, metrics_doc: str, recorded: set[str]) -> bool:
    if ":" in name:
        return name in recorded and f"`{name}`" in metrics_doc
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    return f"`{name}`" in metrics_doc or f"`{base}`" in metrics_doc


def test_every_metric_a_panel_reads_is_documented():
    metrics_doc = (REPO / "docs" / "metrics.md").read_text()
    rules = yaml.safe_load((REPO / "rules" / "recording.rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"]}
    names = {n for path in DASHBOARDS for _, t in targets(json.loads(path.read_text())) for n in metric_names(t["expr"])}
    missing = sorted(n for n in names if not documented(n, metrics_doc, recorded))
    print(f"\n{len(names)} metric names read by the dashboards, all documented")
    assert len(DASHBOARDS) == 3 and names, DASHBOARDS
    assert not missing, f"read by a panel but not in docs/metrics.md (or not recorded): {missing}"


def test_every_panel_query_returns_data_after_a_crash_and_a_power_loss(stack_factory):
    vms = [{"name": "web-1", "priority": 100}, {"name": "db-0", "priority": 50}, {"name": "db-1", "priority": 40}]
    lab, stack, sampler = stack_factory(vms=vms)
    uuids = {"web-1": lab.define_guest("h2", "web-1", metadata=lab.ha_metadata(protected=True, priority=100))}
    for name in ("db-0", "db-1"):
        uuids[name] = lab.define_guest("h1", name, metadata=lab.ha_metadata(protected=True, priority=50))
    stack.wait_watching(uuids.values())
    started = time.time()
    prom = stack.prometheus

    lab.crash_guest("h2", "web-1")
    wait_for(lambda: uuids["web-1"] in lab.running("h2"), 30, "web-1 running again on h2", on_timeout=stack.log_tail)
    lab.power_off("h1")
    wait_for(lambda: all(any(uuids[n] in lab.running(h) for h in ("h2", "h3")) for n in ("db-0", "db-1")), 60,
             "h1's guests running on h2 or h3", on_timeout=stack.log_tail)
    # the remediator's counters of both recoveries, scraped and evaluated by the recording rules
    wait_for(lambda: prom.query('kind:remediator_alert_to_recovery_seconds:p50_1h{kind="host_down"} > 0')
             and prom.query('kind:remediator_alert_to_recovery_seconds:p50_1h{kind="vm_down"} > 0'), 30,
             "both recoveries in Prometheus", on_timeout=lambda: stack.metrics())
    # The fast path recovers before the alert path reports (HostDown has `for: 5s`): wait for the alert
    # path's webhook post too, as the Remediation dashboard's webhook and alert panels show it.
    wait_for(lambda: prom.query('sum(remediator_alerts_received_total) > 0'), 30,
             "the alert path's webhook post counted", on_timeout=lambda: stack.metrics())
    assert sampler.duplicates == []

    hosts = sorted({s["metric"]["host"] for s in prom.query('up{job="hypervisor"}')})
    # A range query is evaluated at start + k * step only: end the window a step (and a scrape) after
    # the recovery, as a dashboard showing "up to now" does, or its last seconds fall after the last step.
    time.sleep(STEP_S + 1)
    end = time.time()
    checked, with_data, empty = 0, 0, []
    panels = 0
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uid = dashboard["uid"]
        panels += sum(1 for p in dashboard["panels"] if p.get("targets"))
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        # the Host dashboard is checked for every value of $host; a query has data if it has for any host
        values = hosts if "host" in variables else [None]
        for title, target in targets(dashboard):
            checked += 1
            got = {}
            for host in values:
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", f"{STEP_S}s")
                if host is not None:
                    expr = expr.replace("$host", host)
                assert "$" not in expr, f"{uid} / {title}: unsubstituted variable in {expr}"
                result = (prom.query(expr) if target.get("instant")
                          else prom.query_range(expr, started, end, STEP_S))
                got[host] = len(result)
            if any(got.values()):
                with_data += 1
            else:
                empty.append((uid, title))
            print(f"{uid:24} {title[:44]:44} {'instant' if target.get('instant') else 'range':7} "
                  f"series {got if len(got) > 1 else got[None]}")
    print(f"\n{len(DASHBOARDS)} dashboards, {panels} panels with queries, {checked} queries: "
          f"{with_data} returned data, empty: {empty}")
    unexplained = [e for e in empty if e not in LEGITIMATELY_EMPTY]
    assert not unexplained, f"queries without data: {unexplained}"
