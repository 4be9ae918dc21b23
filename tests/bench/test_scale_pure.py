"""The pure parts of `make bench-scale`: the simulated fleet's data, the webhook bodies it posts, and the
reading of wrk's figures. The bench itself is `make bench-scale` (minutes), not part of `make test`."""

from __future__ import annotations

import json

from bench import scale_ingest
from bench.fleet import build_fleet, domain_xml, node_xml, vm_down_alert, vm_spec, webhook_body
from remediator.alerts import parse_body
from remediator.edges.libvirt import Hypervisors


def test_vm_specs_are_deterministic_and_the_first_of_each_host_is_down():
    assert vm_spec(7, 3, 1) == vm_spec(7, 3, 1)
    assert not vm_spec(7, 0, 1).running and vm_spec(7, 1, 1).running
    specs = [vm_spec(h, j, 1) for h in range(30) for j in range(20)]
    assert len({s.uuid for s in specs}) == len(specs)
    assert {s.vcpus for s in specs} == {1, 2, 3, 4} and any(s.group for s in specs)


def test_the_fleet_is_what_the_real_libvirt_edge_reads(tmp_path):
    fleet = build_fleet(tmp_path, hosts=3, vms_per_host=4)
    hv = Hypervisors(fleet.uris)
    try:
        for host in fleet.hosts:
            seen = {d.uuid: d for d in hv.domains(host)}
            assert set(seen) == {v.uuid for v in fleet.vms[host]}
            for v in fleet.vms[host]:
                assert (seen[v.uuid].vcpus, seen[v.uuid].alive) == (v.vcpus, v.running)
            assert hv.capacity(host)[0] == 32
    finally:
        hv.close()
    assert len(fleet.down_vms()) == 3 and fleet.vm_count == 12


def test_node_xml_holds_each_domain():
    specs = [vm_spec(1, j, 1) for j in range(2)]
    assert all(domain_xml(s) in node_xml(specs) for s in specs)


def test_the_webhook_body_is_a_valid_alertmanager_post_with_a_new_fingerprint_each_time():
    spec = vm_spec(2, 5, 1)
    notification = parse_body(webhook_body([vm_down_alert("h0002", spec, 1), vm_down_alert("h0002", spec, 2)]))
    first, second = notification.alerts
    assert (first.uuid, first.host, first.vm) == (spec.uuid, "h0002", spec.name)
    assert (first.fingerprint, first.starts_at) != (second.fingerprint, second.starts_at)


def test_wrk_figures_become_alerts_per_second_and_missing_acknowledgements():
    line = "WRK-JSON " + json.dumps({"requests": 6000, "duration_us": 6_000_000, "connect_errors": 0,
                                     "read_errors": 0, "write_errors": 0, "status_errors": 10, "timeouts": 0,
                                     "p50_ms": 5.0, "p90_ms": 9.0, "p99_ms": 20.0, "max_ms": 40.0, "mean_ms": 6.0})
    summary = scale_ingest.summarise(scale_ingest.parse_wrk("Running 6s test\n" + line + "\n"), stored_alerts=5980)
    assert summary["alerts_per_s"] == 998.3 and summary["failed"] == 10
    assert summary["acknowledged_but_missing"] == 10  # 5,990 answered, 5,980 in the store
    assert summary["p99_ms"] == 20.0
