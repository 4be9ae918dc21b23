from __future__ import annotations

import pytest

from exporter.config import ConfigError, load_config


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "exporter.yml"
    path.write_text(
        "libvirt_uri: qemu+tcp://10.0.0.1/system\nhost_name: from-file\n"
        "checks:\n  boot_dir: /srv/boot\n  disk_space_paths: [/, /srv]\n"
    )
    config = load_config(str(path), {"host_name": "from-flag", "listen": None})
    assert config.libvirt_uri == "qemu+tcp://10.0.0.1/system"
    assert config.host_name == "from-flag"
    assert config.listen == "127.0.0.1:9177"
    assert config.checks.boot_dir == "/srv/boot" and config.checks.disk_space_paths == ("/", "/srv")
    assert config.checks.timeout_seconds == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope: 1\n", "unknown key nope"),
        ("checks:\n  boot_dri: /x\n", "unknown key checks.boot_dri"),
        ("scrape_timeout_seconds: soon\n", "scrape_timeout_seconds must be a number"),
        ("checks:\n  storage_require_mountpoint: 1\n", "storage_require_mountpoint must be true or false"),
        ("cpu_time_source: bogus\n", "cpu_time_source must be info or stats"),
        ("- a list\n", "top level must be a mapping"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(str(path), {})
    assert str(path) in str(err.value)


def test_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "absent.yml"), {})
