"""python -m lab up|status|down: a lab to explore by hand, left running after the command exits."""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from lab import state as st
from lab.lab import Lab
from lab.registry import find_lab, reap_abandoned, teardown
from lab.virt import HostUnreachable


def _print_lab(lab: Lab) -> None:
    s = lab.status()
    print(f"lab {s['name']}: bridge {s['bridge']} {s['gateway']}/24, guests type={s['domain_type']}, "
          f"state {s['state_file']}")
    for h in s["hosts"]:
        try:
            doms = lab.domains(h["name"]) if h["power"] == "on" and h["link"] == "up" else {}
            summary = f"{sum(1 for v in doms.values() if v[0] == 'running')}/{len(doms)} guests running"
        except HostUnreachable as e:
            summary = f"unreachable: {e}"
        print(f"  {h['name']}  {h['address']:<12} power={h['power']:<3} link={h['link']:<4} "
              f"{h['uri']}  BMC 127.0.0.1:{h['bmc_port']} ({'up' if h['bmc_alive'] else 'DEAD'})  {summary}")
    h = s["hosts"][0]
    print(f"  try: virsh -c {h['uri']} list --all")
    print(f"       ipmitool -I lanplus -H 127.0.0.1 -p {h['bmc_port']} -U {h['bmc_user']} "
          f"-P {h['bmc_password']} power status")
    print(f"       virsh -c '{h['unix_uri']}' list --all   # through the socket: works while partitioned")


def cmd_up(args) -> int:
    t0 = time.monotonic()
    lab = Lab(args.hosts, args.name, detached=True, storage=args.storage)
    lab.up()
    t_up = time.monotonic() - t0
    try:
        if args.pacemaker:
            return _up_pacemaker(lab, args, t0, t_up)

        # All protected; only g1 of each host in one anti-affinity group, so a host's loss shows both:
        # its other guests placed elsewhere by priority, its g1 refused where a `web` guest already runs.
        priorities = (100, 50, 10, 0)

        def fill(h):
            for g in range(1, args.guests + 1):
                lab.define_guest(h, f"{h.name}-g{g}", metadata=lab.ha_metadata(
                    protected=True, priority=priorities[(g - 1) % len(priorities)], group="web" if g == 1 else None))
        with ThreadPoolExecutor(len(lab.hosts)) as pool:
            list(pool.map(fill, lab.hosts))
    except BaseException:
        lab.down()
        raise
    total = time.monotonic() - t0
    _print_lab(lab)
    print(f"up in {total:.1f} s ({len(lab.hosts)} hosts in {t_up:.1f} s, then "
          f"{len(lab.hosts) * args.guests} guests). Tear down: python -m lab down --name {lab.name}")
    return 0


def _up_pacemaker(lab: Lab, args, t0: float, t_up: float) -> int:
    """--pacemaker: a Pacemaker + Corosync cluster over the hosts runs --guests guests, on h1 by preference."""
    from lab.pacemaker import Cluster
    from lab.pacemaker_config import DEFAULTS, TUNED
    names = [f"h1-g{g}" for g in range(1, args.guests + 1)]
    cluster = Cluster(lab, {"defaults": DEFAULTS, "tuned": TUNED}[args.pacemaker],
                      guests={n: lab.guest_xml(n, uuid=str(uuid.uuid4())) for n in names}, prefer="h1").start()
    _print_lab(lab)
    print(cluster.crm_mon())
    print(f"pacemaker ({args.pacemaker}) up in {time.monotonic() - t0:.1f} s (hosts in {t_up:.1f} s). Inside a node:\n"
          f"  nsenter -t {cluster.pacemakerd_pid(lab.hosts[0])} -m -n -u -- crm_mon -1\n"
          f"Tear down: python -m lab down --name {lab.name}")
    return 0


def cmd_status(args) -> int:
    states = st.list_states(st.Roots())
    if args.name:
        states = [(p, d) for p, d in states if d["name"] == args.name]
    if not states:
        print("no lab running" + (f" named {args.name}" if args.name else ""))
        return 1 if args.name else 0
    for _, d in states:
        owner = d.get("owner")
        print(f"(owner: {'none, detached' if owner is None else 'pid ' + str(owner['pid'])})")
        _print_lab(Lab.attach(d["name"]))
    return 0


def cmd_down(args) -> int:
    roots = st.Roots()
    if args.name:
        path = find_lab(roots, args.name)
        if path is None:
            print(f"no lab named {args.name}", file=sys.stderr)
            return 1
        teardown(path)
        print(f"lab {args.name} down")
        return 0
    # Without a name: the detached labs (made by `up`) and abandoned ones, never a lab that a
    # living process (someone's test run) still owns.
    for path, d in st.list_states(roots):
        if d.get("owner") is None:
            teardown(path)
            print(f"lab {d['name']} down")
        elif args.all and reap_abandoned(roots, d["index"]):
            print(f"lab {d['name']} (abandoned) down")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring a lab up and leave it running")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--guests", type=int, default=4, help="guests per host (h1-g1...)")
    up.add_argument("--name")
    up.add_argument("--storage", action="store_true",
                    help="shared and host-local storage, virtlockd on every host (docs/lab.md, Storage)")
    up.add_argument("--pacemaker", choices=("defaults", "tuned"),
                    help="a Pacemaker + Corosync cluster over the hosts runs --guests guests (preferring h1) "
                         "instead of libvirt-defined guests on every host (docs/peer-bench.md)")
    stat = sub.add_parser("status", help="print running labs")
    stat.add_argument("--name")
    down = sub.add_parser("down", help="tear down labs by their recorded ids")
    down.add_argument("--name", help="this lab (even one owned by a running process)")
    down.add_argument("--all", action="store_true", help="also labs whose owner process died")
    args = ap.parse_args(argv)
    return {"up": cmd_up, "status": cmd_status, "down": cmd_down}[args.cmd](args)
