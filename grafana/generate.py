"""The dashboards as code: `make dashboards` writes grafana/dashboards/*.json from this file.

Built with grafana-foundation-sdk (Grafana's own typed builders), so a panel that Grafana's schema
would not accept does not build. Every panel reads Prometheus through the `datasource` variable;
uids are fixed so links and provisioning survive regeneration. The PromQL is checked against a
real Prometheus fed by the lab in tests/e2e/test_dashboards.py; what each panel means for an
operator is in docs/operations.md#the-dashboards.

    python grafana/generate.py [--check]     # --check: exit 1 if the committed JSON differs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import prometheus as pb
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "dashboards"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["remediator"]
RUNBOOKS = "${docs}/runbooks.md"
GUIDE = "${docs}/operations.md#the-dashboards"


# ---------------------------------------------------------------- small helpers

def q(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: PromQueryFormat | None = None):
    query = pb.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    if instant:
        query = query.instant()
    if fmt is not None:
        query = query.format(fmt)
    return query


def graph(title: str, description: str, *queries, unit: str = "short", w: int = 12, h: int = 8, stack: bool = False):
    panel = (timeseries.Panel().title(title).description(description).datasource(DS).unit(unit).span(w).height(h)
             .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                     .placement(cm.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))
             .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)))
    if stack:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    for query in queries:
        panel = panel.with_target(query)
    return panel


def single(title: str, description: str, *queries, unit: str = "short", w: int = 6, h: int = 4,
           mappings: list | None = None):
    panel = (stat.Panel().title(title).description(description).datasource(DS).unit(unit).span(w).height(h)
             .graph_mode(cm.BigValueGraphMode.NONE).color_mode(cm.BigValueColorMode.VALUE)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if mappings:
        panel = panel.mappings(mappings)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def listing(title: str, description: str, *queries, w: int = 12, h: int = 8):
    panel = (table.Panel().title(title).description(description).datasource(DS).span(w).height(h).show_header(True)
             .with_transformation(dm.DataTransformerConfig(id_val="merge", options={})))
    for query in queries:
        panel = panel.with_target(query)
    return panel


def states(title: str, description: str, *queries, w: int = 24, h: int = 8, mappings: list | None = None):
    panel = (statetimeline.Panel().title(title).description(description).datasource(DS).span(w).height(h)
             .show_value(cm.VisibilityMode.AUTO).merge_values(True))
    if mappings:
        panel = panel.mappings(mappings)
    for query in queries:
        panel = panel.with_target(query)
    return panel


def value_map(mapping: dict[str, tuple[str, str]]) -> list:
    """{"0": ("failed", "red")} -> a Grafana value mapping."""
    return [dm.ValueMap(options={k: dm.ValueMappingResult(text=text, color=color, index=i)
                                 for i, (k, (text, color)) in enumerate(mapping.items())})]


def base(title: str, uid: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(TAGS).editable().refresh("30s")
            .time("now-3h", "now").timezone("browser")
            .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
            .with_variable(db.TextBoxVariable("docs").label("Docs base URL")
                           .default_value("https://remediator.example/docs"))
            .link(db.DashboardLink("Remediator dashboards").type(dm.DashboardLinkType.DASHBOARDS).tags(TAGS)
                  .as_dropdown(True).include_vars(True).keep_time(True))
            .link(db.DashboardLink("Runbooks").type(dm.DashboardLinkType.LINK).url(RUNBOOKS).target_blank(True))
            .link(db.DashboardLink("What each panel means").type(dm.DashboardLinkType.LINK).url(GUIDE)
                  .target_blank(True)))


NOT_RUNNING = ('hypervisor_vm_info{ha="true"} unless on (uuid) '
               '(hypervisor_vm_state{state=~"running|blocked|paused"} == 1)')
STORM = value_map({"0": ("no hold", "green"), "1": ("HELD", "red")})
CHECK = value_map({"0": ("failed", "red"), "1": ("ok", "green")})


# ---------------------------------------------------------------- the dashboards

def fleet() -> db.Dashboard:
    return (base("Remediator / Fleet", "remediator-fleet",
                 "Every hypervisor host and protected VM, and what the remediator is doing about them.")
            .with_row(db.Row("Now"))
            .with_panel(single("Hosts by condition", "What the remediator believes of each inventory host: up takes "
                               "VMs; cordoned, down, fenced and maintenance do not.",
                               q("sum by (condition) (remediator_hosts)", "{{condition}}", instant=True), w=8))
            .with_panel(single("Hosts failing a check", "Hosts with at least one damage check at 0 "
                               "(HypervisorHostDamaged fires after 15 s).",
                               q("count(count by (host) (hypervisor_host_check == 0)) or vector(0)", instant=True), w=4))
            .with_panel(single("Protected VMs not running", "HA VMs that the exporters see defined but not running "
                               "anywhere. VMs of a host whose exporter is down are not seen here: see Hosts.",
                               q("cluster:hypervisor_protected_vms_not_running:count", instant=True), w=4))
            .with_panel(single("Storm hold", "HELD: more than policy.storm.max_unhealthy_share of the hosts look "
                               "out at once; nothing is evacuated until an operator releases or hosts return.",
                               q("max(remediator_storm_hold)", instant=True), w=4, mappings=STORM))
            .with_panel(single("Unhealthy host share", "Share of inventory hosts out (down, fenced, cordoned): above policy.storm.max_unhealthy_share, the storm hold.",
                               q("max(remediator_unhealthy_host_share)", instant=True), unit="percentunit", w=4))
            .with_row(db.Row("Hosts"))
            .with_panel(listing("Host condition", "One row per host: the condition the remediator believes.",
                                q("max by (host, condition) (remediator_host_condition == 1)", instant=True,
                                  fmt=PromQueryFormat.TABLE)))
            .with_panel(graph("Exporter and libvirt answering", "up: Prometheus scraped the host's exporter; "
                              "hypervisor_up: the exporter reached libvirtd. up at 0 for 2 s fires "
                              "HypervisorHostDown; hypervisor_up at 0 for 5 s (up at 1) fires HypervisorLibvirtDown.",
                              q('up{job="hypervisor"}', "{{host}} scraped"),
                              q("hypervisor_up", "{{host}} libvirt", ref="B")))
            .with_panel(states("Damage checks (1 ok, 0 failed)", "Each host's checks over time "
                               "(boot, rootfs_writable, libvirtd, storage, disk_space).",
                               q("min by (host, check) (hypervisor_host_check)", "{{host}} {{check}}"),
                               mappings=CHECK))
            .with_row(db.Row("Capacity"))
            .with_panel(graph("vCPU allocation", "vCPUs of the active VMs per logical CPU; placement stops at "
                              "policy.overcommit.cpu.", q("host:hypervisor_vcpus_allocated:ratio", "{{host}}"),
                              unit="percentunit", w=8))
            .with_panel(graph("Memory allocation", "Memory of the active VMs' definitions per physical memory; "
                              "placement stops at policy.overcommit.memory.",
                              q("host:hypervisor_memory_allocated:ratio", "{{host}}"), unit="percentunit", w=8))
            .with_panel(graph("Load", "1-minute load per CPU (overloaded above 1.5 for 2 min) and memory in use "
                              "(overloaded above 90 %).",
                              q("host:hypervisor_load1_per_cpu:ratio", "{{host}} load/CPU"),
                              q("host:hypervisor_memory_used:ratio", "{{host}} memory used", ref="B"),
                              unit="percentunit", w=8))
            .with_panel(listing("Capacity", "What each host has: logical CPUs, memory, active VMs.",
                                q("hypervisor_host_cpus", instant=True, fmt=PromQueryFormat.TABLE),
                                q("hypervisor_host_memory_bytes", instant=True, fmt=PromQueryFormat.TABLE, ref="B"),
                                q("hypervisor_host_vms", instant=True, fmt=PromQueryFormat.TABLE, ref="C"), w=24))
            .with_row(db.Row("VMs"))
            .with_panel(graph("VMs by state", "Every defined VM, running or not, by libvirt state.",
                              q("state:hypervisor_vms:count", "{{state}}"), stack=True))
            .with_panel(listing("Protected VMs not running", "Which HA VMs are down now, where, with their "
                                "priority. Empty while every protected VM runs.",
                                q(NOT_RUNNING, instant=True, fmt=PromQueryFormat.TABLE)))
            .with_row(db.Row("Remediation"))
            .with_panel(graph("Open incidents by state", "Incidents the remediator is working on; failed ones wait "
                              "for an operator (docs/operations.md#when-an-incident-fails).",
                              q("sum by (state) (max_over_time(remediator_incidents_open[$__interval]))", "{{state}}"),
                              stack=True))
            .with_panel(graph("Storm hold", "1 while evacuation is held; the share of hosts out beside it.",
                              q("max(remediator_storm_hold)", "hold"),
                              q("max(remediator_unhealthy_host_share)", "share of hosts out", ref="B")))
            .build())


def host() -> db.Dashboard:
    h = '{host="$host"}'
    return (base("Remediator / Host", "remediator-host", "One hypervisor host: checks, load, VMs, incidents.")
            .with_variable(db.QueryVariable("host").label("Host").datasource(DS)
                           .query('label_values(up{job="hypervisor"}, host)')
                           .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
            .with_panel(single("Condition", "What the remediator believes of this host.",
                               q(f'max by (condition) (remediator_host_condition{h} == 1)', "{{condition}}",
                                 instant=True), w=6))
            .with_panel(single("Scraped / libvirt", "1: Prometheus scrapes its exporter / the exporter reaches "
                               "libvirtd.", q(f'up{{job="hypervisor",host="$host"}}', "scraped", instant=True),
                               q(f"hypervisor_up{h}", "libvirt", instant=True, ref="B"), w=6))
            .with_panel(single("CPUs / active VMs", "Logical CPUs and VMs running here.",
                               q(f"hypervisor_host_cpus{h}", "CPUs", instant=True),
                               q(f"hypervisor_host_vms{h}", "VMs", instant=True, ref="B"), w=6))
            .with_panel(single("Exporter scrape time", "Time the exporter spent collecting (libvirt + checks).",
                               q(f"hypervisor_exporter_scrape_duration_seconds{h}", instant=True), unit="s", w=6))
            .with_panel(states("Checks (1 ok, 0 failed)", "This host's damage checks over time.",
                               q(f"hypervisor_host_check{h}", "{{check}}"), mappings=CHECK))
            .with_panel(graph("Load", "1-minute load and logical CPUs.",
                              q(f"hypervisor_host_load1{h}", "load1"), q(f"hypervisor_host_cpus{h}", "CPUs", ref="B")))
            .with_panel(graph("Allocation and memory", "vCPUs per CPU, VM memory per physical memory, memory in use.",
                              q(f"host:hypervisor_vcpus_allocated:ratio{h}", "vCPUs/CPU"),
                              q(f"host:hypervisor_memory_allocated:ratio{h}", "memory allocated", ref="B"),
                              q(f"host:hypervisor_memory_used:ratio{h}", "memory in use", ref="C"), unit="percentunit"))
            .with_panel(listing("VMs and their states", "Every VM defined here, its state and its HA declaration.",
                                q(f"(hypervisor_vm_state{h} == 1) * on (host, uuid) group_left (ha, priority, group) "
                                  f"hypervisor_vm_info{h}", instant=True, fmt=PromQueryFormat.TABLE), w=24))
            .with_panel(graph("VM CPU", "CPU seconds per second of each active VM.",
                              q(f"rate(hypervisor_vm_cpu_seconds_total{h}[$__rate_interval])", "{{vm}}"), unit="short"))
            .with_panel(states("Incidents", "The remediator's incidents on this host over time, each by "
                               "subject and state (vm_verifying, host_fencing, failed...); gone once closed. The maximum over "
                               "each interval, so an incident shorter than a step still shows.",
                               q(f"max by (subject, kind, state) (max_over_time(remediator_incident_open{h}[$__interval]))",
                                 "{{kind}} {{subject}} {{state}}"), w=12))
            .with_panel(listing("Firing alerts", "The alerts Prometheus fires about this host now. Empty when none.",
                                q(f'ALERTS{{host="$host",alertstate="firing"}}', instant=True,
                                  fmt=PromQueryFormat.TABLE), w=24))
            .build())


def remediation() -> db.Dashboard:
    rate = "[$__rate_interval]"
    return (base("Remediator / Remediation", "remediator-remediation",
                 "What the remediator did: incidents, recovery times, actions, fencing, its webhook and its health.")
            .with_panel(graph("Incidents opened", "By remediation kind (vm_down, host_down, host_damaged, "
                              "host_overloaded, host_maintenance).",
                              q(f"sum by (kind) (increase(remediator_incidents_opened_total{rate}))", "{{kind}}"),
                              w=8))
            .with_panel(graph("Incidents closed", "By kind and outcome: recovered, dismissed (nothing to do), "
                              "closed_by_operator.",
                              q(f"sum by (kind, outcome) (increase(remediator_incidents_closed_total{rate}))",
                                "{{kind}} {{outcome}}"), w=8))
            .with_panel(graph("Incidents given up", "The engine gave up (state failed): an operator acts "
                              "(docs/operations.md#when-an-incident-fails).",
                              q(f"sum by (kind) (increase(remediator_incidents_failed_total{rate}))", "{{kind}}"), w=8))
            .with_panel(graph("Recovery time p50 / p95 (last hour)", "From the alert's startsAt to the subject "
                              "running again, by kind (remediator_alert_to_recovery_seconds).",
                              q("kind:remediator_alert_to_recovery_seconds:p50_1h", "p50 {{kind}}"),
                              q("kind:remediator_alert_to_recovery_seconds:p95_1h", "p95 {{kind}}", ref="B"), unit="s"))
            .with_panel(heatmap.Panel().title("Recovery time distribution").description(
                "How many recoveries took how long, per interval, all kinds.").datasource(DS).span(12).height(8)
                .calculate(False).with_target(
                    q(f"sum by (le) (increase(remediator_alert_to_recovery_seconds_bucket{rate}))", "{{le}}",
                      fmt=PromQueryFormat.HEATMAP)))
            .with_panel(listing("Actions by kind and outcome", "Since the remediator started: each engine action "
                                "(verify, start, fence, evacuate, migrate...) and how it ended (ok, failed, timeout).",
                                q("sum by (action, outcome) (remediator_action_duration_seconds_count)", instant=True,
                                  fmt=PromQueryFormat.TABLE)))
            .with_panel(graph("Action duration p95", "Since the remediator started, by action.",
                              q("histogram_quantile(0.95, sum by (action, le) "
                                "(remediator_action_duration_seconds_bucket))", "{{action}}"), unit="s"))
            .with_panel(graph("Fencing outcomes", "off: the fence agent's status said off; failed: nothing is "
                              "restarted elsewhere until it succeeds or an operator confirms off.",
                              q(f"sum by (outcome) (increase(remediator_fencing_total{rate}))", "{{outcome}}"), w=8))
            .with_panel(graph("Webhook requests by status", "Alertmanager's posts: 200 stored; 400 malformed; "
                              "401 bad credentials; 413 too large; 503 store unavailable (Alertmanager retries).",
                              q(f"sum by (code) (rate(remediator_webhook_requests_total{rate}))", "{{code}}"),
                              unit="reqps", w=8))
            .with_panel(graph("Alerts received", "new, repeat (already stored), ignored (outside the inventory "
                              "or not HA).",
                              q(f"sum by (result) (rate(remediator_alerts_received_total{rate}))", "{{result}}"),
                              unit="short", w=8))
            .with_panel(single("Since the last inventory sync", "Stored VM definitions are at most this old; a VM "
                               "defined later cannot be rebuilt elsewhere. Normal: under policy.timings.inventory_sync_s.",
                               q("time() - max(remediator_inventory_last_sync_timestamp_seconds)", instant=True),
                               unit="s"))
            .with_panel(single("Leader", "1 on the replica that acts.", q("remediator_leader", "{{instance}}",
                                                                         instant=True)))
            .with_panel(single("State store", "1: the store answered the last scrape.",
                               q("min(remediator_store_up)", instant=True),
                               mappings=value_map({"0": ("DOWN", "red"), "1": ("up", "green")})))
            .with_panel(single("Storm hold", "HELD: nothing is evacuated (see Fleet).",
                               q("max(remediator_storm_hold)", instant=True), mappings=STORM))
            .build())


DASHBOARDS = {"remediator-fleet": fleet, "remediator-host": host, "remediator-remediation": remediation}


def render(dashboard: dm.Dashboard) -> str:
    """The JSON Grafana gets: panels numbered 1..n, then passed once through the library's own model
    (Dashboard.from_json) so the file is exactly what loading it gives back (defaults filled in)."""
    for number, panel in enumerate(dashboard.panels or [], 1):
        panel.id_val = number
    register_default_plugins()
    loaded = dm.Dashboard.from_json(json.loads(json.dumps(dashboard, cls=JSONEncoder)))
    return json.dumps(loaded, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = OUT / f"{name}.json", render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale (run `make dashboards`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
