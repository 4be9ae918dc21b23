"""Fixtures of the exporter's tests: real remediator-exporter processes, stopped by their pids."""

from __future__ import annotations

import pytest

from lab import procs
from tests.exporter.exporter_helpers import ExporterProcess, start_exporter


@pytest.fixture
def exporter_factory(tmp_path):
    started: list[ExporterProcess] = []

    def start(uri: str, **kwargs) -> ExporterProcess:
        exporter = start_exporter(tmp_path, uri, **kwargs)
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:  # by pid: only what this test started
        procs.stop_child(exporter.proc, 5)
