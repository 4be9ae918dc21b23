"""The exporter behind TLS and basic auth (exporter-toolkit web config), scraped by a real Prometheus
with `scheme: https`, `tls_config` and `basic_auth`; plain HTTP, a wrong CA and a wrong password are refused."""

from __future__ import annotations


import bcrypt
import pytest
import requests
import yaml

from exporter.config import ConfigError
from exporter.web_config import load_web_config
from lab.certs import CA
from lab.stack import wait_for
from tests.exporter.exporter_helpers import node_file

PASSWORD = "scrape-secret-0123"
DOMAINS = [{"name": "web1", "uuid": "11111111-0000-0000-0000-000000000001", "ha": True}]


@pytest.fixture
def tls_exporter(tmp_path, exporter_factory):
    ca = CA(tmp_path / "ca")
    server = ca.issue("exporter", ips=["127.0.0.1"])
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(server.cert), "key_file": str(server.key)},
        "basic_auth_users": {"prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()},
    }))
    return ca, exporter_factory(node_file(tmp_path, DOMAINS), web_config=web)


def test_real_prometheus_scrapes_the_exporter_over_https_with_basic_auth(tls_exporter, prometheus_factory, tmp_path):
    ca, exporter = tls_exporter
    password_file = tmp_path / "scrape-password"
    password_file.write_text(PASSWORD)
    target = exporter.url.split("://", 1)[1]
    prom = prometheus_factory({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "hypervisor", "scheme": "https", "honor_labels": True,
            "tls_config": {"ca_file": str(ca.cert)},
            "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
            "static_configs": [{"targets": [target], "labels": {"host": "h1"}}],
        }],
    })
    wait_for(lambda: prom.query('up{job="hypervisor"} == 1'), 20, "Prometheus scraped the exporter over TLS",
             on_timeout=lambda: str(prom.targets()))
    assert prom.query('hypervisor_vm_info{vm="web1",ha="true"}')


def test_plain_http_wrong_ca_and_wrong_password_are_refused(tls_exporter, tmp_path):
    ca, exporter = tls_exporter
    plain = exporter.url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):  # the server speaks TLS only; a plain request gets no answer
        requests.get(f"{plain}/metrics", timeout=5)
    other = CA(tmp_path / "other", name="someone else's CA")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{exporter.url}/metrics", verify=str(other.cert), auth=("prometheus", PASSWORD), timeout=5)
    assert requests.get(f"{exporter.url}/metrics", verify=str(ca.cert), timeout=5).status_code == 401
    assert requests.get(f"{exporter.url}/metrics", verify=str(ca.cert), auth=("prometheus", "wrong"),
                        timeout=5).status_code == 401
    good = requests.get(f"{exporter.url}/metrics", verify=str(ca.cert), auth=("prometheus", PASSWORD), timeout=5)
    assert good.status_code == 200 and "hypervisor_up" in good.text
    # the exporter survived the refused handshakes and still answers
    assert requests.get(f"{exporter.url}/metrics", verify=str(ca.cert), auth=("prometheus", PASSWORD),
                        timeout=5).status_code == 200


def test_a_client_certificate_can_be_required(tmp_path, exporter_factory):
    ca = CA(tmp_path / "ca")
    server, client = ca.issue("exporter"), ca.issue("prometheus", client=True)
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(server.cert), "key_file": str(server.key),
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(ca.cert)}}))
    exporter = exporter_factory(node_file(tmp_path, DOMAINS), web_config=web)
    with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
        requests.get(f"{exporter.url}/metrics", verify=str(ca.cert), timeout=5)
    ok = requests.get(f"{exporter.url}/metrics", verify=str(ca.cert), cert=(str(client.cert), str(client.key)), timeout=5)
    assert ok.status_code == 200


def test_web_config_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}\n")
    with pytest.raises(ConfigError, match=r"web.yml: tls_server_config: .*No such file"):
        load_web_config(str(bad))
    bad.write_text("basic_auth_users: {prometheus: plaintext}\n")
    with pytest.raises(ConfigError, match=r"basic_auth_users.prometheus: not a bcrypt hash"):
        load_web_config(str(bad))
    bad.write_text("tls_server_config: {cert_file: a, key_file: b, cipher_suites: [x]}\n")
    with pytest.raises(ConfigError, match=r"unknown key tls_server_config.cipher_suites"):
        load_web_config(str(bad))
