"""The options every keyledger PostgreSQL session connects with: no parallel plans, and the operator's own kept."""

import pytest

from infrastructure.postgres import NO_PARALLEL_PLANS, without_parallel_plans


def test_no_parallel_plans_come_last_after_the_urls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=8MB")  # a URL's options replace the environment's, as in libpq
    assert without_parallel_plans("-c statement_timeout=7000") == f"-c statement_timeout=7000 {NO_PARALLEL_PLANS}"


def test_without_options_in_the_url_the_environments_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit ``options`` makes libpq ignore ``PGOPTIONS``: what an operator set there must not be lost."""
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=8MB")
    assert without_parallel_plans(None) == f"-c work_mem=8MB {NO_PARALLEL_PLANS}"
    monkeypatch.delenv("PGOPTIONS")
    assert without_parallel_plans(None) == NO_PARALLEL_PLANS
