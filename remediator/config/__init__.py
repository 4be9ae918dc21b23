"""The service's one typed configuration: loaded from YAML, secrets overridable from the environment.

Every validation error names the file and the key path, e.g.
`config error in /etc/remediator.yml: hosts[2].fence.agent: unknown agent 'fence_foo'`,
so an operator can fix the file without reading this package.

The models (pydantic) are split by section: service.py (listen, auth, prometheus, store, limits,
libvirt), inventory.py (hosts and their fence devices, vms), policy.py; model.py holds them together.
environment.py reads the REMEDIATOR_* overrides (pydantic-settings), loading.py reads the file,
errors.py words the errors, reference.py writes docs/config.md from the models' descriptions.
Secrets (tokens, passwords, fence passwords) are SecretStr: `.get_secret_value()` where they are used.
"""

from remediator.config.environment import Environment
from remediator.config.errors import ConfigError
from remediator.config.inventory import DEFAULT_FENCE_AGENT_DIRS, FenceDevice, HostConfig, Storage, VMConfig
from remediator.config.loading import load_config, parse_config
from remediator.config.model import Config
from remediator.config.policy import (IO_ERROR_POLICIES, UNSAFE_OPT_IN, ActionTimeouts, Attempts, Backoff,
                                      Overcommit, Policy, Storm, Timings)
from remediator.config.reprovision import (REPROVISION_POLICIES, ProvisioningHook, Reprovision,
                                           ReprovisionTimeouts)
from remediator.config.service import (DEFAULT_STORE_URL, ROLES, TLS, Auth, BasicAuth, Cluster, Credentials,
                                       Libvirt, Limits, Listen, Prometheus, Store)

__all__ = [
    "ActionTimeouts", "Attempts", "Auth", "Backoff", "BasicAuth", "Cluster", "Config", "ConfigError", "Credentials",
    "DEFAULT_FENCE_AGENT_DIRS", "DEFAULT_STORE_URL", "Environment", "FenceDevice", "HostConfig", "Libvirt",
    "Limits", "Listen", "Overcommit", "Policy", "Prometheus", "ProvisioningHook", "REPROVISION_POLICIES", "ROLES",
    "Reprovision", "ReprovisionTimeouts", "Storm", "Store", "TLS", "Timings", "IO_ERROR_POLICIES", "UNSAFE_OPT_IN",
    "Storage",
    "VMConfig", "load_config", "parse_config",
]
