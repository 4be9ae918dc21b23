"""Child process of test_libvirt_lab: threads calling into one host through a shared Hypervisors.

    python tests/edges/hammer_hypervisors.py URI UUID SECONDS THREADS

Runs in its own process so that a segfault in libvirt shows as the child's exit status (-11)
instead of killing pytest. Prints one JSON line of counts at the end.
"""
from __future__ import annotations

import json
import sys
import threading
import time

from remediator.edges.libvirt import DomainError, HostUnreachable, Hypervisors


def main(uri: str, uuid: str, seconds: float, threads: int) -> None:
    hv = Hypervisors({"h": uri}, connect_timeout=2)
    stop = time.monotonic() + seconds
    counts = {"ok": 0, "unreachable": 0, "refused": 0}
    lock = threading.Lock()
    calls = [lambda: hv.domains("h"), lambda: hv.find_running(uuid, ["h"]),
             lambda: hv.is_reachable("h"), lambda: hv.domain_xml("h", uuid), lambda: hv.capacity("h")]

    def hammer(i: int) -> None:
        call = calls[i % len(calls)]
        while time.monotonic() < stop:
            try:
                call()
                outcome = "ok"
            except HostUnreachable:
                outcome = "unreachable"
            except DomainError:
                outcome = "refused"
            with lock:
                counts[outcome] += 1

    workers = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    counts["reachable_at_end"] = hv.is_reachable("h")
    hv.close()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
