"""Config secrets and environment: secrets never shown, yet a fence password reaches the agent's stdin;
the REMEDIATOR_* overrides come from the process environment through pydantic-settings."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from remediator.config import ConfigError, load_config, parse_config
from remediator.edges.fencing import Fencer

TOKENS = ("alertmanager-token-0123456789", "operator-token-0123456789")
FILE = f"""
auth:
  alertmanager: {{bearer_token: {TOKENS[0]}}}
  operator: {{bearer_token: {TOKENS[1]}, basic: {{username: alice, password: alice-basic-secret}}}}
store: {{url: "postgresql://remediator:db-secret@127.0.0.1:5432/remediator"}}
hosts:
  - name: hv-01
    uri: qemu+tcp://10.77.0.11/system
    fence: {{agent: fence_recorder, options: {{ip: 127.0.0.1, username: admin, password: bmc-secret, snmp_priv_passwd: snmp-secret}}}}
"""
SECRETS = (*TOKENS, "alice-basic-secret", "db-secret", "bmc-secret", "snmp-secret", "from-the-environment-secret")


@pytest.fixture
def recorder(tmp_path, monkeypatch) -> Path:
    """A fence agent that writes its stdin to a file and says the host is off (as fence_* agents do)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    agent = bin_dir / "fence_recorder"
    agent.write_text(f"#!/bin/sh\ncat >> {tmp_path}/stdin\necho 'Status: OFF'\nexit 2\n")
    agent.chmod(agent.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_no_secret_appears_in_the_config_repr_str_dump_or_log(recorder, caplog):
    env = {"REMEDIATOR_FENCE_HV_01_COMMUNITY": "from-the-environment-secret"}
    config = parse_config(FILE, env=env, fence_agent_dirs=[str(recorder)])
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config %s %r", config, config)
    shown = [repr(config), str(config), config.model_dump_json(), caplog.text, repr(config.store),
             config.store.display_url]
    for text in shown:
        assert not [s for s in SECRETS if s in text], text
    assert "**********" in repr(config)
    assert config.store.display_url == "postgresql://remediator:***@127.0.0.1:5432/remediator"
    assert config.store.url.endswith(":db-secret@127.0.0.1:5432/remediator")  # the store still gets it


def test_fence_passwords_from_the_file_and_the_environment_reach_the_agent_stdin(recorder, tmp_path):
    path = tmp_path / "remediator.yml"
    path.write_text(FILE)
    config = load_config(path, env={"REMEDIATOR_FENCE_HV_01_PASSWORD": "from-the-environment-secret"},
                         fence_agent_dirs=[str(recorder)])
    result = Fencer(config.fence_devices, timeout=10).off("hv-01")
    assert result.ok
    stdin = (tmp_path / "stdin").read_text().splitlines()
    assert "password=from-the-environment-secret" in stdin and "snmp_priv_passwd=snmp-secret" in stdin
    assert "username=admin" in stdin and stdin.count("action=off") == 1 and "action=status" in stdin


def test_overrides_come_from_the_process_environment_when_none_is_given(recorder, tmp_path, monkeypatch):
    path = tmp_path / "remediator.yml"
    path.write_text(FILE)
    monkeypatch.setenv("REMEDIATOR_AUTH_OPERATOR_TOKEN", "operator-from-os-environ-0123")
    monkeypatch.setenv("REMEDIATOR_PROMETHEUS_URL", "http://127.0.0.1:9090")
    monkeypatch.setenv("remediator_store_url", "sqlite:///ignored.db")  # names are case-sensitive
    config = load_config(path, fence_agent_dirs=[str(recorder)])
    assert config.auth.operator.bearer_token.get_secret_value() == "operator-from-os-environ-0123"
    assert config.prometheus.url == "http://127.0.0.1:9090"
    assert config.store.url.startswith("postgresql://")


@pytest.mark.parametrize("name, value, message", [
    ("REMEDIATOR_STORE_URL", "mysql://u:db-secret@x", "store.url: expected sqlite:///PATH or postgresql://..., got 'mysql'://..."),
    ("REMEDIATOR_PROMETHEUS_URL", "localhost:9090", "prometheus.url: expected an http(s) URL"),
    ("REMEDIATOR_AUTH_OPERATOR_TOKEN", "tiny-secret", "auth.operator.bearer_token: too short"),
    ("REMEDIATOR_AUTH_OPERATOR_PASSWORD", "", "auth.operator.basic.password: expected a non-empty string"),
    ("REMEDIATOR_FENCE_HV_01_PASSWORD", "two\nlines-secret", "hosts[0].fence.options.password: must be one line"),
])
def test_a_bad_value_from_the_environment_names_the_key_it_sets(recorder, name, value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(FILE, source="/etc/remediator.yml", env={name: value}, fence_agent_dirs=[str(recorder)])
    assert str(err.value).startswith(f"config error in /etc/remediator.yml: {message}")
    assert "secret" not in str(err.value)  # a refused secret is not echoed


def test_auth_none_is_explicit_and_its_roles_are_absent():
    config = parse_config("auth: none\nhosts: [{name: h1, uri: 'test:///default'}]\n", env={})
    assert config.auth.none and config.auth.of("operator") is None
    with pytest.raises(ConfigError, match=r"auth.none: unknown key \(expected one of: alertmanager, operator\)"):
        parse_config("auth: {none: true}\nhosts: [{name: h1, uri: 'test:///default'}]\n", env={})


def test_fence_agent_dirs_decide_which_agents_exist(recorder):
    text = "auth: none\nhosts: [{name: h1, uri: 'test:///default', fence: {agent: fence_recorder}}]\n"
    with pytest.raises(ConfigError, match=r"hosts\[0\].fence.agent: unknown agent 'fence_recorder' \(looked in /nowhere\)"):
        parse_config(text, env={}, fence_agent_dirs=["/nowhere"])
    assert parse_config(text, env={}, fence_agent_dirs=[str(recorder)]).hosts[0].fence.agent == "fence_recorder"
    assert parse_config(text, env={}, fence_agent_dirs=None).hosts[0].fence.agent == "fence_recorder"
    with pytest.raises(ConfigError, match=r"hosts\[0\].fence.agent: unknown agent 'ipmilan'"):
        parse_config(text.replace("fence_recorder", "ipmilan"), env={}, fence_agent_dirs=None)


def test_the_config_cannot_change_once_loaded():
    config = parse_config("auth: none\nhosts: [{name: h1, uri: 'test:///default'}]\n", env={})
    with pytest.raises(ValidationError, match="frozen"):
        config.policy.fast_path = False  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        config.dry_run = True  # type: ignore[misc]


def test_empty_sections_mean_their_defaults():
    config = parse_config("auth: none\nhosts: [{name: h1, uri: 'test:///default'}]\npolicy:\nlisten:\nvms:\n", env={})
    assert config.policy.max_concurrent_actions == 4 and config.listen.port == 9180 and config.vms == ()
    assert config.libvirt_connect_timeout_s == 2.0 and config.source == "<string>"


def test_a_mistyped_secret_is_not_echoed_in_the_error():
    text = FILE.replace(f"bearer_token: {TOKENS[1]}", "bearer_token: 98765432109876543210")
    with pytest.raises(ConfigError) as err:
        parse_config(text, env={}, fence_agent_dirs=None)
    assert str(err.value).endswith("auth.operator.bearer_token: expected a non-empty string, got int")
