"""The provisioning hook: what asks an installer (Foreman, MAAS, Cobbler, an in-house one) to reinstall a host.

An HTTP request (requests) whose body is a template, or a command. Placeholders, in the body and in
each argument of the command: `$host` (inventory name), `$address` (the host of its libvirt URI),
`$incident` (the reprovision incident's id); `$$` is a literal `$`. An unknown placeholder is an error,
not an empty string: a half-filled request to an installer could reinstall the wrong machine.
"""

from __future__ import annotations

import subprocess
from string import Template
from typing import Mapping

import requests

from remediator.config import ProvisioningHook


class HookFailed(RuntimeError):
    pass


def fill(template: str, values: Mapping[str, str]) -> str:
    try:
        return Template(template).substitute(values)
    except (KeyError, ValueError) as err:
        raise HookFailed(f"hook template {template!r}: unknown or malformed placeholder {err} "
                         f"(known: {', '.join('$' + k for k in sorted(values))})") from None


def call(hook: ProvisioningHook, values: Mapping[str, str]) -> str:
    """Run the hook; returns what it answered (a line), raises HookFailed."""
    if hook.command:
        argv = [fill(arg, values) for arg in hook.command]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=hook.timeout_s)
        except subprocess.TimeoutExpired:
            raise HookFailed(f"{argv[0]}: no exit within {hook.timeout_s:g}s") from None
        except OSError as err:
            raise HookFailed(f"{argv[0]}: {err}") from None
        out = (proc.stdout.strip() or proc.stderr.strip() or "no output").splitlines()[-1]
        if proc.returncode != 0:
            raise HookFailed(f"{argv[0]}: exit {proc.returncode} ({out})")
        return f"{argv[0]}: exit 0 ({out})"
    assert hook.url is not None
    url = fill(hook.url, values)
    try:
        response = requests.request(hook.method, url, data=fill(hook.body, values).encode() if hook.body else None,
                                    headers=dict(hook.headers), timeout=hook.timeout_s)
    except requests.RequestException as err:
        raise HookFailed(f"{hook.method} {url}: {err}") from None
    if response.status_code >= 400:
        raise HookFailed(f"{hook.method} {url}: HTTP {response.status_code} ({response.text[:200].strip()})")
    return f"{hook.method} {url}: HTTP {response.status_code}"
