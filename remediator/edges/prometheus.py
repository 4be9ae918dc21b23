"""Load and capacity of the hosts, from Prometheus (the exporter's series), in one query per batch.

Placement needs, per host, its CPUs and memory, what is allocated on it and how busy it is. All of
it comes from the exporter's `hypervisor_host_*` gauges (docs/metrics.md), fetched with a single
instant query whose `__name__` matcher selects every gauge at once: one round trip per decision
batch however many hosts there are. When Prometheus does not answer, callers fall back to what
libvirt reports and say so in the incident; this module only raises `PrometheusUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import requests

# Exporter gauge -> HostLoad field.
_GAUGES = {
    "hypervisor_host_cpus": "cpus",
    "hypervisor_host_load1": "load1",
    "hypervisor_host_memory_bytes": "memory_bytes",
    "hypervisor_host_memory_available_bytes": "memory_available_bytes",
    "hypervisor_host_vcpus_allocated": "vcpus_allocated",
    "hypervisor_host_memory_allocated_bytes": "memory_allocated_bytes",
}
# The exporter's storage check (pointed at the shared storage's mount) rides along in the same query:
# placement keeps shared-storage VMs off a host whose check fails.
_STORAGE_CHECK = "hypervisor_host_check"
LOAD_QUERY = '{__name__=~"%s"}' % "|".join(sorted([*_GAUGES, _STORAGE_CHECK]))


class PrometheusUnavailable(RuntimeError):
    """Prometheus did not answer, answered an error, or answered something that is not a vector."""


@dataclass(frozen=True)
class HostLoad:
    host: str
    cpus: int | None = None
    load1: float | None = None
    memory_bytes: int | None = None
    memory_available_bytes: int | None = None
    vcpus_allocated: int | None = None
    memory_allocated_bytes: int | None = None
    storage_ok: bool | None = None  # the exporter's `storage` check; None without a series


def parse_load_vector(payload: Mapping, hosts: Iterable[str] | None = None) -> dict[str, HostLoad]:
    """Turn a `/api/v1/query` answer for LOAD_QUERY into HostLoad per host (pure)."""
    if payload.get("status") != "success":
        raise PrometheusUnavailable(f"query failed: {payload.get('errorType')}: {payload.get('error')}")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusUnavailable(f"expected a vector, got {data.get('resultType')!r}")
    wanted = set(hosts) if hosts is not None else None
    fields: dict[str, dict[str, float]] = {}
    for sample in data.get("result", []):
        metric = sample.get("metric", {})
        host, field = metric.get("host"), _GAUGES.get(metric.get("__name__", ""))
        if metric.get("__name__") == _STORAGE_CHECK and metric.get("check") == "storage":
            field = "storage_ok"
        if host is None or field is None or (wanted is not None and host not in wanted):
            continue
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if value != value:  # NaN: the exporter had no figure
            continue
        fields.setdefault(host, {})[field] = value
    return {
        host: HostLoad(
            host=host,
            **{k: (v if k == "load1" else bool(v) if k == "storage_ok" else int(v)) for k, v in values.items()},
        )
        for host, values in fields.items()
    }


class LoadSource:
    def __init__(self, url: str, timeout: float = 2.0, session: requests.Session | None = None):
        self._url = url.rstrip("/") + "/api/v1/query"
        self._timeout = timeout
        self._session = session or requests.Session()

    def _query(self, query: str) -> Mapping:
        try:
            response = self._session.get(self._url, params={"query": query}, timeout=self._timeout)
            return response.json()
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"{self._url}: {exc}") from exc
        except ValueError as exc:
            raise PrometheusUnavailable(f"{self._url}: answer is not JSON (HTTP {response.status_code})") from exc

    def host_load(self, hosts: Iterable[str] | None = None) -> dict[str, HostLoad]:
        """Load per host; hosts without series are absent from the result."""
        return parse_load_vector(self._query(LOAD_QUERY), hosts)

    def host_checks(self, host: str) -> dict[str, bool]:
        """The exporter's damage checks of `host` as Prometheus has them now: {check: ok}. Empty when
        Prometheus has no series for the host (raises PrometheusUnavailable when it does not answer)."""
        query = 'hypervisor_host_check{host="%s"}' % host.replace("\\", "\\\\").replace('"', '\\"')
        payload = self._query(query)
        if payload.get("status") != "success":
            raise PrometheusUnavailable(f"query failed: {payload.get('errorType')}: {payload.get('error')}")
        return {s["metric"].get("check", "?"): s["value"][1] == "1"
                for s in (payload.get("data") or {}).get("result", [])}

    def host_check_samples(self, host: str) -> dict[str, tuple[bool, float]]:
        """{check: (ok, unix time of the sample)} of `host`'s damage checks as Prometheus has them now
        (a reprovision trusts only samples taken after its power cycle). Empty when there are none."""
        selector = 'hypervisor_host_check{host="%s"}' % host.replace("\\", "\\\\").replace('"', '\\"')
        values = self._vector(selector)
        stamps = self._vector(f"timestamp({selector})")
        return {check: (value == 1.0, stamps.get(check, 0.0)) for check, value in values.items()}

    def _vector(self, query: str) -> dict[str, float]:
        payload = self._query(query)
        if payload.get("status") != "success":
            raise PrometheusUnavailable(f"query failed: {payload.get('errorType')}: {payload.get('error')}")
        return {s["metric"].get("check", "?"): float(s["value"][1]) for s in (payload.get("data") or {}).get("result", [])}
