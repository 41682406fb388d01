"""``keyledger serve`` on the embedded default: one command, data kept across restarts, one server per data dir."""

import httpx
import pytest

from tests.conftest import password_login, signup, start_server, stop_server, wait_until_up

pytestmark = pytest.mark.e2e


def embedded_env(data_dir: str) -> dict[str, str]:
    # No database, Redis or secret configured: everything comes from the data dir.
    return {"KEYLEDGER_DATA_DIR": data_dir, "KEYLEDGER_DATABASE_URL": "", "KEYLEDGER_REDIS_URL": "",
            "KEYLEDGER_SECRET_KEY": ""}


def test_embedded_serve_keeps_data_and_refuses_a_second_start(tmp_path) -> None:
    data_dir = str(tmp_path / "kl")
    proc, url = start_server(embedded_env(data_dir))
    try:
        wait_until_up(url, proc, timeout=120)
        with httpx.Client(base_url=url, timeout=30) as http:
            account = signup(http)
        second, _ = start_server(embedded_env(data_dir))
        output = second.communicate(timeout=120)[0].decode()
        assert second.returncode != 0
        assert "already running" in output
    finally:
        stop_server(proc)
    assert (tmp_path / "kl" / "secret.key").stat().st_mode & 0o777 == 0o600

    proc, url = start_server(embedded_env(data_dir))
    try:
        wait_until_up(url, proc, timeout=120)
        with httpx.Client(base_url=url, timeout=30) as http:
            login = password_login(http, account)
            assert login.status_code == 200, login.text
            me = http.get("/v1/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
            assert me.json()["memberships"] == [{"project_id": account["project"]["id"], "role": "owner"}]
    finally:
        stop_server(proc)
