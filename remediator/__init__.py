"""remediator: recovers VMs and hosts of a libvirt/KVM data center from Prometheus alerts."""

__version__ = "0.1.0"
