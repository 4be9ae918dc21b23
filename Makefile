# Every target that needs the machine prepared runs `bootstrap` first; bootstrap is
# idempotent (a second run checks and does nothing), so any target works on a fresh clone.
VENV   := .venv
PY     := $(VENV)/bin/python
HOSTS  ?= 3
GUESTS ?= 4
ARGS   ?=

.PHONY: bootstrap test test-fast dashboards demo lab-up lab-status lab-down bench bench-exporter bench-recovery bench-peer bench-ingest bench-scale bench-failover abuse soak clean

bootstrap:
	@bash scripts/bootstrap.sh

# Three workers, one test module each at a time (--dist loadfile keeps a module's shared lab on one worker):
# the lab tests spend most of their time waiting on timers (for:, scrape intervals), not on the 2 cores.
TEST_WORKERS ?= 3
test: bootstrap
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 $(ARGS)

# The pure core only: seconds, no root, no lab.
test-fast: bootstrap
	$(PY) -m pytest -m "not lab" $(ARGS)

# ARGS=--once: run the scenario, tear down, exit 0 only if every protected guest runs exactly once.
demo: bootstrap
	$(PY) -m lab.demo $(ARGS)

lab-up: bootstrap
	$(PY) -m lab up --hosts $(HOSTS) --guests $(GUESTS) $(ARGS)

lab-status: bootstrap
	$(PY) -m lab status $(ARGS)

lab-down: bootstrap
	$(PY) -m lab down $(ARGS)

bench: bench-exporter bench-recovery

bench-exporter: bootstrap
	$(PY) -m bench.exporter $(ARGS)

bench-recovery: bootstrap
	$(PY) -m bench.recovery $(ARGS)

# bench-scale's webhook ingest alone, on SQLite and PostgreSQL (~8 min, most of it syncing the 1,000-host
# inventory into each store); prints its figures, writes no result file unless ARGS="--output FILE".
bench-ingest: bootstrap
	$(PY) -m bench.scale --only ingest $(ARGS)

# Side by side with Pacemaker + Corosync on the same lab (docs/peer-bench.md); ~27 min on 2 cores (3 runs).
bench-peer: bootstrap
	$(PY) -m bench.peer $(ARGS)

# Leader failover of three replicas on one PostgreSQL (kill -9 of the leader, 5 runs, ~1 min):
# bench/results/failover.json (failover_s, lease_s; docs/tuning.md "Replicas").
bench-failover: bootstrap
	$(PY) -m bench.failover $(ARGS)

# 1,000 simulated hosts and 20,000 VMs through placement, webhook + store and the engine (~11 min):
# bench/results/scale.json (docs in bench/scale.py; ARGS="--ingest-seconds 60 --connections 8").
bench-scale: bootstrap
	$(PY) -m bench.scale $(ARGS)

# Long network abuse of the whole stack (~20 min): results in bench/results/network-abuse.json.
abuse: bootstrap
	$(PY) -m bench.network_abuse $(ARGS)

# 30 minutes of the whole stack under injected faults; every fence/restart/migration counts as false
# (bench/soak.py): results in bench/results/soak.json. ARGS="--duration 300" for a short run.
soak: bootstrap
	$(PY) -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# grafana/dashboards/*.json from grafana/generate.py (grafana-foundation-sdk); commit the result.
dashboards: bootstrap
	$(PY) grafana/generate.py
