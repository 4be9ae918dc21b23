#!/usr/bin/env bash
# Bring this machine to the state the tests, the lab and the demo need, idempotently:
#   1. the Debian packages (installed when run as root; otherwise the missing ones are named),
#   2. libvirt's QEMU driver prepared to run as root inside a container (see docs/lab.md),
#   3. .venv with the project and its test and bench extras.
# Every step checks before it acts, so a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  prometheus prometheus-alertmanager prometheus-libvirt-exporter
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils binutils
  fence-agents ipmitool iproute2 procps nftables stress-ng
  pacemaker pacemaker-cli-utils corosync resource-agents
  postgresql
  docker-compose openssl systemd
  wrk  # make bench-scale's load generator for the webhook
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: packages must not start their daemons (system libvirtd, prometheus,
  # postgresql, corosync, pacemaker); the lab and the tests start their own, on their own addresses.
  had_policy=0; [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
  ((had_policy)) || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((had_policy)) || rm -f /usr/sbin/policy-rc.d
fi

if [[ $(id -u) -eq 0 ]]; then
  # libvirt's QEMU driver as root in a container: no virtlogd, no cgroups, no security driver.
  mkdir -p /var/log/libvirt /var/run/libvirt /etc/libvirt
  getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
  getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
  qemu_conf='# written by remediator scripts/bootstrap.sh
user = "root"
group = "root"
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"'
  [[ -f /etc/libvirt/qemu.conf ]] && grep -q 'remediator scripts/bootstrap.sh' /etc/libvirt/qemu.conf \
    || printf '%s\n' "$qemu_conf" > /etc/libvirt/qemu.conf
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "bootstrap: Python 3.11+ required, $PY is $($PY --version)" >&2; exit 1; }
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  # (this machine's pip.conf names index folders that may not exist: drop only that noise)
  .venv/bin/pip install -q -e '.[test,bench]' 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  touch "$stamp"
fi
