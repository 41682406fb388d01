"""Invariant 5: after the walk-through, no password, client secret, refresh token or access token is in the database."""

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.conftest import client_login, password_login, signup

pytestmark = pytest.mark.e2e


def dump_database(url: str) -> str:
    """Every row of every table of every non-system schema as text (bytea decoded as UTF-8)."""
    chunks: list[str] = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert tables
        for schema, table in tables:
            for row in conn.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema),
                                                                         sql.Identifier(table))):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        chunks.append(bytes(value).decode("utf-8", "replace"))
                    else:
                        chunks.append(str(value))
    return "\n".join(chunks)


def test_database_holds_no_secret_after_the_walkthrough(http: httpx.Client, server_database_url: str) -> None:
    account = signup(http)
    login = password_login(http, account).json()
    key_token = client_login(http, account).json()["access_token"]
    me = http.get("/v1/me", headers={"Authorization": f"Bearer {login['access_token']}"})
    assert me.status_code == 200
    dump = dump_database(server_database_url)
    # The dump is real: the walk-through's ids are in it.
    assert account["user"]["id"] in dump
    assert account["client"]["client_id"] in dump
    secrets = {
        "password": account["password"],
        "client secret": account["client"]["client_secret"],
        "client secret body": account["client"]["client_secret"][5:25],
        "refresh token": login["refresh_token"],
        "refresh token body": login["refresh_token"][5:25],
        "dashboard access token signature": login["access_token"].rsplit(".", 1)[1],
        "client access token signature": key_token.rsplit(".", 1)[1],
        "dashboard access token": login["access_token"],
    }
    for name, value in secrets.items():
        assert value not in dump, f"{name} found in the database"
