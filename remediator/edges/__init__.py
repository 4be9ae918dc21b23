"""Edges: the only modules that talk to external systems (libvirt, fence agents, Prometheus)."""
