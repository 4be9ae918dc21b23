"""alerts.py: Alertmanager v4 payloads in, Alerts out; anything else refused with a message naming the place."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.alerts import PayloadError, parse_alerts, parse_body, parse_payload
from remediator.model import AlertStatus, Remediation

from .payloads import VM_UUID, alert, body, payload


def test_vm_down_alert_parsed():
    (a,) = parse_alerts(body())
    assert a.remediation is Remediation.VM_DOWN
    assert a.status is AlertStatus.FIRING
    assert a.host == "h1" and a.vm == "t00" and a.uuid == VM_UUID
    assert a.starts_at == datetime(2026, 11, 25, 10, 57, 2, 123456, tzinfo=timezone.utc)
    assert a.ends_at is None  # Alertmanager's zero time
    assert a.subject == f"vm:{VM_UUID}"
    assert a.annotations["summary"] == "VMDown on h1"


def test_notification_metadata_and_resolved_alert():
    n = parse_body(
        body(alert(status="resolved", ends_at="2026-11-25T11:00:00+01:00", remediation="host_down", vm=None, uuid=None))
    )
    assert n.receiver == "remediator" and n.truncated_alerts == 0
    (a,) = n.alerts
    assert a.status is AlertStatus.RESOLVED
    assert a.ends_at == datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    assert a.subject == "host:h1"


def test_domain_label_accepted_for_vm_name_and_uuid_lowercased():
    a = alert(vm=None, uuid=VM_UUID.upper(), domain="t07")
    (parsed,) = parse_alerts(body(a))
    assert parsed.vm == "t07" and parsed.uuid == VM_UUID


def test_empty_alert_list_is_valid():
    assert parse_payload({**payload(), "alerts": []}).alerts == ()


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def _with_labels(**labels) -> dict:
    a = alert()
    a["labels"] = {k: v for k, v in {**a["labels"], **labels}.items() if v is not None}
    return a


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "empty body"),
        (b"{not json", "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"\xff\xfe", "body is not UTF-8"),
        (b"[1, 2]", "expected a JSON object, got a list"),
        (b'{"version": NaN}', "malformed JSON: NaN is not valid JSON"),
        (json.dumps(_without(payload(), "version")).encode(), 'version: missing: expected "4"'),
        (json.dumps({**payload(), "version": "3"}).encode(), "version: unsupported '3': only \"4\" is understood"),
        (json.dumps({**payload(), "version": 4}).encode(), "version: unsupported 4"),
        (json.dumps(_without(payload(), "alerts")).encode(), "alerts: missing"),
        (json.dumps({**payload(), "alerts": {}}).encode(), "alerts: expected a list, got an object"),
        (json.dumps({**payload(), "status": "broken"}).encode(), "status: expected \"firing\" or \"resolved\""),
        (json.dumps({**payload(), "truncatedAlerts": -1}).encode(), "truncatedAlerts: expected a non-negative integer"),
        (body(alert(), "nope"), "alerts[1]: expected an object, got the string 'nope'"),
        (body(_without(alert(), "labels")), "alerts[0].labels: missing"),
        (body(_with_labels(remediation=None)), "alerts[0].labels.remediation: missing"),
        (body(_with_labels(remediation="reboot")), "alerts[0].labels.remediation: unknown value 'reboot' (expected one of: vm_down"),
        # host_maintenance is an operator's, never an alert's
        (body(_with_labels(remediation="host_maintenance")), "alerts[0].labels.remediation: unknown value 'host_maintenance'"),
        (body(_with_labels(remediation="host_overloaded", reason="load")),
         "alerts[0].labels.threshold: a host_overloaded alert needs a positive number, got None"),
        (body(_with_labels(remediation="host_overloaded", reason="disk", threshold="0.9")),
         "alerts[0].labels.reason: a host_overloaded alert needs reason load or memory, got 'disk'"),
        (body(_with_labels(host=None)), "alerts[0].labels.host: missing"),
        (body(_with_labels(host=" ")), "alerts[0].labels.host: empty"),
        (body(_with_labels(uuid="xyz")), "alerts[0].labels.uuid: not a UUID: 'xyz'"),
        (body(alert(vm=None, uuid=None)), "alerts[0].labels: a vm_down alert needs the label `uuid` or `vm`"),
        (body({**alert(), "labels": {**alert()["labels"], "n": 1}}), "alerts[0].labels.n: expected a string, got int 1"),
        (body(_without(alert(), "fingerprint")), "alerts[0].fingerprint: missing"),
        (body(alert(fingerprint="not hex!")), "alerts[0].fingerprint: expected Alertmanager's hex fingerprint"),
        (body(_without(alert(), "startsAt")), "alerts[0].startsAt: missing"),
        (body(alert(starts_at="yesterday")), "alerts[0].startsAt: not an RFC 3339 time with a zone: 'yesterday'"),
        (body(alert(starts_at="2026-11-25T10:57:02")), "alerts[0].startsAt: not an RFC 3339 time with a zone"),
        (body(alert(starts_at="2026-13-45T10:57:02Z")), "alerts[0].startsAt: not a valid time"),
        (body(alert(status="pending")), "alerts[0].status: expected \"firing\" or \"resolved\", got the string 'pending'"),
        (body({**alert(), "annotations": []}), "alerts[0].annotations: expected an object of strings, got a list"),
    ],
)
def test_bad_payloads_name_the_problem(raw, message):
    with pytest.raises(PayloadError) as e:
        parse_body(raw)
    assert message in str(e.value)


def test_one_bad_alert_refuses_the_whole_payload():
    with pytest.raises(PayloadError, match=r"alerts\[2\]\.labels\.host: missing"):
        parse_body(body(alert(), alert(fingerprint="ff"), _with_labels(host=None)))


# ---- hypothesis: whatever arrives, the parser answers with Alerts or a PayloadError, never anything else

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(raw):
    try:
        parse_body(raw)
    except PayloadError as e:
        assert str(e)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_never_crashes(doc):
    try:
        parse_payload(doc)
    except PayloadError as e:
        assert str(e)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(alert().keys())), json_values)
def test_corrupting_one_alert_field_is_refused_or_parsed(field, value):
    a = {**alert(), field: value}
    try:
        (parsed,) = parse_payload(payload(a)).alerts
    except PayloadError as e:
        assert str(e).startswith("alerts[0]")
    else:
        assert parsed.host and parsed.fingerprint


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["remediation", "host", "uuid", "vm", "alertname"]),
    st.none() | st.integers() | st.text(max_size=30) | st.lists(st.text(), max_size=2),
)
def test_corrupting_one_label_is_refused_or_parsed(label, value):
    a = alert()
    labels = dict(a["labels"])
    if value is None:
        labels.pop(label)
    else:
        labels[label] = value
    try:
        (parsed,) = parse_payload(payload({**a, "labels": labels})).alerts
    except PayloadError as e:
        assert str(e).startswith("alerts[0].labels")
    else:
        assert parsed.remediation in Remediation
        assert parsed.uuid or parsed.vm
