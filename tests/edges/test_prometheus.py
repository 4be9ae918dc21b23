"""Host load from Prometheus in one query, and a clear error when Prometheus is not there."""

import socket

import pytest

from remediator.edges.prometheus import LOAD_QUERY, LoadSource, PrometheusUnavailable, parse_load_vector


def _vector(*samples):
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": name, "host": host}, "value": [0, value]} for name, host, value in samples
    ]}}


def test_one_query_selects_every_gauge_placement_needs():
    for gauge in ("cpus", "load1", "memory_bytes", "memory_available_bytes", "vcpus_allocated",
                  "memory_allocated_bytes"):
        assert f"hypervisor_host_{gauge}" in LOAD_QUERY


def test_samples_group_by_host():
    loads = parse_load_vector(_vector(
        ("hypervisor_host_cpus", "h1", "8"), ("hypervisor_host_load1", "h1", "1.5"),
        ("hypervisor_host_memory_bytes", "h2", "1073741824"), ("hypervisor_host_load1", "h2", "NaN"),
        ("hypervisor_host_cpus", "other", "4"),
    ), hosts=["h1", "h2"])
    assert loads["h1"].cpus == 8 and loads["h1"].load1 == 1.5
    assert loads["h2"].memory_bytes == 1 << 30 and loads["h2"].load1 is None
    assert "other" not in loads


def test_an_error_answer_is_unavailable():
    with pytest.raises(PrometheusUnavailable, match="bad_data"):
        parse_load_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})


def test_a_dead_prometheus_is_unavailable_quickly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(PrometheusUnavailable, match=str(port)):
            LoadSource(f"http://127.0.0.1:{port}", timeout=1).host_load()


def test_the_storage_check_rides_along_with_the_load():
    payload = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "hypervisor_host_check", "host": "h1", "check": "storage"}, "value": [0, "0"]},
        {"metric": {"__name__": "hypervisor_host_check", "host": "h1", "check": "boot"}, "value": [0, "1"]},
        {"metric": {"__name__": "hypervisor_host_check", "host": "h2", "check": "storage"}, "value": [0, "1"]},
        {"metric": {"__name__": "hypervisor_host_load1", "host": "h3"}, "value": [0, "0.5"]},
    ]}}
    load = parse_load_vector(payload)
    assert (load["h1"].storage_ok, load["h2"].storage_ok, load["h3"].storage_ok) == (False, True, None)
    assert "hypervisor_host_check" in LOAD_QUERY
