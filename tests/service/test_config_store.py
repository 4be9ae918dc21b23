"""store.url: SQLite or PostgreSQL, and a URL's password never shown in an error or log line."""

from __future__ import annotations

import pytest

from remediator.config import ConfigError, parse_config
from remediator.store.database import redacted

BASE = "auth: none\nhosts:\n  - {name: h1, uri: 'test:///default'}\n"

def test_postgresql_store_url_is_accepted():
    url = "postgresql://remediator:hunter2@127.0.0.1:5432/remediator"
    assert parse_config(BASE + f"store: {{url: '{url}'}}\n", env={}).store.url == url

def test_a_refused_store_url_does_not_echo_its_password():
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + "store: {url: 'mysql://u:hunter2@db/x'}\n", env={})
    assert "store.url" in str(e.value) and "hunter2" not in str(e.value)

def test_redacted_hides_the_password():
    assert redacted("postgresql://remediator:hunter2@db:5432/r") == "postgresql://remediator:***@db:5432/r"
    assert redacted("sqlite:////var/lib/remediator/state.db") == "sqlite:////var/lib/remediator/state.db"
