"""The Prometheus and Alertmanager fixtures run the real binaries."""
import time

import pytest

pytestmark = pytest.mark.lab


def test_prometheus_scraping_itself_answers_a_query(prometheus_factory):
    prom = prometheus_factory({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}}, start=False)
    prom.config["scrape_configs"] = [{"job_name": "self", "static_configs": [{"targets": [prom.address]}]}]
    prom.start()
    deadline = time.monotonic() + 20  # Prometheus applies new targets ~5 s after start
    while not (result := prom.query('up{job="self"}')):
        assert time.monotonic() < deadline, "no sample of up{job='self'} after 20 s"
        time.sleep(0.2)
    assert result[0]["value"][1] == "1"
    assert prom.alerts() == []


def test_alertmanager_accepts_an_alert(alertmanager_factory):
    am = alertmanager_factory({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    am.post_alerts([{"labels": {"alertname": "HostDown", "host": "h1"}}])
    alerts = am.alerts()
    assert [a["labels"] for a in alerts] == [{"alertname": "HostDown", "host": "h1"}]
