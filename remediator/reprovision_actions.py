"""The reprovision flow's I/O: who may start one (a host's policy, an operator's request) and its actions.

The phases and their order are the table in remediator/reprovision.py (pure); this module opens the
incident and performs each phase's action, looking at the world first like every action, so that a
resume after `kill -9` repeats nothing that was done: above all, a power cycle whose once-override is
already consumed (the host booted from the network) is not done again.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlparse

from remediator.actions import Outcome
from remediator.edges import hook as hook_edge
from remediator.edges.fencing import UnknownHost
from remediator.edges.libvirt import HostUnreachable
from remediator.edges.power import BootControlError, NoBootControl
from remediator.edges.prometheus import PrometheusUnavailable
from remediator.fsm import ActionKind as A
from remediator.fsm import EventKind as E
from remediator.fsm import State as S
from remediator.hostlife import Answer
from remediator.model import HOST_KINDS, HostCondition, Incident, Remediation, host_of_subject, host_subject
from remediator.reprovision import phase_started

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)
KIND = Remediation.HOST_REPROVISION
# How each condition a reprovision starts from maps to the host's policy key.
_POLICY_KEY = {HostCondition.CORDONED: "damaged", HostCondition.FENCED: "fenced"}
_BOOT_ERRORS = (BootControlError, NoBootControl, UnknownHost, ValueError)


class Reprovisions:
    def __init__(self, engine: "Engine"):
        self.engine = engine

    def request(self, host: str, by: str, reason: str = "") -> Answer:
        """An operator's request (the API, the CLI): allowed unless the host's policy says never."""
        return self._open(host, by, reason, automatic=False)

    def after_recovered(self, incident: Incident) -> None:
        """A damaged host drained, or a fenced host evacuated: reinstall it when its policy is automatic."""
        why = "drained" if incident.kind is Remediation.HOST_DAMAGED else "fenced and evacuated"
        answer = self._open(incident.host, "policy", f"{why} (incident {incident.id})", automatic=True)
        if answer.ok:
            log.info("host %s: %s", incident.host, answer.reason)

    def _open(self, host: str, by: str, reason: str, *, automatic: bool) -> Answer:
        e = self.engine
        cfg = e.config.host(host)
        if cfg is None:
            return Answer(False, f"host {host!r} is not in the inventory")
        with e.decide_lock:
            condition = e.world.condition(host)
            key = _POLICY_KEY.get(condition)
            if key is None:
                return Answer(False, f"{host} is {condition}: a reprovision is for a damaged (cordoned and drained) "
                                     f"or fenced host" + ("; a down host must be fenced or confirmed off first"
                                                          if condition is HostCondition.DOWN else ""))
            policy = getattr(cfg.reprovision, key)
            if policy == "never" or (automatic and policy != "automatic"):
                return Answer(False, f"{host}'s reprovision policy for a {key} host is {policy} "
                                     f"(hosts[].reprovision.{key})")
            busy = self._open_incidents(host)
            if busy:
                return Answer(False, f"{host} has open incidents that act first: {busy}")
            pxe = cfg.reprovision.pxe and e.power.can_boot(host)
            if not pxe and cfg.reprovision.hook is None:
                return Answer(False, f"{host} has no way to be reinstalled: no power device that sets a boot device "
                                     "(hosts[].fence) and no provisioning hook (hosts[].reprovision.hook)")
            if e.config.dry_run:
                return Answer(False, f"dry run: would reprovision {host} ({key}, policy {policy}); nothing done")
            data = {"why": f"{host} {key}: reprovision {'by policy' if automatic else 'requested by ' + by}"
                           + (f" ({reason})" if reason else ""),
                    "by": by, "reason": reason, "from": condition.value, "pxe": pxe,
                    "hook": cfg.reprovision.hook is not None}
            incident = e.open_incident(KIND, host_subject(host, KIND), host, data,
                                       opened_by="policy" if automatic else "operator")
        return Answer(True, f"reprovisioning {host}: incident {incident}")

    def _open_incidents(self, host: str) -> str:
        open_now = self.engine.store.list_incidents(open_only=True, limit=100000)
        return ", ".join(f"{i.id} ({i.kind}, {i.state})" for i in open_now
                         if host_of_subject(i.subject) == host and (i.kind in HOST_KINDS or i.kind is KIND))

    def phase_ended(self, incident: Incident, outcome: str, at) -> None:
        """Metrics: the time the incident spent in its phase that just ended."""
        started = phase_started(incident.data, S(incident.state))
        if started is not None:
            self.engine.metrics.reprovision_phase_finished(incident.state, outcome, (at - started).total_seconds())


# ---- the actions --------------------------------------------------------------------------------------

def _failed(detail: str, **extra: Any) -> Outcome:
    return Outcome(E.ACTION_FAILED, False, detail, extra)


def set_boot_pxe(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    host = p["host"]
    try:
        control = e.power.boot_control(host)
        control.set_next_boot("pxe", once=True)
        now = control.next_boot()
    except _BOOT_ERRORS as err:
        return _failed(f"the power device of {host} did not take the boot device: {err}")
    if now.target != "pxe":
        return _failed(f"the power device of {host} accepted the boot device but says {now.target} "
                       f"({'once' if now.once else 'persistent'})")
    return Outcome(E.ACTION_OK, True, f"next boot of {host}: network, {'once' if now.once else 'persistent'} "
                                      f"({control.kind})")


def power_cycle(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Never twice: the once-override is the world's record of whether the cycle happened. Still set:
    the host has not booted since, cycle it (or power it on). Gone: it booted from the network already
    (a remediator killed after the cycle resumes here), so it is not cycled again."""
    host = p["host"]
    try:
        control = e.power.boot_control(host)
        before = control.next_boot()
        if before.target != "pxe":
            e.metrics.power_cycle("skipped")
            return Outcome(E.ACTION_OK, True, f"{host} already booted from the network (its once override is "
                                              f"consumed, now {before.target}): not power-cycled again")
        started = time.monotonic()
        done = control.cycle()
    except _BOOT_ERRORS as err:
        return _failed(f"{err}")
    e.metrics.power_cycle("cycled" if done == "cycle" else "powered_on")
    return Outcome(E.ACTION_OK, True, f"{host} {'power-cycled' if done == 'cycle' else 'powered on (it was off)'} "
                                      f"in {time.monotonic() - started:.2f}s ({control.kind})")


def call_hook(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    host = p["host"]
    cfg = e.config.host(host)
    if cfg is None or cfg.reprovision.hook is None:
        return _failed(f"{host} has no provisioning hook configured")
    values = {"host": host, "address": urlparse(cfg.uri).hostname or "", "incident": str(p.get("incident", ""))}
    e.gate(f"provisioning hook of {host}")  # the leader's dispatch deadline (leadership.py)
    try:
        return Outcome(E.ACTION_OK, True, hook_edge.call(cfg.reprovision.hook, values))
    except hook_edge.HookFailed as err:
        return _failed(str(err))


def check_ready(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    """Ready: libvirt answers, every check of the exporter is ok in a sample taken after the waiting phase
    began, and the host defines no protected VM that runs elsewhere (a reinstall leaves none)."""
    host = p["host"]
    since = phase_started(e.store.get_incident(p["incident"]).data, S.REPROVISION_WAITING) if "incident" in p else None
    if not e.hv.is_reachable(host):
        return _failed(f"libvirt on {host} does not answer yet", not_ready=True)
    checks = ""
    if e.load_source is not None:
        try:
            samples = e.load_source.host_check_samples(host)
        except PrometheusUnavailable as err:
            return _failed(f"Prometheus does not answer: {err}", not_ready=True)
        fresh = {c: ok for c, (ok, ts) in samples.items() if since is None or ts >= since.timestamp()}
        if not fresh:
            return _failed(f"libvirt answers; no check of {host} sampled since the install began", not_ready=True)
        failing = sorted(c for c, ok in fresh.items() if not ok)
        if failing or len(fresh) < len(samples):
            return _failed(f"checks of {host} not all ok yet: failing {', '.join(failing) or '-'}; "
                           f"{len(samples) - len(fresh)} not sampled since the install", not_ready=True)
        checks = f", {len(fresh)} checks ok"
    try:
        stale = [d.name for d in e.hv.domains(host)
                 if (vm := e.store.get_vm(d.uuid)) is not None and vm.protected and vm.host not in (None, host)]
    except HostUnreachable as err:
        return _failed(f"{err}", not_ready=True)
    if stale:
        return _failed(f"{host} still defines {', '.join(stale)}, which run elsewhere: not reinstalled",
                       not_ready=True)
    return Outcome(E.ACTION_OK, True, f"libvirt answers{checks}, no stale domains")


def activate_reinstalled(e: "Engine", p: Mapping[str, Any]) -> Outcome:
    host = p["host"]
    answer = e.hosts.activate(host, "reprovision", f"reinstalled (incident {p.get('incident')})")
    return Outcome(E.ACTION_OK if answer.ok else E.ACTION_FAILED, answer.ok, answer.reason)


PERFORM: Mapping[A, Callable[["Engine", Mapping[str, Any]], Outcome]] = {
    A.SET_BOOT_PXE: set_boot_pxe,
    A.POWER_CYCLE: power_cycle,
    A.CALL_HOOK: call_hook,
    A.CHECK_READY: check_ready,
    A.ACTIVATE_REINSTALLED: activate_reinstalled,
}
