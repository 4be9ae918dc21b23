"""rules/alertmanager.yml in a real Alertmanager: routing to the webhook, credential, grouping, inhibition."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


class Webhook:
    """A real HTTP endpoint on loopback standing in for the remediator: it records every post."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []  # (Authorization header, body)
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append((self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[tuple[str, dict]]:
        """(Authorization, alert labels) of every alert posted so far."""
        return [(auth, alert["labels"]) for auth, body in self.posts for alert in body["alerts"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def shipped_config(webhook_url: str, token_file: Path) -> dict:
    """rules/alertmanager.yml as shipped, pointed at the test's webhook and token file."""
    config = yaml.safe_load((REPO / "rules" / "alertmanager.yml").read_text())
    (hook,) = next(r for r in config["receivers"] if r["name"] == "remediator")["webhook_configs"]
    hook["url"] = webhook_url
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


def test_alerts_reach_the_webhook_with_the_token_and_host_or_libvirt_down_inhibits_its_vms(
    tmp_path, webhook, alertmanager_factory
):
    token = tmp_path / "webhook-token"
    token.write_text("s3cret-token\n")
    am = alertmanager_factory(shipped_config(webhook.url, token))
    host_down = {"alertname": "HypervisorHostDown", "host": "h1", "severity": "critical", "remediation": "host_down"}
    vm_on_down_host = {"alertname": "HypervisorVMDown", "host": "h1", "vm": "a", "uuid": "u-a",
                       "severity": "critical", "remediation": "vm_down"}
    libvirt_down = {"alertname": "HypervisorLibvirtDown", "host": "h3", "severity": "critical",
                    "remediation": "host_down"}
    vm_on_libvirt_down_host = {"alertname": "HypervisorVMDown", "host": "h3", "vm": "c", "uuid": "u-c",
                               "severity": "critical", "remediation": "vm_down"}
    vm_elsewhere = {"alertname": "HypervisorVMDown", "host": "h2", "vm": "b", "uuid": "u-b",
                    "severity": "critical", "remediation": "vm_down"}
    damaged_elsewhere = {"alertname": "HypervisorHostDamaged", "host": "h2", "check": "boot",
                         "severity": "warning", "remediation": "host_damaged"}
    unrelated = {"alertname": "SomethingElse", "host": "h1", "severity": "warning"}
    am.post_alerts([{"labels": host_down}, {"labels": libvirt_down}])
    time.sleep(0.5)  # the inhibiting alert is known before its targets arrive, as in Prometheus
    started = time.monotonic()
    am.post_alerts([{"labels": labels} for labels in (vm_on_down_host, vm_on_libvirt_down_host, vm_elsewhere,
                                                              damaged_elsewhere, unrelated)])
    deadline = time.monotonic() + 10
    while len(webhook.alerts()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    time.sleep(1.0)  # anything else would have arrived by now (group_wait 0s)
    posted = webhook.alerts()
    assert {auth for auth, _ in posted} == {"Bearer s3cret-token"}
    assert sorted((labels["alertname"], labels["host"]) for _, labels in posted) == [
        ("HypervisorHostDamaged", "h2"), ("HypervisorHostDown", "h1"), ("HypervisorLibvirtDown", "h3"),
        ("HypervisorVMDown", "h2"),
    ], "VMDown of h1 (h3) is inhibited by its HostDown (LibvirtDown); alerts without `remediation` are not sent"
    # One subject per post: grouped by alertname, host, vm, uuid.
    assert all(len(body["alerts"]) == 1 for _, body in webhook.posts)
    assert elapsed < 2.0, f"group_wait 0s: posted {elapsed:.2f} s after Alertmanager received them"
