"""The lab's keeper: parent (subreaper) of every process the lab starts, so none stays a zombie.

PID 1 of this machine reaps no orphans: a libvirtd or qemu killed by a power loss would stay
a zombie forever (and show in `pgrep qemu`). Every lab daemon is spawned by this process
(asked over a unix socket), and qemu processes that libvirt double-forks are re-parented to
it because it is a child subreaper (prctl PR_SET_CHILD_SUBREAPER). It reaps whatever dies.

Run: python -m lab.keeper SOCKET_PATH. Protocol: one JSON line per connection,
{"argv": [...], "log": "/path"} -> {"pid": N} or {"error": "..."}.
"""
from __future__ import annotations

import ctypes
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

PR_SET_CHILD_SUBREAPER = 36


def _reap_forever() -> None:
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.2)  # no children right now


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = json.loads(self.rfile.readline())
        try:
            with open(request["log"], "ab") as log:
                proc = subprocess.Popen(request["argv"], stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        cwd="/", close_fds=True)
            # The reaper thread collects it; stop Popen from trying to wait for it as well.
            proc.returncode = 0
            answer = {"pid": proc.pid}
        except OSError as e:
            answer = {"error": f"{request['argv'][0]}: {e}"}
        self.wfile.write((json.dumps(answer) + "\n").encode())


def spawn(sock_path: str, argv: list[str], log: str, timeout: float = 10.0) -> int:
    """Ask the keeper at sock_path to start argv; return its pid."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall((json.dumps({"argv": argv, "log": log}) + "\n").encode())
        answer = json.loads(s.makefile().readline())
    if "error" in answer:
        raise OSError(f"lab keeper could not start {argv}: {answer['error']}")
    return answer["pid"]


def main() -> None:
    sock_path = sys.argv[1]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    threading.Thread(target=_reap_forever, daemon=True).start()
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    server = socketserver.ThreadingUnixStreamServer(sock_path, _Handler)
    print("keeper ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
