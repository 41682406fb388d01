"""The role permission table, user permissions (role intersected with scopes), scope parsing, lifetimes."""

import pytest

from domain.policy import MAX_ACCESS_TOKEN_TTL, MIN_ACCESS_TOKEN_TTL, LifetimePolicy
from domain.scopes import (
    ALL_SCOPES,
    DELETE_PROJECT,
    MANAGE_OWNERS,
    ROLE_PERMISSIONS,
    Role,
    parse_scope,
    unknown_scopes,
    user_permissions,
)
from infrastructure.settings import Settings, SettingsError

EVERY_SCOPE = {"project:read", "project:write", "members:read", "members:write", "clients:read", "clients:write",
               "tokens:read", "tokens:revoke", "audit:read"}
# The roles of DESIGN.md, written out by hand.
EXPECTED = {
    Role.OWNER: EVERY_SCOPE | {"owners:manage", "project:delete"},
    Role.ADMIN: EVERY_SCOPE,
    Role.DEVELOPER: {"project:read", "members:read", "clients:read", "clients:write", "tokens:read", "tokens:revoke"},
    Role.AUDITOR: {"project:read", "members:read", "clients:read", "tokens:read", "audit:read"},
}
# Role-only permissions and the scope each one refines.
REFINES = {"owners:manage": "members:write", "project:delete": "project:write"}


def test_the_scope_vocabulary() -> None:
    assert ALL_SCOPES == EVERY_SCOPE
    assert (MANAGE_OWNERS, DELETE_PROJECT) == ("owners:manage", "project:delete")


@pytest.mark.parametrize("role", list(Role))
def test_role_permission_table(role: Role) -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert ROLE_PERMISSIONS[role] == EXPECTED[role]
    # With every scope, a user gets exactly the role's permissions.
    assert user_permissions(role, tuple(ALL_SCOPES)) == EXPECTED[role]
    # With one scope, the role's permission for it (and the role-only permission it refines), nothing else.
    for scope in sorted(ALL_SCOPES):
        expected = {scope} & EXPECTED[role]
        expected |= {perm for perm, refined in REFINES.items() if refined == scope and perm in EXPECTED[role]}
        assert user_permissions(role, (scope,)) == expected, (role, scope)
    # With no scope, nothing.
    assert user_permissions(role, ()) == frozenset()


def test_no_role_means_no_permission() -> None:
    assert user_permissions(None, tuple(ALL_SCOPES)) == frozenset()


def test_owner_only_permissions_need_the_role() -> None:
    assert MANAGE_OWNERS not in user_permissions(Role.ADMIN, ("members:write", "owners:manage"))
    assert DELETE_PROJECT not in user_permissions(Role.ADMIN, ("project:write", "project:delete"))


def test_owner_only_permissions_need_the_refining_scope() -> None:
    assert user_permissions(Role.OWNER, ("members:read", "project:read")) == {"members:read", "project:read"}
    assert user_permissions(Role.OWNER, ("members:write",)) == {"members:write", "owners:manage"}


def test_a_scope_naming_a_role_only_permission_grants_nothing() -> None:
    # "owners:manage" is not a scope: only "members:write" (resp. "project:write") may unlock it for an owner.
    assert user_permissions(Role.OWNER, ("owners:manage", "project:delete")) == frozenset()


def test_parse_scope_sorts_and_deduplicates() -> None:
    assert parse_scope("tokens:read  project:read tokens:read") == ("project:read", "tokens:read")
    assert parse_scope(None) == ()
    assert parse_scope("") == ()
    assert parse_scope(" project:read  ") == ("project:read",)
    assert unknown_scopes(("project:read", "root", "admin:all")) == ("root", "admin:all")
    assert unknown_scopes(tuple(ALL_SCOPES)) == ()


@pytest.mark.parametrize("separator", ["\t", "\n", "\r\n", "\u00a0", "\u2003", "\x0b"])
def test_only_a_space_separates_scope_tokens(separator: str) -> None:
    """RFC 6749 section 3.3: other whitespace is part of a token, so the pair is one unknown scope."""
    scopes = parse_scope(f"project:read{separator}tokens:read")
    assert scopes == (f"project:read{separator}tokens:read",)
    assert unknown_scopes(scopes) == scopes


@pytest.mark.parametrize(
    ("override", "expected"),
    [(None, 3600), (-10, MIN_ACCESS_TOKEN_TTL), (0, 5), (1, 5), (5, 5), (6, 6), (900, 900), (86_400, 86_400),
     (86_401, MAX_ACCESS_TOKEN_TTL), (10**9, 86_400)],
)
def test_client_access_ttl_is_clamped_to_5s_24h(override: int | None, expected: int) -> None:
    assert (MIN_ACCESS_TOKEN_TTL, MAX_ACCESS_TOKEN_TTL) == (5, 24 * 3600)
    assert LifetimePolicy().client_access_ttl(override) == expected


def test_client_access_ttl_default_follows_the_policy() -> None:
    assert LifetimePolicy(client_access_token_ttl=120).client_access_ttl(None) == 120


@pytest.mark.parametrize("requested", [None, 1, 3600, 365 * 86_400, 2 * 365 * 86_400, 2 * 365 * 86_400 + 1, 10**12])
def test_requested_secret_ttl_never_exceeds_the_maximum(requested: int | None) -> None:
    policy = LifetimePolicy()
    ttl = policy.secret_ttl(requested)
    assert ttl <= policy.max_client_secret_ttl
    assert ttl == (policy.client_secret_ttl if requested is None else min(requested, policy.max_client_secret_ttl))


def test_default_secret_ttl_never_exceeds_the_maximum() -> None:
    # Settings.from_env refuses such a default (below); a policy built otherwise still never exceeds the maximum.
    policy = LifetimePolicy(client_secret_ttl=3 * 365 * 86_400, max_client_secret_ttl=365 * 86_400)
    assert policy.secret_ttl(None) <= policy.max_client_secret_ttl


@pytest.mark.parametrize(("env", "named"), [
    ({"KEYLEDGER_CLIENT_ACCESS_TOKEN_TTL": "4"}, "KEYLEDGER_CLIENT_ACCESS_TOKEN_TTL"),
    ({"KEYLEDGER_CLIENT_ACCESS_TOKEN_TTL": "86401"}, "KEYLEDGER_CLIENT_ACCESS_TOKEN_TTL"),
    ({"KEYLEDGER_DASHBOARD_ACCESS_TOKEN_TTL": "4"}, "KEYLEDGER_DASHBOARD_ACCESS_TOKEN_TTL"),
    ({"KEYLEDGER_DASHBOARD_ACCESS_TOKEN_TTL": "86401"}, "KEYLEDGER_DASHBOARD_ACCESS_TOKEN_TTL"),
    ({"KEYLEDGER_CLIENT_SECRET_TTL": "63072001"}, "KEYLEDGER_CLIENT_SECRET_TTL"),
    ({"KEYLEDGER_CLIENT_SECRET_TTL": "7200", "KEYLEDGER_MAX_CLIENT_SECRET_TTL": "3600"}, "KEYLEDGER_CLIENT_SECRET_TTL"),
])
def test_server_wide_lifetimes_outside_their_bounds_are_refused_at_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_server_wide_lifetimes_at_their_bounds_are_taken() -> None:
    lifetimes = Settings.from_env({"KEYLEDGER_CLIENT_ACCESS_TOKEN_TTL": "5", "KEYLEDGER_DASHBOARD_ACCESS_TOKEN_TTL":
                                   "86400", "KEYLEDGER_CLIENT_SECRET_TTL": "3600",
                                   "KEYLEDGER_MAX_CLIENT_SECRET_TTL": "3600"}).lifetimes
    assert (lifetimes.client_access_token_ttl, lifetimes.dashboard_access_token_ttl) == (5, 86400)
    assert lifetimes.secret_ttl(None) == 3600


def test_the_refresh_reuse_leeway_is_strict_by_default_and_bounded() -> None:
    assert Settings.from_env({}).lifetimes.refresh_reuse_leeway == 0
    assert Settings.from_env({"KEYLEDGER_REFRESH_REUSE_LEEWAY": "0"}).lifetimes.refresh_reuse_leeway == 0
    assert Settings.from_env({"KEYLEDGER_REFRESH_REUSE_LEEWAY": "2"}).lifetimes.refresh_reuse_leeway == 2
    for bad in ("61", "-1", "1.5", "soon"):
        with pytest.raises(SettingsError, match="KEYLEDGER_REFRESH_REUSE_LEEWAY"):
            Settings.from_env({"KEYLEDGER_REFRESH_REUSE_LEEWAY": bad})
