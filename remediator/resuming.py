"""Resuming after a restart (`Engine.resume`): what a previous run left half done, checking the world
before anything is repeated (every action looks at the world first, so performing it again is safe).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from remediator import fsm
from remediator.fsm import ActionKind as A
from remediator.model import Incident
from remediator.store.base import Intent

if TYPE_CHECKING:
    from remediator.engine import Engine

log = logging.getLogger(__name__)


def resume_intent(e: "Engine", intent: Intent) -> None:
    """An intent a previous run wrote and never finished: performed again (it checks the world first),
    re-armed (a timer), or finished as superseded (its incident closed or moved on)."""
    incident = e.store.get_incident(intent.incident_id)
    kind = A(intent.action.kind)
    if not incident.is_open:
        e.runner.finish_intent(intent.id, False, "incident closed before this action ran")
        return
    if kind is A.SCHEDULE_RETRY:
        e.runner.arm(intent.id, incident.id, intent.action, intent.at)
        return
    if kind is not fsm.STEP_ACTION.get(fsm.State(incident.state)) and kind is not A.CORDON_HOST:
        e.runner.finish_intent(intent.id, False, f"superseded: the incident moved on to {incident.state}")
        return
    log.info("resuming %s of incident %s (intent %s): it checks the world first", kind, incident.id, intent.id)
    e._dispatch(incident.id, [(intent.id, intent.action)])


def reissue_lost_actions(e: "Engine", incident: Incident) -> None:
    """Kept for stores written before transitions and intents were one transaction: a crash between
    the two left actions never recorded."""
    history = e.store.history(incident.id)
    if not history or not history[-1].actions:
        return
    last = history[-1]
    if [i for i in e.store.intents(incident.id) if i.at >= last.at]:
        return
    log.info("incident %s: re-issuing the actions of its last transition (never recorded)", incident.id)
    now = e.clock()
    e._dispatch(incident.id, [(e.store.record_intent(incident.id, a, now), a) for a in last.actions])
