"""remediator-exporter: per-host and per-VM health and load of a libvirt host, for Prometheus."""
