"""A data center on one machine, for tests and demos (never imported by the service).

Each lab host is a network namespace with its own libvirtd on TCP, real tiny KVM guests
and an IPMI BMC on loopback. See docs/lab.md.
"""
from lab.lab import Lab, LabHost, HostUnreachable
from lab.guests import ha_metadata

__all__ = ["Lab", "LabHost", "HostUnreachable", "ha_metadata"]
