"""Reading the file: YAML, then the environment's overrides, then the models' validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import yaml
from pydantic import ValidationError

from remediator.config.environment import apply_environment
from remediator.config.errors import ConfigError, kind, translate
from remediator.config.inventory import DEFAULT_FENCE_AGENT_DIRS
from remediator.config.model import Config
from remediator.config.policy import UNSAFE_OPT_IN


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
    if not isinstance(data, dict):
        raise ConfigError(source, "(top level)", f"expected a mapping, got {kind(data)}")
    if bad := next((k for k in data if not isinstance(k, str)), None):
        raise ConfigError(source, "(top level)", f"keys must be strings, got {bad!r}")
    apply_environment(data, env or {}, source)
    try:
        config = Config.model_validate(data, context={"fence_agent_dirs": fence_agent_dirs})
    except ValidationError as e:
        raise translate(e, source, Config) from None
    if config.policy.unsafe_skip_fencing and (env or {}).get(UNSAFE_OPT_IN) != "1":
        raise ConfigError(source, "policy.unsafe_skip_fencing", "refused: it takes a host for off without proof, so "
                          "a VM could run twice; it exists for a lab test only (which opts in with "
                          f"{UNSAFE_OPT_IN}=1 in its own environment): remove this key")
    return config.with_source(source)
