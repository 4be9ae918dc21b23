"""What an operator deploys: the compose stack and the systemd units, checked by the real tools
(docker-compose 1.29 validates without an engine; systemd-analyze verify works without systemd
running; promtool and amtool check the configs they mount)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
UNITS = REPO / "contrib" / "systemd"


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def test_docker_compose_config_is_clean():
    proc = run(["docker-compose", "-f", str(COMPOSE / "docker-compose.yml"), "config"])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert set(config["services"]) == {"prometheus", "alertmanager", "grafana", "remediator"}
    print(f"\ndocker-compose config: {len(config['services'])} services, {len(config['secrets'])} secrets, clean")
    # every secret is a file under compose/secrets/ (not in git), none is written in the compose file
    for name, secret in config["secrets"].items():
        assert Path(secret["file"]).parent == COMPOSE / "secrets", name
    for line in (COMPOSE / "docker-compose.yml").read_text().splitlines():
        m = re.match(r"\s*-?\s*([A-Za-z_][\w.-]*)\s*:\s*(\S.*)$", line)
        if m and re.search(r"(?i)password|token|passwd", m.group(1)):
            assert m.group(2).startswith("/run/secrets/"), f"a secret value in the compose file: {line}"
    assert "secrets/*" in (COMPOSE / ".gitignore").read_text()


def test_compose_prometheus_loads_every_rule_file_and_is_valid():
    proc = run(["promtool", "check", "config", "--syntax-only", str(COMPOSE / "prometheus.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    loaded = {Path(f).name for f in config["rule_files"]}
    assert loaded == {p.name for p in (REPO / "rules").glob("*.rules.yml")}
    assert {j["job_name"] for j in config["scrape_configs"]} == {"hypervisor", "remediator"}
    assert all(j["scheme"] == "https" for j in config["scrape_configs"])
    targets = yaml.safe_load((COMPOSE / "targets" / "hypervisors.yml").read_text())
    assert all("host" in group["labels"] for group in targets)


def test_compose_alertmanager_routes_exactly_like_rules_alertmanager_yml_over_tls():
    proc = run(["amtool", "check-config", str(COMPOSE / "alertmanager.yml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ours = yaml.safe_load((COMPOSE / "alertmanager.yml").read_text())
    shipped = yaml.safe_load((REPO / "rules" / "alertmanager.yml").read_text())
    assert ours["route"] == shipped["route"] and ours["inhibit_rules"] == shipped["inhibit_rules"]
    hook = next(r for r in ours["receivers"] if r["name"] == "remediator")["webhook_configs"][0]
    assert hook["url"].startswith("https://")
    assert hook["http_config"]["tls_config"]["ca_file"].startswith("/run/secrets/")


def test_systemd_units_verify_clean(tmp_path):
    # ExecStart names /opt/remediator/venv (docs/operations.md); verify needs the binary to exist,
    # so the copies checked here point at this checkout's .venv, every other line unchanged.
    venv_bin = REPO / ".venv" / "bin"
    units = sorted(UNITS.glob("*.service"))
    assert {u.name for u in units} == {"remediator.service", "remediator-exporter.service"}
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/remediator/venv/bin", str(venv_bin)))
    proc = run(["systemd-analyze", "verify", *[str(tmp_path / u.name) for u in units]])
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stdout + proc.stderr
    # the check is real: a misspelt directive is reported
    broken = tmp_path / "broken.service"
    broken.write_text((tmp_path / "remediator.service").read_text().replace("ProtectHome=", "ProtectHomes="))
    assert "Unknown key 'ProtectHomes'" in run(["systemd-analyze", "verify", str(broken)]).stderr


def test_exporter_unit_keeps_what_its_checks_need():
    unit = (UNITS / "remediator-exporter.service").read_text()
    assert "ReadWritePaths=/var/lib/libvirt/images" in unit      # the storage check's probe
    assert "PrivateTmp=yes" in unit                              # rootfs_writable probes /var/tmp
    assert "InaccessiblePaths" not in unit and "ProtectSystem=strict" in unit   # /boot stays readable
    assert "--web.config.file" in unit
