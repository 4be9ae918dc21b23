"""The committed dashboards are what grafana/generate.py makes, and load back into
grafana-foundation-sdk's model without loss (no Grafana server is packaged for these machines:
the library's typed model stands in for Grafana's schema)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import dashboard as dm

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
UIDS = {"remediator-fleet", "remediator-host", "remediator-remediation"}


def test_committed_json_is_what_the_generator_makes():
    proc = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_dashboard_loads_into_the_library_model_and_serialises_back_identically():
    register_default_plugins()
    panels = 0
    for path in DASHBOARDS:
        text = path.read_text()
        model = dm.Dashboard.from_json(json.loads(text))
        assert json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n" == text, path.name
        typed = [p for p in model.panels if isinstance(p, dm.Panel)]
        # each panel's options and targets decode to their plugin's own types, not bare dicts
        assert all(p.options is not None and not isinstance(p.options, dict) for p in typed), path.name
        assert all(type(t).__module__.endswith(".prometheus") for p in typed for t in p.targets or []), path.name
        panels += len(typed)
    print(f"\n{len(DASHBOARDS)} dashboards, {panels} panels: loaded and re-serialised byte for byte")
    assert {p.stem for p in DASHBOARDS} == UIDS


def test_uids_datasource_variable_and_unique_panel_ids():
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == path.stem
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            for target in panel.get("targets") or []:
                assert target["datasource"]["uid"] == "${datasource}", (path.name, panel["title"])
                assert target["refId"], (path.name, panel["title"])
            if panel["type"] != "row":
                assert panel.get("description"), f"{path.name}: {panel['title']} says nothing of what it means"
        assert any(link.get("url", "").endswith("runbooks.md") for link in dashboard["links"]), path.name


def test_provisioning_points_at_the_dashboards_and_a_prometheus_datasource():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "remediator.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/remediator"
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
