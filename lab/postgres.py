"""A private PostgreSQL server for the tests, the lab and the benchmarks: Debian's `postgresql` package,
started with initdb + pg_ctl on a loopback port with a temporary data directory, stopped and removed after.

Debian installs the binaries under /usr/lib/postgresql/<major>/bin (not on PATH). PostgreSQL refuses to
run as root, so as root the server runs as the `postgres` user the package creates. A missing server is
an error (PostgresMissing), never a skip: bootstrap.sh installs the package.

Clients authenticate with a password (scram-sha-256) over TCP, as a deployment would; the URL carries it.
`fast=True` (the store test suite) turns off fsync: the suite checks the store's logic, not the disk.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lab import procs
from lab.monitoring import free_tcp_port

USER = "remediator"


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise PostgresMissing("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                              "install Debian's `postgresql` package (scripts/bootstrap.sh does)")
    return found[-1].parent


class PostgresServer:
    def __init__(self, *, fast: bool = False, port: int | None = None):
        self.bin = bin_dir()
        self.fast = fast
        self.port = port or free_tcp_port()
        self.password = secrets.token_urlsafe(12)
        self._run_as = None if os.geteuid() != 0 else pwd.getpwnam("postgres")
        # as root the server runs as `postgres`, which must reach the directory: /tmp, whatever TMPDIR says
        self.root = Path(tempfile.mkdtemp(prefix="remediator-pg-", dir="/tmp" if self._run_as else None))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.pid: int | None = None
        self.started: int | None = None

    # ---- life

    def start(self) -> "PostgresServer":
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as is not None:
            os.chown(pwfile, self._run_as.pw_uid, self._run_as.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "--auth-host=scram-sha-256",
                  "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8")
        pwfile.unlink()
        self._pg_start()
        return self

    def _pg_start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if self.fast:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self.started = procs.start_time(self.pid)

    def stop(self) -> None:
        """Stop the server (fast shutdown; kill -9 of our own postmaster if that fails) and remove its files."""
        try:
            if procs.alive(self.pid, self.started):
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                    procs.kill(self.pid, self.started)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, mode: str = "immediate") -> float:
        """Stop the server and start it again on the same port and data; `immediate` is a crash for the
        data (no checkpoint: WAL recovery at start). Returns the seconds it was away."""
        started = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        self._pg_start()
        return time.monotonic() - started

    def __enter__(self) -> "PostgresServer":
        try:
            return self.start()
        except BaseException:
            self.stop()  # a half-started server (or its files) is not left behind
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- databases

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template`, which no one may be connected to); its URL."""
        self.sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql over the server's socket (trusted locally); its output."""
        return self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", USER, "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-Atc", statement)

    def _run(self, program: str, *args: str) -> str:
        user = self._run_as.pw_name if self._run_as is not None else None
        done = subprocess.run([str(self.bin / program), *args], capture_output=True, text=True, timeout=120,
                              user=user, cwd=self.root)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, [program, *args], done.stdout,
                                                f"{done.stderr}\n{self.log.read_text() if self.log.exists() else ''}")
        return done.stdout
