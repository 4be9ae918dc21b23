"""The floor of detection: a gauge flipped at T, scraped by a real Prometheus, a rule with `for: 0s`,
a real Alertmanager with `group_wait: 0s` posting to a webhook; seconds from T to the post.

Everything the remediator's detection adds (`for:`, verification) sits on top of this floor
(docs/tuning.md, docs/lab-facts.md). Loopback only; no lab needed.

    python -m bench.detection_floor [--trials 8] [--interval 1s]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lab.monitoring import Alertmanager, Prometheus


class Target:
    """/metrics with one gauge per trial (a new alert, so a new Alertmanager group, each trial);
    POST /hook records when each trial's alert arrived."""

    def __init__(self):
        self.flags: dict[int, int] = {}
        self.received: dict[int, float] = {}
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with target.lock:
                    body = "".join(f'floor_flag{{trial="{t}"}} {v}\n' for t, v in target.flags.items()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                import json
                now = time.time()
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with target.lock:
                    for alert in payload["alerts"]:
                        if alert["status"] == "firing":
                            target.received.setdefault(int(alert["labels"]["trial"]), now)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--interval", default="1s", help="scrape and evaluation interval (Prometheus duration)")
    args = parser.parse_args(argv)
    target = Target()
    with tempfile.TemporaryDirectory() as work:
        rules = f"{work}/floor.rules.yml"
        with open(rules, "w") as f:
            f.write("groups:\n- name: floor\n  rules:\n  - alert: Floor\n    expr: floor_flag == 1\n    for: 0s\n")
        am = Alertmanager({"route": {"receiver": "hook", "group_by": ["trial"], "group_wait": "0s",
                                     "group_interval": "1s", "repeat_interval": "1h"},
                           "receivers": [{"name": "hook", "webhook_configs": [{"url": f"http://{target.address}/hook"}]}]},
                          f"{work}/am")
        prom = Prometheus({"global": {"scrape_interval": args.interval, "scrape_timeout": args.interval,
                                      "evaluation_interval": args.interval},
                           "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.address]}]}]},
                           "scrape_configs": [{"job_name": "floor", "static_configs": [{"targets": [target.address]}]}]},
                          rule_files=[rules], workdir=f"{work}/prom")
        with am, prom:
            while not prom.query('up{job="floor"} == 1'):
                time.sleep(0.1)
            delays = []
            for trial in range(args.trials):
                with target.lock:
                    target.flags[trial] = 0
                time.sleep(2 * prom_seconds(args.interval))
                with target.lock:
                    target.flags[trial] = 1
                flipped = time.time()
                deadline = flipped + 30
                while trial not in target.received and time.time() < deadline:
                    time.sleep(0.01)
                if trial not in target.received:
                    raise SystemExit(f"trial {trial}: no webhook within 30 s")
                delays.append(target.received[trial] - flipped)
                with target.lock:
                    target.flags[trial] = 0
                print(f"trial {trial}: {delays[-1]:.2f} s", flush=True)
    print(f"interval {args.interval}: T -> webhook p50 {statistics.median(delays):.2f} s "
          f"(min {min(delays):.2f}, max {max(delays):.2f}, {len(delays)} trials)")
    return 0


def prom_seconds(duration: str) -> float:
    return float(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration[:-1])


if __name__ == "__main__":
    raise SystemExit(main())
