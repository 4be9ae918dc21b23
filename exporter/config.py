"""The exporter's configuration: defaults, an optional YAML file, then command-line flags.

Loaded once in main() and passed down; nothing reads configuration at import.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ChecksConfig:
    """Host damage checks (`hypervisor_host_check{check}`); see docs/metrics.md."""

    # How often the checks run in the background; scrapes read the last results.
    interval_seconds: float = 5.0
    # A check that has not finished within this is reported failed (a hung NFS mount, a dead disk).
    timeout_seconds: float = 2.0
    # boot: a kernel and an initrd matching these globs exist (non-empty) under boot_dir.
    boot_dir: str = "/boot"
    kernel_glob: str = "vmlinuz*"
    initrd_glob: str = "initrd*"
    # rootfs_writable: rootfs_path is not mounted read-only and a file can be written in probe_dir.
    rootfs_path: str = "/"
    rootfs_probe_dir: str = "/var/tmp"
    # storage: the VM storage directory exists, is writable (and is a mount point if required).
    storage_path: str = "/var/lib/libvirt/images"
    storage_require_mountpoint: bool = False
    # disk_space: every path keeps at least this fraction of its filesystem free.
    disk_space_paths: tuple[str, ...] = ("/", "/var/lib/libvirt/images")
    disk_space_min_free_ratio: float = 0.05
    # libvirtd: libvirt answered this scrape's calls within this many seconds.
    libvirtd_max_latency_seconds: float = 0.5


@dataclass(frozen=True)
class ExporterConfig:
    libvirt_uri: str = "qemu:///system"
    listen: str = "127.0.0.1:9177"
    host_name: str = field(default_factory=socket.gethostname)
    # Upper bound of one scrape's libvirt work; Prometheus's X-Prometheus-Scrape-Timeout-Seconds
    # header lowers it further so an answer always arrives before Prometheus gives up.
    scrape_timeout_seconds: float = 3.0
    connect_timeout_seconds: float = 2.0
    # libvirt keepalive (interval s, missed replies): a silent daemon is declared dead after ~4 s.
    keepalive_interval_seconds: int = 1
    keepalive_count: int = 3
    # Domain definitions (HA metadata, vCPUs, memory) are cached and re-read on libvirt's
    # lifecycle/metadata events; this re-reads them anyway in case an event was missed.
    definition_refresh_seconds: float = 60.0
    # Where CPU time comes from: "info" (virDomainGetInfo per active domain, cheap on QEMU/KVM with
    # libvirt 9) or "stats" (the CPU_TOTAL group of the bulk call); measured in docs/metrics.md.
    cpu_time_source: str = "info"
    # Where the host's own kernel figures are read (loadavg, meminfo), like node_exporter's
    # --path.procfs: the host's /proc mounted elsewhere when the exporter runs in a container.
    procfs: str = "/proc"
    checks: ChecksConfig = field(default_factory=ChecksConfig)


class ConfigError(ValueError):
    """A configuration file or value is wrong; the message names the file and the key."""


def load_config(path: str | None, overrides: dict[str, Any]) -> ExporterConfig:
    """Defaults, then the YAML file at `path` (if any), then non-None `overrides` (flags)."""
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    values.update({key: value for key, value in overrides.items() if value is not None})
    config = _build(ExporterConfig, values, where=path or "flags")
    if config.cpu_time_source not in ("info", "stats"):
        raise ConfigError(f"{path or 'flags'}: cpu_time_source must be info or stats, not {config.cpu_time_source!r}")
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def _build(cls: type, values: dict[str, Any], where: str, prefix: str = "") -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {prefix}{key} (known: {', '.join(sorted(known))})")
        kwargs[key] = _convert(known[key], value, where, f"{prefix}{key}")
    return cls(**kwargs)


def _convert(f: dataclasses.Field, value: Any, where: str, key: str) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if dataclasses.is_dataclass(default):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping")
        return _build(type(default), value, where, prefix=f"{key}.")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, not {value!r}")
        if value < 0:
            raise ConfigError(f"{where}: {key} must not be negative, not {value!r}")
        return type(default)(value)
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: {key} must be a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, not {value!r}")
    return value
