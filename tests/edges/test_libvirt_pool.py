"""remediator.edges.libvirt_pool on libvirt's test driver: who may use a connection, and when it closes.

The test driver runs in this process and has no keepalive, so the pool shares one connection of it;
`as_daemon` opens the same driver but reports keepalive on, which is how the pool sees a connection
carried by libvirt's RPC client (one owner at a time). The crash itself is shown on the lab
(test_libvirt_lab.py)."""
from __future__ import annotations

import threading

import libvirt
import pytest

from remediator.edges.libvirt_connect import HostUnreachable, open_kept_alive
from remediator.edges.libvirt_pool import ConnectionPool

URI = "test:///default"


def as_daemon(uri: str, timeout: float):
    conn, _ = open_kept_alive(uri, timeout)
    return conn, True


def closed(conn: libvirt.virConnect) -> bool:
    return conn._o is None  # libvirt-python drops its handle on close()


def test_a_daemon_connection_has_one_owner_at_a_time_and_is_reused_after():
    pool = ConnectionPool({"h": URI}, 3, opener=as_daemon)
    with pool.lease("h") as first, pool.lease("h") as second:
        assert first is not second  # two calls at once: two connections
    with pool.lease("h") as again:
        assert again in (first, second)
    pool.close()
    assert closed(first) and closed(second)


def test_a_failed_host_closes_idle_connections_now_and_the_one_in_use_when_its_call_ends():
    pool = ConnectionPool({"h": URI}, 3, opener=as_daemon)
    with pool.lease("h") as idle:
        pass
    with pool.lease("h") as busy:
        assert busy is idle
        with pool.lease("h") as other:
            pool.failed("h")  # e.g. another thread's call saw "keepalive timeout"
            assert not closed(other) and not closed(busy)  # still in a call: never closed under it
        assert closed(other)
        assert busy.getLibVersion() > 0
    assert closed(busy)
    with pool.lease("h") as fresh:
        assert fresh is not busy and fresh.getLibVersion() > 0


def test_an_in_process_driver_connection_is_shared_and_closed_only_when_nobody_holds_it():
    pool = ConnectionPool({"h": URI}, 3)
    entered, release = threading.Barrier(3), threading.Event()
    seen = []

    def call():
        with pool.lease("h") as conn:
            seen.append(conn)
            entered.wait()
            release.wait()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    entered.wait()
    pool.failed("h")
    assert seen[0] is seen[1] and not closed(seen[0])
    release.set()
    for thread in threads:
        thread.join()
    assert closed(seen[0])


def test_an_unknown_host_or_an_unreachable_one_raises():
    pool = ConnectionPool({"h": "qemu+tcp://127.0.0.1:1/system"}, 3)
    with pytest.raises(KeyError, match="unknown host 'x'"):
        with pool.lease("x"):
            pass
    with pytest.raises(HostUnreachable):
        with pool.lease("h"):
            pass
