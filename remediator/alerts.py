"""Alertmanager webhook payload (version 4) -> validated Alerts. Pure: no I/O, all the validation.

The contract with rules/: every alert sent to the remediator carries the labels
  remediation  one of model.Remediation (vm_down, host_down, host_damaged, host_overloaded)
  host         the inventory name of the hypervisor host
and VM alerts (remediation=vm_down) also `uuid` (the domain UUID) and/or `vm` (the domain name;
`domain`, the libvirt exporters' label, is accepted for it).

A payload is accepted whole or refused whole: one bad alert makes a PayloadError whose message
names the place (`alerts[2].labels.host: missing`), so nothing of an invalid request is stored.
Whether the host or VM is known and protected is not decided here (that needs the inventory).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from remediator.model import ALERT_REMEDIATIONS, VM_KINDS, Alert, AlertStatus, Remediation

SUPPORTED_VERSION = "4"
# Alertmanager's "zero time" for an alert that has not ended.
_ZERO_TIME_PREFIX = "0001-01-01T00:00:00"
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})$"
)
_FINGERPRINT = re.compile(r"^[0-9a-fA-F]{1,64}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_LABEL_VALUE = 1024


class PayloadError(ValueError):
    """The payload is not a valid Alertmanager v4 webhook body; `where` is the JSON path of the problem."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class Notification:
    """One webhook call: the group's metadata and its alerts."""

    receiver: str
    status: AlertStatus
    group_key: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]


def parse_body(body: bytes | str) -> Notification:
    """Decode and validate a raw request body."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PayloadError("", f"body is not UTF-8 (byte {e.start})") from e
    if not body.strip():
        raise PayloadError("", "empty body: expected an Alertmanager webhook JSON object")
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise PayloadError("", f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    except ValueError as e:  # from _reject_constant
        raise PayloadError("", f"malformed JSON: {e}") from e
    except RecursionError as e:
        raise PayloadError("", "malformed JSON: nested too deeply") from e
    return parse_payload(data)


def parse_alerts(body: bytes | str) -> list[Alert]:
    """The alerts of a raw request body."""
    return list(parse_body(body).alerts)


def parse_payload(data: Any) -> Notification:
    """Validate an already decoded JSON document."""
    if not isinstance(data, dict):
        raise PayloadError("", f"expected a JSON object, got {_kind(data)}")
    if "version" not in data:
        raise PayloadError("version", "missing: expected \"4\" (Alertmanager webhook payload)")
    if data["version"] != SUPPORTED_VERSION:
        raise PayloadError("version", f"unsupported {data['version']!r}: only \"4\" is understood")
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts", "missing" if alerts is None else f"expected a list, got {_kind(alerts)}")
    status = _status(data.get("status"), "status")
    truncated = data.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts", f"expected a non-negative integer, got {_kind(truncated)}")
    receiver = _optional_string(data.get("receiver"), "receiver")
    group_key = _optional_string(data.get("groupKey"), "groupKey")
    return Notification(
        receiver=receiver,
        status=status,
        group_key=group_key,
        truncated_alerts=truncated,
        alerts=tuple(parse_alert(a, f"alerts[{i}]") for i, a in enumerate(alerts)),
    )


def parse_alert(data: Any, where: str = "alert") -> Alert:
    if not isinstance(data, dict):
        raise PayloadError(where, f"expected an object, got {_kind(data)}")
    status = _status(data.get("status"), f"{where}.status")
    labels = _string_map(data.get("labels"), f"{where}.labels", required=True)
    annotations = _string_map(data.get("annotations"), f"{where}.annotations", required=False)

    fingerprint = data.get("fingerprint")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise PayloadError(
            f"{where}.fingerprint",
            "missing" if fingerprint is None else f"expected Alertmanager's hex fingerprint, got {_kind(fingerprint)}",
        )
    starts_at = _time(data.get("startsAt"), f"{where}.startsAt")
    if starts_at is None:
        raise PayloadError(f"{where}.startsAt", "missing: every alert has a start time")
    ends_at = _time(data.get("endsAt"), f"{where}.endsAt")

    remediation_value = _required_label(labels, "remediation", where)
    remediation = next((r for r in ALERT_REMEDIATIONS if r.value == remediation_value), None)
    if remediation is None:
        raise PayloadError(
            f"{where}.labels.remediation",
            f"unknown value {remediation_value!r} (expected one of: "
            f"{', '.join(r.value for r in Remediation if r in ALERT_REMEDIATIONS)})",
        )
    host = _required_label(labels, "host", where)
    alertname = labels.get("alertname", "")

    vm = labels.get("vm") or labels.get("domain") or None
    uuid = labels.get("uuid") or None
    if uuid is not None:
        if not _UUID.match(uuid):
            raise PayloadError(f"{where}.labels.uuid", f"not a UUID: {uuid!r}")
        uuid = uuid.lower()
    if remediation in VM_KINDS and vm is None and uuid is None:
        raise PayloadError(f"{where}.labels", f"a {remediation.value} alert needs the label `uuid` or `vm` (or `domain`)")
    if remediation is Remediation.HOST_OVERLOADED:
        _overload_labels(labels, where)
    return Alert(
        fingerprint=fingerprint.lower(),
        status=status,
        remediation=remediation,
        alertname=alertname,
        host=host,
        starts_at=starts_at,
        ends_at=ends_at,
        vm=vm,
        uuid=uuid,
        labels=labels,
        annotations=annotations,
    )


def _overload_labels(labels: dict[str, str], where: str) -> None:
    """The rule's own figure is what the remediator rebalances to: reason load|memory and a threshold."""
    if labels.get("reason") not in ("load", "memory"):
        raise PayloadError(f"{where}.labels.reason", f"a host_overloaded alert needs reason load or memory, got "
                           f"{labels.get('reason')!r} (see rules/hypervisor.rules.yml)")
    try:
        threshold = float(labels.get("threshold", ""))
    except ValueError:
        threshold = float("nan")
    if not threshold > 0:
        raise PayloadError(f"{where}.labels.threshold", f"a host_overloaded alert needs a positive number, got "
                           f"{labels.get('threshold')!r} (see rules/hypervisor.rules.yml)")


def _status(value: Any, where: str) -> AlertStatus:
    try:
        return AlertStatus(value)
    except ValueError:
        raise PayloadError(
            where, "missing" if value is None else f"expected \"firing\" or \"resolved\", got {_kind(value)}"
        ) from None


def _string_map(value: Any, where: str, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(where, "missing" if value is None else f"expected an object of strings, got {_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError(f"{where}.{k}", f"expected a string, got {_kind(v)}")
    return dict(value)


def _required_label(labels: Mapping[str, str], name: str, where: str) -> str:
    value = labels.get(name)
    if value is None:
        raise PayloadError(f"{where}.labels.{name}", "missing")
    if not value.strip():
        raise PayloadError(f"{where}.labels.{name}", "empty")
    if len(value) > _MAX_LABEL_VALUE:
        raise PayloadError(f"{where}.labels.{name}", f"longer than {_MAX_LABEL_VALUE} characters")
    return value


def _optional_string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(where, f"expected a string, got {_kind(value)}")
    return value


def _time(value: Any, where: str) -> datetime | None:
    """An RFC 3339 time as Alertmanager writes it (nanoseconds allowed); its zero time and "" mean none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(where, f"expected an RFC 3339 time string, got {_kind(value)}")
    m = _RFC3339.match(value)
    if not m:
        raise PayloadError(where, f"not an RFC 3339 time with a zone: {value!r}")
    if value.startswith(_ZERO_TIME_PREFIX):
        return None
    frac = (m["frac"] or "")[:6]  # datetime keeps microseconds; Alertmanager sends up to nanoseconds
    tz = "+00:00" if m["tz"] in ("Z", "z") else m["tz"]
    try:
        parsed = datetime.fromisoformat(f"{m['date']}T{m['time']}{'.' + frac.ljust(6, '0') if frac else ''}{tz}")
    except ValueError as e:
        raise PayloadError(where, f"not a valid time: {value!r} ({e})") from None
    return parsed.astimezone(timezone.utc)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return f"{type(value).__name__} {value!r}"[:60]
