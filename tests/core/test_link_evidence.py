"""Verification from the evidence the remediator already holds: each host's long-lived watcher
connection (edges.libvirt_events). A keepalive that failed just now is unreachability at once (no
fresh connect timeout); an older loss is no evidence (the link may have healed: a fresh probe
decides); a connection still up is asked a round trip: answered, it vetoes a false HostDown;
failed (the keepalive closed it: a cut that came just before the alert), it is unreachability; no
answer within its bound decides nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from remediator.edges.libvirt_events import LOSS_TRUSTED_FOR_S, Link, _LinkState, link_evidence
from remediator.engine import Engine
from remediator.fsm import ActionKind as A
from remediator.fsm import State as S
from remediator.model import HostCondition

from .conftest import NOW
from .test_engine import FOUR, assert_never_twice, deliver, host_alert

times = st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False))


@given(connected=st.booleans(), lost_at=times, now=st.floats(min_value=0, max_value=200))
def test_link_evidence_rule(connected, lost_at, now):
    link = link_evidence(_LinkState(connected, lost_at), now)
    if connected:
        assert link is Link.ANSWERS
    elif lost_at is None:  # never held a connection that failed: no evidence either way
        assert link is Link.UNKNOWN
    else:
        assert link is (Link.LOST if now - lost_at <= LOSS_TRUSTED_FOR_S else Link.UNKNOWN)


def test_a_loss_is_trusted_only_while_fresh_and_failed_reconnects_do_not_renew_it():
    state = _LinkState(connected=False, lost_at=10.0)
    assert link_evidence(state, 10.0 + LOSS_TRUSTED_FOR_S) is Link.LOST
    # Later, every reconnect since may have failed and the link still have healed a moment ago:
    # no evidence, so a fresh probe decides (CI: a storm released right after both hosts healed,
    # and the old "lost" fenced one of them).
    assert link_evidence(state, 10.1 + LOSS_TRUSTED_FOR_S) is Link.UNKNOWN


class HeldLinks:
    """Stand-in for DomainEvents: the test driver has no network, so no keepalive to fail; the
    test says what each host's watcher connection would say."""

    def __init__(self, round_trips: dict[str, Link] | None = None, **links: Link):
        self.links = links
        self.round_trips = round_trips or {}  # what a round trip on a connection still up ends with
        self.asked: list[str] = []

    def link(self, host: str) -> Link:
        return self.links.get(host, Link.UNKNOWN)

    def round_trip(self, host: str) -> Link:
        self.asked.append(host)
        return self.round_trips.get(host, self.link(host))

    def stop(self) -> None:
        pass  # no watcher threads to end


def engine_with(dc, links: HeldLinks) -> Engine:
    return Engine(dc.config, dc.store, dc.hv, dc.fencer, dc.load, dc.metrics, events=links)


def probes_of(dc, monkeypatch) -> list[str]:
    asked: list[str] = []
    real = dc.hv.is_reachable
    monkeypatch.setattr(dc.hv, "is_reachable", lambda host: asked.append(host) or real(host))
    return asked


def test_keepalive_failed_just_now_counts_as_unreachable_without_a_fresh_probe(make_dc, monkeypatch):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.engine = engine_with(dc, HeldLinks(h1=Link.LOST, h2=Link.ANSWERS, h3=Link.ANSWERS))
    asked = probes_of(dc, monkeypatch)
    dc.switch.cut.add("h1")  # the partition: its libvirt would not answer a fresh connect either
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED, inc.reason
    [verify] = [i for i in dc.store.intents(inc.id) if i.action.kind == A.VERIFY_HOST]
    assert "kept-alive connection failed just now" in verify.detail
    assert "h1" not in asked  # no fresh connect timeout paid
    # Safety unchanged: the VMs moved only after the fence device said off.
    assert dc.switch.agent_calls() == ["off h1", "status h1"]
    assert dc.store.host_states()["h1"].condition is HostCondition.FENCED
    assert_never_twice(dc)


def test_connection_kept_alive_vetoes_a_false_host_down(make_dc):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.engine = engine_with(dc, HeldLinks(h1=Link.ANSWERS, h2=Link.ANSWERS, h3=Link.ANSWERS))
    # The alert says down (scrapes time out on a slow link) and even a fresh probe would fail, but
    # keepalive holds the remediator's own connection up: the host answers; nothing is fenced.
    dc.switch.cut.add("h1")
    links = HeldLinks(h1=Link.ANSWERS, h2=Link.ANSWERS, h3=Link.ANSWERS)
    dc.engine = engine_with(dc, links)
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.HOST_RECHECKING, inc.reason
    assert dc.switch.agent_calls() == [] and "h1" in links.asked  # a real round trip answered


def test_connection_still_up_whose_round_trip_fails_is_unreachable_and_fenced(make_dc, monkeypatch):
    # The alert came before the keepalive noticed the cut: the link still says up, but the round
    # trip on it fails when the keepalive closes the connection, and the watcher then says LOST.
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.engine = engine_with(dc, HeldLinks({"h1": Link.LOST}, h1=Link.ANSWERS, h2=Link.ANSWERS, h3=Link.ANSWERS))
    asked = probes_of(dc, monkeypatch)
    dc.switch.cut.add("h1")
    deliver(dc, host_alert("h1"))
    [inc] = dc.store.list_incidents()
    assert inc.state == S.RECOVERED, inc.reason
    assert "h1" not in asked  # the round trip failed just now: no fresh probe
    assert dc.switch.agent_calls() == ["off h1", "status h1"]
    assert_never_twice(dc)


def test_round_trip_without_an_answer_in_its_bound_decides_nothing_and_is_retried(make_dc, monkeypatch):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.engine = engine_with(dc, HeldLinks({"h1": Link.UNKNOWN}, h1=Link.ANSWERS, h2=Link.ANSWERS, h3=Link.ANSWERS))
    asked = probes_of(dc, monkeypatch)
    dc.store.record_alerts([host_alert("h1")], NOW)
    dc.engine.handle_pending_alerts()
    assert dc.engine.wait_idle(30)
    inc = dc.store.open_incident_for("host:h1")
    assert inc.state == S.HOST_VERIFYING and "no answer within its bound" in inc.reason, inc.reason
    assert "h1" not in asked and dc.switch.agent_calls() == []


def test_without_evidence_a_fresh_probe_decides(make_dc, monkeypatch):
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.engine = engine_with(dc, HeldLinks())  # every host UNKNOWN (stale, or never connected)
    asked = probes_of(dc, monkeypatch)
    deliver(dc, host_alert("h1"))  # h1 answers a fresh probe
    [inc] = dc.store.list_incidents()
    assert inc.state == S.HOST_RECHECKING, inc.reason
    assert "h1" in asked and dc.switch.agent_calls() == []


def test_a_loss_too_old_to_trust_whose_host_healed_since_is_not_fenced(make_dc, monkeypatch):
    """The watcher has not reconnected yet, but its loss is older than LOSS_TRUSTED_FOR_S (UNKNOWN)
    and the link healed: the fresh probe answers, so nothing is fenced (CI found a storm released
    right after both hosts healed fencing one of them on the old loss)."""
    dc = make_dc({"h1": FOUR, "h2": [], "h3": []})
    dc.sync()
    dc.engine = engine_with(dc, HeldLinks(h1=Link.UNKNOWN, h2=Link.ANSWERS, h3=Link.ANSWERS))
    asked = probes_of(dc, monkeypatch)
    deliver(dc, host_alert("h1"))  # h1 is not cut: it answers a fresh connect
    dc.engine.wait_idle(30)
    assert "h1" in asked
    assert dc.switch.agent_calls() == []  # no fence
    h1 = dc.store.host_states().get("h1")
    assert h1 is None or h1.condition is not HostCondition.FENCED
    assert_never_twice(dc)
