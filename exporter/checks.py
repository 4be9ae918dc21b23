"""Host damage checks, each bounded in time, run in the background and read by scrapes.

A check answers one question about the host's ability to keep running VMs (can it boot, can it
write its root filesystem, is the VM storage there, is there disk space left). Each returns
None when healthy or a short reason when not; the runner turns a hang into a failure after
`timeout_seconds`, so a dead disk is reported as damage instead of stalling the scrape.

Scrapes never run the checks themselves: they read the last results, and start a refresh when
those are older than `interval_seconds`. Only the very first scrape waits (up to the timeout).
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

from exporter.bounded import BoundedCall, CallTimedOut
from exporter.config import ChecksConfig
from exporter.errors import ErrorCounter

# Checks run by HostChecks; "libvirtd" is judged per scrape by the collector (it needs libvirt).
LOCAL_CHECKS: tuple[str, ...] = ("boot", "rootfs_writable", "storage", "disk_space")
ALL_CHECKS: tuple[str, ...] = ("boot", "rootfs_writable", "libvirtd", "storage", "disk_space")

_PROBE_NAME = ".remediator-exporter-probe"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reason: str = ""  # why it failed; empty when ok


def check_boot(config: ChecksConfig) -> str | None:
    """The host can boot again: a kernel and an initrd exist, non-empty, under the boot directory."""
    for what, pattern in (("kernel", config.kernel_glob), ("initrd", config.initrd_glob)):
        found = [p for p in glob.glob(os.path.join(config.boot_dir, pattern)) if _non_empty_file(p)]
        if not found:
            return f"no {what} matching {pattern} in {config.boot_dir}"
    return None


def check_rootfs_writable(config: ChecksConfig) -> str | None:
    """The root filesystem is not read-only (the kernel remounts it so after I/O errors)."""
    try:
        if os.statvfs(config.rootfs_path).f_flag & os.ST_RDONLY:
            return f"{config.rootfs_path} is mounted read-only"
    except OSError as err:
        return f"statvfs {config.rootfs_path}: {err.strerror}"
    return _write_probe(config.rootfs_probe_dir)


def check_storage(config: ChecksConfig) -> str | None:
    """The VM storage directory is there (mounted, if required) and writable."""
    path = config.storage_path
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if config.storage_require_mountpoint and not os.path.ismount(path):
        return f"{path} is not a mount point"
    return _write_probe(path)


def check_disk_space(config: ChecksConfig) -> str | None:
    """Every configured path keeps at least the configured fraction of its filesystem free."""
    for path in config.disk_space_paths:
        try:
            st = os.statvfs(path)
        except OSError as err:
            return f"statvfs {path}: {err.strerror}"
        if st.f_blocks == 0:
            continue  # pseudo filesystems report no size: nothing to run out of
        free_ratio = st.f_bavail / st.f_blocks
        if free_ratio < config.disk_space_min_free_ratio:
            return f"{path}: {free_ratio:.1%} free, below {config.disk_space_min_free_ratio:.1%}"
    return None


CHECK_FUNCTIONS: dict[str, Callable[[ChecksConfig], str | None]] = {
    "boot": check_boot,
    "rootfs_writable": check_rootfs_writable,
    "storage": check_storage,
    "disk_space": check_disk_space,
}


def _non_empty_file(path: str) -> bool:
    try:
        return os.path.isfile(path) and os.path.getsize(path) > 0
    except OSError:
        return False  # vanished between glob and stat: not there


def _write_probe(directory: str) -> str | None:
    # Unique per thread: two checks may probe the same directory at the same time.
    path = os.path.join(directory, f"{_PROBE_NAME}-{os.getpid()}-{threading.get_ident()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(path)
    except OSError as err:
        return f"cannot write in {directory}: {err.strerror}"
    return None


class HostChecks:
    """Runs the local checks every `interval_seconds` in the background; `results()` reads them."""

    def __init__(
        self,
        config: ChecksConfig,
        errors: ErrorCounter,
        clock: Callable[[], float] = time.monotonic,
        functions: dict[str, Callable[[ChecksConfig], str | None]] | None = None,
    ) -> None:
        self._config = config
        self._errors = errors
        self._clock = clock
        functions = functions if functions is not None else CHECK_FUNCTIONS
        self._calls = {name: BoundedCall(_bind(fn, config), f"check {name}") for name, fn in functions.items()}
        self._refresh = BoundedCall(self._run_all, "host checks")
        self._lock = threading.Lock()
        self._results: dict[str, CheckResult] = {}
        self._refreshed_at = float("-inf")

    def results(self) -> dict[str, CheckResult]:
        """The latest result of every local check; starts a refresh when they are stale."""
        if self._clock() - self._refreshed_at >= self._config.interval_seconds:
            run = self._refresh.begin()
            with self._lock:
                first = not self._results
            if first:
                try:
                    # One timeout for all: they run in parallel inside the refresh.
                    run.wait(self._config.timeout_seconds + 0.5)
                except CallTimedOut:
                    pass  # the refresh reports what it could not finish as failed, below
        with self._lock:
            if not self._results:
                return {name: CheckResult(False, "not run yet") for name in self._calls}
            return dict(self._results)

    def _run_all(self) -> None:
        started = self._clock()
        runs = {name: call.begin() for name, call in self._calls.items()}
        deadline = started + self._config.timeout_seconds
        results: dict[str, CheckResult] = {}
        for name, run in runs.items():
            try:
                reason = run.wait(deadline - self._clock())
            except CallTimedOut:
                self._errors.count("check_timeout")
                results[name] = CheckResult(False, f"did not finish within {self._config.timeout_seconds:g} s")
                continue
            results[name] = CheckResult(reason is None, reason or "")
        with self._lock:
            previous, self._results = self._results, results
            self._refreshed_at = started
        for name, result in results.items():
            before = previous.get(name)
            if before is None or before.ok != result.ok:
                # Only transitions: the metric says the state, the log says why it changed.
                if result.ok:
                    log.info("check %s: ok", name)
                else:
                    log.warning("check %s: FAILED: %s", name, result.reason)


def _bind(fn: Callable[[ChecksConfig], str | None], config: ChecksConfig) -> Callable[[], str | None]:
    return lambda: fn(config)
