"""Host damage checks against real directories, and their time bound."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from exporter.bounded import BoundedCall, CallTimedOut
from exporter.checks import HostChecks, check_boot, check_disk_space, check_rootfs_writable, check_storage
from exporter.config import ChecksConfig
from exporter.errors import ErrorCounter

import pytest


@pytest.fixture
def config(tmp_path) -> ChecksConfig:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1.0").write_bytes(b"kernel")
    (boot / "initrd.img-6.1.0").write_bytes(b"initrd")
    storage = tmp_path / "images"
    storage.mkdir()
    return ChecksConfig(
        boot_dir=str(boot),
        rootfs_probe_dir=str(tmp_path),
        storage_path=str(storage),
        disk_space_paths=(str(tmp_path),),
    )


def test_a_healthy_host_passes_every_check(config):
    for check in (check_boot, check_rootfs_writable, check_storage, check_disk_space):
        assert check(config) is None, check.__name__


def test_boot_fails_without_kernel_or_initrd_or_with_an_empty_one(config, tmp_path):
    (tmp_path / "boot" / "initrd.img-6.1.0").unlink()
    assert "no initrd" in check_boot(config)
    (tmp_path / "boot" / "initrd.img-6.1.0").write_bytes(b"")
    assert "no initrd" in check_boot(config)
    (tmp_path / "boot" / "vmlinuz-6.1.0").unlink()
    assert "no kernel" in check_boot(config)


def test_storage_fails_when_missing_or_not_a_required_mount_point(config, tmp_path):
    assert "not a directory" in check_storage(replace(config, storage_path=str(tmp_path / "absent")))
    assert "not a mount point" in check_storage(replace(config, storage_require_mountpoint=True))


def test_rootfs_probe_fails_where_nothing_can_be_written(config, tmp_path):
    assert "cannot write" in check_rootfs_writable(replace(config, rootfs_probe_dir=str(tmp_path / "absent")))


def test_disk_space_fails_below_the_threshold(config):
    assert "below 100.0%" in check_disk_space(replace(config, disk_space_min_free_ratio=1.0))


def test_a_hung_check_is_reported_failed_within_its_timeout(config):
    # A fake check (a real hang would need a dead disk or NFS server): it blocks until released.
    release = threading.Event()
    errors = ErrorCounter()
    checks = HostChecks(
        replace(config, timeout_seconds=0.3),
        errors,
        functions={"boot": check_boot, "storage": lambda _c: None if release.wait(30) else "x"},
    )
    started = time.monotonic()
    results = checks.results()
    assert time.monotonic() - started < 1.5
    assert results["boot"].ok and not results["storage"].ok
    assert "did not finish within 0.3 s" in results["storage"].reason
    assert errors.snapshot()["check_timeout"] == 1
    release.set()


def test_results_are_cached_between_refreshes(config, tmp_path):
    now = [100.0]
    checks = HostChecks(replace(config, interval_seconds=5), ErrorCounter(), clock=lambda: now[0])
    assert checks.results()["boot"].ok
    (tmp_path / "boot" / "vmlinuz-6.1.0").unlink()
    now[0] += 1
    assert checks.results()["boot"].ok  # within the interval: the cached result
    now[0] += 5
    checks.results()  # starts a refresh in the background
    deadline = time.monotonic() + 2
    while checks.results()["boot"].ok and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not checks.results()["boot"].ok


def test_bounded_call_keeps_one_run_in_flight():
    release = threading.Event()
    runs = []

    def slow() -> int:
        runs.append(1)
        release.wait(5)
        return len(runs)

    call = BoundedCall(slow, "slow")
    with pytest.raises(CallTimedOut):
        call(0.05)
    with pytest.raises(CallTimedOut):
        call(0.05)
    assert len(runs) == 1 and call.in_flight
    release.set()
    assert call(1.0) == 1  # the second caller got the first run's result
    assert call(1.0) == 2  # a finished run is not reused


def test_bounded_call_reraises_the_functions_error():
    def broken() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        BoundedCall(broken, "broken")(1.0)
