"""`remediator serve` over HTTPS with client certificates: a real Alertmanager delivers to it through
its `tls_config`, and a plain-HTTP client, a client without a certificate and one whose certificate
another CA signed are refused before any credential is read."""

from __future__ import annotations

import pytest
import requests
import yaml

from lab.certs import CA
from lab.stack import wait_for
from remediator.config import ConfigError, load_config

from .test_cli import TOKEN, UUIDS, Served, seed_inventory, write_config


def serve_over_tls(tmp_path, **listen):
    ca = CA(tmp_path / "ca")
    server = ca.issue("remediator", ips=["127.0.0.1"])
    client = ca.issue("alertmanager", client=True)
    path = write_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["listen"].update(tls={"cert_file": str(server.cert), "key_file": str(server.key),
                                 "client_ca_file": str(ca.cert)}, **listen)
    path.write_text(yaml.safe_dump(config))
    seed_inventory(tmp_path)
    return ca, client, Served(path)


@pytest.fixture
def tls_served(tmp_path):
    ca, client, served = serve_over_tls(tmp_path)
    yield ca, client, served
    served.kill()


@pytest.fixture
def tls_webhook_served(tmp_path):
    """With listen.webhook: its process serves Alertmanager's port over the same TLS."""
    ca, client, served = serve_over_tls(tmp_path, webhook={"port": 0, "processes": 1})
    line = next(line for line in served.log if "webhook for Alertmanager on" in line)
    yield ca, client, served, line.split("webhook for Alertmanager on ", 1)[1].split(",", 1)[0]
    served.kill()  # its webhook process stops with it (its lifeline: tests/service/test_webhook_processes.py)


def test_real_alertmanager_delivers_over_tls_with_its_client_certificate(tls_served, alertmanager_factory, tmp_path):
    ca, client, served = tls_served
    deliver_over_tls(ca, client, served, served.url, alertmanager_factory, tmp_path)


def test_real_alertmanager_delivers_to_the_webhook_processes_over_tls_and_a_client_without_certificate_is_refused(
        tls_webhook_served, alertmanager_factory, tmp_path):
    ca, client, served, webhook = tls_webhook_served
    assert webhook.startswith("https://127.0.0.1:")
    with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
        requests.get(f"{webhook}/healthz", verify=str(ca.cert), timeout=5)
    deliver_over_tls(ca, client, served, webhook, alertmanager_factory, tmp_path)


def deliver_over_tls(ca, client, served, target: str, alertmanager_factory, tmp_path) -> None:
    """A real Alertmanager posts an alert to `target` with its client certificate; the service counts a 200."""
    assert served.url.startswith("https://127.0.0.1:")
    token_file = tmp_path / "webhook-token"
    token_file.write_text(TOKEN)
    am = alertmanager_factory({
        "route": {"receiver": "remediator", "group_by": ["uuid"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "remediator", "webhook_configs": [{
            "url": f"{target}/api/v1/alerts", "send_resolved": True,
            "http_config": {
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "tls_config": {"ca_file": str(ca.cert), "cert_file": str(client.cert), "key_file": str(client.key)},
            }}]}],
    })
    am.post_alerts([{"labels": {"alertname": "HypervisorVMDown", "remediation": "vm_down", "host": "h1",
                                "vm": "t00", "uuid": UUIDS[0], "severity": "critical"}}])

    def delivered() -> bool:  # (verify per call: a session's is overridden by REQUESTS_CA_BUNDLE)
        text = requests.get(f"{served.url}/metrics", verify=str(ca.cert), cert=(str(client.cert), str(client.key)),
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
        return 'remediator_webhook_requests_total{code="200"}' in text

    wait_for(delivered, 20, "Alertmanager's post over TLS answered 200", on_timeout=lambda: "".join(served.log[-20:]))


def test_plain_http_no_certificate_and_a_foreign_certificate_are_refused(tls_served, tmp_path):
    ca, client, served = tls_served
    plain = served.url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):  # a plain request on the TLS port: connection reset
        requests.get(f"{plain}/healthz", timeout=5)
    with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
        requests.get(f"{served.url}/healthz", verify=str(ca.cert), timeout=5)
    other = CA(tmp_path / "other", name="someone else's CA")
    stranger = other.issue("stranger", client=True)
    with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
        requests.get(f"{served.url}/healthz", verify=str(ca.cert), cert=(str(stranger.cert), str(stranger.key)),
                     timeout=5)
    with pytest.raises(requests.exceptions.SSLError):  # and the client checks the server: not our CA, no talk
        requests.get(f"{served.url}/healthz", verify=str(other.cert), cert=(str(client.cert), str(client.key)),
                     timeout=5)
    ok = requests.get(f"{served.url}/healthz", verify=str(ca.cert), cert=(str(client.cert), str(client.key)), timeout=5)
    assert ok.status_code == 200


def test_unreadable_tls_files_stop_the_config_naming_the_key(tmp_path):
    path = write_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["listen"]["tls"] = {"cert_file": str(tmp_path / "missing.crt"), "key_file": str(tmp_path / "missing.key")}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"listen.tls.cert_file: cannot read .*missing.crt"):
        load_config(path, env={})
