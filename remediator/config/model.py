"""The whole configuration: one typed object, loaded once (loading.py) and passed in."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, PrivateAttr

from remediator.config.errors import Required
from remediator.config.inventory import FenceDevice, HostConfig, Storage, VMConfig, unique_hosts, unique_vms
from remediator.config.policy import Policy
from remediator.config.service import AUTH_FORM, Auth, Cluster, Libvirt, Limits, Listen, Prometheus, Store
from remediator.config.types import Flag, Record


class Config(Record):
    listen: Listen = Field(default_factory=Listen, description="Where the webhook and the API are served.")
    auth: Annotated[Auth, Required(f"required: {AUTH_FORM}, or write `auth: none` explicitly")] = Field(
        description="Required: one credential per role, no secret shared between them; `auth: none`, written "
                    "out, turns auth off.", json_schema_extra={"doc_type": "mapping, or `none`"})
    prometheus: Prometheus = Field(default_factory=Prometheus, description="Where host load comes from.")
    store: Store = Field(default_factory=Store, description="Where incidents, intents and inventory are kept.")
    hosts: Annotated[tuple[HostConfig, ...], AfterValidator(unique_hosts), Required("required: at least one host")] = Field(
        description="The inventory: the hypervisor hosts (required, at least one).")
    vms: Annotated[tuple[VMConfig, ...], BeforeValidator(lambda v: () if v is None else v), AfterValidator(unique_vms)] = Field(
        (), description="VMs declared highly available (VM metadata `<rem:ha protected=\"true\"/>` declares too).")
    policy: Policy = Field(default_factory=Policy, description="How the remediator acts.")
    limits: Limits = Field(default_factory=Limits, description="Limits on what callers send.")
    libvirt: Libvirt = Field(default_factory=Libvirt, description="libvirt connections.")
    cluster: Cluster = Field(default_factory=Cluster, description="Replicas on one PostgreSQL: the leader lease.")
    storage: Storage = Field(default_factory=Storage, description="Where VM disks live.")
    dry_run: Flag = Field(False, description="Decide and record, but perform no libvirt or fencing action.")
    _source: str = PrivateAttr("<memory>")
    # every webhook post asks host(): a scan of 1,000 hosts was ~7 % of its CPU (make bench-scale)
    _hosts_by_name: dict[str, HostConfig] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object) -> None:
        self._hosts_by_name = {h.name: h for h in self.hosts}  # names are unique (unique_hosts)

    @property
    def source(self) -> str:
        """The file it came from, for messages."""
        return self._source

    @property
    def libvirt_connect_timeout_s(self) -> float:
        return self.libvirt.connect_timeout_s

    def host(self, name: str) -> HostConfig | None:
        return self._hosts_by_name.get(name)

    @property
    def host_uris(self) -> dict[str, str]:
        """name -> libvirt URI, what edges.libvirt.Hypervisors takes."""
        return {h.name: h.uri for h in self.hosts}

    @property
    def fence_devices(self) -> dict[str, FenceDevice]:
        """name -> its first power device, for the hosts that have one."""
        return {h.name: h.fence for h in self.hosts if h.fence is not None}

    @property
    def power_devices(self) -> dict[str, tuple[FenceDevice, ...]]:
        """name -> its power devices in order (fencing levels), what edges.fencing.Fencer and edges.power take."""
        return {h.name: h.power for h in self.hosts if h.power}

    def vm(self, *, uuid: str | None = None, name: str | None = None) -> VMConfig | None:
        """The HA declaration of a VM: by uuid first, then by name for declarations without uuid."""
        if uuid:
            for v in self.vms:
                if v.uuid and v.uuid.lower() == uuid.lower():
                    return v
        if name:
            for v in self.vms:
                if v.name == name and (v.uuid is None or uuid is None):
                    return v
        return None

    def with_source(self, source: str) -> Config:
        self._source = source
        return self

