"""remediator-exporter: per-host and per-VM health and load of a libvirt host, for Prometheus."""

from __future__ import annotations

import argparse
import logging
import sys

from exporter.checks import HostChecks
from exporter.collect import LibvirtSource
from exporter.collector import HypervisorCollector
from exporter.config import ConfigError, ExporterConfig, load_config
from exporter.errors import ErrorCounter
from exporter.http import make_app, make_http_server
from exporter.web_config import load_web_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="remediator-exporter", description=__doc__)
    parser.add_argument("--libvirt-uri", help="libvirt URI of this host (default qemu:///system)")
    parser.add_argument("--listen", help="ADDRESS:PORT for /metrics and /healthz (default 127.0.0.1:9177)")
    parser.add_argument("--host-name", help="the `host` label of every series (default: this machine's hostname)")
    parser.add_argument("--config", help="YAML file with any key of docs/metrics.md#configuration; flags win")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        help="TLS and basic auth, in the exporter-toolkit's web config format (docs/metrics.md)")
    return parser.parse_args(argv)


def build(config: ExporterConfig) -> HypervisorCollector:
    errors = ErrorCounter()
    source = LibvirtSource(
        uri=config.libvirt_uri,
        connect_timeout=config.connect_timeout_seconds,
        keepalive=(config.keepalive_interval_seconds, config.keepalive_count),
        definition_refresh_seconds=config.definition_refresh_seconds,
        errors=errors,
        cpu_time_source=config.cpu_time_source,
        procfs=config.procfs,
    )
    return HypervisorCollector(config, source, HostChecks(config.checks, errors), errors)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(
            args.config, {"libvirt_uri": args.libvirt_uri, "listen": args.listen, "host_name": args.host_name}
        )
        web = load_web_config(args.web_config_file) if args.web_config_file else None
    except ConfigError as err:
        print(f"remediator-exporter: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    collector = build(config)
    try:
        server = make_http_server(config.listen, make_app(collector, config.scrape_timeout_seconds), web)
    except (OSError, ValueError) as err:
        print(f"remediator-exporter: cannot listen on {config.listen}: {err}", file=sys.stderr)
        return 2
    print(
        f"remediator-exporter: host {config.host_name}, libvirt {config.libvirt_uri}, listening on "
        f"{'https' if web and web.tls else 'http'}://{config.listen}"
        f"{' (basic auth)' if web and web.basic_auth_users else ''}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
