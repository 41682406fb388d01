"""Every keyledger PostgreSQL session's options: no parallel plans, no JIT, and the operator's own kept."""

import pytest

from infrastructure.postgres import SESSION_SETTINGS, session_options


def test_keyledgers_settings_come_last_after_the_urls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=8MB")  # a URL's options replace the environment's, as in libpq
    assert session_options("-c statement_timeout=7000") == f"-c statement_timeout=7000 {SESSION_SETTINGS}"


def test_without_options_in_the_url_the_environments_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit ``options`` makes libpq ignore ``PGOPTIONS``: what an operator set there must not be lost."""
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=8MB")
    assert session_options(None) == f"-c work_mem=8MB {SESSION_SETTINGS}"
    monkeypatch.delenv("PGOPTIONS")
    assert session_options(None) == SESSION_SETTINGS
