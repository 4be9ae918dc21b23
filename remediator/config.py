"""The service's one typed configuration: loaded from YAML, secrets overridable from the environment.

Every validation error names the file and the key path, e.g.
`config error in /etc/remediator.yml: hosts[2].fence.agent: unknown agent 'fence_foo'`,
so an operator can fix the file without reading this module.

Environment overrides (for secrets that should not live in the file):
  REMEDIATOR_AUTH_<ROLE>_TOKEN       auth.<role>.bearer_token
  REMEDIATOR_AUTH_<ROLE>_USERNAME    auth.<role>.basic.username
  REMEDIATOR_AUTH_<ROLE>_PASSWORD    auth.<role>.basic.password
                                     (ROLE: ALERTMANAGER or OPERATOR;
                                     e.g. REMEDIATOR_AUTH_OPERATOR_TOKEN)
  REMEDIATOR_STORE_URL               store.url
  REMEDIATOR_PROMETHEUS_URL          prometheus.url
  REMEDIATOR_FENCE_<HOST>_<OPTION>   hosts[name=HOST].fence.options.OPTION
                                     (HOST and OPTION upper-cased, other characters than A-Z0-9 as `_`;
                                     e.g. REMEDIATOR_FENCE_H1_PASSWORD)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import yaml

DEFAULT_STORE_URL = "sqlite:///var/lib/remediator/state.db"
DEFAULT_FENCE_AGENT_DIRS = ("/usr/sbin", "/usr/bin", "/sbin")
LIBVIRT_URI_SCHEMES = re.compile(r"^(qemu|test|lxc|xen|libxl|ch)(\+(tcp|tls|ssh|unix|libssh2?|ext))?$")
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
FENCE_AGENT = re.compile(r"^fence_[a-z0-9_]+$")
FENCE_OPTION = re.compile(r"^[a-z][a-z0-9_]*$")
# The fencer sets these itself per call; letting the file set them would make `off` mean something else.
FENCE_OPTIONS_RESERVED = frozenset({"action", "o"})
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ConfigError(ValueError):
    """The configuration is not usable; the message names the file and the key path."""

    def __init__(self, source: str, key: str, problem: str):
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"config error in {source}: {key}: {problem}" if key else f"config error in {source}: {problem}")


# ---------------------------------------------------------------- the typed configuration


@dataclass(frozen=True)
class TLS:
    """HTTPS for the webhook and the API: credentials cross the network only encrypted.

    With `client_ca_file`, a client must present a certificate signed by that CA (what
    Alertmanager's `tls_config.cert_file` sends); without it, any client may connect and the
    bearer token or basic auth decides."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


@dataclass(frozen=True)
class Listen:
    host: str = "127.0.0.1"
    port: int = 9180
    threads: int = 8  # the WSGI server's (cheroot) worker threads
    tls: TLS | None = None  # None: plain HTTP (loopback, or behind a TLS-terminating reverse proxy)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: str


@dataclass(frozen=True)
class Credentials:
    """One role's credential: a bearer token and/or basic auth."""

    bearer_token: str | None = None
    basic: BasicAuth | None = None


# Alertmanager's credential may only post alerts; the operators' API (reads and writes) and the CLI need
# the operator's. Separate, so a leaked webhook token cannot confirm a host off or close an incident.
ROLES = ("alertmanager", "operator")


@dataclass(frozen=True)
class Auth:
    """Who may call the API, per role. `none=True` only when the file says `auth: none` explicitly."""

    none: bool = False
    alertmanager: Credentials | None = None
    operator: Credentials | None = None

    def of(self, role: str) -> Credentials | None:
        return getattr(self, role) if role in ROLES else None


@dataclass(frozen=True)
class Prometheus:
    url: str | None = None  # None: no load source, placement uses libvirt allocation only
    timeout_s: float = 2.0


@dataclass(frozen=True)
class Store:
    url: str = DEFAULT_STORE_URL

    @property
    def sqlite_path(self) -> str | None:
        """The file of a `sqlite:///path` URL (`sqlite:///:memory:` gives `:memory:`), else None."""
        if not self.url.startswith("sqlite:///"):
            return None
        rest = self.url[len("sqlite:///") :]
        return rest if rest == ":memory:" else "/" + rest.lstrip("/")


@dataclass(frozen=True)
class Cluster:
    """Replicas sharing one PostgreSQL: the leader lease (remediator/leadership.py, docs/tuning.md)."""

    replica: str | None = None  # this replica's name; None: <hostname>-<listen port> (unique: the port is bound)
    lease_s: float = 6.0  # how long a taken or renewed lease lasts (the database's clock)
    renew_s: float = 1.0  # the leader renews this often (Patroni's loop_wait)
    retry_timeout_s: float = 2.0  # one renewal's bound (statement and lock timeout)
    max_call_s: float = 4.0  # the longest one I/O call to libvirt or a BMC may take; the leader stops
    #                          starting calls this long before its lease can expire

    def name(self, port: int) -> str:
        import os
        import socket

        return self.replica or f"{socket.gethostname()}-{port or os.getpid()}"


@dataclass(frozen=True)
class FenceDevice:
    """A fence-agents agent and its options, as Pacemaker's stonith resources and oVirt's power management give them.

    Option values are strings as the agent reads them on stdin (`key=value`); a YAML `true` becomes "1" and a
    `false` drops the option.
    """

    agent: str
    options: Mapping[str, str] = field(default_factory=dict)


REPROVISION_POLICIES = ("automatic", "on_request", "never")


@dataclass(frozen=True)
class ProvisioningHook:
    """What asks the installer (Foreman, MAAS, Cobbler, an in-house one) to reinstall the host: an HTTP
    request whose body is a template (`$host`, `$address`, `$incident` are filled in; `$$` is a `$`), or
    a command (argv, the same placeholders in each argument). A status >= 400 or a non-zero exit fails."""

    url: str | None = None
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    command: tuple[str, ...] = ()
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Reprovision:
    """Whether a host out of service is reinstalled, per how it went out.

    damaged: `on_request` by default: a reinstall wipes the host, and a damage check can fail for a
    reason a reinstall does not cure (a full disk on shared storage, a check that is wrong): an operator
    decides unless the host's entry says `automatic`. fenced: `never` by default: a host that lost power
    is usually whole, and the cause (a PDU, a PSU) wants a person's look first."""

    damaged: str = "on_request"
    fenced: str = "never"
    pxe: bool = True  # set the next boot to the network and power-cycle, through the host's power device
    hook: ProvisioningHook | None = None


@dataclass(frozen=True)
class HostConfig:
    name: str
    uri: str
    fence: FenceDevice | None = None  # the first power device (level 1)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Every power device in order (Pacemaker's fencing levels): fencing tries each until one proves the
    # host off; boot control uses the first whose kind can set a boot device. `fence` is the first.
    power: tuple[FenceDevice, ...] = ()
    reprovision: Reprovision = field(default_factory=Reprovision)


@dataclass(frozen=True)
class VMConfig:
    """A VM declared highly available. Matched by uuid when given, else by name."""

    name: str
    uuid: str | None = None
    priority: int = 0
    group: str | None = None  # anti-affinity group


@dataclass(frozen=True)
class Attempts:
    """How many times each step of the ladder is tried before escalating."""

    verify: int = 3
    restart_in_place: int = 2
    restart_elsewhere: int = 2
    rebuild: int = 1
    fence: int = 5
    migrate: int = 2


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (1-based): min(initial_s * factor**(n-1), max_s)."""

    initial_s: float = 2.0
    factor: float = 2.0
    max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.initial_s * self.factor ** max(attempt - 1, 0), self.max_s)


@dataclass(frozen=True)
class ActionTimeouts:
    default_s: float = 60.0
    verify_s: float = 10.0
    start_s: float = 60.0
    fence_s: float = 60.0
    migrate_s: float = 300.0

    def for_action(self, kind: str, reprovision: "ReprovisionTimeouts | None" = None) -> float:
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


@dataclass(frozen=True)
class ReprovisionTimeouts:
    """A timeout per reprovision phase: past it the incident fails and the host stays out, with the reason."""

    boot_device_s: float = 30.0  # the BMC takes the next boot device (network, once)
    power_cycle_s: float = 60.0
    hook_s: float = 120.0  # the provisioning hook answers
    ready_s: float = 1800.0  # from the power cycle (or hook) until libvirt answers, every check is ok, no stale domains
    activate_s: float = 60.0
    ready_poll_s: float = 5.0  # how often readiness is looked at

    BY_ACTION = {"set_boot_pxe": "boot_device_s", "power_cycle": "power_cycle_s", "call_hook": "hook_s",
                 "check_ready": "ready_poll_s", "activate_reinstalled": "activate_s"}


@dataclass(frozen=True)
class Storm:
    """Hold automatic evacuation when more than this share of hosts is down or damaged (Medik8s' maxUnhealthy)."""

    max_unhealthy_share: float = 1 / 3


@dataclass(frozen=True)
class Timings:
    # The stored definitions are what a VM is rebuilt from when its host is gone: a VM defined less
    # than this long before its host dies cannot be restarted elsewhere. One bulk listing per host.
    inventory_sync_s: float = 10.0
    reconcile_s: float = 30.0
    timeout_check_s: float = 5.0  # how often the scheduler looks for actions past their timeout
    verify_retry_s: float = 2.0
    host_down_grace_s: float = 0.0  # wait before fencing a host that stopped answering


@dataclass(frozen=True)
class Overcommit:
    """Placement never allocates beyond capacity times these ratios."""

    cpu: float = 4.0
    memory: float = 1.0


@dataclass(frozen=True)
class Policy:
    attempts: Attempts = field(default_factory=Attempts)
    backoff: Backoff = field(default_factory=Backoff)
    action_timeouts: ActionTimeouts = field(default_factory=ActionTimeouts)
    storm: Storm = field(default_factory=Storm)
    max_concurrent_actions: int = 4
    max_concurrent_migrations: int = 4  # live migrations off one host at once (a drain, a rebalance)
    fast_path: bool = True  # libvirt's lifecycle events open a crashed VM's incident before its alert
    timings: Timings = field(default_factory=Timings)
    overcommit: Overcommit = field(default_factory=Overcommit)
    reprovision: ReprovisionTimeouts = field(default_factory=ReprovisionTimeouts)

    def timeout_for(self, kind: str) -> float:
        return self.action_timeouts.for_action(kind, self.reprovision)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1024 * 1024  # webhook payloads above this get 413


@dataclass(frozen=True)
class Config:
    auth: Auth
    hosts: tuple[HostConfig, ...]
    listen: Listen = field(default_factory=Listen)
    prometheus: Prometheus = field(default_factory=Prometheus)
    store: Store = field(default_factory=Store)
    vms: tuple[VMConfig, ...] = ()
    policy: Policy = field(default_factory=Policy)
    limits: Limits = field(default_factory=Limits)
    cluster: Cluster = field(default_factory=Cluster)
    # Verifying a host that stopped answering costs this much when it is cut off (no RST comes back);
    # a healthy libvirtd answers in milliseconds, and the exporter uses the same 2 s.
    libvirt_connect_timeout_s: float = 2.0
    dry_run: bool = False
    source: str = "<memory>"  # the file it came from, for messages

    def host(self, name: str) -> HostConfig | None:
        return next((h for h in self.hosts if h.name == name), None)

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


# ---------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    fence_agent_dirs: Sequence[str] = DEFAULT_FENCE_AGENT_DIRS,
) -> Config:
    """Read, override from `env` (default: os.environ) and validate the YAML file at `path`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(source, "", f"cannot read: {e.strerror or e}") from e
    return parse_config(text, source=source, env=os.environ if env is None else env, fence_agent_dirs=fence_agent_dirs)


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    fence_agent_dirs: Sequence[str] | None = DEFAULT_FENCE_AGENT_DIRS,
) -> Config:
    """Validate YAML text. `fence_agent_dirs=None` skips the check that fence agents are installed."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, "", f"not valid YAML: {where}{getattr(e, 'problem', None) or e}") from e
    if data is None:
        data = {}
    return _Parser(source, env or {}, fence_agent_dirs).config(data)


class _Parser:
    def __init__(self, source: str, env: Mapping[str, str], fence_agent_dirs: Sequence[str] | None):
        self.source = source
        self.env = env
        self.fence_agent_dirs = fence_agent_dirs

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    # -- generic typed readers; `key` is the dotted path used in messages

    def mapping(self, value: Any, key: str, allowed: Sequence[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key or "(top level)", f"expected a mapping, got {_kind(value)}")
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key or "(top level)", f"keys must be strings, got {k!r}")
            if k not in allowed:
                raise self.fail(_join(key, k), f"unknown key (expected one of: {', '.join(allowed)})")
        return value

    def string(self, value: Any, key: str, *, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"expected a non-empty string, got {_kind(value)}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"{what or 'invalid value'}: {value!r}")
        return value

    def number(self, value: Any, key: str, *, minimum: float = 0.0, integer: bool = False, above: bool = False) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {_kind(value)}")
        if value < minimum or (above and value == minimum):
            raise self.fail(key, f"must be {'>' if above else '>='} {minimum}, got {value}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {_kind(value)}")
        return value

    def numbers(self, cls: type, value: Any, key: str, *, integer: bool = False, above: bool = False) -> Any:
        """A dataclass whose fields are all numbers with defaults."""
        names = list(cls.__dataclass_fields__)
        raw = self.mapping(value, key, names)
        return cls(**{k: self.number(v, _join(key, k), integer=integer, above=above) for k, v in raw.items()})

    # -- sections

    def config(self, data: Any) -> Config:
        top = self.mapping(
            data,
            "",
            ["listen", "auth", "prometheus", "store", "hosts", "vms", "policy", "limits", "libvirt", "cluster",
             "dry_run"],
        )
        self.apply_env(top)
        if "auth" not in top:
            raise self.fail("auth", f"required: {_AUTH_FORM}, or write `auth: none` explicitly")
        if not top.get("hosts"):
            raise self.fail("hosts", "required: at least one host")
        libvirt = self.mapping(top.get("libvirt"), "libvirt", ["connect_timeout_s"])
        return Config(
            listen=self.listen(top.get("listen")),
            auth=self.auth(top["auth"]),
            prometheus=self.prometheus(top.get("prometheus")),
            store=self.store(top.get("store")),
            hosts=self.hosts(top["hosts"]),
            vms=self.vms(top.get("vms")),
            policy=self.policy(top.get("policy")),
            limits=self.limits(top.get("limits")),
            cluster=self.cluster(top.get("cluster")),
            libvirt_connect_timeout_s=self.number(
                libvirt.get("connect_timeout_s", Config.libvirt_connect_timeout_s), "libvirt.connect_timeout_s",
                above=True,
            ),
            dry_run=self.boolean(top.get("dry_run", False), "dry_run"),
            source=self.source,
        )

    def apply_env(self, top: dict[str, Any]) -> None:
        """Secrets from the environment win over the file. Mutates the freshly parsed YAML only."""

        def put(section: str, keys: Sequence[str], value: str) -> None:
            node = top.get(section)
            if node == "none" or node is None:
                node = top[section] = {}
            if not isinstance(node, dict):
                return  # the type error is reported when the section is read
            for k in keys[:-1]:
                node = node.setdefault(k, {})
                if not isinstance(node, dict):
                    return
            node[keys[-1]] = value

        for old in ("TOKEN", "USERNAME", "PASSWORD"):
            if f"REMEDIATOR_AUTH_{old}" in self.env:
                raise self.fail("auth", f"REMEDIATOR_AUTH_{old} is no longer read: credentials are per role now, "
                                        f"set REMEDIATOR_AUTH_ALERTMANAGER_{old} and REMEDIATOR_AUTH_OPERATOR_{old}")
        for role in ROLES:
            for suffix, keys in (("TOKEN", ["bearer_token"]), ("USERNAME", ["basic", "username"]),
                                 ("PASSWORD", ["basic", "password"])):
                if (v := self.env.get(f"REMEDIATOR_AUTH_{role.upper()}_{suffix}")) is not None:
                    put("auth", [role, *keys], v)
        if (v := self.env.get("REMEDIATOR_STORE_URL")) is not None:
            put("store", ["url"], v)
        if (v := self.env.get("REMEDIATOR_PROMETHEUS_URL")) is not None:
            put("prometheus", ["url"], v)
        hosts = top.get("hosts")
        if isinstance(hosts, list):
            for host in hosts:
                if not (isinstance(host, dict) and isinstance(host.get("name"), str)):
                    continue
                prefix = f"REMEDIATOR_FENCE_{_env_name(host['name'])}_"
                for name, value in self.env.items():
                    if name.startswith(prefix) and len(name) > len(prefix):
                        fence = host.setdefault("fence", {})
                        if isinstance(fence, dict):
                            options = fence.setdefault("options", {})
                            if isinstance(options, dict):
                                options[name[len(prefix) :].lower()] = value

    def listen(self, value: Any) -> Listen:
        raw = self.mapping(value, "listen", ["host", "port", "threads", "tls"])
        d = Listen()
        port = self.number(raw.get("port", d.port), "listen.port", integer=True)
        if not 0 <= port <= 65535:
            raise self.fail("listen.port", f"must be 0..65535, got {port}")
        return Listen(
            host=self.string(raw.get("host", d.host), "listen.host"),
            port=port,
            threads=self.number(raw.get("threads", d.threads), "listen.threads", integer=True, minimum=1),
            tls=self.tls(raw["tls"]) if raw.get("tls") is not None else None,
        )

    def tls(self, value: Any) -> TLS:
        raw = self.mapping(value, "listen.tls", ["cert_file", "key_file", "client_ca_file"])
        files = {}
        for name in ("cert_file", "key_file", "client_ca_file"):
            if raw.get(name) is None:
                if name != "client_ca_file":
                    raise self.fail(f"listen.tls.{name}", "required when listen.tls is given")
                continue
            path = files[name] = self.string(raw[name], f"listen.tls.{name}")
            if not os.access(path, os.R_OK):  # fail at start, not at the first handshake
                raise self.fail(f"listen.tls.{name}", f"cannot read {path}")
        return TLS(**files)

    def auth(self, value: Any) -> Auth:
        if value == "none":
            return Auth(none=True)
        if isinstance(value, str):
            raise self.fail("auth", f"the only string value is `none`, got {value!r}")
        if isinstance(value, dict):
            for flat in ("bearer_token", "basic"):
                if flat in value:
                    raise self.fail(f"auth.{flat}", f"one credential for everything is no longer accepted: {_AUTH_FORM}")
        raw = self.mapping(value, "auth", ROLES)
        roles = {role: self.credentials(raw.get(role), f"auth.{role}") for role in ROLES}
        # A secret both roles know would give the webhook's credential the operator's rights.
        for secret_key, secret in self.secrets(roles["operator"], "auth.operator"):
            for other_key, other in self.secrets(roles["alertmanager"], "auth.alertmanager"):
                if secret == other:
                    raise self.fail(secret_key, f"the same secret as {other_key}: Alertmanager's credential would "
                                                "then have the operator's rights; give each role its own")
        return Auth(**roles)

    def credentials(self, value: Any, key: str) -> Credentials:
        if value is None:
            raise self.fail(key, f"required: {_AUTH_FORM}")
        raw = self.mapping(value, key, ["bearer_token", "basic"])
        token = raw.get("bearer_token")
        if token is not None:
            token = self.string(token, f"{key}.bearer_token")
            if len(token) < 16:
                raise self.fail(f"{key}.bearer_token", "too short: use at least 16 characters")
        basic = None
        if raw.get("basic") is not None:
            b = self.mapping(raw["basic"], f"{key}.basic", ["username", "password"])
            basic = BasicAuth(
                username=self.string(b.get("username"), f"{key}.basic.username"),
                password=self.string(b.get("password"), f"{key}.basic.password"),
            )
        if token is None and basic is None:
            raise self.fail(key, "give bearer_token and/or basic")
        return Credentials(bearer_token=token, basic=basic)

    @staticmethod
    def secrets(credentials: Credentials, key: str) -> list[tuple[str, str]]:
        """(key path, secret) of each secret of one role's credential."""
        found = [(f"{key}.bearer_token", credentials.bearer_token)]
        if credentials.basic is not None:
            found.append((f"{key}.basic.password", credentials.basic.password))
        return [(k, s) for k, s in found if s]

    def prometheus(self, value: Any) -> Prometheus:
        raw = self.mapping(value, "prometheus", ["url", "timeout_s"])
        url = raw.get("url")
        if url is not None:
            url = self.string(url, "prometheus.url")
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise self.fail("prometheus.url", f"expected an http(s) URL, got {url!r}")
        timeout = self.number(raw.get("timeout_s", Prometheus.timeout_s), "prometheus.timeout_s", above=True)
        return Prometheus(url=url, timeout_s=timeout)

    def store(self, value: Any) -> Store:
        raw = self.mapping(value, "store", ["url"])
        url = self.string(raw.get("url", DEFAULT_STORE_URL), "store.url")
        if not (url.startswith("sqlite:///") or url.startswith(("postgresql://", "postgres://"))):
            # (the URL may hold a password: say only its scheme)
            raise self.fail("store.url", f"expected sqlite:///PATH or postgresql://..., got {url.split(':', 1)[0]!r}://...")
        if url.startswith("sqlite:///") and len(url) == len("sqlite:///"):
            raise self.fail("store.url", "sqlite URL without a path")
        return Store(url=url)

    def hosts(self, value: Any) -> tuple[HostConfig, ...]:
        if not isinstance(value, list):
            raise self.fail("hosts", f"expected a list, got {_kind(value)}")
        hosts: list[HostConfig] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            key = f"hosts[{i}]"
            raw = self.mapping(item, key, ["name", "uri", "fence", "labels", "reprovision"])
            name = self.string(raw.get("name"), f"{key}.name", pattern=HOST_NAME, what="not a valid host name")
            if name in seen:
                raise self.fail(f"{key}.name", f"duplicate host {name!r} (also hosts[{seen[name]}])")
            seen[name] = i
            uri = self.string(raw.get("uri"), f"{key}.uri")
            scheme = urlparse(uri).scheme
            if not LIBVIRT_URI_SCHEMES.match(scheme):
                raise self.fail(f"{key}.uri", f"not a libvirt URI: {uri!r}")
            fence = raw.get("fence")
            # One device, or several tried in order (fencing levels).
            power = tuple(self.fence(d, f"{key}.fence[{n}]") for n, d in enumerate(fence)) \
                if isinstance(fence, list) else (self.fence(fence, f"{key}.fence"),) if fence is not None else ()
            if isinstance(fence, list) and not fence:
                raise self.fail(f"{key}.fence", "an empty list: give at least one device, or leave fence out")
            reprovision = self.reprovision(raw.get("reprovision"), f"{key}.reprovision")
            if reprovision.pxe and not power and (reprovision.damaged != "never" or reprovision.fenced != "never"):
                reprovision = Reprovision(reprovision.damaged, reprovision.fenced, False, reprovision.hook)
            hosts.append(HostConfig(name=name, uri=uri, fence=power[0] if power else None, power=power,
                                    labels=self.labels(raw.get("labels"), f"{key}.labels"), reprovision=reprovision))
        return tuple(hosts)

    def reprovision(self, value: Any, key: str) -> Reprovision:
        raw = self.mapping(value, key, ["damaged", "fenced", "pxe", "hook"])
        d = Reprovision()
        policies = {}
        for name in ("damaged", "fenced"):
            policies[name] = self.string(raw.get(name, getattr(d, name)), f"{key}.{name}")
            if policies[name] not in REPROVISION_POLICIES:
                raise self.fail(f"{key}.{name}", f"one of {', '.join(REPROVISION_POLICIES)}, got {policies[name]!r}")
        pxe = self.boolean(raw.get("pxe", d.pxe), f"{key}.pxe")
        hook = self.hook(raw["hook"], f"{key}.hook") if raw.get("hook") is not None else None
        if not pxe and hook is None and any(p != "never" for p in policies.values()):
            raise self.fail(key, "with pxe: false, a hook must do the install (give reprovision.hook)")
        return Reprovision(policies["damaged"], policies["fenced"], pxe, hook)

    def hook(self, value: Any, key: str) -> ProvisioningHook:
        raw = self.mapping(value, key, ["url", "method", "headers", "body", "command", "timeout_s"])
        if (raw.get("url") is None) == (raw.get("command") is None):
            raise self.fail(key, "give either url (an HTTP request) or command (argv), not both")
        timeout = self.number(raw.get("timeout_s", ProvisioningHook.timeout_s), f"{key}.timeout_s", above=True)
        if raw.get("command") is not None:
            command = raw["command"]
            if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
                raise self.fail(f"{key}.command", f"expected a list of strings (argv), got {_kind(command)}")
            return ProvisioningHook(command=tuple(command), timeout_s=timeout)
        url = self.string(raw["url"], f"{key}.url")
        if urlparse(url).scheme not in ("http", "https"):
            raise self.fail(f"{key}.url", f"expected an http(s) URL, got {url!r}")
        method = self.string(raw.get("method", "POST"), f"{key}.method").upper()
        if method not in ("GET", "POST", "PUT", "PATCH"):
            raise self.fail(f"{key}.method", f"one of GET, POST, PUT, PATCH, got {method!r}")
        headers = {k: self.string(v, f"{key}.headers.{k}") for k, v in
                   self.mapping(raw.get("headers"), f"{key}.headers", _AnyKey()).items()}
        return ProvisioningHook(url=url, method=method, headers=headers, timeout_s=timeout,
                                body=self.string(raw.get("body", ""), f"{key}.body") if raw.get("body") else "")

    def fence(self, value: Any, key: str) -> FenceDevice:
        raw = self.mapping(value, key, ["agent", "options"])
        agent = self.string(raw.get("agent"), f"{key}.agent")
        if not FENCE_AGENT.match(agent) or (self.fence_agent_dirs is not None and not self.agent_installed(agent)):
            where = f" (looked in {', '.join(self.fence_agent_dirs)})" if self.fence_agent_dirs is not None else ""
            raise self.fail(f"{key}.agent", f"unknown agent {agent!r}{where}")
        options: dict[str, str] = {}
        for name, v in self.mapping(raw.get("options"), f"{key}.options", _AnyKey()).items():
            okey = f"{key}.options.{name}"
            if not FENCE_OPTION.match(name):
                raise self.fail(okey, "option names are lower-case words as the agent reads them on stdin (e.g. ipport)")
            if name in FENCE_OPTIONS_RESERVED:
                raise self.fail(okey, "set by the remediator for each call, not configurable")
            if isinstance(v, bool):
                if v:
                    options[name] = "1"
            elif isinstance(v, (int, float, str)):
                if isinstance(v, str) and ("\n" in v or "\r" in v):
                    raise self.fail(okey, "must be one line (options are passed on stdin as key=value lines)")
                options[name] = str(v)
            else:
                raise self.fail(okey, f"expected a string, number or boolean, got {_kind(v)}")
        return FenceDevice(agent=agent, options=options)

    def agent_installed(self, agent: str) -> bool:
        assert self.fence_agent_dirs is not None
        return any(os.access(os.path.join(d, agent), os.X_OK) for d in self.fence_agent_dirs)

    def labels(self, value: Any, key: str) -> dict[str, str]:
        raw = self.mapping(value, key, _AnyKey())
        out = {}
        for k, v in raw.items():
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise self.fail(f"{key}.{k}", f"expected a string, got {_kind(v)}")
            out[k] = str(v)
        return out

    def vms(self, value: Any) -> tuple[VMConfig, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail("vms", f"expected a list, got {_kind(value)}")
        vms: list[VMConfig] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            key = f"vms[{i}]"
            raw = self.mapping(item, key, ["name", "uuid", "priority", "group"])
            name = self.string(raw.get("name"), f"{key}.name")
            uuid = raw.get("uuid")
            if uuid is not None:
                uuid = self.string(uuid, f"{key}.uuid", pattern=UUID, what="not a UUID").lower()
            ident = uuid or f"name:{name}"
            if ident in seen:
                raise self.fail(key, f"declared twice: {uuid or name!r}")
            seen.add(ident)
            priority = raw.get("priority", 0)
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise self.fail(f"{key}.priority", f"expected an integer, got {_kind(priority)}")
            group = raw.get("group")
            vms.append(
                VMConfig(
                    name=name,
                    uuid=uuid,
                    priority=priority,
                    group=self.string(group, f"{key}.group") if group is not None else None,
                )
            )
        return tuple(vms)

    def policy(self, value: Any) -> Policy:
        raw = self.mapping(
            value,
            "policy",
            ["attempts", "backoff", "action_timeouts", "storm", "max_concurrent_actions", "max_concurrent_migrations",
             "fast_path", "timings", "overcommit", "overload", "reprovision"],
        )
        if "overload" in raw:
            # One source of truth: the rule says when a host is overloaded, and its alert carries the figure.
            raise self.fail("policy.overload", "the overload thresholds live in rules/hypervisor.rules.yml "
                            "(HypervisorHostOverloaded, its `threshold` label); the remediator acts on the "
                            "alert's own reason and threshold: remove this key")
        backoff = self.numbers(Backoff, raw.get("backoff"), "policy.backoff")
        if backoff.factor < 1:
            raise self.fail("policy.backoff.factor", f"must be >= 1, got {backoff.factor}")
        storm_raw = self.mapping(raw.get("storm"), "policy.storm", ["max_unhealthy_share"])
        share = self.number(storm_raw.get("max_unhealthy_share", Storm().max_unhealthy_share), "policy.storm.max_unhealthy_share")
        if share > 1:
            raise self.fail("policy.storm.max_unhealthy_share", f"a share of hosts: 0..1, got {share}")
        return Policy(
            attempts=self.numbers(Attempts, raw.get("attempts"), "policy.attempts", integer=True),
            backoff=backoff,
            action_timeouts=self.numbers(ActionTimeouts, raw.get("action_timeouts"), "policy.action_timeouts", above=True),
            storm=Storm(max_unhealthy_share=float(share)),
            fast_path=self.boolean(raw.get("fast_path", Policy.fast_path), "policy.fast_path"),
            max_concurrent_migrations=self.number(
                raw.get("max_concurrent_migrations", Policy.max_concurrent_migrations),
                "policy.max_concurrent_migrations", integer=True, minimum=1,
            ),
            max_concurrent_actions=self.number(
                raw.get("max_concurrent_actions", Policy.max_concurrent_actions), "policy.max_concurrent_actions",
                integer=True, minimum=1,
            ),
            timings=self.numbers(Timings, raw.get("timings"), "policy.timings"),
            overcommit=self.numbers(Overcommit, raw.get("overcommit"), "policy.overcommit", above=True),
            reprovision=self.numbers(ReprovisionTimeouts, raw.get("reprovision"), "policy.reprovision", above=True),
        )

    def cluster(self, value: Any) -> Cluster:
        raw = dict(self.mapping(value, "cluster", list(Cluster.__dataclass_fields__)))
        replica = raw.pop("replica", None)
        if replica is not None:
            replica = self.string(replica, "cluster.replica", pattern=HOST_NAME, what="a replica name (letters, "
                                  "digits, . _ -)")
        c = Cluster(replica=replica, **{k: float(self.number(v, f"cluster.{k}", above=True)) for k, v in raw.items()})
        # Patroni's rule: two renewals that each take their whole bound still leave the lease valid.
        if c.renew_s + 2 * c.retry_timeout_s > c.lease_s:
            raise self.fail("cluster.lease_s", f"must be >= renew_s + 2 * retry_timeout_s = "
                            f"{c.renew_s + 2 * c.retry_timeout_s:g}, got {c.lease_s:g}")
        # The dispatch deadline (renewal + lease_s - max_call_s) must stay ahead of the next renewal.
        if c.max_call_s + c.renew_s >= c.lease_s:
            raise self.fail("cluster.max_call_s", f"must be < lease_s - renew_s = {c.lease_s - c.renew_s:g} "
                            f"(else the leader may not dispatch between renewals), got {c.max_call_s:g}")
        return c

    def limits(self, value: Any) -> Limits:
        raw = self.mapping(value, "limits", ["max_body_bytes"])
        return Limits(
            max_body_bytes=self.number(raw.get("max_body_bytes", Limits().max_body_bytes), "limits.max_body_bytes", integer=True, minimum=1)
        )


class _AnyKey(list):  # type: ignore[type-arg]
    """An `allowed` list that admits every key (free-form mappings: labels, fence options)."""

    def __contains__(self, item: object) -> bool:
        return True


_AUTH_FORM = (
    "give each role its credential (bearer_token and/or basic: {username, password}): "
    "`auth: {alertmanager: {bearer_token: ...}, operator: {bearer_token: ...}}`; "
    "Alertmanager's may only post alerts, the operator's serves the API and the CLI"
)


def _join(key: str, sub: str) -> str:
    return f"{key}.{sub}" if key else sub


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}", bool: f"{value}".lower()}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())

