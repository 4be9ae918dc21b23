"""The soak's schedule (bench/soak_schedule.py): pure, no lab."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.soak_schedule import QUIET_FROM, TABLE, Step, active_at, build, check


@given(duration=st.floats(min_value=60, max_value=4 * 3600))
def test_every_duration_gets_the_whole_table_in_order_and_quiet_at_the_end(duration):
    steps = build(duration)
    assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)
    starts = [s for s in steps if s.ends is None]
    assert [s.action for s in starts] == [action for _, _, action, _ in TABLE]
    assert all(0 <= s.at_s <= QUIET_FROM * duration + 0.01 for s in steps)
    lasting = [s for s in starts if s.action in {e.ends for e in steps}]
    assert len([s for s in steps if s.ends]) == len(lasting)  # every fault with a length ends


def test_the_issues_injections_are_all_there():
    steps = build(1800)
    labels = [s.label for s in steps]
    assert sum(s.action == "restart_prometheus" for s in steps) == 2
    assert {s.action for s in steps} >= {"cpu_stress", "delay", "restart_prometheus", "kill_exporter",
                                          "restart_libvirtd", "restart_alertmanager", "redeliver_alerts"}
    delays = [s.params for s in steps if s.action == "delay"]
    assert [(d["delay_s"], d["loss_percent"]) for d in delays] == [(0.3, 5), (1.0, 5)]  # 300 ms, then 1 s
    # the 1 s delay starts only once the 300 ms one has ended, at the same moment
    i_end = labels.index("end_delay(delay_s=0.3, host=h3, loss_percent=5)")
    assert steps[i_end + 1].action == "delay" and steps[i_end + 1].at_s == steps[i_end].at_s


def test_overlapping_or_unended_faults_are_refused():
    stress = Step(10, "cpu_stress", {"host": "h2"})
    end = Step(20, "end_cpu_stress", {"host": "h2"}, ends="cpu_stress")
    check([stress, end])
    with pytest.raises(ValueError, match="still runs"):
        check([stress, Step(15, "cpu_stress", {"host": "h2"}), end, Step(25, "end_cpu_stress", {"host": "h2"},
                                                                            ends="cpu_stress")])
    with pytest.raises(ValueError, match="never ended"):
        check([stress, end, Step(30, "cpu_stress", {"host": "h2"})])
    with pytest.raises(ValueError, match="not running"):
        check([end])
    with pytest.raises(ValueError, match="out of order"):
        check([stress, Step(5, "restart_prometheus"), end])
    with pytest.raises(ValueError, match="positive duration"):
        build(0)
    with pytest.raises(ValueError, match="outside"):
        build(100, table=((0.5, 0.95, "delay", {"host": "h3"}),))


def test_active_at_names_the_fault_in_effect_and_recent_moments():
    steps = build(1000)
    assert active_at(steps, 5) == []
    assert active_at(steps, 100) == ["cpu_stress(host=h2)"]
    assert active_at(steps, 350) == ["delay(delay_s=1.0, host=h3, loss_percent=5)",
                                     "end_delay(delay_s=0.3, host=h3, loss_percent=5) 30 s before"]
    assert active_at(steps, 470) == ["restart_prometheus 10 s before"]
    assert active_at(steps, 999) == []
