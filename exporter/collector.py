"""One scrape: libvirt (bounded by its timeout), the host checks' last results, rendered as text."""

from __future__ import annotations

import time
from typing import Callable

import libvirt

from exporter.bounded import BoundedCall, CallTimedOut
from exporter.checks import CheckResult, HostChecks
from exporter.collect import HostSample, LibvirtSource
from exporter.config import ExporterConfig
from exporter.errors import ErrorCounter
from exporter.metrics import Observation, render
from exporter.procfs import read_load1
from remediator.edges.libvirt_connect import HostUnreachable


class HypervisorCollector:
    def __init__(
        self,
        config: ExporterConfig,
        source: LibvirtSource,
        checks: HostChecks,
        errors: ErrorCounter,
        load_average: Callable[[], float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._checks = checks
        self._errors = errors
        self._load_average = load_average or (lambda: read_load1(config.procfs))
        self._clock = clock
        # At most one libvirt collection in flight: a hung daemon ties up one thread, not one per scrape.
        self._libvirt = BoundedCall(source.collect, "libvirt collect")

    def render_within(self, timeout: float) -> bytes:
        """This scrape's exposition; libvirt work is abandoned after `timeout` (hypervisor_up 0)."""
        started = self._clock()
        sample = self._sample(timeout)
        checks = dict(self._checks.results())
        checks["libvirtd"] = self._libvirtd_check(sample)
        observation = Observation(
            host=self._config.host_name,
            sample=sample,
            checks=checks,
            errors=self._errors.snapshot(),
            scrape_seconds=self._clock() - started,
            load1=self._load_average(),
        )
        return render(observation)

    def _sample(self, timeout: float) -> HostSample | None:
        try:
            return self._libvirt(timeout)
        except CallTimedOut:
            self._errors.count("timeout")
        except HostUnreachable:
            pass  # counted by the source as "connect" or "libvirt"
        except libvirt.libvirtError:
            pass  # a host-level call was refused; counted by the source as "libvirt"
        return None

    def _libvirtd_check(self, sample: HostSample | None) -> CheckResult:
        if sample is None:
            return CheckResult(False, "libvirt did not answer")
        limit = self._config.checks.libvirtd_max_latency_seconds
        if sample.libvirt_seconds > limit:
            return CheckResult(False, f"libvirt answered in {sample.libvirt_seconds:.2f} s, over {limit:g} s")
        return CheckResult(True)

