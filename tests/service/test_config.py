"""Config: the example loads, and every kind of mistake is reported with the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.config import UNSAFE_OPT_IN, ConfigError, FenceDevice, load_config, parse_config
from remediator.edges.fencing import revealed

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config.example.yml"

AUTH = "auth: {alertmanager: {bearer_token: alertmanager-token-0123456789}, operator: {bearer_token: abcdefghijklmnopqrstuvwxyz}}\n"
MINIMAL = "\n" + AUTH + """hosts:
  - {name: h1, uri: "qemu+tcp://10.77.0.11/system"}
"""


def test_example_loads_with_lab_inventory():
    config = load_config(EXAMPLE, env={})
    assert [h.name for h in config.hosts] == ["h1", "h2", "h3"]
    assert config.host_uris["h2"] == "qemu+tcp://10.77.0.12/system"
    fence = config.fence_devices["h1"]
    assert fence.agent == "fence_ipmilan"
    assert fence.options["lanplus"] == "1" and fence.options["ipport"] == "6231"
    assert config.policy.storm.max_unhealthy_share == pytest.approx(1 / 3, abs=1e-3)
    assert config.store.sqlite_path == "/var/lib/remediator/state.db"
    assert config.vm(name="h1-g1").priority == 100
    assert config.source == str(EXAMPLE)


def test_defaults():
    config = parse_config(MINIMAL, env={})
    assert config.policy.storm.max_unhealthy_share == pytest.approx(1 / 3)
    assert config.store.url.startswith("sqlite:///")
    assert config.dry_run is False
    assert config.hosts[0].fence is None
    assert config.policy.backoff.delay(1) == 2 and config.policy.backoff.delay(10) == 60


def test_example_has_both_roles_with_their_own_tokens():
    auth = load_config(EXAMPLE, env={}).auth
    assert auth.alertmanager.bearer_token and auth.operator.bearer_token
    assert auth.alertmanager.bearer_token.get_secret_value() != auth.operator.bearer_token.get_secret_value()


def test_readme_config_example_shows_both_roles_and_loads():
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    auth = parse_config(block, env={}).auth
    assert auth.alertmanager.bearer_token and auth.operator.bearer_token and auth.operator.basic.username == "alice"


def test_env_overrides_secrets():
    env = {
        "REMEDIATOR_AUTH_ALERTMANAGER_TOKEN": "from-the-environment-webhook",
        "REMEDIATOR_AUTH_OPERATOR_TOKEN": "from-the-environment-operator",
        "REMEDIATOR_AUTH_OPERATOR_USERNAME": "alice",
        "REMEDIATOR_AUTH_OPERATOR_PASSWORD": "alice-secret",
        "REMEDIATOR_STORE_URL": "sqlite:///tmp/x.db",
        "REMEDIATOR_FENCE_H1_PASSWORD": "s3cret",
    }
    config = load_config(EXAMPLE, env=env)
    assert config.auth.alertmanager.bearer_token.get_secret_value() == "from-the-environment-webhook"
    assert config.auth.operator.bearer_token.get_secret_value() == "from-the-environment-operator"
    basic = config.auth.operator.basic
    assert (basic.username, basic.password.get_secret_value()) == ("alice", "alice-secret")
    assert config.store.sqlite_path == "/tmp/x.db"
    assert revealed(config.fence_devices["h1"].options)["password"] == "s3cret"
    assert revealed(config.fence_devices["h2"].options)["password"] == "password"


def test_env_tokens_satisfy_missing_auth_section():
    text = MINIMAL.replace(AUTH, "")
    config = parse_config(text, env={"REMEDIATOR_AUTH_ALERTMANAGER_TOKEN": "alertmanager-token-0123456789",
                                     "REMEDIATOR_AUTH_OPERATOR_TOKEN": "abcdefghijklmnopqrstuvwxyz"})
    assert config.auth.operator.bearer_token.get_secret_value() == "abcdefghijklmnopqrstuvwxyz"


def test_auth_none_must_be_explicit():
    assert parse_config(MINIMAL.replace(AUTH, "auth: none\n"), env={}).auth.none
    with pytest.raises(ConfigError, match=r"config error in <string>: auth: required"):
        parse_config(MINIMAL.replace(AUTH, ""), env={})
    with pytest.raises(ConfigError, match=r"auth.alertmanager: required: give each role its credential"):
        parse_config(MINIMAL.replace(AUTH, "auth: {}\n"), env={})


OPERATOR = "operator: {bearer_token: operator-token-0123456789}"
ALERTMANAGER = "alertmanager: {bearer_token: webhook-token-0123456789}"


@pytest.mark.parametrize(
    "auth, message",
    [
        (
            "{bearer_token: abcdefghijklmnopqrstuvwxyz}",
            "auth.bearer_token: one credential for everything is no longer accepted: give each role its credential",
        ),
        ("{basic: {username: u, password: p}}", "auth.basic: one credential for everything is no longer accepted"),
        (f"{{{ALERTMANAGER}}}", "auth.operator: required: give each role its credential"),
        (f"{{{OPERATOR}}}", "auth.alertmanager: required"),
        (f"{{{ALERTMANAGER}, {OPERATOR}, admin: {{bearer_token: x}}}}", "auth.admin: unknown key (expected one of: alertmanager, operator)"),
        (f"{{{ALERTMANAGER}, operator: {{}}}}", "auth.operator: give bearer_token and/or basic"),
        (f"{{{ALERTMANAGER}, operator: {{bearer_token: short}}}}", "auth.operator.bearer_token: too short"),
        (f"{{{ALERTMANAGER}, operator: {{basic: {{username: u}}}}}}", "auth.operator.basic.password: expected a non-empty string"),
        (
            f"{{{ALERTMANAGER}, operator: {{bearer_token: webhook-token-0123456789}}}}",
            "auth.operator.bearer_token: the same secret as auth.alertmanager.bearer_token: Alertmanager's credential "
            "would then have the operator's rights",
        ),
        (
            "{alertmanager: {basic: {username: am, password: pw}}, operator: {basic: {username: alice, password: pw}}}",
            "auth.operator.basic.password: the same secret as auth.alertmanager.basic.password",
        ),
        (
            f"{{alertmanager: {{basic: {{username: am, password: operator-token-0123456789}}}}, {OPERATOR}}}",
            "auth.operator.bearer_token: the same secret as auth.alertmanager.basic.password",
        ),
    ],
)
def test_auth_mistakes_name_the_file_and_key(tmp_path, auth, message):
    path = tmp_path / "remediator.yml"
    path.write_text(MINIMAL.replace(AUTH, f"auth: {auth}\n"))
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value).startswith(f"config error in {path}: {message}")


def test_shared_secret_from_the_environment_is_refused_too():
    with pytest.raises(ConfigError, match=r"auth.operator.bearer_token: the same secret as auth.alertmanager.bearer_token"):
        parse_config(MINIMAL, env={"REMEDIATOR_AUTH_OPERATOR_TOKEN": "alertmanager-token-0123456789"})


def test_old_environment_names_are_refused_with_the_new_ones():
    with pytest.raises(ConfigError, match=r"auth: REMEDIATOR_AUTH_TOKEN is no longer read: .*"
                                          r"set REMEDIATOR_AUTH_ALERTMANAGER_TOKEN and REMEDIATOR_AUTH_OPERATOR_TOKEN"):
        parse_config(MINIMAL, env={"REMEDIATOR_AUTH_TOKEN": "abcdefghijklmnopqrstuvwxyz"})


def test_unknown_fence_agent_names_file_and_key(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text(
        MINIMAL
        + """  - {name: h2, uri: "qemu+tcp://10.77.0.12/system"}
  - name: h3
    uri: qemu+tcp://10.77.0.13/system
    fence: {agent: fence_foo, options: {ip: 127.0.0.1}}
"""
    )
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert str(e.value).startswith(f"config error in {path}: hosts[2].fence.agent: unknown agent 'fence_foo'")


@pytest.mark.parametrize(
    "text, message",
    [
        ("auth: none\nhosts: []\n", "hosts: required"),
        ("auth: none\nhosts: {h1: x}\n", "hosts: expected a list, got a mapping"),
        ("auth: none\nhosts:\n  - {name: h1}\n", "hosts[0].uri: expected a non-empty string, got nothing"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'http://x'}\n", "hosts[0].uri: not a libvirt URI: 'http://x'"),
        (
            "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default'}\n  - {name: h1, uri: 'test:///default'}\n",
            "hosts[1].name: duplicate host 'h1' (also hosts[0])",
        ),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', colour: red}\n", "hosts[0].colour: unknown key"),
        ("auth: none\nlisten: {port: 99999}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "listen.port: must be 0..65535"),
        ("auth: none\nlisten: {port: '80'}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "listen.port: expected an integer, got the string '80'"),
        ("auth: nope\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "auth: the only string value is `none`"),
        (
            "auth: none\npolicy: {storm: {max_unhealthy_share: 1.5}}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n",
            "policy.storm.max_unhealthy_share: a share of hosts: 0..1, got 1.5",
        ),
        (
            "auth: none\npolicy: {attempts: {fence: 1.5}}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n",
            "policy.attempts.fence: expected an integer",
        ),
        (
            "auth: none\npolicy: {max_concurrent_actions: 0}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n",
            "policy.max_concurrent_actions: must be >= 1, got 0",
        ),
        (
            "auth: none\npolicy: {overcommit: {cpu: 0}}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n",
            "policy.overcommit.cpu: must be > 0.0, got 0",
        ),
        (
            "auth: none\npolicy: {timings: {reconcile: 3}}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n",
            "policy.timings.reconcile: unknown key",
        ),
        ("auth: none\nstore: {url: 'mysql://x'}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "store.url: expected sqlite:///PATH"),
        ("auth: none\nprometheus: {url: 'localhost:9090'}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "prometheus.url: expected an http(s) URL"),
        ("auth: none\ndry_run: yes please\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "dry_run: expected true or false"),
        ("auth: none\nvms:\n  - {name: a, uuid: not-a-uuid}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "vms[0].uuid: not a UUID: 'not-a-uuid'"),
        ("auth: none\nvms:\n  - {name: a}\n  - {name: a}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "vms[1]: declared twice: 'a'"),
        (
            "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', fence: {agent: fence_ipmilan, options: {action: reboot}}}\n",
            "hosts[0].fence.options.action: set by the remediator",
        ),
        (
            "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', fence: {agent: fence_ipmilan, options: {Ip: x}}}\n",
            "hosts[0].fence.options.Ip: option names are lower-case",
        ),
        (
            "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', fence: {agent: fence_ipmilan, options: {ip: [1]}}}\n",
            "hosts[0].fence.options.ip: expected a string, number or boolean, got a list",
        ),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', reprovision: {damaged: sometimes}}\n", "hosts[0].reprovision.damaged: one of automatic, on_request, never, got 'sometimes'"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', reprovision: {fenced: automatic, pxe: false}}\n", "hosts[0].reprovision: with pxe: false, a hook must do the install"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', reprovision: {hook: {url: 'http://x', command: [a]}}}\n", "hosts[0].reprovision.hook: give either url"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', reprovision: {hook: {command: 'reinstall h1'}}}\n", "hosts[0].reprovision.hook.command: expected a list of strings"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', reprovision: {hook: {url: 'http://x', method: DELETE}}}\n", "hosts[0].reprovision.hook.method: one of GET, POST"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', fence: []}\n", "hosts[0].fence: an empty list"),
        ("auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', fence: [{agent: fence_ipmilan}, {agent: fence_nope}]}\n", "hosts[0].fence[1].agent: unknown agent"),
        ("auth: none\npolicy: {reprovision: {ready_s: 0}}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "policy.reprovision.ready_s: must be > 0"),
        ("auth: none\nhosts: [\n", "not valid YAML: line"),
        ("- just\n- a list\n", "(top level): expected a mapping, got a list"),
        ("auth: none\ncolour: red\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "colour: unknown key"),
        ("auth: none\nlisten: {1: x}\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "listen: keys must be strings, got 1"),
        ("auth: none\n5: x\nhosts:\n  - {name: h1, uri: 'test:///default'}\n", "(top level): keys must be strings, got 5"),
    ],
)
def test_mistakes_name_the_key(text, message):
    with pytest.raises(ConfigError) as e:
        parse_config(text, source="/etc/remediator.yml", env={})
    assert str(e.value).startswith("config error in /etc/remediator.yml: ")
    assert message in str(e.value)


def test_unreadable_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match=rf"config error in {tmp_path}/missing.yml: cannot read"):
        load_config(tmp_path / "missing.yml", env={})


def test_fence_booleans_and_numbers_become_agent_strings():
    text = "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default', fence: {agent: fence_ipmilan, options: {lanplus: true, verbose: false, ipport: 623}}}\n"
    assert parse_config(text, env={}).hosts[0].fence == FenceDevice(agent="fence_ipmilan", options={"lanplus": "1", "ipport": "623"})


def test_vm_lookup_by_uuid_then_name():
    text = (
        "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default'}\nvms:\n"
        "  - {name: a, uuid: 6E8BBD4C-0A1E-4E0B-9C8B-1A2B3C4D5E6F, priority: 5}\n  - {name: b}\n"
    )
    config = parse_config(text, env={})
    assert config.vm(uuid="6e8bbd4c-0a1e-4e0b-9c8b-1a2b3c4d5e6f").priority == 5
    assert config.vm(uuid="00000000-0000-0000-0000-000000000000", name="b").name == "b"
    # a declaration with a uuid does not match another VM that merely has its name
    assert config.vm(uuid="00000000-0000-0000-0000-000000000000", name="a") is None


def test_overload_thresholds_in_the_config_are_refused_naming_their_one_home(tmp_path):
    path = tmp_path / "remediator.yml"
    path.write_text("auth: none\nhosts: [{name: h1, uri: 'test:///default'}]\n"
                    "policy: {overload: {load_per_cpu: 0.9}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert str(path) in str(err.value) and "policy.overload" in str(err.value)
    assert "rules/hypervisor.rules.yml" in str(err.value)


def test_cluster_defaults_keep_patronis_rule_and_bad_timings_name_their_key():
    c = parse_config(MINIMAL, env={}).cluster
    assert (c.lease_s, c.renew_s, c.retry_timeout_s, c.max_call_s) == (6, 1, 2, 4)
    assert c.renew_s + 2 * c.retry_timeout_s <= c.lease_s and c.name(8080).endswith("-8080")
    assert parse_config(MINIMAL + "cluster: {replica: r-a}\n", env={}).cluster.name(8080) == "r-a"
    for text, key in [("cluster: {lease_s: 4}", "cluster.lease_s: must be >= renew_s + 2 * retry_timeout_s"),
                      ("cluster: {max_call_s: 5.5}", "cluster.max_call_s: must be < lease_s - renew_s"),
                      ("cluster: {renew_s: 0}", "cluster.renew_s: must be > 0"),
                      ("cluster: {replica: 'a b'}", "cluster.replica: a replica name"),
                      ("cluster: {ttl: 5}", "cluster.ttl: unknown key")]:
        with pytest.raises(ConfigError, match=key.replace("*", r"\*").replace("+", r"\+")):
            parse_config(MINIMAL + text + "\n", env={})


def test_the_unsafe_fencing_bypass_is_refused_unless_a_test_opts_in(tmp_path):
    path = tmp_path / "unsafe.yml"
    path.write_text(MINIMAL + "policy: {unsafe_skip_fencing: true}\n")
    for env in ({}, {UNSAFE_OPT_IN: "yes"}, {UNSAFE_OPT_IN: "0"}):
        with pytest.raises(ConfigError) as e:
            load_config(path, env=env)
        assert str(e.value).startswith(f"config error in {path}: policy.unsafe_skip_fencing: refused")
    assert load_config(path, env={UNSAFE_OPT_IN: "1"}).policy.unsafe_skip_fencing
    assert not parse_config(MINIMAL, env={}).policy.unsafe_skip_fencing


def test_storage_paths_and_io_error_policy():
    config = parse_config(MINIMAL + "storage: {shared_paths: [/srv/nfs/vms/]}\npolicy: {on_io_error: wait}\n", env={})
    assert config.storage.shared_paths == ("/srv/nfs/vms",) and config.policy.on_io_error == "wait"
    assert parse_config(MINIMAL, env={}).policy.on_io_error == "resume"
    for text, key in (("storage: {shared_paths: [vms]}\n", "storage.shared_paths"),
                      ("storage: {shared_paths: /srv}\n", "storage.shared_paths"),
                      ("policy: {on_io_error: reboot}\n", "policy.on_io_error")):
        with pytest.raises(ConfigError) as e:
            parse_config(MINIMAL + text, source="r.yml", env={})
        assert f"r.yml: {key}:" in str(e.value)


def test_reprovision_defaults_levels_and_hook():
    """Damaged hosts on request and fenced hosts never, unless the host's entry says otherwise; several
    fence devices are levels, tried in order; a hook is an HTTP request or a command."""
    text = ("auth: none\nhosts:\n"
            "  - {name: h1, uri: 'test:///default', fence: [{agent: fence_ipmilan, options: {ip: a}}, "
            "{agent: fence_redfish, options: {ip: b}}]}\n"
            "  - {name: h2, uri: 'test:///default', reprovision: {damaged: automatic, fenced: on_request, pxe: false, "
            "hook: {url: 'https://foreman/api/hosts/$host/rebuild', method: put, body: '{\"host\": \"$host\"}'}}}\n")
    config = parse_config(text, env={})
    h1, h2 = config.hosts
    assert (h1.reprovision.damaged, h1.reprovision.fenced, h1.reprovision.pxe) == ("on_request", "never", True)
    assert [d.agent for d in config.power_devices["h1"]] == ["fence_ipmilan", "fence_redfish"]
    assert h1.fence == h1.power[0] and config.fence_devices["h1"].options == {"ip": "a"}
    assert (h2.reprovision.damaged, h2.reprovision.fenced, h2.reprovision.pxe) == ("automatic", "on_request", False)
    assert h2.reprovision.hook.method == "PUT" and "$host" in h2.reprovision.hook.url
    assert config.policy.timeout_for("power_cycle") == config.policy.reprovision.power_cycle_s
    assert config.policy.timeout_for("fence_host") == config.policy.action_timeouts.fence_s
