"""Fixtures shared by every test: the lab, real Prometheus and Alertmanager.

Before any test runs, every component the suite needs is checked; a missing one aborts the
whole run naming it (never a skip). Labs made by these fixtures are always torn down, and at
session end the session asserts that nothing they created is left.
"""
from __future__ import annotations

import uuid

import pytest

from lab.lab import Lab
from lab.registry import leftovers
from lab.postgres import PostgresServer
from lab.monitoring import Alertmanager, Prometheus
from lab.requirements import missing

_session_labs: list[dict] = []   # Lab.resources() of every lab this session made


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store", choices=("sqlite", "postgresql"), default="sqlite",
                     help="the store the e2e stacks' remediator uses (default sqlite; postgresql: a private server)")


def pytest_collection_finish(session: pytest.Session) -> None:
    needs_lab = any(item.get_closest_marker("lab") for item in session.items)
    gone = missing(need_root=needs_lab)
    if gone and session.items:
        pytest.exit("missing components (run `make bootstrap`):\n  " + "\n  ".join(gone), returncode=3)


def _track(lab: Lab) -> Lab:
    _session_labs.append(lab.resources())
    return lab


@pytest.fixture(scope="session", autouse=True)
def no_lab_leftovers():
    """Last teardown of the session: nothing any lab of this session created may remain."""
    yield
    left = [f"{res['state_file']}: {item}" for res in _session_labs for item in leftovers(res)]
    assert not left, "lab resources left after teardown:\n" + "\n".join(left)


@pytest.fixture
def lab_factory():
    """make(hosts=3, **Lab kwargs) -> a Lab that is up; every one is torn down after the test."""
    yield from _labs()


@pytest.fixture(scope="module")
def module_lab_factory():
    """make(hosts=3, **Lab kwargs) -> a Lab shared by one test module; torn down after the module."""
    yield from _labs()


def _labs():
    made: list[Lab] = []

    def make(hosts: int = 3, **kw) -> Lab:
        lab = Lab(hosts, **kw)
        made.append(lab)
        lab.up()
        return _track(lab)

    yield make
    for lab in made:
        lab.down()


@pytest.fixture(scope="module")
def lab():
    """A 3-host lab shared by one test module (tests must leave its hosts on, linked, BMCs up)."""
    yield from _module_lab(Lab(3))


@pytest.fixture(scope="module")
def storage_lab():
    """A 3-host lab with shared and host-local storage and virtlockd (lab/storage.py), per module."""
    yield from _module_lab(Lab(3, storage=True))


def _module_lab(lab: Lab):
    try:
        lab.up()
        _track(lab)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def prometheus_factory(tmp_path):
    """make(config, rule_files=(), start=True) -> Prometheus on a free loopback port, stopped after."""
    made: list[Prometheus] = []

    def make(config: dict, rule_files=(), start: bool = True) -> Prometheus:
        prom = Prometheus(config, rule_files, tmp_path / f"prometheus{len(made)}")
        made.append(prom)
        return prom.start() if start else prom

    yield make
    for prom in made:
        prom.stop()


@pytest.fixture
def alertmanager_factory(tmp_path):
    """make(config, start=True) -> Alertmanager on a free loopback port, stopped after."""
    made: list[Alertmanager] = []

    def make(config: dict, start: bool = True) -> Alertmanager:
        am = Alertmanager(config, tmp_path / f"alertmanager{len(made)}")
        made.append(am)
        return am.start() if start else am

    yield make
    for am in made:
        am.stop()


@pytest.fixture(scope="session")
def postgres():
    """One private PostgreSQL server (Debian's, initdb + pg_ctl on a loopback port) for the session, fsync
    off; tests get databases of their own from `postgres_db`. Missing binaries fail the run (never skip)."""
    with PostgresServer(fast=True) as server:
        yield server


@pytest.fixture
def postgres_db(postgres):
    """new(template=None) -> the URL of a fresh database on the session's server (empty, or a copy of
    `template`); every one is dropped after."""
    made: list[str] = []

    def new(template: str | None = None) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        made.append(name)
        return postgres.create_database(name, template)

    yield new
    for name in made:
        postgres.drop_database(name)
