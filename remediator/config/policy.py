"""How the remediator acts: the ladder's attempts, retries, timeouts, the storm hold, placement's limits."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictFloat, model_validator

from remediator.config.errors import fail
from remediator.config.reprovision import ReprovisionTimeouts
from remediator.config.types import AtLeastOne, Count, Flag, Positive, Seconds, Section, Text


class Attempts(Section):
    """How many times each step of the ladder is tried before escalating."""

    verify: Count = Field(3, description="Checks that the VM or host is really down before acting.")
    restart_in_place: Count = Field(2, description="Starts of a crashed VM on its own host.")
    restart_elsewhere: Count = Field(2, description="Starts on another host.")
    rebuild: Count = Field(1, description="Rebuilds of the VM from its stored definition.")
    fence: Count = Field(5, description="Fence runs (off, then status must say off) of a host.")
    migrate: Count = Field(2, description="Live migrations of one VM (drain, rebalance).")


class Backoff(Section):
    """Delay before retry n (1-based): min(initial_s * factor**(n-1), max_s)."""

    initial_s: Seconds = Field(2.0, description="Wait before the first retry, seconds.")
    factor: Annotated[StrictFloat, Field(ge=1)] = Field(2.0, description="Each retry waits this many times longer (>= 1).")
    max_s: Seconds = Field(60.0, description="Longest wait between retries, seconds.")

    def delay(self, attempt: int) -> float:
        return min(self.initial_s * self.factor ** max(attempt - 1, 0), self.max_s)


class ActionTimeouts(Section):
    default_s: Positive = Field(60.0, description="An action of no family below.")
    verify_s: Positive = Field(10.0, description="verify_* actions.")
    start_s: Positive = Field(60.0, description="Starting, rebuilding a VM; evacuating a host.")
    fence_s: Positive = Field(60.0, description="A fence run (also the fence agent's own timeout).")
    migrate_s: Positive = Field(300.0, description="A live migration; rebalancing a host.")

    def for_action(self, kind: str, reprovision: ReprovisionTimeouts | None = None) -> float:
        """The timeout of an action kind (fsm.ActionKind values), by family."""
        if reprovision is not None and kind in reprovision.BY_ACTION:
            return getattr(reprovision, reprovision.BY_ACTION[kind])
        if kind.startswith("verify"):
            return self.verify_s
        if kind in ("start_vm", "start_vm_elsewhere", "rebuild_vm", "evacuate_host"):
            return self.start_s
        if kind == "fence_host":
            return self.fence_s
        if kind in ("migrate_away", "rebalance_host"):
            return self.migrate_s
        return self.default_s


def _share(value: float) -> float:
    if value > 1:
        raise fail(f"a share of hosts: 0..1, got {value}")
    return value


class Storm(Section):
    """Hold automatic evacuation when more than this share of hosts is down or damaged (Medik8s' maxUnhealthy)."""

    max_unhealthy_share: Annotated[Seconds, AfterValidator(_share)] = Field(
        1 / 3, description="More hosts than this share down or damaged: hold automatic evacuation.",
        json_schema_extra={"doc_type": "number 0..1"})


class Timings(Section):
    # The stored definitions are what a VM is rebuilt from when its host is gone: a VM defined less
    # than this long before its host dies cannot be restarted elsewhere. One bulk listing per host.
    inventory_sync_s: Seconds = Field(10.0, description="How often each host's domain definitions are stored.")
    reconcile_s: Seconds = Field(30.0, description="How often the world is compared with the store.")
    timeout_check_s: Seconds = Field(5.0, description="How often actions past their timeout are looked for.")
    verify_retry_s: Seconds = Field(2.0, description="Wait between verify attempts.")
    host_down_grace_s: Seconds = Field(0.0, description="Wait before fencing a host that stopped answering.")


class Overcommit(Section):
    """Placement never allocates beyond capacity times these ratios."""

    cpu: Positive = Field(4.0, description="vCPUs per host CPU placement may allocate.")
    memory: Positive = Field(1.0, description="Guest memory per byte of host memory placement may allocate.")


OVERLOAD_MOVED = ("the overload thresholds live in rules/hypervisor.rules.yml (HypervisorHostOverloaded, its "
                  "`threshold` label); the remediator acts on the alert's own reason and threshold: remove this key")


# What to do with a VM paused on a storage I/O error (libvirt's paused/ioerror), as oVirt's resume
# behaviour offers. Per VM from its protection metadata (`on-io-error`), else policy.on_io_error.
IO_ERROR_POLICIES = ("wait", "resume", "restart_elsewhere")
# The one environment variable that lets policy.unsafe_skip_fencing load (loading.py): a lab test sets it
# for its own remediator process, nothing else should.
UNSAFE_OPT_IN = "REMEDIATOR_TEST_ALLOW_UNSAFE_POLICY"


def _io_error_policy(value: str) -> str:
    if value not in IO_ERROR_POLICIES:
        raise fail(f"one of {', '.join(IO_ERROR_POLICIES)}, got {value!r}")
    return value


IoErrorPolicy = Annotated[Text, AfterValidator(_io_error_policy),
                          Field(json_schema_extra={"doc_type": "wait, resume or restart_elsewhere"})]


class Policy(Section):
    attempts: Attempts = Field(default_factory=Attempts, description="Tries of each step of the ladder.")
    backoff: Backoff = Field(default_factory=Backoff, description="Retry n waits min(initial_s * factor^(n-1), max_s).")
    action_timeouts: ActionTimeouts = Field(default_factory=ActionTimeouts, description="Seconds, per action family.")
    storm: Storm = Field(default_factory=Storm, description="The storm hold (Medik8s' maxUnhealthy).")
    max_concurrent_actions: AtLeastOne = Field(4, description="Actions in flight at once.")
    max_concurrent_migrations: AtLeastOne = Field(
        4, description="Live migrations off one host at once (a drain, a rebalance; they share its links).")
    fast_path: Flag = Field(True, description="libvirt's lifecycle events open a crashed VM's incident before its "
                                              "alert (false: alerts only).")
    timings: Timings = Field(default_factory=Timings, description="Periods and waits, seconds.")
    overcommit: Overcommit = Field(default_factory=Overcommit, description="Placement's allocation ratios.")
    reprovision: ReprovisionTimeouts = Field(default_factory=ReprovisionTimeouts,
                                             description="A timeout per reprovision phase, seconds.")
    on_io_error: IoErrorPolicy = Field(
        "resume", description="A VM paused on a storage I/O error whose metadata names no on-io-error: wait (for an "
                              "operator), resume (once its storage takes writes), restart_elsewhere (destroy the "
                              "paused copy, start it on a host whose storage check passes).")
    unsafe_skip_fencing: Flag = Field(
        False, description=f"NEVER. Takes a host for off without proof; refused unless the environment sets "
                           f"{UNSAFE_OPT_IN}=1 (one lab test does, to show the disk lease).")

    def timeout_for(self, kind: str) -> float:
        return self.action_timeouts.for_action(kind, self.reprovision)

    @model_validator(mode="before")
    @classmethod
    def _overload_lives_in_the_rules(cls, value: Any) -> Any:
        # One source of truth: the rule says when a host is overloaded, and its alert carries the figure.
        if isinstance(value, dict) and "overload" in value:
            raise fail(OVERLOAD_MOVED, key="overload")
        return value
